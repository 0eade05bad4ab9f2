// Generation with a key/value cache, explanations of generated tokens, neuron relevance, activation reports,
// steering and an ablation check of neuron relevance, on the reference fixtures.
module Lxt.Tests.GenerationTests

open System
open System.IO
open System.Text.Json
open Expecto
open Lxt
open Lxt.Import
open Lxt.Generation
open Lxt.Tests.FixtureTests

let private openModel (device: Device) (dir: string) =
    new LanguageModel(PretrainedModel.Open dir, device, ownsModel = true)

let private fixtureModel device name = openModel device (Path.Combine(Paths.fixtures, name))
let private promptOf name = (load name).Ints "input_ids"
let private noStop = GenerationOptions(StopTokens = ([||]: int[]))
let private argMax (v: double[]) = Sampler.ArgMax v
let private act0 = "model.layers.0.mlp.act_fn"
let private act1 = "model.layers.1.mlp.act_fn"

/// A copy of the llama fixture as a Mistral model with a sliding window of 3 tokens on every layer.
let private slidingWindowCopy () =
    let dir = Path.Combine(Path.GetTempPath(), sprintf "lxt-mistral-%s" (Guid.NewGuid().ToString "N"))
    Directory.CreateDirectory dir |> ignore
    let src = Path.Combine(Paths.fixtures, "llama")
    File.Copy(Path.Combine(src, "model.safetensors"), Path.Combine(dir, "model.safetensors"))
    let config = File.ReadAllText(Path.Combine(src, "config.json"))
    let patched = config.Replace("\"model_type\": \"llama\"", "\"model_type\": \"mistral\", \"sliding_window\": 3, \"use_sliding_window\": true")
    Expect.notEqual patched config "the config was patched"
    File.WriteAllText(Path.Combine(dir, "config.json"), patched)
    dir

/// Prefills the first `start` tokens, then feeds the rest one step at a time; every step's logits must match the
/// full recomputation over the same tokens.
let private checkCacheMatchesFull (lm: LanguageModel) (ids: int[]) (start: int) (tolerance: float) steering =
    let gen = Generator lm
    let state = gen.Prefill(ids.[.. start - 1], steering)
    let err0 = relativeError state.Logits (lm.NextTokenLogits(ids.[.. start - 1], steering))
    Expect.isLessThan err0 tolerance (sprintf "prefill logits: relative error %g" err0)
    for t in start .. ids.Length - 1 do
        let cached = gen.Step(state, ids.[t])
        let full = lm.NextTokenLogits(ids.[.. t], steering)
        let err = relativeError cached full
        Expect.isLessThan err tolerance (sprintf "step with %d cached tokens: relative error %g" t err)

let cacheTests =
    testList "key/value cache" [
        for device, precision, tolerance in [ Device.Reference, "float64", 1e-12; Device.Cpu, "float32", 1e-4 ] do
            for name in [ "llama"; "qwen2"; "gpt2"; "qwen3_moe" ] do
                test (sprintf "%s: decoding with the cache gives the logits of full recomputation in %s" name precision) {
                    use lm = fixtureModel device name
                    checkCacheMatchesFull lm (promptOf name) 4 tolerance null
                }
        test "a sliding window is respected by decoding steps" {
            let dir = slidingWindowCopy ()
            try
                use lm = openModel Device.Reference dir
                checkCacheMatchesFull lm (promptOf "llama") 2 1e-12 null
                // the window matters: the same weights without it predict otherwise
                use llama = fixtureModel Device.Reference "llama"
                let ids = promptOf "llama"
                Expect.isGreaterThan (relativeError (lm.NextTokenLogits ids) (llama.NextTokenLogits ids)) 1e-6 "the window changes the logits"
            finally Directory.Delete(dir, true)
        }
        test "encoders and image models refuse to generate, naming the model type" {
            let message =
                try (new LanguageModel(PretrainedModel.Open(Path.Combine(Paths.fixtures, "bert")), ownsModel = true)).Dispose(); ""
                with :? Lxt.Models.ModelConfigException as e -> e.Message
            Expect.stringContains message "'bert' is no causal language model" "names the type"
        }
        test "the prefill graph returns every layer's keys and values [kvHeads, T, headDim]" {
            use model = PretrainedModel.Open(Path.Combine(Paths.fixtures, "llama"))
            let g = model.BuildDecodingGraph(5, 0)
            for i in 0 .. 1 do
                Expect.sequenceEqual g.Model.[Lxt.Models.KeyValueCaches.PresentKey i].Shape [ 2; 5; 8 ] "keys"
                Expect.sequenceEqual g.Model.[Lxt.Models.KeyValueCaches.PresentValue i].Shape [ 2; 5; 8 ] "values"
            Expect.isEmpty (g.Model.Inputs |> Seq.filter (fun i -> i.Name.StartsWith "past.")) "no cache inputs"
            let step = model.BuildDecodingGraph(1, 5)
            Expect.sequenceEqual (step.Model.Inputs |> Seq.map (fun i -> i.Name) |> Seq.sort) [ "inputs_embeds"; "past.0.key"; "past.0.value"; "past.1.key"; "past.1.value" ] "cache inputs"
            Expect.sequenceEqual step.Model.[Lxt.Models.KeyValueCaches.PresentKey 1].Shape [ 2; 6; 8 ] "keys grow by one"
            Expect.sequenceEqual (step.Model.FindNode "model.layers.0.self_attn.attn_weights").Shape [ 4; 1; 6 ] "one query row over six keys"
            // the prefill as generation runs it: the last layer at the position the logits read, its keys and values whole
            let outputs = [ g.Model.["logits"]; g.Model.[Lxt.Models.KeyValueCaches.PresentKey 1]; g.Model.[Lxt.Models.KeyValueCaches.PresentValue 1] ]
            let pruned = Expr.AtRowsRead outputs
            let shapes (es: Expr seq) = es |> Seq.map (fun e -> List.ofSeq e.Shape) |> List.ofSeq
            Expect.equal (shapes pruned) (shapes outputs) "every output whole"
            let act = Lxt.Graph.Traverse.topo [ for e in pruned -> e.Node ] |> Array.filter (fun n -> n.Name = Some act1)
            Expect.equal (act |> Array.map (fun n -> List.ofArray n.Shape)) [| [ 1; (g.Model.FindNode act1).Shape.[1] ] |] "the last layer's MLP at one position"
            use session = new Session(g.Model, model.WeightsFor g, Device.Reference)
            let feeds = System.Collections.Generic.Dictionary(dict [ g.InputName, model.Embed(g, promptOf "llama" |> Array.take 5) ])
            let values (es: Expr seq) = session.Evaluate(Array.ofSeq es, feeds) |> Array.map (fun v -> v.ToDoubleArray())
            Array.iter2 (fun (a: double[]) b -> Expect.isLessThan (relativeError a b) 1e-12 "the same values") (values pruned) (values outputs)
        }
    ]

let generationTests =
    testList "generation" [
        for name in [ "llama"; "qwen2"; "gpt2" ] do
            test (sprintf "%s: greedy generation equals step-by-step arg-max of full recomputation" name) {
                use lm = fixtureModel Device.Cpu name
                let prompt = promptOf name
                let r = Generator(lm).Generate(prompt, 6, noStop)
                let mutable ids = List.ofArray prompt
                let expected = ResizeArray()
                for _ in 1 .. 6 do
                    let next = argMax (lm.NextTokenLogits(Array.ofList ids))
                    expected.Add next
                    ids <- ids @ [ next ]
                Expect.sequenceEqual r.Generated expected "same tokens"
                Expect.equal r.StopReason StopReason.MaxTokens "ran to the limit"
                Expect.equal r.StepLogits.Count 6 "logits per step"
            }
        test "recomputing without the cache generates the same tokens" {
            use lm = fixtureModel Device.Cpu "llama"
            let g = Generator lm
            let a = g.Generate(promptOf "llama", 5, noStop)
            let b = g.Generate(promptOf "llama", 5, GenerationOptions(StopTokens = ([||]: int[]), UseCache = false))
            Expect.sequenceEqual a.Generated b.Generated "same tokens"
        }
        test "seeded sampling is reproducible and stays within top-k" {
            use lm = fixtureModel Device.Cpu "llama"
            let g = Generator lm
            let options seed = GenerationOptions(StopTokens = ([||]: int[]), Temperature = 1.5, TopK = Nullable 3, Seed = seed)
            let a = g.Generate(promptOf "llama", 8, options 7)
            let b = g.Generate(promptOf "llama", 8, options 7)
            Expect.sequenceEqual a.Generated b.Generated "same seed, same tokens"
            for i in 0 .. a.Generated.Count - 1 do
                let logits = a.StepLogits.[i]
                let top3 = logits |> Array.mapi (fun j v -> j, v) |> Array.sortByDescending snd |> Array.take 3 |> Array.map fst
                Expect.contains top3 a.Generated.[i] "a top-3 token"
            let seeds = [ 0 .. 5 ] |> List.map (fun s -> List.ofSeq (g.Generate(promptOf "llama", 8, options s)).Generated) |> List.distinct
            Expect.isGreaterThan seeds.Length 1 "other seeds sample other tokens"
        }
        test "top-k 1 and a tiny top-p sample the arg-max" {
            use lm = fixtureModel Device.Cpu "llama"
            let g = Generator lm
            let greedy = g.Generate(promptOf "llama", 5, noStop)
            let k1 = g.Generate(promptOf "llama", 5, GenerationOptions(StopTokens = ([||]: int[]), Temperature = 1.0, TopK = Nullable 1, Seed = 3))
            let p0 = g.Generate(promptOf "llama", 5, GenerationOptions(StopTokens = ([||]: int[]), Temperature = 1.0, TopP = Nullable 1e-9, Seed = 3))
            Expect.sequenceEqual k1.Generated greedy.Generated "top-k 1"
            Expect.sequenceEqual p0.Generated greedy.Generated "top-p → 0"
        }
        test "generation stops after a stop token; eos_token_id comes from the config" {
            use lm = fixtureModel Device.Cpu "llama"
            Expect.sequenceEqual lm.StopTokens [ 2 ] "llama's eos_token_id"
            let g = Generator lm
            let greedy = g.Generate(promptOf "llama", 6, noStop)
            let stopAt = greedy.Generated.[2]
            let first = Seq.findIndex ((=) stopAt) greedy.Generated
            let r = g.Generate(promptOf "llama", 6, GenerationOptions(StopTokens = [| stopAt |]))
            Expect.equal r.StopReason StopReason.StopToken "stopped"
            Expect.sequenceEqual r.Generated (Seq.take (first + 1) greedy.Generated) "up to and including the stop token"
        }
        test "generation stops when the positions run out" {
            use lm = fixtureModel Device.Cpu "gpt2"
            let r = Generator(lm).Generate(Array.create 62 5, 10, noStop)
            Expect.equal r.StopReason StopReason.ContextFull "n_positions = 64"
            Expect.equal (r.Prompt.Count + r.Generated.Count) 65 "the last token is predicted from 64 positions"
        }
    ]

let explainTests =
    testList "explaining generated tokens" [
        test "a generated token is explained on the full graph of the sequence that predicted it" {
            use lm = fixtureModel Device.Reference "llama"
            let g = Generator lm
            let r = g.Generate(promptOf "llama", 4, noStop)
            let e = g.ExplainToken(r, 2)
            Expect.equal e.Target r.Generated.[2] "target: the generated token"
            Expect.equal e.PerPosition.Length (r.Prompt.Count + 2) "relevance over the prompt and two generated tokens"
            // the same explanation through the plain facade
            use model = PretrainedModel.Open(Path.Combine(Paths.fixtures, "llama"))
            let ids = Array.append (Array.ofSeq r.Prompt) (Array.ofSeq (Seq.take 2 r.Generated))
            let graph = model.BuildGraph ids.Length
            use explainer = new Explainer(graph.Model, graph.InputName, model.WeightsFor graph, Device.Reference)
            let direct = explainer.Explain(model.Embed(graph, ids), ExplainOptions(Target = Nullable r.Generated.[2]))
            Expect.isLessThan (relativeError e.PerPosition direct.PerPosition) 1e-12 "same relevance"
            let m = g.ExplainSequence r
            Expect.equal m.Generated 4 "a row per generated token"
            for i in 0 .. 3 do
                Expect.equal m.Rows.[i].Length (r.Prompt.Count + 4) "a column per token"
                for j in r.Prompt.Count + i .. m.Rows.[i].Length - 1 do Expect.equal m.[i, j] 0.0 "later tokens get nothing"
                Expect.isGreaterThan (Array.sumBy abs m.Rows.[i]) 0.0 "earlier tokens get relevance"
            Expect.sequenceEqual m.Rows.[2].[.. r.Prompt.Count + 1] e.PerPosition "row 2 is token 2's explanation"
        }
    ]

let neuronTests =
    testList "neuron relevance" [
        test "top-k neurons, heads and residual dimensions sum the node's relevance" {
            use lm = fixtureModel Device.Reference "llama"
            let ids = promptOf "llama"
            let heads = "model.layers.1.self_attn.attn_weights"
            let e = lm.Explain(ids, ExplainOptions(Nodes = [| act0; heads; "model.layers.0" |]))
            for node, n in [ act0, 64; heads, 4; "model.layers.0", 32 ] do
                let per = e.RelevancePerNeuron node
                Expect.equal per.Length n (sprintf "%s: one value per neuron" node)
                let total = e.Nodes.[node].ToDoubleArray() |> Array.sum
                Expect.floatClose Accuracy.high (Array.sum per) total "per-neuron sums add up to the node's relevance"
                let byToken = [| for t in 0 .. ids.Length - 1 -> e.RelevancePerNeuron(node, Nullable t) |]
                for j in 0 .. n - 1 do
                    Expect.floatClose Accuracy.high (byToken |> Array.sumBy (fun r -> r.[j])) per.[j] "tokens add up"
                let top = e.TopNeurons(node, 3)
                Expect.equal top.Count 3 "k neurons"
                Expect.equal top.[0].Value (Array.max per) "the best first"
                Expect.isTrue (top.[0].Value >= top.[1].Value && top.[1].Value >= top.[2].Value) "descending"
            let viaApi = NeuronAnalysis.TopNeurons(lm, ids, act0, 5)
            Expect.sequenceEqual (viaApi |> Seq.map (fun s -> s.Index)) (e.TopNeurons(act0, 5) |> Seq.map (fun s -> s.Index)) "the same through NeuronAnalysis"
        }
        test "corpus statistics are the mean of the per-example relevance" {
            use lm = fixtureModel Device.Reference "llama"
            let ids = promptOf "llama"
            let path = Path.Combine(Path.GetTempPath(), sprintf "lxt-corpus-%s.jsonl" (Guid.NewGuid().ToString "N"))
            try
                let lines =
                    [ sprintf "{\"input_ids\": [%s]}" (String.Join(",", ids))
                      ""
                      sprintf "{\"input_ids\": [%s], \"target\": 7}" (String.Join(",", ids.[.. 5]))
                      "{\"input_ids\": [3, 1, 4, 1, 5, 9, 2, 6]}" ]
                File.WriteAllLines(path, lines)
                let stats = NeuronAnalysis.Aggregate(lm, Corpus.Read path, [| act0; act1 |])
                Expect.equal stats.[act0].Examples 3 "three examples (the empty line skipped)"
                let expected =
                    [ ids, Nullable(); ids.[.. 5], Nullable 7; [| 3; 1; 4; 1; 5; 9; 2; 6 |], Nullable() ]
                    |> List.map (fun (x, t) -> lm.Explain(x, ExplainOptions(Target = t, Nodes = [| act1 |])).RelevancePerNeuron act1)
                let mean = Array.init 64 (fun j -> expected |> List.averageBy (fun r -> r.[j]))
                Expect.isLessThan (relativeError stats.[act1].MeanRelevance mean) 1e-12 "mean per neuron"
                let top = stats.[act1].TopK 4
                Expect.equal top.[0].Value (Array.max mean) "top-k over the mean"
                Expect.isTrue (stats.[act1].MeanAbsoluteRelevance |> Array.forall (fun v -> v >= 0.0)) "absolute means"
                File.WriteAllLines(path, [ "{\"text\": 3}" ])
                let message =
                    try Corpus.Read path |> List.ofSeq |> ignore; "" with :? CorpusException as e -> e.Message
                Expect.stringContains message ":1:" "the error names the line"
            finally File.Delete path
        }
    ]

let reportTests =
    testList "activation reports" [
        test "the report keeps the windows of highest activation and relevance and writes escaped HTML" {
            use lm = fixtureModel Device.Reference "llama"
            let ids = promptOf "llama"
            let path = Path.Combine(Path.GetTempPath(), sprintf "lxt-corpus-%s.jsonl" (Guid.NewGuid().ToString "N"))
            let html = Path.Combine(Path.GetTempPath(), sprintf "lxt-report-%s.html" (Guid.NewGuid().ToString "N"))
            try
                let corpus = [ ids; ids.[3 ..]; [| 5; 6; 7; 8; 9; 10 |]; Array.rev ids ]
                File.WriteAllLines(path, corpus |> List.map (fun x -> sprintf "{\"input_ids\": [%s]}" (String.Join(",", x))))
                let report = ActivationReport.Build(lm, Corpus.Read path, act0, 5, ActivationReportOptions(Window = 2, Top = 3))
                Expect.equal report.Examples 4 "every example"
                Expect.equal report.TopActivating.Count 3 "top 3"
                let peaks = report.TopActivating |> Seq.map (fun w -> w.Peak) |> Array.ofSeq
                Expect.equal peaks (Array.sortDescending peaks) "highest first"
                let best = report.TopActivating.[0]
                let example = corpus.[[ 1; 2; 3; 4 ] |> List.findIndex (fun l -> l = best.Line)]
                let act = lm.Activations(example, [| act0 |]).[act0]
                let column = Array.init example.Length (fun t -> act.[t * 64 + 5])
                Expect.floatClose Accuracy.high best.Peak (Array.max column) "the peak is the neuron's largest activation in that example"
                Expect.equal best.Tokens.[best.PeakIndex] (sprintf "#%d" example.[best.Position]) "the window is centred on the peak token"
                Expect.isLessThanOrEqual best.Tokens.Count 5 "two tokens each side"
                Expect.equal report.TopRelevant.Count 3 "top-relevant windows"
                report.WriteHtml html
                let text = File.ReadAllText html
                Expect.stringContains text "Top-relevant windows" "both lists"
                Expect.stringContains text (sprintf ">#%d<" example.[best.Position]) "tokens shown"
                Expect.isEmpty (Directory.GetFiles(Path.GetTempPath(), sprintf ".%s.*.tmp" (Path.GetFileName html))) "no temporary file left"
                let hostile =
                    ActivationReport(Node = "n<1>", Index = 0, Examples = 1, Method = "attnlrp",
                                     TopActivating = [| TextWindow(1, 0, 1.5, [| "<script>"; "a&b" |], [| 1.5; -0.5 |], 0) |],
                                     TopRelevant = [||])
                let h = hostile.ToHtml()
                Expect.isFalse (h.Contains "<script>") "token text is escaped"
                Expect.stringContains h "&lt;script&gt;" "escaped token"
                Expect.stringContains h "a&amp;b" "escaped ampersand"
                Expect.stringContains h "title=\"1.5\"" "values shown"
            finally
                File.Delete path
                if File.Exists html then File.Delete html
        }
    ]

let steeringTests =
    testList "steering" [
        test "specs parse and print back" {
            let s = Steer.Parse "model.layers.0.mlp.act_fn:12=+4.0"
            Expect.equal (s.Node, s.Index, s.Kind, s.Value) (act0, 12, SteerKind.Add, 4.0) "add"
            Expect.equal (Steer.Parse "x:3*0.5").Kind SteerKind.Scale "scale"
            Expect.equal (Steer.Parse "x:3=-2").Kind SteerKind.Clamp "clamp to a negative value"
            Expect.equal (Steer.Parse "x:3=+-2").Value -2.0 "add a negative value"
            Expect.equal (Steer.Parse "x:3+=1").Kind SteerKind.Add "+= adds"
            for spec in [ "x:3=+4"; "x:3*0.5"; "x:3=-2" ] do Expect.equal (string (Steer.Parse spec)) spec "round trip"
            for spec, fragment in [ "nocolon=3", "':'"; "x:a=3", "index 'a'"; "x:3=abc", "'abc' is not a finite number"; "x:3=+", "not a finite number"; "x:3/2", "expected an index"; "x:-1=2", "not a non-negative integer" ] do
                let message = try Steer.Parse spec |> ignore; "" with :? SteeringException as e -> e.Message
                Expect.stringContains message fragment (sprintf "'%s' is rejected clearly" spec)
        }
        test "unknown nodes and indices out of range are named" {
            use lm = fixtureModel Device.Cpu "llama"
            let struct (_, model) = lm.FullGraph 4
            let unknown = try Steering.Apply(model, [| Steer.Parse "model.layers.0.mlp.act:1=0" |]) |> ignore; "" with :? SteeringException as e -> e.Message
            Expect.stringContains unknown "no node named 'model.layers.0.mlp.act'" "names the node"
            Expect.stringContains unknown act0 "suggests close names"
            let outside = try Steering.Apply(model, [| Steer.Parse (act0 + ":64=0") |]) |> ignore; "" with :? SteeringException as e -> e.Message
            Expect.stringContains outside "outside the 64 neurons" "names the size"
        }
        test "steering by +0 or *1 leaves generation unchanged" {
            use lm = fixtureModel Device.Cpu "llama"
            let g = Generator lm
            let plain = g.Generate(promptOf "llama", 5, noStop)
            let neutral = Steer.ParseAll [ act0 + ":3=+0"; act1 + ":10*1"; "model.layers.0:5=+0" ]
            let steered = g.Generate(promptOf "llama", 5, GenerationOptions(StopTokens = ([||]: int[]), Steering = neutral))
            Expect.sequenceEqual steered.Generated plain.Generated "same tokens"
            for a, b in Seq.zip steered.StepLogits plain.StepLogits do
                Expect.isLessThan (relativeError a b) 1e-6 "same logits"
        }
        test "steering acts on decoding steps exactly as on full recomputation" {
            use lm = fixtureModel Device.Reference "llama"
            let steers = Steer.ParseAll [ act0 + ":7=3.0"; act1 + ":2*-2"; "model.layers.0.self_attn.attn_weights:1*0" ]
            checkCacheMatchesFull lm (promptOf "llama") 4 1e-12 steers
            let g = Generator lm
            let a = g.Generate(promptOf "llama", 5, GenerationOptions(StopTokens = ([||]: int[]), Steering = steers))
            let b = g.Generate(promptOf "llama", 5, GenerationOptions(StopTokens = ([||]: int[]), Steering = steers, UseCache = false))
            Expect.sequenceEqual a.Generated b.Generated "same tokens"
        }
        test "a large steer moves the next token's logits in the direction of the neuron's gradient" {
            use lm = fixtureModel Device.Reference "llama"
            let ids = promptOf "llama"
            let logits = lm.NextTokenLogits ids
            let target = argMax logits
            // in the last layer an MLP neuron reaches the last token's logits only at the last token, where the
            // gradient says which way the target logit moves
            let grad = lm.Explain(ids, ExplainOptions(Method = Method.Gradient, Target = Nullable target, Nodes = [| act1 |])).RelevancePerNeuron(act1, Nullable(ids.Length - 1))
            let up = Array.findIndex ((=) (Array.max grad)) grad
            let down = Array.findIndex ((=) (Array.min grad)) grad
            let steered (spec: string) = lm.NextTokenLogits(ids, Steer.ParseAll [ spec ])
            Expect.isGreaterThan (steered (sprintf "%s:%d=+0.5" act1 up)).[target] logits.[target] "adding along a positive gradient raises the target logit"
            Expect.isLessThan (steered (sprintf "%s:%d=+0.5" act1 down)).[target] logits.[target] "adding along a negative gradient lowers it"
            let clamped = steered (sprintf "%s:%d=50" act0 up)
            Expect.isGreaterThan (Array.map2 (fun (a: float) b -> abs (a - b)) clamped logits |> Array.max) 1e-2 "clamping a neuron to a big value changes the logits"
        }
    ]

/// Drop of the target logit when the given neurons of `node` are set to 0 at every token.
let private ablationEffect (lm: LanguageModel) (ids: int[]) (node: string) (target: int) (baseline: float) (neurons: int seq) =
    let steers = neurons |> Seq.map (fun j -> Steer(node, j, SteerKind.Clamp, 0.0)) |> Array.ofSeq
    baseline - (lm.NextTokenLogits(ids, steers)).[target]

let ablationTests =
    testList "ablation" [
        for node in [ act0; act1 ] do
            test (sprintf "ablating the most relevant neurons of %s lowers the target logit more than random neurons" node) {
                use lm = fixtureModel Device.Reference "llama"
                let ids = promptOf "llama"
                let logits = lm.NextTokenLogits ids
                let target = argMax logits
                let k = 5
                let top = NeuronAnalysis.TopNeurons(lm, ids, node, k, target = Nullable target) |> Seq.map (fun s -> s.Index) |> Array.ofSeq
                let topEffect = ablationEffect lm ids node target logits.[target] top
                let rng = Random 11
                let randomEffects =
                    [ for _ in 1 .. 12 -> ablationEffect lm ids node target logits.[target] (Seq.initInfinite (fun _ -> rng.Next 64) |> Seq.distinct |> Seq.take k) ]
                let mean = List.average randomEffects
                printfn "llama fixture, %s: top-%d ablation lowers the target logit by %.3f, random neurons by %.3f on average" node k topEffect mean
                Expect.isGreaterThan topEffect mean (sprintf "top-%d ablation lowers the logit by %g, random %d neurons by %g on average" k topEffect k mean)
            }
    ]

/// On the demo model the evidence (the animal) decides the sound: the MLP neurons AttnLRP ranks most relevant for the
/// predicted sound should matter more for it than random neurons of the same layer, summed over held-out examples.
let demoAblationTests =
    testList "ablation on the demo model" [
        for node in [ act0; act1 ] do
            test (sprintf "ablating the most relevant neurons of %s lowers the sound's logit more than random neurons" node) {
                use lm = openModel Device.Cpu (Lxt.Demo.DemoModel.Locate())
                let k = 5
                let rng = Random 17
                let mutable top, random = 0.0, 0.0
                for example in Lxt.Demo.DemoTask.Generate(20, 4242) do
                    let ids = example.Ids
                    let logits = lm.NextTokenLogits ids
                    let neurons = NeuronAnalysis.TopNeurons(lm, ids, node, k, target = Nullable example.Label) |> Seq.map (fun s -> s.Index)
                    top <- top + ablationEffect lm ids node example.Label logits.[example.Label] neurons
                    let draws = [ for _ in 1 .. 4 -> ablationEffect lm ids node example.Label logits.[example.Label] (Seq.initInfinite (fun _ -> rng.Next 64) |> Seq.distinct |> Seq.take k) ]
                    random <- random + List.average draws
                printfn "demo model, %s: top-%d ablation lowers the sound's logit by %.3f, random neurons by %.3f (sum over 20 examples)" node k top random
                Expect.isGreaterThan top random (sprintf "top-%d ablation %g vs random %g" k top random)
            }
    ]

let tests =
    testList "inside the model" [ demoAblationTests; cacheTests; generationTests; explainTests; neuronTests; reportTests; steeringTests; ablationTests ]
