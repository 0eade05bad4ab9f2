// The LRP rules, one small function each, in gradient form: a rule rewrites a node into one with the same forward
// value whose plain gradient, multiplied by the input, is the rule's relevance. Rules are structural: they look at
// ops and at which operands depend on the input, never at a model's architecture.
module Lxt.Rules.Rules

open Lxt.Graph
open Lxt.Graph.Ops

/// Elementwise nonlinearities that get the identity rule. Exp, Log, Sqrt, Erf and friends are not activations of a
/// transformer and keep their plain gradient.
let nonlinearities = [ Silu; GeluErf; GeluTanh; Tanh; Sigmoid; Relu ]

/// The identity rule's stabiliser ε (the reference uses 1e-10).
[<Literal>]
let IdentityEpsilon = 1e-10

/// The output of an elementwise nonlinearity, before or after the identity rule rewrote it.
let (|NonlinearityOutput|_|) (n: Node) =
    match n with
    | Markers.IdentityProduct _ -> Some()
    | { Op = Unary(f, _) } when List.contains f nonlinearities -> Some()
    | _ -> None

let private rule name apply : LrpRule = { Name = name; Apply = apply }

/// Identity rule with a chosen stabiliser: y = f(x) becomes y = x · sg(f(x)/stab(x)).
let identityWith (stab: Node -> Node) : LrpRule =
    rule "identity rule on elementwise nonlinearities" (fun ctx n ->
        match n.Op with
        | Unary(f, x) when List.contains f nonlinearities && ctx.IsInputDependent x -> Some(Markers.identityProduct stab n x)
        | _ -> None)

/// Identity rule (AttnLRP, Achtibat et al. 2024, Eq. 9): R_x = R_y for y = f(x), f ∈ SiLU, GELU, tanh, sigmoid, ReLU.
/// Gradient form y = x · sg(f(x)/stab(x)) with the sign-aware stab(x) = x + 1e-10·sign(x).
/// Conserves exactly up to the stabiliser: Σ R_x = Σ y ⊙ g · x/stab(x).
let identity : LrpRule = identityWith (Stabilizer.signAware IdentityEpsilon)

/// Identity on normalisation (AttnLRP Prop. 3.4): the scale 1/σ of RMSNorm/LayerNorm is a constant for the backward
/// pass, so y = x · sg(rsqrt(mean(x²)+ε)) · w is linear in x and R_x = R_y (the mean subtraction of LayerNorm keeps
/// its plain gradient, the ε-rule). Matches Rsqrt and Sqrt of an input-dependent value.
/// Conserves exactly on RMSNorm without bias.
let normalisationScale : LrpRule =
    rule "stop-gradient on normalisation scales" (fun ctx n ->
        match n.Op with
        | Unary((Rsqrt | Sqrt), v) when ctx.IsInputDependent v -> Some(Markers.stopGradientAround n)
        | _ -> None)

/// Uniform rule / ½ rule (AttnLRP Prop. 3.2 and 3.3): a product a ⊙ b or A·B of two input-dependent factors splits
/// its relevance evenly, R_a = R_b = R/2 (for A·B: R_A = A ⊙ (N Bᵀ), R_B = B ⊙ (Aᵀ N), N = R/2Y). Gradient form: the
/// gradient is halved after the product. Conserves exactly: Σ R_a + Σ R_b = Σ R. In attention it gives q ÷ 4, k ÷ 4
/// (QKᵀ, then attention·V) and v ÷ 2; in a gated MLP act(gate) · up ÷ 2.
let uniformProduct : LrpRule =
    rule "½ rule on products of two input-dependent factors" (fun ctx n ->
        match n.Op with
        | Binary(Mul, a, b) | MatMul(a, b) when ctx.IsInputDependent a && ctx.IsInputDependent b ->
            Some(Markers.gradientScaleAround 0.5 n)
        | _ -> None)

/// CP-LRP on attention (Ali et al. 2022, "XAI for Transformers: conservative propagation"): the softmax output is a
/// constant for the backward pass, so relevance reaches the input through V only and attention·V is linear in V.
/// Conserves exactly on bias-free attention: Σ R_V = Σ R_out.
let constantAttention : LrpRule =
    rule "CP-LRP: stop-gradient on softmax" (fun ctx n ->
        match n.Op with
        | Softmax(_, x) when ctx.IsInputDependent x -> Some(Markers.stopGradientAround n)
        | _ -> None)

/// CP-LRP on gated MLPs: in act(gate) ⊙ up, the gate branch is a constant for the backward pass and the product
/// gets no ÷2, so all relevance flows through `up`. Conserves exactly: Σ R_up = Σ R.
let constantGate : LrpRule =
    rule "CP-LRP: stop-gradient on the gate of a gated product" (fun ctx n ->
        match n.Op with
        | Binary(Mul, a, b) when ctx.IsInputDependent a && ctx.IsInputDependent b ->
            match a, b with
            | NonlinearityOutput, _ -> Some(withChildren n [ Markers.stopGradientOperand a; b ])
            | _, NonlinearityOutput -> Some(withChildren n [ a; Markers.stopGradientOperand b ])
            | _ -> None
        | _ -> None)

// ---- linear layers: x·W and conv2d(x, W) with a constant W, plus an optional constant bias after them ----

/// How a Gamma rule treats the layer's bias b in z₁ (positive pair) and z₃ (negative pair).
type GammaBias =
    /// Zennit's Gamma: b + γb⁺ in z₁, b + γb⁻ in z₃, nothing in z₂ and z₄.
    | Zennit
    /// b unchanged in z₁ and z₃ (the formula as ATTNLRP.md writes it).
    | Unmodified
    /// no bias in any z (the bias absorbs its share, as in ε-LRP).
    | Ignored

/// A linear layer found in a graph: its input, weight, optional bias, and how to apply the layer to other operands.
type Layer =
    { X: Node; W: Node; Bias: Node option; Apply: Node -> Node -> Node; IsConvolution: bool }

let private layerOf (ctx: Context) (n: Node) : Layer option =
    match n.Op with
    | MatMul(x, w) when ctx.IsInputDependent x && not (ctx.IsInputDependent w) ->
        Some { X = x; W = w; Bias = None; Apply = matmul; IsConvolution = false }
    | Conv2d(s, p, x, w) when ctx.IsInputDependent x && not (ctx.IsInputDependent w) ->
        Some { X = x; W = w; Bias = None; Apply = conv2d s p; IsConvolution = true }
    | _ -> None

/// A modified-backward rule for linear layers: `backward layer z0` builds the node B through which the gradient of
/// the layer's output z₀ flows. Two rules: one on the layer itself, one that takes a following constant bias in
/// (the bias add becomes the layer's output), whether or not the layer was rewritten first.
let linearRules (name: string) (backward: Layer -> Node -> Node) : LrpRule list =
    let onLayer =
        rule name (fun ctx n ->
            layerOf ctx n |> Option.map (fun layer -> Markers.modifiedBackward n (backward layer (Markers.withName None n))))
    let onBias =
        rule (name + " (with its bias)") (fun ctx n ->
            let plainLayer (a: Node) =
                match a with
                | Markers.ModifiedBackward z0 when a.Name.IsNone -> Some z0
                | _ when a.Name.IsNone && (layerOf ctx a).IsSome -> Some a
                | _ -> None
            let build (layerNode: Node) (bias: Node) (z0: Node) =
                layerOf ctx layerNode
                |> Option.map (fun layer ->
                    let z0 = Markers.withName None z0
                    Markers.modifiedBackward (Markers.withName n.Name z0) (backward { layer with Bias = Some bias } z0))
            match n.Op with
            | Binary(Add, a, b) when not (ctx.IsInputDependent b) ->
                plainLayer a |> Option.bind (fun l -> build l b (make (Binary(Add, l, b)) [||] Float None))
            | Binary(Add, b, a) when not (ctx.IsInputDependent b) ->
                plainLayer a |> Option.bind (fun l -> build l b (make (Binary(Add, b, l)) [||] Float None))
            | _ -> None)
    [ onLayer; onBias ]

/// ε-LRP on linear layers (Bach et al. 2015; AttnLRP Eq. 8): R_x = x ⊙ Wᵀ(R / stab(z)), z = Wx + b including the
/// bias, stab(z) = z + ε·sign(z). Gradient form: B = z · sg(z / stab(z)), i.e. the gradient is scaled by z/stab(z)
/// before the layer. The bias and ε absorb relevance: Σ R_x = Σ R · (Wx)/stab(z); exact on bias-free layers as ε → 0.
let epsilonLinear (eps: float) : LrpRule list =
    linearRules (sprintf "ε-rule (ε=%g) on linear layers" eps) (fun _ z0 -> mul z0 (stopGradient (div z0 (Stabilizer.signAware eps z0))))

/// Zennit's Gamma rule (Montavon et al. 2019; Zennit `rules.Gamma`) with factor γ, bias treatment and stabiliser ε:
/// z₁ = (W+γW⁺)x⁺ + b₁, z₂ = (W+γW⁻)x⁻, z₃ = (W+γW⁻)x⁺ + b₃, z₄ = (W+γW⁺)x⁻; where z₀ > 0 the relevance R flows
/// through z₁ + z₂, where z₀ < 0 through z₃ + z₄: R_x = Σₖ xₖ ⊙ Wₖᵀ(maskₖ · R / stab(z_pair)).
/// Gradient form: B = [z₀>0] (z₁+z₂) sg(z₀/stab(z₁+z₂)) + [z₀<0] (z₃+z₄) sg(z₀/stab(z₃+z₄)).
/// Conserves on bias-free layers up to ε (Σ R_x = Σ R where z₀ ≠ 0); γ = 0 is ε-LRP, γ → ∞ tends to z⁺.
let gammaBackward (gamma: float) (bias: GammaBias) (eps: float) (layer: Layer) (z0: Node) : Node =
    let zero = scalar 0.0
    let plus v = add v (scale gamma (maximum v zero))
    let minus v = add v (scale gamma (minimum v zero))
    // x⁺ = x ⊙ [x > 0]: comparisons carry no gradient, so the gradient reaches x only where x > 0
    let xp, xn = mul layer.X (greater layer.X zero), mul layer.X (greater zero layer.X)
    let wp, wn = plus layer.W, minus layer.W
    let withBias modify z =
        match layer.Bias, bias with
        | Some b, Zennit -> add z (modify b)
        | Some b, Unmodified -> add z b
        | _ -> z
    let z12 = add (withBias plus (layer.Apply xp wp)) (layer.Apply xn wn)
    let z34 = add (withBias minus (layer.Apply xp wn)) (layer.Apply xn wp)
    let share z = mul z (stopGradient (div z0 (Stabilizer.signAware eps z)))
    add (mul (greater z0 zero) (share z12)) (mul (greater zero z0) (share z34))

/// Zennit's default Gamma stabiliser.
[<Literal>]
let GammaEpsilon = 1e-6

/// The Gamma rule on Conv2d layers with γ = `conv` and on dense layers (x·W) with γ = `linear`, Zennit's bias.
let gammaLinear (conv: float) (linear: float) : LrpRule list =
    linearRules (sprintf "Gamma rule (conv γ=%g, linear γ=%g)" conv linear) (fun layer z0 ->
        gammaBackward (if layer.IsConvolution then conv else linear) Zennit GammaEpsilon layer z0)
