// Specifications of the LRP rules: one property per rule, conservation on random transformer blocks, clean swaps
// between rule sets, Gamma against Zennit's formula, and the conservation checker finding planted faults.
module Lxt.Tests.RulesTests

open System
open Expecto
open FsCheck
open FsCheck.FSharp
open Lxt.Graph
open Lxt.Graph.Ops
open Lxt.Rules

let private config n = { FsCheckConfig.defaultConfig with maxTest = n }

type private Values = Evaluate.LeafValues

let private eval (v: Values) (nodes: Node list) = Evaluate.reference v.Map nodes
let private total (xs: float[]) = Array.sum xs
let private close (tol: float) (a: float) (b: float) = Math.Abs(a - b) <= tol * (1.0 + Math.Abs a + Math.Abs b)

// ---- a small transformer, built from core ops the way the facade will build one ----

type private Model = { Output: Node; Input: Node; Values: Values; Target: int list }

let private linear (v: Values) (withBias: bool) (name: string) (x: Node) (outDim: int) =
    let inDim = x.Shape.[x.Shape.Length - 1]
    let y = matmul x (v.Parameter(name + ".weight", [| inDim; outDim |], 1.0 / Math.Sqrt(float inDim)))
    named name (if withBias then add y (v.Parameter(name + ".bias", [| outDim |], 0.3)) else y)

let private rmsNorm (v: Values) (name: string) (x: Node) =
    let d = x.Shape.[x.Shape.Length - 1]
    let scale = rsqrt (addScalar 1e-6 (reduceMean [ -1 ] true (square x)))
    named name (mul (mul x scale) (v.Parameter(name + ".weight", [| d |])))

let private attention (v: Values) withBias (name: string) (heads: int) (x: Node) =
    let t, d = x.Shape.[0], x.Shape.[1]
    let dh = d / heads
    let q, k, value = linear v withBias (name + ".q_proj") x d, linear v withBias (name + ".k_proj") x d, linear v withBias (name + ".v_proj") x d
    let causal = constant [| t; t |] (Array.init (t * t) (fun i -> if i % t <= i / t then 1.0 else 0.0))
    let head h =
        let part (m: Node) = slice 1 (h * dh) ((h + 1) * dh) m
        let scores = scale (1.0 / Math.Sqrt(float dh)) (matmul (part q) (transpose 0 1 (part k)))
        let weights = softmax -1 (where causal scores (fill [| t; t |] Double.NegativeInfinity))
        matmul weights (part value)
    linear v withBias (name + ".o_proj") (concat 1 [ for h in 0 .. heads - 1 -> head h ]) d

let private gatedMlp (v: Values) withBias (name: string) (act: Node -> Node) (x: Node) =
    let d = x.Shape.[1]
    let gate = linear v withBias (name + ".gate_proj") x (2 * d)
    let up = linear v withBias (name + ".up_proj") x (2 * d)
    linear v withBias (name + ".down_proj") (mul (named (name + ".act_fn") (act gate)) up) d

/// Decoder layers over embeddings (or over conv patches of an image when `vision`), then a norm and a head.
let private transformer (seed: int) (withBias: bool) (vision: bool) : Model =
    let v = Values(Random seed)
    let rng = v.Rng
    let d, heads, layers, vocab = 4, 1 + rng.Next 2, 1 + rng.Next 2, 5
    let act = [| silu; geluErf; geluTanh; relu |].[rng.Next 4]
    let x0, t =
        if vision then
            let image = v.Input("pixels", [| 1; 2; 4; 4 |])
            let conv = conv2d (2, 2) (0, 0) image (v.Parameter("patch.weight", [| d; 2; 2; 2 |], 0.5))
            let conv = if withBias then add conv (v.Parameter("patch.bias", [| d; 1; 1 |], 0.3)) else conv
            transpose 0 1 (reshape [| d; 4 |] (named "patch" conv)), 4
        else
            let t = 2 + rng.Next 3
            v.Input("embeddings", [| t; d |]), t
    let mutable x = x0
    for i in 0 .. layers - 1 do
        let p = sprintf "model.layers.%d" i
        let h = named (p + ".attn_residual") (add x (attention v withBias (p + ".self_attn") heads (rmsNorm v (p + ".input_layernorm") x)))
        x <- named p (add h (gatedMlp v withBias (p + ".mlp") act (rmsNorm v (p + ".post_attention_layernorm") h)))
    let logits = named "lm_head" (matmul (rmsNorm v "model.norm" x) (v.Parameter("lm_head.weight", [| d; vocab |])))
    { Output = logits; Input = (if vision then (Traverse.topo [ logits ] |> Array.find (fun n -> n.Name = Some "pixels")) else x0)
      Values = v; Target = [ t - 1; rng.Next vocab ] }

let private allRuleSets =
    [ RuleSets.attnLrp
      RuleSets.cpLrp
      RuleSets.epsilon 0.0
      RuleSets.epsilon 1e-6
      RuleSets.gamma (0.25, 0.05)
      RuleSets.cpLrpGamma (0.25, 0.05)
      RuleSets.gradient
      RuleSets.inputXGradient
      RuleSets.composite [ NameGlob "*.mlp.*", RuleSets.cpLrp; OpKind "Conv2d", RuleSets.gamma (0.25, 0.0) ] RuleSets.attnLrp ]

/// Zennit's Gamma rule on y = xW + b, written out index by index.
let private zennitGamma (gamma: float) (x: float[,]) (w: float[,]) (b: float[]) (grad: float[,]) =
    let n, din, dout = Array2D.length1 x, Array2D.length2 x, Array2D.length2 w
    let stab z = z + (if z >= 0.0 then 1e-6 else -1e-6)
    let wPlus = Array2D.map (fun v -> v + gamma * max v 0.0) w
    let wMinus = Array2D.map (fun v -> v + gamma * min v 0.0) w
    let bPlus, bMinus = b |> Array.map (fun v -> v + gamma * max v 0.0), b |> Array.map (fun v -> v + gamma * min v 0.0)
    let xp, xn = Array2D.map (fun v -> max v 0.0) x, Array2D.map (fun v -> min v 0.0) x
    let layer (a: float[,]) (m: float[,]) (bias: float[]) i j = bias.[j] + Seq.sum (seq { for p in 0 .. din - 1 -> a.[i, p] * m.[p, j] })
    let zero = Array.zeroCreate dout
    Array2D.init n din (fun i p ->
        Seq.sum (seq {
            for j in 0 .. dout - 1 do
                let z0 = layer x w b i j
                let r = z0 * grad.[i, j]
                let z12 = layer xp wPlus bPlus i j + layer xn wMinus zero i j
                let z34 = layer xp wMinus bMinus i j + layer xn wPlus zero i j
                if z0 > 0.0 then yield (xp.[i, p] * wPlus.[p, j] + xn.[i, p] * wMinus.[p, j]) * r / stab z12
                if z0 < 0.0 then yield (xp.[i, p] * wMinus.[p, j] + xn.[i, p] * wPlus.[p, j]) * r / stab z34 }))

let tests =
    testList "rules" [
        testPropertyWithConfig (config 40) "ε-LRP conserves relevance on bias-free linear chains" (fun (seed: int) ->
            let v = Values(Random seed)
            let rng = v.Rng
            let rows = 1 + rng.Next 3
            let mutable x = v.Input("x", [| rows; 2 + rng.Next 4 |])
            let e = x
            for i in 1 .. 1 + rng.Next 4 do
                x <- matmul x (v.Parameter(sprintf "w%d" i, [| x.Shape.[1]; 2 + rng.Next 4 |]))
                match rng.Next 4 with
                | 0 -> x <- relu x
                | 1 -> x <- silu x
                | _ -> ()
            let seed = v.Seed x
            let r = Lrp.relevance (RuleSets.epsilon 1e-9) x seed [ e ] |> List.head
            let results = eval v [ r; reduceSum [ 0; 1 ] false (mul x seed) ]
            close 1e-6 (total results.[0]) results.[1].[0])

        testPropertyWithConfig (config 30) "the uniform rule splits a product of two input-dependent factors exactly in half" (fun (seed: int) ->
            let v = Values(Random seed)
            let x = v.Input("x", [| 2; 3 |])
            let a = named "a" (matmul x (v.Parameter("w1", [| 3; 4 |])))
            let b = if seed % 3 = 0 then a else named "b" (matmul x (v.Parameter("w2", [| 3; 4 |])))
            let y = named "y" (mul a b)
            let rs = Lrp.relevance RuleSets.attnLrp y (v.Seed y) [ a; b; y ]
            let r = eval v rs
            let ra, rb, ry = r.[0], r.[1], r.[2]
            if obj.ReferenceEquals(a, b) then Array.forall2 (close 1e-12) ra ry
            else Array.forall2 (close 1e-12) ra rb && Array.forall2 (fun (p: float) q -> close 1e-12 (2.0 * p) q) ra ry)

        testPropertyWithConfig (config 30) "the ½ rule on A·B with both factors input-dependent splits exactly" (fun (seed: int) ->
            let v = Values(Random seed)
            let x = v.Input("x", [| 3; 2 |])
            let a = named "A" (matmul x (v.Parameter("w1", [| 2; 4 |])))
            let b = named "B" (transpose 0 1 (matmul x (v.Parameter("w2", [| 2; 4 |]))))
            let y = named "Y" (matmul a b)
            let r = eval v (Lrp.relevance RuleSets.attnLrp y (v.Seed y) [ a; b; y ])
            let sa, sb, sy = total r.[0], total r.[1], total r.[2]
            close 1e-12 sa sb && close 1e-12 (sa + sb) sy)

        testPropertyWithConfig (config 40) "the softmax rule is x ⊙ (R − s·ΣR) on any axis, masked −∞ entries get 0" (fun (seed: int) ->
            let v = Values(Random seed)
            let rng = v.Rng
            let shape = Array.init (2 + rng.Next 2) (fun _ -> 2 + rng.Next 3)
            let axis = rng.Next shape.Length
            let strides = Shape.strides shape
            let keep = Array.init (Shape.numel shape) (fun i -> if (i / strides.[axis]) % shape.[axis] = 0 || rng.Next 3 > 0 then 1.0 else 0.0)
            let scores = named "scores" (where (constant shape keep) (scale 3.0 (v.Input("x", shape))) (fill shape Double.NegativeInfinity))
            let s = softmax axis scores
            let seed = v.Seed s
            let r = Lrp.relevance RuleSets.attnLrp s seed [ scores ] |> List.head
            let res = eval v [ r; scores; s; seed ]
            let rel, x, sv, g = res.[0], res.[1], res.[2], res.[3]
            let n = shape.[axis]
            Array.init rel.Length id |> Array.forall (fun i ->
                let k = (i / strides.[axis]) % n
                let first = i - k * strides.[axis]
                let sumR = Seq.sum (seq { for j in 0 .. n - 1 -> let m = first + j * strides.[axis] in sv.[m] * g.[m] })
                let expected = if Double.IsNegativeInfinity x.[i] then 0.0 else x.[i] * (sv.[i] * g.[i] - sv.[i] * sumR)
                Double.IsFinite rel.[i] && close 1e-12 rel.[i] expected))

        testList "the identity rule on a nonlinearity gives R_x = R_y" [
            for name, f in [ "silu", silu; "gelu", geluErf; "gelu-tanh", geluTanh; "tanh", tanh; "sigmoid", sigmoid; "relu", relu ] ->
                testPropertyWithConfig (config 20) name (fun (seed: int) ->
                    let v = Values(Random seed)
                    let z = named "z" (matmul (v.Input("x", [| 3; 2 |])) (v.Parameter("w", [| 2; 4 |], 3.0)))
                    let y = named "y" (f z)
                    let seedNode = v.Seed y
                    let reference = { RuleSets.attnLrp with Rules = [ Rules.identityWith (Stabilizer.additive Rules.IdentityEpsilon) ] }
                    let r = eval v (Lrp.relevance RuleSets.attnLrp y seedNode [ z; y ] @ Lrp.relevance reference y seedNode [ z ])
                    Array.forall2 (close 1e-7) r.[0] r.[1] && Array.forall2 (close 1e-7) r.[0] r.[2])
        ]

        test "the sign-aware stabiliser never flips a sign; the reference's z + ε does near −ε" {
            let z = input "z" [| 3 |] Float
            let values = Map [ "z", [| -5e-11; 0.0; 2.0 |] ]
            let r = Evaluate.reference values [ div z (Stabilizer.signAware 1e-10 z); div z (Stabilizer.additive 1e-10 z) ]
            Expect.isTrue (r.[0] |> Array.forall (fun q -> q >= 0.0 && q <= 1.0)) (sprintf "z/stab(z) in [0, 1]: %A" r.[0])
            Expect.isLessThan r.[1].[0] -0.5 "z + ε flips the sign of z = −ε/2"
        }

        testPropertyWithConfig (config 40) "CP-LRP conserves exactly on bias-free attention + gated MLP blocks" (fun (seed: int) ->
            let m = transformer seed false false
            let seedNode = Seeds.at m.Output m.Target
            let res = eval m.Values [ Lrp.relevance RuleSets.cpLrp m.Output seedNode [ m.Input ] |> List.head; reduceSum [ 0; 1 ] false (mul m.Output seedNode) ]
            let sum, logit = total res.[0], res.[1].[0]
            if Math.Abs(sum - logit) > 1e-9 * (1.0 + Math.Abs logit) then printfn "seed %d: Σ R %.15g vs logit %.15g" seed sum logit
            Math.Abs(sum - logit) <= 1e-9 * (1.0 + Math.Abs logit))

        testPropertyWithConfig (config 40) "AttnLRP on the same blocks is finite but not exactly conservative" (fun (seed: int) ->
            let m = transformer seed false false
            let seedNode = Seeds.at m.Output m.Target
            let res = eval m.Values [ Lrp.relevance RuleSets.attnLrp m.Output seedNode [ m.Input ] |> List.head; reduceSum [ 0; 1 ] false (mul m.Output seedNode) ]
            let sum, logit = total res.[0], res.[1].[0]
            Array.forall Double.IsFinite res.[0] && Math.Abs(sum - logit) > 1e-9)

        testPropertyWithConfig (config 25) "rewriting with A then with B equals rewriting the original with B, for all pairs" (fun (seed: int) ->
            let m = transformer seed (seed % 2 = 0) (seed % 3 = 0)
            let g = m.Output
            obj.ReferenceEquals(Lrp.strip [ g ] |> List.head, g)
            && allRuleSets |> List.forall (fun a ->
                let ga = Lrp.rewrite a [ g ] |> List.head
                allRuleSets |> List.forall (fun b ->
                    let ok = obj.ReferenceEquals(Lrp.rewrite b [ ga ] |> List.head, Lrp.rewrite b [ g ] |> List.head)
                    if not ok then printfn "seed %d: %s then %s differs from %s" seed a.Name b.Name b.Name
                    ok)))

        testPropertyWithConfig (config 20) "rule sets keep the forward value" (fun (seed: int) ->
            let m = transformer seed true (seed % 2 = 0)
            let plain = (eval m.Values [ m.Output ]).[0]
            allRuleSets |> List.forall (fun rs ->
                let out = (eval m.Values (Lrp.rewrite rs [ m.Output ])).[0]
                Array.forall2 (close 1e-9) plain out))

        testPropertyWithConfig (config 20) "Gamma with γ = 0 equals ε-LRP" (fun (seed: int) ->
            let m = transformer seed true (seed % 2 = 0)
            let seedNode = Seeds.at m.Output m.Target
            let r = eval m.Values (Lrp.relevance (RuleSets.gamma (0.0, 0.0)) m.Output seedNode [ m.Input ] @ Lrp.relevance (RuleSets.epsilon 1e-6) m.Output seedNode [ m.Input ])
            Array.forall2 (close 1e-9) r.[0] r.[1])

        testPropertyWithConfig (config 30) "Gamma matches Zennit's formula on a linear layer with bias" (fun (seed: int) ->
            let v = Values(Random seed)
            let n, din, dout = 1 + v.Rng.Next 3, 2 + v.Rng.Next 3, 2 + v.Rng.Next 3
            let gamma = [| 0.0; 0.05; 0.25; 1.0; 100.0 |].[v.Rng.Next 5]
            let x = v.Input("x", [| n; din |])
            let y = named "fc" (add (matmul x (v.Parameter("w", [| din; dout |]))) (v.Parameter("b", [| dout |])))
            let seedNode = v.Seed y
            let r = eval v (Lrp.relevance (RuleSets.gamma (0.0, gamma)) y seedNode [ x ] @ [ seedNode ])
            let to2d rows (a: float[]) = Array2D.init rows (a.Length / rows) (fun i j -> a.[i * (a.Length / rows) + j])
            let expected = zennitGamma gamma (to2d n v.Map.["x"]) (to2d din v.Map.["w"]) v.Map.["b"] (to2d n r.[1])
            r.[0] |> Array.mapi (fun i got -> close 1e-10 got expected.[i / din, i % din]) |> Array.forall id)

        testPropertyWithConfig (config 20) "Gamma conserves on bias-free convolutions" (fun (seed: int) ->
            let v = Values(Random seed)
            let image = v.Input("image", [| 1; 2; 5; 5 |])
            let y = conv2d (1, 1) (1, 1) image (v.Parameter("w", [| 3; 2; 3; 3 |]))
            let seedNode = v.Seed y
            let r = eval v (Lrp.relevance (RuleSets.gamma (0.25, 0.0)) y seedNode [ image ] @ [ reduceSum [ 0; 1; 2; 3 ] false (mul y seedNode); seedNode ])
            // each output loses at most ε·|g| to the stabiliser
            Math.Abs(total r.[0] - r.[1].[0]) <= Rules.GammaEpsilon * Array.sumBy (fun (g: float) -> Math.Abs g) r.[2] + 1e-12)

        test "a composite picks rules by name and op kind, first match wins" {
            let m = transformer 7 false false
            let rs = RuleSets.composite [ NameGlob "*.mlp.*", RuleSets.cpLrp; OpKind "Softmax", RuleSets.cpLrp ] RuleSets.attnLrp
            let nodes = Traverse.topo (Lrp.rewrite rs [ m.Output ])
            let has name = nodes |> Array.exists (fun n -> n.Name = Some name)
            Expect.isTrue (has Markers.Wrap) "the gated MLP product (named *.mlp.*) got CP-LRP's stop-gradient on the gate"
            Expect.isTrue (nodes |> Array.exists (fun n -> match n.Op with StopGradient { Op = Softmax _ } -> true | _ -> false)) "softmax got CP-LRP"
            Expect.isTrue (nodes |> Array.exists (fun n -> match n.Op with GradientScale(0.5, { Op = MatMul _ }) -> true | _ -> false)) "QKᵀ kept AttnLRP's ½ rule"
        }

        test "seeds: one-hot and contrastive" {
            let y = input "y" [| 2; 3 |] Float
            let values = Evaluate.reference Map.empty [ Seeds.at y [ 1; 2 ]; Seeds.contrastive y [ 1; 2 ] [ [ 0; 0 ]; [ 1; 0 ] ] ]
            Expect.equal values.[0] [| 0.0; 0.0; 0.0; 0.0; 0.0; 1.0 |] "one-hot"
            Expect.equal values.[1] [| -0.5; 0.0; 0.0; -0.5; 0.0; 1.0 |] "+1 at the target, −1/N at the others"
        }

        testList "the conservation checker" [
            test "finds a leak planted by a bias and names the layer" {
                let v = Values(Random 3)
                let x = v.Input("x", [| 2; 3 |])
                let l1 = named "layer1" (matmul x (v.Parameter("w1", [| 3; 4 |])))
                let l2 = named "layer2" (add (matmul l1 (v.Parameter("w2", [| 4; 4 |]))) (v.Parameter("b2", [| 4 |])))
                let out = named "logits" (matmul l2 (v.Parameter("w3", [| 4; 2 |])))
                let report = Conservation.check (new ReferenceBackend()) (RuleSets.epsilon 0.0) out (Seeds.at out [ 1; 0 ]) v.Map AllNamed 1e-9
                Expect.equal (report.Rows |> List.map (fun r -> r.Name)) [ "x"; "layer1"; "layer2"; "logits" ] (Conservation.toString report)
                Expect.equal (report.FirstLeak |> Option.map (fun r -> r.Name)) (Some "layer2") (Conservation.toString report)
                Expect.isNone report.FirstNonFinite "no NaN"
            }
            test "finds a NaN planted by the log of a negative number" {
                let v = Values(Random 4)
                let x = v.Input("x", [| 2; 3 |])
                let l1 = named "layer1" (matmul x (v.Parameter("w1", [| 3; 4 |])))
                let bad = named "bad" (log l1)
                let out = named "logits" (matmul bad (v.Parameter("w3", [| 4; 2 |])))
                let report = Conservation.check (new ReferenceBackend()) RuleSets.attnLrp out (Seeds.at out [ 0; 1 ]) v.Map AllNamed 1e-9
                Expect.equal (report.FirstNonFinite |> Option.map (fun r -> r.Name)) (Some "bad") (Conservation.toString report)
            }
            testPropertyWithConfig (config 20) "finds no leak in CP-LRP on bias-free layers" (fun (seed: int) ->
                let m = transformer seed false false
                let report = Conservation.check (new ReferenceBackend()) RuleSets.cpLrp m.Output (Seeds.at m.Output m.Target) m.Values.Map (NamesMatching "model.layers.?") 1e-9
                if report.FirstLeak.IsSome then printfn "%s" (Conservation.toString report)
                report.FirstLeak.IsNone && report.Rows.Length >= 3)
        ]
    ]
