// The explicit form of AttnLRP and CP-LRP (the AttnLRP paper's): every rule written as its own relevance backward and
// propagated op by op as a graph transformation — one table entry per op, structured like Autodiff.vjp.
module Lxt.Rules.Explicit

open System.Collections.Generic
open Lxt.Graph
open Lxt.Graph.Ops

/// Relevance arrived at an op whose input-dependent operand has no explicit rule (the op is named in `Op`, the node
/// in the message). The gradient form would still run there, as Gradient × Input; the explicit form refuses.
type MissingRelevanceRuleException(op: string, message: string) =
    inherit LxtException(message)
    member _.Op = op

/// An explicit rule set: the few choices that tell AttnLRP and CP-LRP apart. Everything else is the table below.
type ExplicitRules =
    { Name: string
      /// ε of the sign-aware stabiliser z + ε·sign(z) in the ε-rule (linear layers, additions, sums, means) and in
      /// the ½ rule's N = R / stab(2Y). With ε = 0 the division is by z itself (0 where z = 0), which is exactly
      /// what the gradient form's plain gradient computes.
      Epsilon: float
      /// CP-LRP: softmax outputs are constants, so relevance reaches the input through V only.
      ConstantAttention: bool
      /// CP-LRP: in act(gate) ⊙ up the activation branch is a constant and `up` receives all the relevance.
      ConstantGate: bool }

/// AttnLRP (Achtibat et al., ICML 2024) in explicit form with stabiliser ε: the counterpart of RuleSets.attnLrp.
let attnLrp (eps: float) =
    { Name = sprintf "AttnLRP, explicit (ε=%g)" eps; Epsilon = eps; ConstantAttention = false; ConstantGate = false }

/// CP-LRP (Ali et al. 2022) in explicit form with stabiliser ε: the counterpart of RuleSets.cpLrp.
let cpLrp (eps: float) =
    { Name = sprintf "CP-LRP, explicit (ε=%g)" eps; Epsilon = eps; ConstantAttention = true; ConstantGate = true }

/// Nodes the rule set treats as constants: no relevance enters them, so nothing above them is input-dependent.
/// Cut ops (stop-gradient, top-k masks, comparisons, sign) as in Context; the normalisation scale rsqrt/sqrt of
/// RMSNorm and LayerNorm (Prop. 3.4); under CP-LRP the softmax output.
let private isConstant (rules: ExplicitRules) (n: Node) =
    match n.Op with
    | StopGradient _ | TopKMask _ | Binary((Greater | Equal), _, _) | Unary(Sign, _) -> true
    | Unary((Rsqrt | Sqrt), _) -> true
    | Softmax _ -> rules.ConstantAttention
    | _ -> false

/// x ⊙ v with 0 wherever v is 0: masked scores (x = −∞) get relevance 0, not NaN.
let private times (x: Node) (v: Node) = where (equal v (scalar 0.0)) (scalar 0.0) (mul x v)

/// R / stab(z), stab(z) = z + ε·sign(z) with sign(0) = 1: the ε-rule's relevance per unit of z. With ε = 0 it is
/// R / z, and 0 where z = 0.
let private perUnit (eps: float) (r: Node) (z: Node) =
    if eps > 0.0 then div r (Stabilizer.signAware eps z)
    else where (equal z (scalar 0.0)) (scalar 0.0) (div r z)

let private missing (y: Node) =
    let op = match y.Op with Reduce(o, _, _, _) -> "Reduce" + string o | _ -> Selector.opKind y
    raise (MissingRelevanceRuleException(op, sprintf "no explicit relevance rule for op %s (at %s): relevance reached it and one of its input-dependent operands needs a share" op (Node.Describe y)))

/// The relevance rule of one op: for each operand, a thunk giving its share of the relevance `r` at `y`.
/// Shares for constant operands are never built (the driver skips them): constants absorb their share.
let private distribute (rules: ExplicitRules) (isLive: Node -> bool) (y: Node) (r: Node) : (Node * (unit -> Node)) list =
    // relevance of a broadcast operand is summed over the axes it was broadcast along
    let share (x: Node) f = x, (fun () -> Autodiff.sumTo x.Shape (f ()))
    let eps = rules.Epsilon
    match y.Op with
    | Input _ | Parameter _ | Constant _ | Fill _ | StopGradient _ | TopKMask _ -> []
    // a gradient scale in the model graph scales relevance the same way, so that both forms agree on it
    | GradientScale(c, x) -> [ x, (fun () -> scale c r) ]
    // identity rule (Eq. 9): R_x = R_y for y = f(x), f ∈ SiLU, GELU, tanh, sigmoid, ReLU; negation is linear.
    // (The gradient form's x · sg(f(x)/(x + 1e-10·sign x)) differs from this by 1e-10/|x| relative.)
    | Unary(f, x) when f = Neg || List.contains f Rules.nonlinearities -> [ x, (fun () -> r) ]
    | Unary _ -> missing y
    // ε-rule on a sum (Eq. 8): R_a = a ⊙ R/stab(a ± b), R_b = ±b ⊙ R/stab(a ± b); a constant term absorbs its share
    | Binary((Add | Sub) as o, a, b) ->
        let u () = perUnit eps r y
        [ share a (fun () -> times a (u ())); share b (fun () -> times (if o = Sub then neg b else b) (u ())) ]
    | Binary(Mul, a, b) ->
        let isGate (n: Node) = match n with Rules.NonlinearityOutput -> true | _ -> false
        match isLive a, isLive b with
        // CP-LRP: the activation branch of a gated product is a constant, the other factor takes all of R
        | true, true when rules.ConstantGate && isGate a -> [ share b (fun () -> r) ]
        | true, true when rules.ConstantGate && isGate b -> [ share a (fun () -> r) ]
        // uniform rule (Prop. 3.2): R_a = R_b = R/2
        | true, true -> [ share a (fun () -> scale 0.5 r); share b (fun () -> scale 0.5 r) ]
        // identity through a constant factor: a ⊙ c is linear in a and the ε-rule gives R_a = R
        | _ -> [ share a (fun () -> r); share b (fun () -> r) ]
    // division by a constant is a constant factor (LayerNorm written with a sqrt denominator)
    | Binary(Div, a, b) when not (isLive b) -> [ share a (fun () -> r) ]
    | Binary _ -> missing y
    // the mask of a where is a constant: relevance goes to the branch that was taken
    | Where(c, a, b) -> [ share a (fun () -> where c r (scalar 0.0)); share b (fun () -> where c (scalar 0.0) r) ]
    // ε-rule with one constant operand: N = R/stab(Y); ½ rule with two input-dependent operands (Prop. 3.3):
    // N = R/stab(2Y). In both, R_A = A ⊙ (N Bᵀ) and R_B = B ⊙ (Aᵀ N).
    | MatMul(a, b) ->
        let n () = if isLive a && isLive b then perUnit eps r (scale 2.0 y) else perUnit eps r y
        [ share a (fun () -> times a (matmul (n ()) (transpose -1 -2 b)))
          share b (fun () -> times b (matmul (transpose -1 -2 a) (n ()))) ]
    // ε-rule on a convolution with a constant kernel: R_x = x ⊙ convᵀ(R/stab(Y), W)
    | Conv2d(s, p, x, w) when not (isLive w) ->
        [ x, (fun () -> times x (make (Conv2dGradInput(s, p, perUnit eps r y, w)) x.Shape Float None)) ]
    | Conv2d _ -> missing y
    // Deep Taylor with bias (Prop. 3.1), on the softmax's own axis: R_x = x ⊙ (R − s · Σ R)
    | Softmax(axis, x) -> [ x, (fun () -> times x (sub r (mul y (reduceSum [ axis ] true r)))) ]
    // ε-rule on a sum or mean over axes: R_x = x ⊙ R/stab(Σx), broadcast back (a mean's 1/n cancels)
    | Reduce((Sum | Mean) as o, axes, _, x) ->
        let kept = x.Shape |> Array.mapi (fun i n -> if Array.contains i axes then 1 else n)
        let count = axes |> Array.fold (fun acc a -> acc * x.Shape.[a]) 1
        let total = if o = Mean then scale (float count) y else y
        [ x, (fun () -> times x (broadcastTo x.Shape (reshape kept (perUnit eps r total)))) ]
    | Reduce(Max, _, _, _) -> missing y
    // views and copies move relevance without changing it
    | Broadcast _ | Reshape _ | Recompute _ | Permute _ | Slice _ | Concat _ | Gather _ -> Autodiff.layoutAdjoint y r
    | ScatterAdd _ | Conv2dGradInput _ | Conv2dGradWeight _ | Attention _ -> missing y

/// Relevance at each node of `at`, propagated explicitly from relevances `R_out` given at `outputs` (pairs of an
/// output and its relevance, R_out = output ⊙ seed), in reverse topological order: each node sums the shares of all
/// its users, then hands its total to its input-dependent operands by the op's rule above. Markers a gradient-form
/// rule set left in the graph are stripped first. A node the outputs do not depend on gets zeros.
/// Covered: everything AttnLRP and CP-LRP meet in RMSNorm/LayerNorm, attention (rotary, masks, grouped keys),
/// gated MLPs and residuals. Not covered (MissingRelevanceRuleException, naming the op, when relevance must pass
/// through one): unary ops other than the activations and negation (exp, log, square, …, outside a norm's scale),
/// division by an input-dependent value (mixture-of-experts renormalisation), pow, maximum/minimum, max-reduction,
/// scatter-add, a convolution with an input-dependent kernel.
let propagate (rules: ExplicitRules) (outputs: (Node * Node) list) (at: Node list) : Node list =
    for (o, r) in outputs do
        if o.Shape <> r.Shape then
            raise (GraphShapeException(sprintf "explicit relevance: %s does not match output %s" (Node.Describe r) (Node.Describe o)))
    let stripped = Rewrite.applyOnce Markers.strip (List.map fst outputs @ at)
    let outputs = outputs |> List.map (fun (o, r) -> stripped.[o], r)
    let at = at |> List.map (fun n -> stripped.[n])
    let order = Traverse.topo (List.map fst outputs)
    let targets = HashSet<Node>(at, HashIdentity.Reference)
    // live: carries relevance from a float input without crossing a constant; needed: live with a path to `at`
    let live = HashSet<Node>(HashIdentity.Reference)
    let needs = HashSet<Node>(HashIdentity.Reference)
    for n in order do
        let isLive =
            match n.Op with
            | Input _ -> n.DType = Float
            | _ when isConstant rules n -> false
            | _ -> n.DType = Float && n.Children |> List.exists live.Contains
        if isLive then
            live.Add n |> ignore
            if targets.Contains n || n.Children |> List.exists needs.Contains then needs.Add n |> ignore
    let relevance = Dictionary<Node, Node>(HashIdentity.Reference)
    let accumulate (n: Node) (r: Node) =
        match relevance.TryGetValue n with
        | true, acc -> relevance.[n] <- Autodiff.sumContributions acc r
        | _ -> relevance.[n] <- r
    for (o, r) in outputs do if needs.Contains o then accumulate o r
    for i in order.Length - 1 .. -1 .. 0 do
        let n = order.[i]
        match relevance.TryGetValue n with
        | true, r when n.Children |> List.exists needs.Contains ->
            for (x, share) in distribute rules live.Contains n r do
                if needs.Contains x then accumulate x (share ())
        | _ -> ()
    at |> List.map (fun n -> match relevance.TryGetValue n with | true, r -> r | _ -> fill n.Shape 0.0)

/// Relevance at each node of `at` (inputs or inner nodes) for explaining `target` contracted with `seed`:
/// R_out = target ⊙ seed, propagated explicitly. The counterpart of Lrp.relevance.
let relevance (rules: ExplicitRules) (target: Node) (seed: Node) (at: Node list) : Node list =
    if target.Shape <> seed.Shape then
        raise (GraphShapeException(sprintf "explicit relevance: seed %s does not match output %s" (Node.Describe seed) (Node.Describe target)))
    // R_out from the model graph's own output: a rewritten graph's forward value differs from it by rounding
    let target = Lrp.strip [ target ] |> List.head
    propagate rules [ target, mul target seed ] at
