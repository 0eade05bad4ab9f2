// The explicit form of AttnLRP and CP-LRP against the gradient form: the same relevance on linear chains, attention,
// gated MLPs, Llama-style blocks and the llama fixture; differences only of order ε; uncovered ops named.
module Lxt.Tests.ExplicitTests

open System
open Expecto
open FsCheck.FSharp
open Lxt.Graph
open Lxt.Graph.Ops
open Lxt.Rules

let private config n = { FsCheckConfig.defaultConfig with maxTest = n }

type private Values = Evaluate.LeafValues

let private eval (v: Values) (nodes: Node list) = Evaluate.reference v.Map nodes

/// Max |a − b| / max |b| (the fixtures' measure).
let private relErr (a: float[]) (b: float[]) =
    let scale = b |> Array.map Math.Abs |> Array.max |> max 1e-300
    Array.map2 (fun (x: float) y -> Math.Abs(x - y)) a b |> Array.max |> fun e -> e / scale

/// A stabiliser small enough that the ε-terms vanish next to float64 rounding.
let private tiny = 1e-12

/// How far the explicit form's relevance at `at` is from the gradient form's (worst relative error over the nodes),
/// and whether both are finite.
let private disagreement (v: Values) (efficient: RuleSet) (rules: Explicit.ExplicitRules) (output: Node) (seed: Node) (at: Node list) =
    let r = eval v (Lrp.relevance efficient output seed at @ Explicit.relevance rules output seed at)
    let n = at.Length
    let finite = r |> Array.forall (Array.forall Double.IsFinite)
    List.init n (fun i -> relErr r.[n + i] r.[i]) |> List.max, finite

/// The smallest |x| over the operands of the graph's activations. The gradient form's identity rule multiplies the
/// gradient at each activation by f(x)/(x + 1e-10·sign x) where the explicit form passes R_y on unchanged, so the
/// forms differ by 1e-10/|x| relative on that activation's share: negligible in general position, not at x ≈ 0.
let private activationMargin (v: Values) (output: Node) =
    let xs =
        Traverse.topo [ output ]
        |> Array.choose (fun n -> match n.Op with Unary(f, x) when List.contains f Rules.nonlinearities -> Some x | _ -> None)
        |> List.ofArray
    if xs.IsEmpty then infinity else eval v xs |> Array.collect id |> Array.map Math.Abs |> Array.min

/// Random graphs in general position: no activation operand within 1e-4 of 0 (see activationMargin).
let private generic (v: Values) (output: Node) (property: unit -> bool) =
    activationMargin v output >= 1e-4 ==> lazy (property ())

let private agrees tol (v: Values) efficient rules output seed at =
    let err, finite = disagreement v efficient rules output seed at
    if not finite || err > tol then printfn "%s: relative error %g (finite: %b)" rules.Name err finite
    finite && err <= tol

// ---- builders, from core ops the way the facade builds models ----

let private linear (v: Values) (withBias: bool) (name: string) (x: Node) (outDim: int) =
    let inDim = x.Shape.[x.Shape.Length - 1]
    let y = matmul x (v.Parameter(name + ".weight", [| inDim; outDim |], 1.0 / Math.Sqrt(float inDim)))
    named name (if withBias then add y (v.Parameter(name + ".bias", [| outDim |], 0.3)) else y)

let private rmsNorm (v: Values) (name: string) (x: Node) =
    let d = x.Shape.[x.Shape.Length - 1]
    let scaleNode = rsqrt (addScalar 1e-6 (reduceMean [ -1 ] true (square x)))
    named name (mul (mul x scaleNode) (v.Parameter(name + ".weight", [| d |])))

/// LayerNorm as the facade builds it: (x − mean) · rsqrt(var + ε) · w (the mean subtraction gets the ε-rule).
let private layerNorm (v: Values) (name: string) (x: Node) =
    let d = x.Shape.[x.Shape.Length - 1]
    let centred = sub x (reduceMean [ -1 ] true x)
    let scaleNode = rsqrt (addScalar 1e-5 (reduceMean [ -1 ] true (square centred)))
    named name (mul (mul centred scaleNode) (v.Parameter(name + ".weight", [| d |])))

/// Rotate-half rotary embedding of x [heads, T, d] with constant cos/sin tables.
let private rotary (x: Node) =
    let t, d = x.Shape.[1], x.Shape.[2]
    let half = d / 2
    let angle p i = float p * Math.Pow(10000.0, -2.0 * float (i % half) / float d)
    let cosT = constant [| t; d |] (Array.init (t * d) (fun k -> Math.Cos(angle (k / d) (k % d))))
    let sinT = constant [| t; d |] (Array.init (t * d) (fun k -> Math.Sin(angle (k / d) (k % d))))
    let rotated = concat 2 [ neg (slice 2 half d x); slice 2 0 half x ]
    add (mul x cosT) (mul rotated sinT)

/// Causal self-attention over x [T, D]: per-head reshapes, optional rotary, grouped key/value heads, −∞ mask.
let private attention (v: Values) withBias (name: string) (heads: int) (kvHeads: int) (useRotary: bool) (x: Node) =
    let t, dModel = x.Shape.[0], x.Shape.[1]
    let dh = dModel / heads
    let split n (m: Node) = permute [ 1; 0; 2 ] (reshape [| t; n; dh |] m)
    let q = split heads (linear v withBias (name + ".q_proj") x (heads * dh))
    let k = split kvHeads (linear v withBias (name + ".k_proj") x (kvHeads * dh))
    let value = split kvHeads (linear v withBias (name + ".v_proj") x (kvHeads * dh))
    let q, k = if useRotary then rotary q, rotary k else q, k
    let repeat (m: Node) =
        if kvHeads = heads then m
        else reshape [| heads; t; dh |] (broadcastTo [| kvHeads; heads / kvHeads; t; dh |] (reshape [| kvHeads; 1; t; dh |] m))
    let causal = constant [| t; t |] (Array.init (t * t) (fun i -> if i % t <= i / t then 1.0 else 0.0))
    let scores = scale (1.0 / Math.Sqrt(float dh)) (matmul q (transpose -1 -2 (repeat k)))
    let weights = named (name + ".attn_weights") (softmax -1 (where causal scores (scalar Double.NegativeInfinity)))
    let out = reshape [| t; heads * dh |] (permute [ 1; 0; 2 ] (matmul weights (repeat value)))
    linear v withBias (name + ".o_proj") out dModel

/// Activations with f(0) = 0. The gradient form's identity rule scales each share by x/(x + 1e-10·sign x), so it
/// differs from the explicit R_x = R_y by 1e-10/|x| relative, on a relevance f(x)·g that vanishes with x for these;
/// sigmoid (f(0) = ½) has its own, looser property below.
let private activations = [| silu; geluErf; geluTanh; relu; tanh |]

let private gatedMlp (v: Values) withBias (name: string) (act: Node -> Node) (x: Node) =
    let d = x.Shape.[x.Shape.Length - 1]
    let gate = linear v withBias (name + ".gate_proj") x (2 * d)
    let up = linear v withBias (name + ".up_proj") x (2 * d)
    linear v withBias (name + ".down_proj") (mul (named (name + ".act_fn") (act gate)) up) d

type private Block = { Output: Node; Input: Node; Values: Values; Target: int list; Layers: Node list }

/// Decoder layers (norm, attention, residual, norm, gated MLP, residual) over embeddings, a final norm and a head.
let private llama (seed: int) (withBias: bool) : Block =
    let v = Values(Random seed)
    let rng = v.Rng
    let heads = [| 1; 2; 4 |].[rng.Next 3]
    let kvHeads = if heads > 1 && rng.Next 2 = 0 then heads / 2 else heads
    let d, layers, vocab, t = 8, 1 + rng.Next 2, 6, 2 + rng.Next 4
    let act = activations.[rng.Next activations.Length]
    let norm = if rng.Next 3 = 0 then layerNorm else rmsNorm
    let x0 = v.Input("embeddings", [| t; d |])
    let mutable x = x0
    let outs = ResizeArray()
    for i in 0 .. layers - 1 do
        let p = sprintf "model.layers.%d" i
        let h = add x (attention v withBias (p + ".self_attn") heads kvHeads true (norm v (p + ".input_layernorm") x))
        x <- named p (add h (gatedMlp v withBias (p + ".mlp") act (norm v (p + ".post_attention_layernorm") h)))
        outs.Add x
    let logits = named "lm_head" (matmul (norm v "model.norm" x) (v.Parameter("lm_head.weight", [| d; vocab |])))
    { Output = logits; Input = x0; Values = v; Target = [ t - 1; rng.Next vocab ]; Layers = List.ofSeq outs }

/// A random chain of linear layers, activations, views and reductions (optionally with biases).
let private chain (seed: int) (withBias: bool) =
    let v = Values(Random seed)
    let rng = v.Rng
    let x0 = v.Input("x", [| 1 + rng.Next 3; 2 + rng.Next 4 |])
    let mutable x = x0
    for i in 1 .. 1 + rng.Next 4 do
        x <- linear v withBias (sprintf "fc%d" i) x (2 + rng.Next 4)
        match rng.Next 6 with
        | 0 -> x <- activations.[rng.Next activations.Length] x
        | 1 -> x <- transpose 0 1 (scale -1.5 (transpose 0 1 x))
        | 2 -> x <- neg (reshape [| x.Shape.[0]; x.Shape.[1] |] (reshape [| -1 |] x))
        | 3 -> x <- add x (broadcastTo x.Shape (reduceMean [ 0 ] true x))
        | 4 -> x <- concat 1 [ slice 1 0 1 x; relu (slice 1 1 x.Shape.[1] x) ]
        | _ -> ()
    let out = if rng.Next 2 = 0 then reduceSum [ 0 ] false x else x
    v, x0, out

let private explicitForms = [ RuleSets.attnLrp, Explicit.attnLrp; RuleSets.cpLrp, Explicit.cpLrp ]

// ---- the llama fixture ----

/// The llama fixture's logits, input and layer-output nodes, all values by name, and its target.
let private llamaFixture () =
    let f = FixtureTests.load "llama"
    let model, graph, input = FixtureTests.prepare f
    use model = model
    let weights = model.WeightsFor graph
    let values =
        graph.Model.Parameters
        |> Seq.map (fun kv -> kv.Key, weights.Read(kv.Key, kv.Value) |> Array.map float)
        |> Map.ofSeq
        |> Map.add graph.InputName (input |> Array.map float)
    let logits = graph.Model.["logits"].Node
    let inputNode = (graph.Model.Inputs |> Seq.find (fun i -> i.Name = graph.InputName)).Node
    let layers = graph.LayerOutputs |> Seq.map (fun n -> graph.Model.FindNode(n).Node) |> List.ofSeq
    f, values, logits, inputNode, layers, f.Json.GetProperty("target").GetInt32()

/// Σ over the last axis: relevance per token.
let private perToken (width: int) (r: float[]) = Array.chunkBySize width r |> Array.map Array.sum

let tests =
    testList "explicit relevance" [
        testPropertyWithConfig (config 40) "equals the gradient form on random linear chains, with or without biases" (fun (seed: int) ->
            let v, x, out = chain seed (seed % 2 = 0)
            generic v out (fun () ->
                explicitForms |> List.forall (fun (efficient, rules) -> agrees 1e-6 v efficient (rules tiny) out (v.Seed out) [ x ])))

        testPropertyWithConfig (config 30) "equals the gradient form on products of two input-dependent factors (uniform and ½ rules)" (fun (seed: int) ->
            let v = Values(Random seed)
            let x = v.Input("x", [| 3; 2 + v.Rng.Next 3 |])
            let a = linear v false "a" x 4
            let b = linear v false "b" x 4
            let y = concat 0 [ mul a b; matmul (transpose 0 1 a) (if seed % 3 = 0 then a else b) ]
            let seedNode = v.Seed y
            explicitForms |> List.forall (fun (efficient, rules) -> agrees 1e-6 v efficient (rules tiny) y seedNode [ x; a; b ]))

        testPropertyWithConfig (config 20) "equals the gradient form on bias-free convolutions (ε-rule)" (fun (seed: int) ->
            let v = Values(Random seed)
            let image = v.Input("image", [| 1; 2; 5; 5 |])
            let stride = 1 + Math.Abs(seed % 2)
            let y = conv2d (stride, stride) (1, 1) image (v.Parameter("w", [| 3; 2; 3; 3 |]))
            let seedNode = v.Seed y
            explicitForms |> List.forall (fun (efficient, rules) -> agrees 1e-6 v efficient (rules tiny) y seedNode [ image ]))

        testPropertyWithConfig (config 40) "equals the gradient form on causal attention, single and multi-head" (fun (seed: int) ->
            let v = Values(Random seed)
            let rng = v.Rng
            let heads = [| 1; 2; 4 |].[rng.Next 3]
            let kvHeads = if heads > 1 && rng.Next 2 = 0 then heads / 2 else heads
            let x = v.Input("x", [| 2 + rng.Next 4; 8 |])
            let y = attention v (rng.Next 2 = 0) "attn" heads kvHeads (rng.Next 2 = 0) x
            let seedNode = v.Seed y
            explicitForms |> List.forall (fun (efficient, rules) -> agrees 1e-6 v efficient (rules tiny) y seedNode [ x ]))

        testPropertyWithConfig (config 40) "equals the gradient form on gated MLP blocks" (fun (seed: int) ->
            let v = Values(Random seed)
            let x = v.Input("x", [| 1 + v.Rng.Next 4; 2 + v.Rng.Next 5 |])
            let y = gatedMlp v (seed % 2 = 0) "mlp" activations.[v.Rng.Next activations.Length] x
            let seedNode = v.Seed y
            generic v y (fun () ->
                explicitForms |> List.forall (fun (efficient, rules) -> agrees 1e-6 v efficient (rules tiny) y seedNode [ x ])))

        /// sigmoid(x) → ½ as x → 0, so a pre-activation x near 0 carries relevance ~g/2 that both the gradient form's
        /// identity stabiliser (1e-10/|x|) and the explicit ε-rule on the layer before it (ε/|x|) scale: agreement is
        /// within max(1e-10, ε)/min|x| rather than to rounding.
        testPropertyWithConfig (config 40) "equals the gradient form on sigmoid-gated MLPs up to the identity rule's stabiliser" (fun (seed: int) ->
            let v = Values(Random seed)
            let x = v.Input("x", [| 1 + v.Rng.Next 4; 2 + v.Rng.Next 5 |])
            let y = gatedMlp v (seed % 2 = 0) "mlp" sigmoid x
            let seedNode = v.Seed y
            generic v y (fun () ->
                explicitForms |> List.forall (fun (efficient, rules) -> agrees 1e-5 v efficient (rules tiny) y seedNode [ x ])))

        testPropertyWithConfig (config 30) "equals the gradient form on Llama-style blocks, at the input and at every layer output" (fun (seed: int) ->
            let m = llama seed false
            let seedNode = Seeds.at m.Output m.Target
            generic m.Values m.Output (fun () ->
                explicitForms |> List.forall (fun (efficient, rules) ->
                    agrees 1e-6 m.Values efficient (rules tiny) m.Output seedNode (m.Input :: m.Layers))))

        /// The gradient form divides by no stabiliser (its ε-rule is the plain gradient), the explicit form divides
        /// by z + ε·sign(z) at every ε-step (linear layers, sums, the ½ rule). Each step scales a share by
        /// z/(z + ε·sign z) = 1 − ε/|z| + O(ε²), so the forms differ by O(ε): a hundredfold smaller ε gives a
        /// roughly hundredfold smaller difference, until float64 rounding is reached. That holds once ε is well below
        /// the smallest |z| of an ε-step (the error is about ε/(|z| + ε) there, saturating when |z| ≲ ε), so the
        /// property asks for a difference that never grows as ε falls from 1e-5 to 1e-9 and shrinks at least
        /// hundredfold over that range, on bias-free graphs (a bias can cancel Wx to near 0 with large shares).
        testPropertyWithConfig (config 30) "differs from the gradient form by O(ε): the difference shrinks with ε" (fun (seed: int) ->
            let m = llama seed false
            let seedNode = Seeds.at m.Output m.Target
            generic m.Values m.Output (fun () ->
              explicitForms |> List.forall (fun (efficient, rules) ->
                let errs = [ 1e-5; 1e-7; 1e-9 ] |> List.map (fun eps -> fst (disagreement m.Values efficient (rules eps) m.Output seedNode [ m.Input ]))
                let shrinks = List.pairwise errs |> List.forall (fun (coarse, fine) -> fine <= coarse || fine < 1e-8)
                let ok = shrinks && (List.last errs <= List.head errs / 100.0 || List.last errs < 1e-8)
                if not ok then printfn "seed %d %s: errors %A at ε = 1e-5, 1e-7, 1e-9" seed (rules 0.0).Name errs
                ok)))

        testPropertyWithConfig (config 30) "with ε = 0, explicit CP-LRP conserves exactly on bias-free Llama-style blocks" (fun (seed: int) ->
            let m = llama seed false
            let seedNode = Seeds.at m.Output m.Target
            let r = eval m.Values [ Explicit.relevance (Explicit.cpLrp 0.0) m.Output seedNode [ m.Input ] |> List.head
                                    reduceSum [ 0; 1 ] false (mul m.Output seedNode) ]
            let sum, logit = Array.sum r.[0], r.[1].[0]
            Math.Abs(sum - logit) <= 1e-9 * (1.0 + Math.Abs logit))

        /// With ε = 0 every ε-step divides by z itself, which is what the plain gradient does; what remains is float64
        /// rounding, amplified where the explicit form divides a relevance by a small z (about 1e-8 at worst here).
        testPropertyWithConfig (config 20) "with ε = 0 and biases, the explicit form equals the gradient form: biases absorb in both" (fun (seed: int) ->
            let m = llama seed true
            let seedNode = Seeds.at m.Output m.Target
            generic m.Values m.Output (fun () ->
                explicitForms |> List.forall (fun (efficient, rules) -> agrees 1e-6 m.Values efficient (rules 0.0) m.Output seedNode (m.Input :: m.Layers))))

        test "a graph a gradient-form rule set has rewritten gives the same explicit relevance as the model graph" {
            let m = llama 11 false
            let seedNode = Seeds.at m.Output m.Target
            let rewritten = Lrp.rewrite RuleSets.attnLrp [ m.Output ] |> List.head
            let r = eval m.Values [ Explicit.relevance (Explicit.attnLrp tiny) m.Output seedNode [ m.Input ] |> List.head
                                    Explicit.relevance (Explicit.attnLrp tiny) rewritten seedNode [ m.Input ] |> List.head ]
            Expect.equal r.[1] r.[0] "markers are stripped before propagating"
        }

        testList "an op without an explicit rule fails, naming it" [
            for opName, build in
                [ "Exp", (fun (h: Node) -> exp h)
                  "Div", (fun h -> div (scalar 1.0) (addScalar 3.0 (square h)))
                  "ReduceMax", (fun h -> reduceMax [ 1 ] true h) ] do
                yield test opName {
                    let v = Values(Random 1)
                    let h = named "hidden" (matmul (v.Input("x", [| 2; 3 |])) (v.Parameter("w", [| 3; 3 |])))
                    let y = named "out" (build h)
                    let e = Expect.throwsC (fun () -> Explicit.relevance (Explicit.attnLrp tiny) y (v.Seed y) [ h ] |> ignore) id
                    match e with
                    | :? Explicit.MissingRelevanceRuleException as m ->
                        Expect.equal m.Op opName "the op is named"
                        Expect.stringContains m.Message (Node.Describe y) "the node is named"
                    | other -> failtestf "expected MissingRelevanceRuleException, got %O" other
                }
            yield test "but not when no relevance passes through it" {
                let v = Values(Random 2)
                let x = v.Input("x", [| 2; 3 |])
                // exp of a parameter is a constant; the RMSNorm's square sits under its constant scale
                let y = rmsNorm v "norm" (mul x (exp (v.Parameter("w", [| 3 |]))))
                let r = eval v (Explicit.relevance (Explicit.attnLrp tiny) y (v.Seed y) [ x ])
                Expect.isTrue (Array.forall Double.IsFinite r.[0]) "finite relevance"
            }
        ]

        testList "on the llama fixture" [
            test "AttnLRP: explicit equals the gradient form per token and per layer, and matches the reference" {
                let f, values, logits, inputNode, layers, target = llamaFixture ()
                let seedNode = Seeds.at logits [ target ]
                let at = inputNode :: layers
                let r = Evaluate.reference values (Lrp.relevance RuleSets.attnLrp logits seedNode at @ Explicit.relevance (Explicit.attnLrp tiny) logits seedNode at)
                let width = inputNode.Shape.[1]
                let efficient, explicitForm = perToken width r.[0], perToken width r.[at.Length]
                let err = relErr explicitForm efficient
                printfn "llama AttnLRP: explicit vs efficient per token %.3g, per element %.3g" err (relErr r.[at.Length] r.[0])
                Expect.isLessThan err 1e-6 "explicit vs efficient, per token"
                for i in 1 .. layers.Length do
                    Expect.isLessThan (relErr (perToken width r.[at.Length + i]) (perToken width r.[i])) 1e-6 (sprintf "layer %d" (i - 1))
                let reference = relErr explicitForm (f.Doubles "relevance")
                printfn "llama AttnLRP: explicit vs reference JSON %.3g" reference
                Expect.isLessThan reference 3e-7 "explicit vs the reference's relevance"
                Expect.isLessThan (relErr (r.[at.Length]) (f.Doubles "embedding_relevance")) 3e-7 "explicit vs the reference's embedding relevance"
                let latent = [| for i in 1 .. layers.Length do yield! perToken width r.[at.Length + i] |]
                Expect.isLessThan (relErr latent (f.Doubles "latent_relevance_per_layer")) 3e-7 "explicit vs the reference's latent relevance"
            }
            test "CP-LRP: explicit equals the gradient form per token" {
                let _, values, logits, inputNode, _, target = llamaFixture ()
                let seedNode = Seeds.at logits [ target ]
                let r = Evaluate.reference values (Lrp.relevance RuleSets.cpLrp logits seedNode [ inputNode ] @ Explicit.relevance (Explicit.cpLrp tiny) logits seedNode [ inputNode ])
                let width = inputNode.Shape.[1]
                let err = relErr (perToken width r.[1]) (perToken width r.[0])
                printfn "llama CP-LRP: explicit vs efficient per token %.3g" err
                Expect.isLessThan err 1e-6 "explicit vs efficient, per token"
            }
        ]
    ]
