// Specifications of gradient checkpointing: the backward pass recomputes activations between checkpoints, with the
// same values as without it and a peak memory that holds one segment's activations instead of every layer's.
module Lxt.Tests.CheckpointingTests

open System
open System.Collections.Generic
open Expecto
open Lxt
open Lxt.Graph
open Lxt.Graph.Ops
open Lxt.Models

let private config n = { FsCheckConfig.defaultConfig with maxTest = n }

/// Runs `outputs` compiled with `options` on `backend`; the outputs' values and the plan's peak intermediate bytes.
let private runWith (backend: IBackend) (options: PlanOptions) (values: Map<string, float[]>) (outputs: Node list) =
    let plan = Plan.compileWith options outputs
    let host, peak = HostEvaluation.run backend values plan
    host, peak, plan

/// Bit for bit (NaN equals NaN).
let private identical (a: float[][]) (b: float[][]) =
    a.Length = b.Length && Array.forall2 (fun (x: float[]) (y: float[]) -> x.Length = y.Length && Array.forall2 (fun (p: float) q -> p.Equals q) x y) a b

/// A chain of `layers` Llama-like blocks (RMS-norm, causal attention, gated MLP, residuals) over x [t, hidden], the
/// block outputs named `layers.{i}`, and the input gradient of a seeded loss: forward output, gradient, block outputs.
let private blocks (rng: Random) (layers: int) (t: int) (hidden: int) =
    let x = input "x" [| t; hidden |] Float
    let linear name (x: Node) outF = matmul x (transpose -1 -2 (parameter name [| outF; x.Shape.[1] |]))
    let norm (x: Node) = mul x (rsqrt (addScalar 1e-5 (reduceMean [ -1 ] true (square x))))
    let keep = constant [| t; t |] (Array.init (t * t) (fun i -> if i % t <= i / t then 1.0 else 0.0))
    let mutable h = x
    let outputs = ResizeArray<Node>()
    for i in 0 .. layers - 1 do
        let p s = sprintf "layers.%d.%s" i s
        let a = norm h
        let scores = where keep (scale (1.0 / Math.Sqrt(float hidden)) (matmul (linear (p "q") a hidden) (transpose -1 -2 (linear (p "k") a hidden)))) (scalar Double.NegativeInfinity)
        let h2 = add h (linear (p "o") (matmul (softmax 1 scores) (linear (p "v") a hidden)) hidden)
        let m = norm h2
        h <- named (sprintf "layers.%d" i) (add h2 (linear (p "down") (mul (silu (linear (p "gate") m (2 * hidden))) (linear (p "up") m (2 * hidden))) hidden))
        outputs.Add h
    let seed = constant h.Shape (Array.init (Shape.numel h.Shape) (fun _ -> rng.NextDouble() - 0.5))
    let gx = Autodiff.vjp [ reduceSum [ 0; 1 ] false (mul h seed), scalar 1.0 ] [ x ] |> List.head
    x, [ h; mul x gx ], List.ofSeq outputs

let private leafValues (rng: Random) (nodes: Node seq) =
    nodes
    |> Seq.choose (fun n -> match n.Op with Input s | Parameter s -> Some(s, Array.init (Shape.numel n.Shape) (fun _ -> (rng.NextDouble() * 2.0 - 1.0) * 0.5)) | _ -> None)
    |> Map.ofSeq

/// Every ⌈√L⌉-th of L nodes.
let private sqrtSpaced (nodes: Node list) =
    let every = int (Math.Ceiling(Math.Sqrt(float nodes.Length)))
    nodes |> List.indexed |> List.filter (fun (i, _) -> (i + 1) % every = 0) |> List.map snd

let private graphTests =
    testList "graphs" [
        testPropertyWithConfig (config 60) "for any choice of checkpoints, forward values and gradients of random graphs are bit-identical" (fun (seed: int) (depth: byte) ->
            let sample = RandomGraphs.build (seed &&& 0x7fffffff) (2 + int depth % 10) None
            let rng = Random seed
            let y = sample.Output
            let forward = Traverse.topo [ y ]
            let wrt = forward |> Array.filter (fun n -> match n.Op with Input _ -> n.DType = Float | _ -> false) |> List.ofArray
            let seedValues = constant y.Shape (Array.init (Shape.numel y.Shape) (fun _ -> rng.NextDouble() - 0.5))
            let grads = Autodiff.vjp [ y, seedValues ] wrt
            let outputs = y :: grads
            let checkpoints = forward |> Array.filter (fun _ -> rng.Next 3 = 0) |> List.ofArray
            let plain, _, _ = runWith (new ReferenceBackend()) PlanOptions.none sample.Values outputs
            let checkpointed, _, _ = runWith (new ReferenceBackend()) { Checkpoints = checkpoints } sample.Values outputs
            Expect.isTrue (identical plain checkpointed) sample.Description
            true)
        testPropertyWithConfig (config 15) "chains of attention blocks: any checkpoints give bit-identical gradients, and every checkpoint below the top starts a recomputed segment" (fun (seed: int) ->
            let rng = Random seed
            let x, outputs, layerOutputs = blocks rng (1 + rng.Next 4) (2 + rng.Next 6) (2 + rng.Next 6)
            let values = leafValues rng (Traverse.topo outputs)
            let checkpoints = (if rng.Next 2 = 0 then [ x ] else []) @ (layerOutputs |> List.filter (fun _ -> rng.Next 2 = 0))
            let plain, _, plainPlan = runWith (new ReferenceBackend()) PlanOptions.none values outputs
            let checkpointed, _, plan = runWith (new ReferenceBackend()) { Checkpoints = checkpoints } values outputs
            let recomputes = plan.Steps |> Array.filter (fun n -> match n.Op with Recompute _ -> true | _ -> false)
            Expect.isTrue (identical plain checkpointed) "identical"
            // in a chain every checkpoint but the topmost starts a recomputed segment
            let segments = max 0 (checkpoints.Length - 1)
            recomputes.Length = segments && (segments = 0 || plan.Steps.Length > plainPlan.Steps.Length))
        test "without checkpoints, a plan is compiled as before" {
            let _, outputs, _ = blocks (Random 1) 2 4 4
            let a, b = Plan.compile outputs, Plan.compileWith PlanOptions.none outputs
            Expect.isTrue (Array.forall2 (fun (p: Node) q -> obj.ReferenceEquals(p, q)) a.Steps b.Steps) "the same steps in the same order"
        }
        test "recomputed copies carry no names: a name addresses one node of a checkpointed plan" {
            let x, outputs, layerOutputs = blocks (Random 2) 3 4 4
            let plan = Plan.compileWith { Checkpoints = x :: layerOutputs } outputs
            let names = plan.Steps |> Array.choose (fun n -> n.Name)
            Expect.equal names.Length (Array.distinct names).Length "no name twice"
        }
        test "checkpointing every block holds one block's activations: the peak grows far less with depth" {
            let peak (layers: int) (checkpointed: bool) =
                let x, outputs, layerOutputs = blocks (Random 4) layers 32 32
                let values = leafValues (Random 5) (Traverse.topo outputs)
                let options = if checkpointed then { Checkpoints = x :: layerOutputs } else PlanOptions.none
                let _, bytes, _ = runWith (new Lxt.Backend.Cpu.CpuBackend(1)) options values outputs
                bytes
            let plain4, plain16 = peak 4 false, peak 16 false
            let ckpt4, ckpt16 = peak 4 true, peak 16 true
            let state = 32L * 32L * 4L
            Expect.isLessThan ckpt16 plain16 "checkpointing lowers the peak"
            // without: every block keeps its saved activations; with: one hidden state per block and one block's activations
            Expect.isGreaterThan (plain16 - plain4) (12L * 6L * state) "without checkpointing the peak grows by the saved activations"
            Expect.isLessThan (ckpt16 - ckpt4) (12L * 3L * state) "with it, by about one hidden state per block"
        }
    ]

// ---- fixtures and a deep random Llama, through the C# facade ----

let private explainWith (device: Device) (m: Method) (checkpointing: Checkpointing) (f: FixtureTests.Fixture) =
    let model, graph, input = FixtureTests.prepare f
    use model = model
    use explainer = new Explainer(graph.Model, graph.InputName, model.WeightsFor graph, device, LayerOutputs = graph.LayerOutputs)
    let options = ExplainOptions(Method = m, Target = Nullable(f.Json.GetProperty("target").GetInt32()), Nodes = graph.LayerOutputs,
                                 Checkpointing = checkpointing)
    graph, explainer.Explain(input, options)

let private maxAbsDiff (a: double[]) (b: double[]) =
    Expect.equal a.Length b.Length "same number of values"
    Array.map2 (fun (x: double) y -> Math.Abs(x - y)) a b |> Array.fold max 0.0

let private fixtureTests =
    testList "fixtures" [
        for device, precision, tolerance in [ Device.Reference, "float64", 1e-12; Device.Cpu, "float32", 1e-6 ] do
            for name in [ "llama"; "qwen2"; "gpt2"; "bert"; "vit-hf" ] do
                for m in [ Method.AttnLrp; Method.CpLrp ] do
                    test (sprintf "%s %s in %s: relevance at the input and every layer output is the same with checkpointing" name m.Id precision) {
                        let f = FixtureTests.load name
                        let graph, plain = explainWith device m Checkpointing.None f
                        for checkpointing in [ Checkpointing.EveryLayer; Checkpointing.SqrtLayers; Checkpointing.Products ] do
                            let _, ckpt = explainWith device m checkpointing f
                            let scale = 1.0 + (plain.InputRelevance.ToDoubleArray() |> Array.map Math.Abs |> Array.max)
                            let check what (a: double[]) (b: double[]) =
                                let d = maxAbsDiff a b
                                Expect.isLessThanOrEqual d (tolerance * scale) (sprintf "%s (%O): max difference %g" what checkpointing d)
                            check "logits" ckpt.Logits plain.Logits
                            check "input relevance" (ckpt.InputRelevance.ToDoubleArray()) (plain.InputRelevance.ToDoubleArray())
                            check "per-token relevance" ckpt.PerPosition plain.PerPosition
                            for layer in graph.LayerOutputs do
                                check layer (ckpt.Nodes.[layer].ToDoubleArray()) (plain.Nodes.[layer].ToDoubleArray())
                    }
    ]

let private llamaConfig (layers: int) =
    sprintf """{"model_type":"llama","hidden_size":64,"num_hidden_layers":%d,"num_attention_heads":4,"num_key_value_heads":2,
                "intermediate_size":128,"vocab_size":64,"rms_norm_eps":1e-5,"rope_theta":10000.0}""" layers

/// The relevance pass's peak intermediate bytes for a random Llama of `layers` layers over 64 tokens, and its relevance,
/// with attention as the device chooses (`fused` None) or as one op or not.
let llamaPeakWith (fused: bool option) (device: Device) (layers: int) (checkpointing: Checkpointing) =
    let graph = Architectures.Build(ModelConfig.Parse(llamaConfig layers), 64)
    let weights = Weights.Random(graph.Model, seed = 3, std = 0.1)
    let rng = Random 5
    let input = Array.init (graph.InputShape |> Seq.fold (*) 1) (fun _ -> float32 (rng.NextDouble() * 2.0 - 1.0))
    use explainer = new Explainer(graph.Model, graph.InputName, weights, device, LayerOutputs = graph.LayerOutputs)
    let e = explainer.Explain(input, ExplainOptions(Target = Nullable 7, Checkpointing = checkpointing, FusedAttention = Option.toNullable fused))
    explainer.Session.PeakIntermediateBytes, e.InputRelevance.ToDoubleArray()

let llamaPeak = llamaPeakWith None

let private llamaTests =
    testList "a deeper random Llama" [
        test "checkpointing lowers the relevance pass's peak; without it the peak grows linearly with layers, with it far less" {
            let peaks =
                [ for layers in [ 4; 8; 16 ] ->
                    let plain, r = llamaPeak Device.Cpu layers Checkpointing.None
                    let every, r1 = llamaPeak Device.Cpu layers Checkpointing.EveryLayer
                    let sqrt, r2 = llamaPeak Device.Cpu layers Checkpointing.SqrtLayers
                    Expect.isLessThanOrEqual (maxAbsDiff r1 r) 1e-6 "same relevance (every layer)"
                    Expect.isLessThanOrEqual (maxAbsDiff r2 r) 1e-6 "same relevance (√L)"
                    printfn "llama %2d layers, 64 tokens, hidden 64, float32: peak %d B plain, %d B every layer, %d B every √L-th" layers plain every sqrt
                    layers, (plain, every, sqrt) ]
            let at l = peaks |> List.find (fst >> (=) l) |> snd
            let p4, e4, s4 = at 4
            let p16, e16, s16 = at 16
            for _, (p, e, s) in peaks do
                Expect.isLessThan e p "checkpointing every layer lowers the peak"
                Expect.isLessThan s p "checkpointing every √L-th layer lowers the peak"
            let growth a b = float (b - a)
            Expect.isLessThan (growth e4 e16) (0.25 * growth p4 p16) "every layer: the peak grows by a quarter of the plain growth at most"
            Expect.isLessThan (growth s4 s16) (0.5 * growth p4 p16) "every √L-th: the peak grows sub-linearly"
            Expect.isLessThan (float e16) (0.5 * float p16) "at 16 layers checkpointing halves the peak at least"
        }
        test "float64 reference: bit-identical relevance with and without checkpointing on an 8-layer random Llama" {
            let _, plain = llamaPeak Device.Reference 8 Checkpointing.None
            let _, every = llamaPeak Device.Reference 8 Checkpointing.EveryLayer
            let _, sqrt = llamaPeak Device.Reference 8 Checkpointing.SqrtLayers
            Expect.equal every plain "every layer"
            Expect.equal sqrt plain "every √L-th layer"
        }
        test "every named checkpointing choice parses from its name, and nothing else does" {
            for c in Checkpointing.Named do
                let ok, parsed = Checkpointing.TryParse c.Id
                Expect.isTrue ok c.Id
                Expect.isTrue (obj.ReferenceEquals(parsed, c)) (sprintf "%s is the same choice" c.Id)
            Expect.equal [ for c in Checkpointing.Named -> c.Id ] [ "none"; "layers"; "sqrt"; "products" ] "the names"
            Expect.isFalse (fst (Checkpointing.TryParse "every layer")) "a description is no name"
            Expect.isNull (Checkpointing.At("model.layers.0").Id) "named nodes have no name of their own"
            Expect.equal Checkpointing.NamesInWords "none, layers, sqrt, products or products:GiB" "in words"
            let ok, within = Checkpointing.TryParse "products:2.5"
            Expect.isTrue ok "products with a budget in GiB"
            Expect.equal within.IntermediateBudget (Nullable (5L <<< 29)) "2.5 GiB"
            Expect.equal within.Id "products:2.5" "named by its budget"
            Expect.isTrue within.AtProducts "at the products"
            for bad in [ "products:"; "products:0"; "products:-1"; "products:x"; "products:1e30" ] do
                Expect.isFalse (fst (Checkpointing.TryParse bad)) bad
        }
        test "checkpointing needs layer outputs or named checkpoints" {
            let graph = Architectures.Build(ModelConfig.Parse(llamaConfig 2), 4)
            use explainer = new Explainer(graph.Model, graph.InputName, Weights.Random(graph.Model), Device.Reference)
            let input = Array.zeroCreate (graph.InputShape |> Seq.fold (*) 1)
            Expect.throwsT<InvalidOperationException> (fun () -> explainer.Explain(input, ExplainOptions(Target = Nullable 1, Checkpointing = Checkpointing.EveryLayer)) |> ignore) "no layer outputs"
            let plain = explainer.Explain(input, ExplainOptions(Target = Nullable 1))
            let named = explainer.Explain(input, ExplainOptions(Target = Nullable 1, Checkpointing = Checkpointing.At("model.layers.0")))
            Expect.equal (named.InputRelevance.ToDoubleArray()) (plain.InputRelevance.ToDoubleArray()) "Checkpointing.At"
        }
    ]

/// The explanation graph of a random Llama as Explainer builds it (rewritten logits, then input relevance), its
/// product checkpoints, and the MatMul and Recompute steps of its plan compiled with and without them.
let private productPlans (layers: int) (tokens: int) =
    let graph = Architectures.Build(ModelConfig.Parse(llamaConfig layers), tokens)
    let output, x = graph.Model.["logits"].Node, graph.Model.Inputs |> Seq.find (fun i -> i.Name = graph.InputName)
    let rules = Method.AttnLrp.RuleSet
    let seed = input "lxt.seed" output.Shape Float
    let relevance = Lxt.Rules.Lrp.relevance rules output seed [ x.Node ]
    let rewritten = Lxt.Rules.Lrp.rewrite rules [ output ] |> List.head
    let outputs = rewritten :: relevance
    let checkpoints = Explainer.ProductCheckpoints(x.Node, Expr rewritten) |> Seq.map (fun e -> e.Node) |> List.ofSeq
    let count (plan: Plan) f = plan.Steps |> Array.filter (fun (n: Node) -> f n.Op) |> Array.length
    let isMatMul = function MatMul _ -> true | _ -> false
    let isRecompute = function Recompute _ -> true | _ -> false
    let plain, products = Plan.compileWith PlanOptions.none outputs, Plan.compileWith { Checkpoints = checkpoints } outputs
    checkpoints, (count plain isMatMul, count products isMatMul), count products isRecompute

let private productTests =
    testList "checkpoints at the matrix products" [
        test "the input and every MatMul and Reduce of the rewritten forward pass are the checkpoints; the plan recomputes no MatMul" {
            // 16 tokens, heads of 16 dimensions: no product outgrows its operands
            let checkpoints, (plainMatMuls, productMatMuls), recomputes = productPlans 3 16
            let matmuls = checkpoints |> List.filter (fun n -> match n.Op with MatMul _ -> true | _ -> false)
            let reductions = checkpoints |> List.filter (fun n -> match n.Op with Reduce _ -> true | _ -> false)
            // per layer: q, k, v, o, q·kᵀ, attention·v, gate, up, down; and the lm_head
            Expect.equal matmuls.Length (3 * 9 + 1) "every product of the forward pass"
            // per layer the mean squares of two RMSNorms; and the final norm's
            Expect.equal reductions.Length (3 * 2 + 1) "every reduction of the forward pass"
            Expect.equal checkpoints.Length (matmuls.Length + reductions.Length + 1) "and the input"
            Expect.equal productMatMuls plainMatMuls "as many MatMul steps as without checkpointing"
            Expect.isGreaterThan recomputes 3 "segments between products are recomputed"
        }
        test "with more tokens than a head's dimensions, the attention scores are no checkpoint: one product per layer is recomputed" {
            let checkpoints, (plainMatMuls, productMatMuls), _ = productPlans 3 64
            let matmuls = checkpoints |> List.filter (fun n -> match n.Op with MatMul _ -> true | _ -> false)
            // 64 tokens, heads of 16 dimensions: q·kᵀ of a group of two query heads is [2, 128, 64], four times q
            Expect.equal matmuls.Length (3 * 8 + 1) "every product but q·kᵀ"
            Expect.isTrue (matmuls |> List.forall (fun n -> n.Shape <> [| 2; 128; 64 |])) "no attention scores kept"
            Expect.equal productMatMuls (plainMatMuls + 3) "q·kᵀ recomputed once per layer"
        }
        test "many checkpoints: a 16-layer model's plan (hundreds of checkpoints) compiles quickly" {
            let clock = Diagnostics.Stopwatch.StartNew()
            let checkpoints, (plainMatMuls, productMatMuls), _ = productPlans 16 8
            Expect.isGreaterThan checkpoints.Length 140 "well over a hundred checkpoints"
            Expect.equal productMatMuls plainMatMuls "no MatMul recomputed"
            Expect.isLessThan clock.Elapsed.TotalSeconds 30.0 "compiles in linear time"
        }
        test "float64 reference: bit-identical relevance with and without product checkpoints on an 8-layer random Llama" {
            let _, plain = llamaPeak Device.Reference 8 Checkpointing.None
            let _, products = llamaPeak Device.Reference 8 Checkpointing.Products
            Expect.equal products plain "bit-identical"
        }
        test "within a budget: the attention probabilities of as many layers as fit are kept, the relevance is the same, and the peak stays within the budget" {
            // 64 tokens, heads of 16 dimensions: the probabilities [2, 128, 64] of a group outgrow q, so products
            // recompute q·kᵀ and the softmax in each layer's backward pass unless the probabilities are kept
            // (attention as products and a softmax: as one op it has no probabilities to keep)
            let llamaPeak = llamaPeakWith (Some false)
            let plain, r = llamaPeak Device.Cpu 8 Checkpointing.None
            let products, rp = llamaPeak Device.Cpu 8 Checkpointing.Products
            let within (budget: int64) = llamaPeak Device.Cpu 8 (Checkpointing.ProductsWithin budget)
            let tight, rt = within 1L
            Expect.equal tight products "a budget too small for any layer's probabilities: the products' plan"
            Expect.equal rt rp "and its relevance"
            let ample, ra = within (plain * 4L)
            Expect.isGreaterThan ample products "an ample budget keeps every layer's probabilities"
            Expect.isLessThanOrEqual ample (plain * 4L) "within the budget"
            let between = (products + ample) / 2L
            let middle, rm = within between
            Expect.isLessThanOrEqual middle between "within a budget between the two"
            Expect.isGreaterThan middle products "some layers' probabilities kept"
            Expect.isLessThan middle ample "not every layer's"
            for relevance in [ ra; rm ] do
                Expect.isLessThanOrEqual (maxAbsDiff relevance r) 1e-6 "the relevance without checkpointing"
            printfn "llama 8 layers, 64 tokens, float32: peak %d B at the products, %d B within %d B, %d B keeping every layer's probabilities, %d B without checkpointing" products middle between ample plain
            // the float64 reference plans no lazy transposes, so no dry run can plan a budget for it
            let e = Expect.throwsC (fun () -> llamaPeak Device.Reference 2 (Checkpointing.ProductsWithin 1000000L) |> ignore) id
            Expect.isTrue (e :? NotSupportedException) (sprintf "a typed error, not %s" (e.GetType().Name))
            Expect.stringContains e.Message "Checkpointing.Products" "says what to use instead"
        }
        test "float32 CPU: the same relevance and a lower peak than without checkpointing, and no layer outputs needed" {
            let plain, r = llamaPeak Device.Cpu 8 Checkpointing.None
            let products, rp = llamaPeak Device.Cpu 8 Checkpointing.Products
            printfn "llama 8 layers, 64 tokens, hidden 64, float32: peak %d B plain, %d B at the products" plain products
            Expect.isLessThanOrEqual (maxAbsDiff rp r) 1e-6 "same relevance"
            Expect.isLessThan products plain "checkpointing at the products lowers the peak"
            let graph = Architectures.Build(ModelConfig.Parse(llamaConfig 2), 4)
            use explainer = new Explainer(graph.Model, graph.InputName, Weights.Random(graph.Model), Device.Reference)
            let input = Array.create (graph.InputShape |> Seq.fold (*) 1) 0.1f
            let a = explainer.Explain(input, ExplainOptions(Target = Nullable 1))
            let b = explainer.Explain(input, ExplainOptions(Target = Nullable 1, Checkpointing = Checkpointing.Products))
            Expect.equal (b.InputRelevance.ToDoubleArray()) (a.InputRelevance.ToDoubleArray()) "without LayerOutputs"
        }
    ]

let private dryRunTests =
    Paths.onIlgpuCpu <| testList "dry runs" [
        test "a dry run plans as the backend it mirrors: the same intermediate peak with and without checkpointing, and computes nothing" {
            // 24 tokens: the attention scores [4, 24, 24] outgrow q [4, 24, 16], so products recompute them
            let graph = Architectures.Build(ModelConfig.Parse(llamaConfig 1), 24)
            let weights = Weights.Random(graph.Model, seed = 3, std = 0.1)
            let input = Array.create (graph.InputShape |> Seq.fold (*) 1) 0.1f
            let create () = Lxt.Backend.Gpu.GpuBackend.Create(Lxt.Backend.Gpu.GpuKind.CpuAccelerator)
            use decisions = create ()
            let dry = new DryRunBackend(decisions)
            let real = create ()
            // each session owns its backend and disposes it; plans are released between choices, so each peak is its own
            using (new Session(graph.Model, weights, real)) (fun realSession ->
                using (new Session(graph.Model, weights, dry)) (fun drySession ->
                    for checkpointing in [ Checkpointing.None; Checkpointing.Products; Checkpointing.EveryLayer ] do
                        let run (session: Session) =
                            session.ReleasePlans()
                            let explainer = new Explainer(graph.Model, graph.InputName, session, LayerOutputs = graph.LayerOutputs)
                            let e = explainer.Explain(input, ExplainOptions(Target = Nullable 7, Checkpointing = checkpointing))
                            session.PeakIntermediateBytes, e.InputRelevance.ToDoubleArray()
                        real.ResetPeak()
                        let realPeak, realRelevance = run realSession
                        dry.ResetPeak()
                        let dryPeak, dryRelevance = run drySession
                        let what = string checkpointing
                        Expect.equal dryPeak realPeak (sprintf "%s: the same intermediate peak" what)
                        Expect.isTrue (dryRelevance |> Array.forall ((=) 0.0)) (sprintf "%s: a dry run computes nothing" what)
                        Expect.isTrue (realRelevance |> Array.exists ((<>) 0.0)) (sprintf "%s: the real run computes" what)
                        // the backend's own peak may add scratch of its own
                        Expect.isLessThanOrEqual dry.PeakBytes real.PeakAllocatedBytes (sprintf "%s: no more than the real backend held" what)
                        Expect.isGreaterThan dry.PeakBytes dryPeak (sprintf "%s: weights, inputs and outputs besides the intermediates" what)))
            Expect.equal dry.LiveBytes 0L "every buffer given back"
            Expect.throwsT<ArgumentException> (fun () -> new DryRunBackend(new ReferenceBackend()) |> ignore) "plans as backends with lazy transposes"
        }
        test "a dry run counts bfloat16 matrix weights at two bytes and float32 ones at four" {
            let graph = Architectures.Build(ModelConfig.Parse(llamaConfig 2), 16)
            let weights = Weights.Random(graph.Model, seed = 3, std = 0.1)
            let input = Array.create (graph.InputShape |> Seq.fold (*) 1) 0.1f
            let held (precision: Lxt.Backend.Gpu.GemmPrecision) =
                use decisions = Lxt.Backend.Gpu.GpuBackend.Create(Lxt.Backend.Gpu.GpuKind.CpuAccelerator, precision)
                decisions.NarrowValuesFrom <- Int32.MaxValue // computed values in float32 alike: the weights tell the plans apart
                let dry = new DryRunBackend(decisions)
                use session = new Session(graph.Model, weights, dry)
                use explainer = new Explainer(graph.Model, graph.InputName, session)
                explainer.Explain(input, ExplainOptions(Target = Nullable 1)) |> ignore
                dry.LiveBytes, session.PeakIntermediateBytes
            let f32, f32Peak = held Lxt.Backend.Gpu.GemmPrecision.Float32
            let bf16, bf16Peak = held Lxt.Backend.Gpu.GemmPrecision.BFloat16
            // every weight matrix is read only by products: [64, 64] q and o, [32, 64] k and v, [128, 64] gate, up and down
            let matrices = 2 * (2 * 64 * 64 + 2 * 32 * 64 + 3 * 128 * 64) + 64 * 64
            Expect.equal bf16Peak f32Peak "the same plan"
            Expect.equal (f32 - bf16) (int64 matrices * 2L) "each matrix weight held in half the bytes"
        }
    ]

let tests = testList "checkpointing" [ graphTests; fixtureTests; llamaTests; productTests; dryRunTests ]
