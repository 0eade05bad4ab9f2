// Attention as one op (FusedAttention): the rewrite keeps every value and gradient, under the rules' marks too; the
// mask is read off the constant exactly; the op rejects operands that do not fit; the fixtures explain the same.
module Lxt.Tests.FusedAttentionTests

open System
open System.Collections.Generic
open Expecto
open Lxt.Graph
open Lxt.Graph.Ops
open Lxt
open Lxt.Tests.Evaluate
open Lxt.Tests.FixtureTests

let private config n = { FsCheckConfig.defaultConfig with maxTest = n }

/// An attention as the graph builder writes it: Q [h, T, d] grouped as [kv, g·T, d], keys [kv, keys, d] transposed,
/// the product reshaped to [h, T, keys], scaled, masked by a constant (or not), softmax, ·V grouped, reshaped back.
/// `markProduct` wraps each product and `markSoftmax` the softmax as a rule set would (id: the model graph).
type AttentionCase =
    { Heads: int; KvHeads: int; T: int; Past: int; D: int; Dv: int; Scale: float
      Keep: (int -> int -> bool) option
      Q: Node; K: Node; V: Node; Values: Map<string, float[]> }
    member c.Keys = c.Past + c.T
    member c.Build(markProduct: Node -> Node, markSoftmax: Node -> Node) =
        let h, kv, t, keys = c.Heads, c.KvHeads, c.T, c.Keys
        let scores = mul (reshape [| h; t; keys |] (markProduct (matmul (reshape [| kv; h / kv * t; c.D |] c.Q) (transpose -1 -2 c.K)))) (scalar c.Scale)
        let masked =
            match c.Keep with
            | Some keep ->
                let mask = constant [| t; keys |] (Array.init (t * keys) (fun i -> if keep (i / keys) (i % keys) then 1.0 else 0.0))
                where mask scores (scalar Double.NegativeInfinity)
            | None -> scores
        let p = markSoftmax (softmax -1 masked)
        reshape [| h; t; c.Dv |] (markProduct (matmul (reshape [| kv; h / kv * t; keys |] p) c.V))

let private caseWith (rng: Random) (h, kv, t, past, d, dv) keep =
    let values = LeafValues rng
    let q, k, v = values.Input("q", [| h; t; d |]), values.Input("k", [| kv; past + t; d |]), values.Input("v", [| kv; past + t; dv |])
    { Heads = h; KvHeads = kv; T = t; Past = past; D = d; Dv = dv; Scale = 0.25 + rng.NextDouble(); Keep = keep
      Q = q; K = k; V = v; Values = values.Map }

let private caseOf (seed: int) =
    let rng = Random seed
    let kv = 1 + rng.Next 2
    let h = kv * (1 + rng.Next 3)
    let t, past, d, dv = 1 + rng.Next 7, rng.Next 4, 1 + rng.Next 5, 1 + rng.Next 4
    let keep =
        match rng.Next 3 with
        | 0 -> None
        | 1 -> Some(fun i j -> j <= past + i)
        | _ -> let w = 1 + rng.Next 3 in Some(fun i j -> j <= past + i && past + i - j < w)
    caseWith rng (h, kv, t, past, d, dv) keep

let private count (kind: Node -> bool) (roots: Node list) = Traverse.topo roots |> Array.filter kind |> Array.length
let private isAttention (n: Node) = match n.Op with Attention _ -> true | _ -> false
let private isSoftmax (n: Node) = match n.Op with Softmax _ -> true | _ -> false

let private close (a: float[]) (b: float[]) =
    Array.forall2 (fun (x: float) y -> Math.Abs(x - y) <= 1e-10 * (1.0 + Math.Abs x)) a b

let tests =
    testList "fused attention" [
        testPropertyWithConfig (config 120) "attention as one op keeps the value and the gradients of Q, K and V, under the rules' marks too" (fun (seed: int) ->
            let c = caseOf (seed &&& 0x7fffffff)
            let rng = Random seed
            let w = input "w" [| c.Heads; c.T; c.Dv |] Float
            let values = c.Values.Add("w", Array.init (c.Heads * c.T * c.Dv) (fun _ -> rng.NextDouble() * 2.0 - 1.0))
            let loss (o: Node) = reduceSum [ 0; 1; 2 ] false (mul o w)
            let marks =
                [ "no marks", id, id
                  "½ rule on both products", gradientScale 0.5, id
                  "½ rule and a stop-gradient on the softmax", gradientScale 0.5, stopGradient
                  "a gradient scale on the softmax", id, gradientScale 0.3 ]
            marks |> List.forall (fun (what, product, soft) ->
                let y = loss (c.Build(product, soft))
                let fused = (FusedAttention.rewrite (HashSet<Node>()) [ y ]).[y]
                let grads (root: Node) = Evaluate.reference values (Autodiff.vjp [ root, scalar 1.0 ] [ c.Q; c.K; c.V ])
                let isValueGradient (n: Node) = match n.Op with Attention(ValueGradient, _, _, _) -> true | _ -> false
                // with Q and K cut (a stop-gradient on the softmax), the backward pass computes dV alone
                let cutAtSoftmax = what.Contains "stop-gradient"
                let ok =
                    count isAttention [ fused ] = 1 && count isSoftmax [ fused ] = 0
                    && (count isValueGradient (Autodiff.vjp [ fused, scalar 1.0 ] [ c.Q; c.K; c.V ]) = 1) = cutAtSoftmax
                    && close (Evaluate.reference1 values y) (Evaluate.reference1 values fused)
                    && Array.forall2 close (grads y) (grads fused)
                if not ok then printfn "seed %d, %s: %A heads %d/%d, T %d, past %d" seed what c.Keep c.Heads c.KvHeads c.T c.Past
                ok))

        test "the mask is read off the constant exactly: causal at an offset, with a window, none, or not fused" {
            let keep t keys (f: int -> int -> bool) = ConstData.Of(Array.init (t * keys) (fun i -> if f (i / keys) (i % keys) then 1.0 else 0.0))
            Expect.equal (FusedAttention.maskOf (keep 4 4 (fun i j -> j <= i)) 4 4) (Some { Causal = true; Offset = 0; Window = None }) "causal"
            Expect.equal (FusedAttention.maskOf (keep 2 7 (fun i j -> j <= 5 + i)) 2 7) (Some { Causal = true; Offset = 5; Window = None }) "the last two of seven tokens"
            Expect.equal (FusedAttention.maskOf (keep 6 6 (fun i j -> j <= i && i - j < 3)) 6 6) (Some { Causal = true; Offset = 0; Window = Some 3 }) "a window of 3"
            Expect.equal (FusedAttention.maskOf (keep 3 3 (fun _ _ -> true)) 3 3) (Some AttentionMask.None) "every key"
            Expect.equal (FusedAttention.maskOf (keep 4 4 (fun i j -> j <= i && j <> 1)) 4 4) None "a hole"
            Expect.equal (FusedAttention.maskOf (keep 4 6 (fun i j -> j >= i)) 4 6) (Some { Causal = true; Offset = 5; Window = Some 6 }) "a band is a window"
            Expect.equal (FusedAttention.maskOf (keep 4 4 (fun i j -> j = 0 || j = i)) 4 4) None "the first key and the diagonal"
            Expect.equal (FusedAttention.maskOf (keep 3 3 (fun i j -> i > 0 && j <= i)) 3 3) None "a row kept nowhere"
        }

        test "attention stays as products where it must: weights asked for, a soft cap, a mask of another pattern" {
            let c = caseWith (Random 7) (4, 2, 5, 1, 3, 2) (Some(fun i j -> j <= 1 + i))
            let y = c.Build(id, id)
            let fusedCount (whole: Node list) (root: Node) = count isAttention [ (FusedAttention.rewrite (HashSet<Node>(whole, HashIdentity.Reference)) [ root ]).[root] ]
            Expect.equal (fusedCount [] y) 1 "causal: fused"
            let p = Traverse.topo [ y ] |> Array.find isSoftmax
            Expect.equal (fusedCount [ p ] y) 0 "weights asked for"
            let hole = { c with Keep = Some(fun i j -> j <= 1 + i && j <> 1) }.Build(id, id)
            Expect.equal (fusedCount [] hole) 0 "a mask with a hole"
            let h, kv, t, keys = c.Heads, c.KvHeads, c.T, c.Keys
            let scores = mul (reshape [| h; t; keys |] (matmul (reshape [| kv; h / kv * t; c.D |] c.Q) (transpose -1 -2 c.K))) (scalar c.Scale)
            let capped = reshape [| h; t; c.Dv |] (matmul (reshape [| kv; h / kv * t; keys |] (softmax -1 (mul (tanh scores) (scalar 2.0)))) c.V)
            Expect.equal (fusedCount [] capped) 0 "a soft cap"
        }

        test "attention ops reject operands that do not fit, naming them" {
            let q, k, v = input "q" [| 4; 3; 2 |] Float, input "k" [| 3; 5; 2 |] Float, input "v" [| 3; 5; 2 |] Float
            let causal = { Causal = true; Offset = 2; Window = None }
            let fails (what: string) (f: unit -> Node) =
                let ex = Expect.throwsC (fun () -> f () |> ignore) id
                Expect.isTrue (ex :? GraphShapeException) (sprintf "%s: a GraphShapeException, got %s" what (ex.GetType().Name))
                ex.Message
            Expect.stringContains (fails "heads" (fun () -> attention causal 1.0 q k v)) "not a multiple" "4 heads over 3 key/value heads"
            let k2, v2 = input "k2" [| 2; 5; 3 |] Float, input "v2" [| 2; 4; 2 |] Float
            Expect.stringContains (fails "dims" (fun () -> attention causal 1.0 q k2 (input "v" [| 2; 5; 2 |] Float))) "'k2'" "names the keys"
            Expect.stringContains (fails "values" (fun () -> attention causal 1.0 q (input "k" [| 2; 5; 2 |] Float) v2)) "'v2'" "names the values"
            let k4, v4 = input "k" [| 2; 5; 2 |] Float, input "v" [| 2; 5; 2 |] Float
            Expect.stringContains (fails "row" (fun () -> attention { Causal = true; Offset = 0; Window = Some 0 } 1.0 q k4 v4)) "mask" "a window of 0"
            let y = attentionPart Output causal 1.0 [ q; k4; v4 ]
            Expect.stringContains (fails "gradient" (fun () -> attentionPart Gradient causal 1.0 [ q; k4; v4; y; y; y ])) "row statistic" "statistics of the wrong shape"
            Expect.stringContains (fails "gradient of O alone" (fun () -> attentionPart Gradient causal 1.0 [ q; k4; v4; q; y; q ])) "does not match the output" "a gradient without L's column"
            Expect.equal (attention causal 1.0 q k4 v4).Shape [| 4; 3; 2 |] "fits: [heads, T, dv]"
            Expect.equal y.Shape [| 4; 3; 3 |] "the op's output: O and L, [heads, T, dv + 1]"
        }

        testList "the fixtures explain the same with attention as one op" [
            for name in [ "llama"; "qwen2"; "gpt2"; "qwen3_moe" ] do
                test (sprintf "%s: the reference's relevance, and that of attention as products in float64, latent relevance too" name) {
                    let f = load name
                    let explanations, graph =
                        explainEach f (fun m target layers -> [ for fused in [ false; true ] -> ExplainOptions(Method = m, Target = target, Nodes = layers, FusedAttention = fused) ])
                    let plain, fused = explanations.[0], explanations.[1]
                    let tol = if name = "qwen3_moe" then 1e-5 else 3e-7
                    Expect.isLessThan (relativeError fused.PerPosition (f.Doubles "relevance")) tol (sprintf "%s: the reference's relevance" name)
                    Expect.isLessThan (relativeError fused.PerPosition plain.PerPosition) 1e-12 (sprintf "%s: attention as products" name)
                    Expect.isLessThan (relativeError fused.Logits plain.Logits) 1e-12 (sprintf "%s: the logits" name)
                    for layer in graph.LayerOutputs do
                        Expect.isLessThan (relativeError (fused.PerToken layer) (plain.PerToken layer)) 1e-12 (sprintf "%s: latent relevance at %s" name layer)
                    // every attention of the explained graph is one op
                    let outputs = Explainer.RelevanceGraph(graph.Model.["logits"].Node, (graph.Model.Inputs |> Seq.find (fun i -> i.Name = graph.InputName)).Node, (methodOf f).RuleSet, 0, [||], false, false, true)
                    let layers = graph.LayerOutputs.Count
                    Expect.equal (count isAttention (List.ofArray outputs)) (2 * layers) (sprintf "%s: per layer the output (with its log-sum-exp) and the gradient" name)
                    // and so is every attention of the forward pass alone, where the backend chooses it
                    let logits = graph.Model.["logits"].Node
                    Expect.equal (count isAttention [ Explainer.ForwardGraph(logits, true) ]) layers (sprintf "%s: the forward pass, one op a layer" name)
                    Expect.equal (count isAttention [ Explainer.ForwardGraph(logits, false) ]) 0 (sprintf "%s: or products and a softmax" name)
                }
            for device in [ Device.Cpu; Device.IlgpuCpu ] do
                (if device = Device.IlgpuCpu then Paths.onIlgpuCpu else id) <| test (sprintf "llama on %A matches the reference with attention as one op" device) {
                    let f = load "llama"
                    let model, graph, input = prepare f
                    use model = model
                    use explainer = new Explainer(graph.Model, graph.InputName, model.WeightsFor graph, device)
                    let e = explainer.Explain(input, ExplainOptions(Method = Method.AttnLrp, Target = Nullable(f.Json.GetProperty("target").GetInt32()), FusedAttention = true))
                    Expect.isLessThan (relativeError e.PerPosition (f.Doubles "relevance")) 1e-4 "the reference's relevance in float32"
                    Expect.isLessThan (relativeError (explainer.Forward input) e.Logits) 1e-5 "the forward pass's logits, attention as the device chooses"
                }
        ]
    ]
