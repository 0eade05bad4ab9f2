// Attribution baselines and the perturbation evaluation: completeness, rollout's stochastic rows, occlusion's sums,
// ABPC ordering on linear models where the oracle attribution is known, determinism and the report formats.
module Lxt.Tests.EvaluationTests

open System
open System.IO
open System.Text.Json
open System.Threading
open Expecto
open Lxt
open Lxt.Evaluation

/// N(0, std²) draws from a fixed seed.
let private gaussian (seed: int) (std: float) (n: int) =
    let rng = Random seed
    Array.init n (fun _ -> float32 (std * Math.Sqrt(-2.0 * Math.Log(1.0 - rng.NextDouble())) * Math.Cos(2.0 * Math.PI * rng.NextDouble())))

/// logits = W · flatten(x) for x [tokens, width]: the oracle relevance of x_i for class c is x_i · W[c, i].
let linearExplainer tokens width classes (w: float32[]) =
    let b = GraphBuilder()
    let x = b.Input("x", tokens, width)
    let logits = b.Linear("head", x.Reshape(1, tokens * width), classes, bias = false).Reshape(classes).Named("logits")
    let weights = Weights().Set("head.weight", w, classes, tokens * width)
    new Explainer(b.Build("logits", logits), "x", weights, Device.Reference)

/// A small smooth nonlinear model: logits = W₂ · silu(W₁ · tanh-squashed flatten(x)) + b.
let nonlinearExplainer () =
    let b = GraphBuilder()
    let x = b.Input("x", 3, 4)
    let h = b.Linear("l1", x.Reshape(1, 12), 8).Tanh()
    let h = b.Linear("l2", h, 8).Silu()
    let logits = b.Linear("l3", h * h, 3).Reshape(3).Named("logits")
    let model = b.Build("logits", logits)
    new Explainer(model, "x", Weights.Random(model, 7, 0.8), Device.Reference)

/// The oracle for a linear model: x ⊙ W[target].
let oracle (w: float32[]) (inputLength: int) =
    { new IAttributionMethod with
        member _.Id = "oracle"
        member _.Name = "x ⊙ w"
        member this.Attribute(context: AttributionContext, input: float32[], target: Nullable<int>, _cancellation: CancellationToken) =
            let t = context.ResolveTarget(input, target)
            let r = Array.init input.Length (fun i -> float input.[i] * float w.[t * inputLength + i])
            context.CreateAttribution(this, t, context.Forward(input).[t], r, TimeSpan.Zero) }

let private completenessError (context: AttributionContext) (ig: IntegratedGradients) (input: float32[]) (target: int) =
    let baseline = match ig.Baseline with null -> Array.zeroCreate input.Length | b -> b
    let a = ig.Attribute(context, input, Nullable target)
    let expected = context.Forward(input).[target] - context.Forward(baseline).[target]
    Math.Abs(a.RelevanceSum - expected), Math.Abs expected

let private fixtureContext (device: Device) (name: string) =
    let f = FixtureTests.load name
    let model, graph, input = FixtureTests.prepare f
    let explainer = new Explainer(graph.Model, graph.InputName, model.WeightsFor graph, device)
    model, explainer, AttributionContext.For(graph, explainer), input, f.Json.GetProperty("target").GetInt32()

let private samplesOf (inputs: float32[] list) =
    inputs |> List.map (fun x -> EvaluationSample(Input = x)) |> Array.ofList

let tests =
    testList "attribution and evaluation" [
        testList "integrated gradients" [
            test "completeness on a small nonlinear graph: Σ R → f(x) − f(0), the error shrinking with the steps" {
                use e = nonlinearExplainer ()
                let context = AttributionContext(e)
                let x = gaussian 3 1.0 12
                let errors =
                    [ 2; 8; 32 ] |> List.map (fun steps -> fst (completenessError context (IntegratedGradients(Steps = steps, Rule = IntegrationRule.Trapezoid)) x 1))
                let _, scale = completenessError context (IntegratedGradients(Steps = 1)) x 1
                Expect.isLessThan errors.[1] errors.[0] (sprintf "8 steps beat 2: %A" errors)
                Expect.isLessThan errors.[2] errors.[1] (sprintf "32 steps beat 8: %A" errors)
                Expect.isLessThan errors.[2] (1e-3 * scale) (sprintf "32 trapezoid steps are within 1e-3 of %g: %A" scale errors)
            }
            test "every quadrature rule converges, and a custom baseline gives f(x) − f(x′)" {
                use e = nonlinearExplainer ()
                let context = AttributionContext(e)
                let x = gaussian 4 1.0 12
                let baseline = gaussian 5 0.3 12
                for rule in Enum.GetValues<IntegrationRule>() do
                    let coarse, _ = completenessError context (IntegratedGradients(Steps = 4, Rule = rule, Baseline = baseline)) x 0
                    let fine, scale = completenessError context (IntegratedGradients(Steps = 64, Rule = rule, Baseline = baseline)) x 0
                    Expect.isLessThan fine (max coarse 1e-9) (sprintf "%A: 64 steps (%g) beat 4 (%g)" rule fine coarse)
                    Expect.isLessThan fine (2e-2 * scale) (sprintf "%A: 64 steps are within 2%% of %g" rule scale)
            }
            test "quadrature weights sum to 1 on [0, 1]" {
                for rule in Enum.GetValues<IntegrationRule>() do
                    let struct (alphas, weights) = IntegratedGradients.Quadrature(rule, 10)
                    Expect.floatClose Accuracy.high (Array.sum weights) 1.0 (sprintf "%A weights" rule)
                    Expect.isTrue (alphas |> Array.forall (fun a -> a >= 0.0 && a <= 1.0)) (sprintf "%A points in [0, 1]" rule)
            }
            test "completeness on the llama fixture from a padding-token baseline, the error shrinking with the steps" {
                let f = FixtureTests.load "llama"
                let model, graph, input = FixtureTests.prepare f
                use _ = model
                use explainer = new Explainer(graph.Model, graph.InputName, model.WeightsFor graph, Device.Reference)
                let context = AttributionContext.For(graph, explainer)
                let target = f.Json.GetProperty("target").GetInt32()
                // token 0's embedding at every position: the zero embedding would put the path through RMSNorm's
                // singular point (see IntegratedGradients), where no quadrature converges in a test's budget
                let baseline = model.Embed(graph, Array.zeroCreate context.Tokens)
                let errors =
                    [ 8; 32; 128 ] |> List.map (fun steps ->
                        completenessError context (IntegratedGradients(Steps = steps, Rule = IntegrationRule.Trapezoid, Baseline = baseline)) input target)
                let scale = snd errors.[0]
                let errors = errors |> List.map fst
                Expect.isLessThan errors.[1] errors.[0] (sprintf "32 steps beat 8: %A" errors)
                Expect.isLessThan errors.[2] errors.[1] (sprintf "128 steps beat 32: %A" errors)
                Expect.isLessThan errors.[2] (1e-3 * scale) (sprintf "128 trapezoid steps are within 1e-3 of f(x) − f(x′) = %g" scale)
                let gauss, _ = completenessError context (IntegratedGradients(Steps = 32, Baseline = baseline)) input target
                Expect.isLessThan gauss (1e-5 * scale) "32 Gauss–Legendre points (the default rule) are within 1e-5"
            }
        ]

        testList "attention rollout" [
            test "rows sum to 1 and a causal model's rollout is zero above the diagonal (llama)" {
                let model, explainer, context, input, _ = fixtureContext Device.Reference "llama"
                use _ = model
                use _ = explainer
                let r = AttentionRollout.Rollout(context, input)
                let n = r.GetLength 0
                Expect.equal n context.Tokens "one row per token"
                for i in 0 .. n - 1 do
                    Expect.floatClose Accuracy.high (Seq.sum (seq { for j in 0 .. n - 1 -> r.[i, j] })) 1.0 (sprintf "row %d sums to 1" i)
                    for j in i + 1 .. n - 1 do Expect.equal r.[i, j] 0.0 (sprintf "causal: (%d, %d) is 0" i j)
                let a = AttentionRollout().Attribute(context, input)
                Expect.floatClose Accuracy.medium a.RelevanceSum 1.0 "the explained row spreads a total of 1 over the tokens"
                Expect.floatClose Accuracy.high a.PerUnit.[n - 1] r.[n - 1, n - 1] "the last token's score is rollout[position, position]"
            }
            test "rows sum to 1 for a bidirectional model (bert), with entries above the diagonal" {
                let model, explainer, context, input, _ = fixtureContext Device.Reference "bert"
                use _ = model
                use _ = explainer
                let r = AttentionRollout.Rollout(context, input)
                let n = r.GetLength 0
                for i in 0 .. n - 1 do
                    Expect.floatClose Accuracy.high (Seq.sum (seq { for j in 0 .. n - 1 -> r.[i, j] })) 1.0 (sprintf "row %d sums to 1" i)
                Expect.isGreaterThan r.[0, n - 1] 0.0 "the first token attends to the last"
            }
            test "a ViT's rollout scores its patches from the class token's row" {
                let model, explainer, context, input, _ = fixtureContext Device.Cpu "vit-hf"
                use _ = model
                use _ = explainer
                Expect.equal context.PatchSize 8 "the patch size is the patch embedding's kernel"
                Expect.equal context.Units 16 "a 32×32 image in 8×8 patches"
                let r = AttentionRollout.Rollout(context, input)
                let a = AttentionRollout().Attribute(context, input)
                Expect.equal a.PerUnit.Length 16 "one score per patch"
                for u in 0 .. 15 do Expect.floatClose Accuracy.low a.PerUnit.[u] r.[0, 1 + u] (sprintf "patch %d" u)
            }
        ]

        testList "occlusion" [
            test "one window over the whole input sums to f(x) − f(empty) (llama)" {
                let model, explainer, context, input, target = fixtureContext Device.Reference "llama"
                use _ = model
                use _ = explainer
                let a = Occlusion(Window = Nullable context.Tokens).Attribute(context, input, Nullable target)
                let expected = context.Forward(input).[target] - context.Forward(Array.zeroCreate input.Length).[target]
                Expect.floatClose Accuracy.high a.RelevanceSum expected "Σ R = f(x) − f(0)"
                Expect.isTrue (a.PerPosition |> Array.forall (fun r -> Math.Abs(r - expected / float context.Tokens) < 1e-12)) "shared evenly"
            }
            test "one-token windows on a linear model give each token its contribution x ⊙ w" {
                let w = gaussian 11 1.0 (3 * 24)
                use e = linearExplainer 6 4 3 w
                let context = AttributionContext(e)
                let x = gaussian 12 1.0 24
                let a = Occlusion().Attribute(context, x, Nullable 2)
                let o = (oracle w 24).Attribute(context, x, Nullable 2)
                for u in 0 .. 5 do Expect.floatClose Accuracy.high a.PerUnit.[u] o.PerUnit.[u] (sprintf "token %d" u)
            }
            test "an image window over everything sums to f(x) − f(channel means) (vit-hf)" {
                let model, explainer, context, input, target = fixtureContext Device.Cpu "vit-hf"
                use _ = model
                use _ = explainer
                let a = Occlusion(Window = Nullable 32).Attribute(context, input, Nullable target)
                let expected = context.Forward(input).[target] - context.Forward(context.RemovalValues input).[target]
                Expect.floatClose Accuracy.medium a.RelevanceSum expected "Σ R = f(x) − f(mean image)"
            }
        ]

        testList "smoothgrad and random" [
            test "SmoothGrad with σ → 0 equals the gradient" {
                use e = nonlinearExplainer ()
                let context = AttributionContext(e)
                let x = gaussian 8 1.0 12
                let g = (AttributionMethods.Parse "gradient").Attribute(context, x, Nullable 2)
                for level in [ 0.0; 1e-7 ] do
                    let s = SmoothGrad(Samples = 5, NoiseLevel = level).Attribute(context, x, Nullable 2)
                    let err = Array.map2 (fun (a: float) b -> Math.Abs(a - b)) s.InputRelevance g.InputRelevance |> Array.max
                    let scale = g.InputRelevance |> Array.map Math.Abs |> Array.max
                    Expect.isLessThan err (1e-5 * scale) (sprintf "σ = %g of the range: max deviation %g" level err)
            }
            test "SmoothGrad is seeded: the same seed repeats, another differs" {
                use e = nonlinearExplainer ()
                let context = AttributionContext(e)
                let x = gaussian 9 1.0 12
                let run seed = SmoothGrad(Samples = 4, NoiseLevel = 0.2, Seed = seed).Attribute(context, x, Nullable 0).InputRelevance
                Expect.equal (run 1) (run 1) "same seed"
                Expect.notEqual (run 1) (run 2) "other seed"
            }
            test "the random baseline is deterministic in seed and input, and varies with either" {
                let w = gaussian 13 1.0 (2 * 8)
                use e = linearExplainer 4 2 2 w
                let context = AttributionContext(e)
                let x = gaussian 14 1.0 8
                let run seed (input: float32[]) = RandomAttribution(Seed = seed).Attribute(context, input, Nullable 1).InputRelevance
                Expect.equal (run 5 x) (run 5 x) "same seed and input"
                Expect.notEqual (run 5 x) (run 6 x) "another seed"
                Expect.notEqual (run 5 x) (run 5 (gaussian 15 1.0 8)) "another input"
            }
        ]

        testList "perturbation evaluation" [
            let tokens, width, classes = 10, 3, 4
            let n = tokens * width
            let w = gaussian 21 1.0 (classes * n)
            let inputs = [ for s in 0 .. 7 -> gaussian (100 + s) 1.0 n ]

            test "on a linear model the oracle x ⊙ w has a higher ABPC than random, and Input × Gradient matches it" {
                use e = linearExplainer tokens width classes w
                let context = AttributionContext(e)
                let methods : IAttributionMethod list = [ oracle w n; AttributionMethods.Parse "random"; AttributionMethods.Parse "input-x-gradient" ]
                let report = PerturbationEvaluation.Run(context, samplesOf inputs, Array.ofList methods)
                let oracleAbpc, randomAbpc, ixg = report.["oracle"].MeanAbpc, report.["random"].MeanAbpc, report.["input-x-gradient"].MeanAbpc
                Expect.isGreaterThan oracleAbpc randomAbpc (sprintf "oracle %g > random %g" oracleAbpc randomAbpc)
                Expect.floatClose Accuracy.high ixg oracleAbpc "Input × Gradient is the oracle on a linear model"
                for s in report.["oracle"].Samples do
                    Expect.isGreaterThanOrEqual s.Abpc (-1e-12) "the oracle's LeRF never drops below its MoRF"
                    Expect.equal s.Fractions.Length (tokens + 1) "a step per token for short inputs"
                    Expect.floatClose Accuracy.high s.Morf.[0] s.UnperturbedLogit "curves start at the unperturbed logit"
                    Expect.floatClose Accuracy.high s.Morf.[tokens] s.Lerf.[tokens] "and end together, everything removed"
                    Expect.floatClose Accuracy.high s.Morf.[tokens] 0.0 "at f(0) = 0 for a bias-free linear model"
            }
            test "MoRF and LeRF curves are monotone for the oracle when every contribution is non-negative" {
                let wPos = w |> Array.map abs
                use e = linearExplainer tokens width classes wPos
                let context = AttributionContext(e)
                let report = PerturbationEvaluation.Run(context, samplesOf [ for x in inputs -> x |> Array.map abs ], [| oracle wPos n |])
                for s in report.Methods.[0].Samples do
                    for k in 1 .. s.Morf.Length - 1 do
                        Expect.isLessThanOrEqual s.Morf.[k] (s.Morf.[k - 1] + 1e-9) (sprintf "MoRF step %d of sample %d" k s.Index)
                        Expect.isLessThanOrEqual s.Lerf.[k] (s.Lerf.[k - 1] + 1e-9) (sprintf "LeRF step %d of sample %d" k s.Index)
                        // removing the largest contributions first drops fastest: MoRF is convex, LeRF concave
                        if k >= 2 then
                            Expect.isGreaterThanOrEqual (s.Morf.[k] - s.Morf.[k - 1]) (s.Morf.[k - 1] - s.Morf.[k - 2] - 1e-9) "MoRF drops shrink"
            }
            test "configurable steps, normalisation, and the mean ± standard error over samples" {
                use e = linearExplainer tokens width classes w
                let context = AttributionContext(e)
                let samples = samplesOf inputs
                let report = PerturbationEvaluation.Run(context, samples, [| oracle w n |], PerturbationOptions(Steps = Nullable 5, Normalize = true))
                let m = report.Methods.[0]
                Expect.equal m.Fractions [| 0.0; 0.2; 0.4; 0.6; 0.8; 1.0 |] "5 steps of 2 tokens"
                for s in m.Samples do Expect.floatClose Accuracy.high s.Morf.[0] 1.0 "normalised curves start at 1"
                let abpc = m.Samples |> Seq.map (fun s -> s.Abpc) |> Array.ofSeq
                let mean = Array.average abpc
                let sd = Math.Sqrt((abpc |> Array.sumBy (fun a -> (a - mean) ** 2.0)) / float (abpc.Length - 1))
                Expect.floatClose Accuracy.high m.MeanAbpc mean "mean ABPC"
                Expect.floatClose Accuracy.high m.AbpcStandardError (sd / Math.Sqrt(float abpc.Length)) "standard error"
                let s0 = m.Samples.[0]
                let trapezoid = [ for k in 1 .. 5 -> 0.1 * ((s0.Lerf.[k] - s0.Morf.[k]) + (s0.Lerf.[k - 1] - s0.Morf.[k - 1])) ] |> List.sum
                Expect.floatClose Accuracy.high s0.Abpc trapezoid "ABPC is the trapezoid area between the curves"
            }
            test "the evidence hit rate counts samples whose top feature is the evidence position" {
                use e = linearExplainer tokens width classes w
                let context = AttributionContext(e)
                let o = oracle w n
                let samples =
                    inputs |> List.mapi (fun i x ->
                        let target = context.ResolveTarget(x, Nullable())
                        let top = o.Attribute(context, x, Nullable target).PerUnit |> Array.indexed |> Array.maxBy snd |> fst
                        // every other sample names a wrong position
                        EvaluationSample(Input = x, EvidencePosition = Nullable(if i % 2 = 0 then top else (top + 1) % tokens)))
                    |> Array.ofList
                let report = PerturbationEvaluation.Run(context, samples, [| o |])
                Expect.equal report.Methods.[0].EvidenceHitRate (Nullable 0.5) "half the samples name the top token"
            }
            test "patches of an image are removed by the channel means (vit-hf)" {
                let model, explainer, context, input, target = fixtureContext Device.Cpu "vit-hf"
                use _ = model
                use _ = explainer
                let sample = EvaluationSample(Input = input, Target = Nullable target)
                let report = PerturbationEvaluation.Run(context, [| sample |], [| AttributionMethods.Parse "cp-lrp"; AttributionMethods.Parse "random" |])
                for m in report.Methods do
                    let s = m.Samples.[0]
                    Expect.equal s.Fractions.Length 17 "a step per patch"
                    Expect.floatClose Accuracy.medium s.Morf.[16] (context.Forward(context.RemovalValues input).[target]) "all removed: the mean image"
                Expect.isGreaterThan report.["cp-lrp"].MeanAbpc report.["random"].MeanAbpc "CP-LRP beats random on the ViT fixture"
            }
        ]

        testPropertyWithConfig { FsCheckConfig.defaultConfig with maxTest = 100 } "per-position sums, widened a vector at a time, match float64 sums of the float32 relevance" (fun (seed: int) ->
            // rows and columns of any length, so vector tails are covered; explanations sum [tokens, hidden] relevance
            // over its last axis and [channels, height, width] relevance over its first
            let rng = Random seed
            let rows, width = 1 + rng.Next 7, 1 + rng.Next 70
            let values = Array.init (rows * width) (fun _ -> float32 (rng.NextDouble() * 2.0 - 1.0))
            let v = TensorValue([| rows; width |], values, null)
            let exact = Array.init rows (fun i -> Array.sumBy (fun j -> float values.[i * width + j]) [| 0 .. width - 1 |])
            let columns = Array.init width (fun j -> Array.sumBy (fun i -> float values.[i * width + j]) [| 0 .. rows - 1 |])
            let close (a: float[]) (b: float[]) = Array.forall2 (fun (x: float) y -> abs (x - y) <= 1e-12 * (1.0 + abs y)) a b
            Expect.isTrue (close (Explanation.SumLastAxis v) exact) "sums over the last axis"
            Expect.isTrue (close (Explanation.SumFirstAxis v) columns) "sums over the first axis"
            Expect.sequenceEqual (v.ToDoubleArray()) (Array.map float values) "widened copies are exact")
        test "per-position sums of a large input, its rows shared out among threads, equal the rows summed one by one" {
            let rng = Random 3
            let rows, width = 1030, 1023
            Expect.isGreaterThanOrEqual (rows * width) Explanation.ParallelSumsFrom "large enough to be summed on several threads"
            let values = Array.init (rows * width) (fun _ -> float32 (rng.NextDouble() * 2.0 - 1.0))
            let v = TensorValue([| rows; width |], values, null)
            let oneByOne = Array.init rows (fun i -> Explanation.SumLastAxis(TensorValue([| 1; width |], values.[i * width .. (i + 1) * width - 1], null)).[0])
            Expect.sequenceEqual (Explanation.SumLastAxis v) oneByOne "the same sums, bit for bit"
        }
        testList "methods and reports" [
            test "every id parses to a method of that id" {
                for id in AttributionMethods.Ids do
                    Expect.equal (AttributionMethods.Parse id).Id id id
                Expect.equal (AttributionMethods.Parse("cp-lrp", AttributionSettings(ConvGamma = Nullable 0.25))).Id "cp-lrp" "cp-lrp with Gamma"
                Expect.throwsT<ArgumentException> (fun () -> AttributionMethods.Parse "saliency" |> ignore) "unknown ids are refused"
                Expect.equal [ for m in AttributionMethods.ParseList "attnlrp, random" -> m.Id ] [ "attnlrp"; "random" ] "lists"
            }
            test "every method attributes the llama fixture with one value per element" {
                let model, explainer, context, input, target = fixtureContext Device.Cpu "llama"
                use _ = model
                use _ = explainer
                let settings = AttributionSettings(IntegratedGradientsSteps = 4, SmoothGradSamples = 3)
                for id in AttributionMethods.Ids do
                    let a = (AttributionMethods.Parse(id, settings)).Attribute(context, input, Nullable target)
                    Expect.equal a.InputRelevance.Length input.Length (sprintf "%s: per element" id)
                    Expect.equal a.PerUnit.Length context.Tokens (sprintf "%s: per token" id)
                    Expect.equal a.Target target (sprintf "%s: the asked target" id)
                    Expect.isTrue (a.InputRelevance |> Array.forall Double.IsFinite) (sprintf "%s: finite" id)
            }
            test "the markdown table has a row per method starting with its id, the ABPC its first number" {
                let w = gaussian 31 1.0 (2 * 12)
                use e = linearExplainer 6 2 2 w
                let context = AttributionContext(e)
                let samples = [| for s in 0 .. 3 -> EvaluationSample(Input = gaussian (40 + s) 1.0 12, EvidencePosition = Nullable 0) |]
                let report = PerturbationEvaluation.Run(context, samples, [| AttributionMethods.Parse "attnlrp"; AttributionMethods.Parse "random" |])
                let lines = report.ToMarkdown().Split('\n', StringSplitOptions.RemoveEmptyEntries)
                for m in report.Methods do
                    let row = lines |> Array.find (fun l -> l.StartsWith(sprintf "| %s |" m.MethodId))
                    let cells = row.Split('|', StringSplitOptions.TrimEntries)
                    let first = Text.RegularExpressions.Regex.Match(cells.[2], @"-?\d+(\.\d+)?").Value |> float
                    Expect.floatClose { absolute = 1e-4; relative = 1e-4 } first m.MeanAbpc (sprintf "%s: ABPC first" m.MethodId)
                    Expect.isTrue (Double.TryParse(cells.[3]) |> fst) (sprintf "%s: a hit rate where evidence is given" m.MethodId)
                let noEvidence = PerturbationEvaluation.Run(context, samplesOf [ gaussian 50 1.0 12 ], [| AttributionMethods.Parse "attnlrp" |])
                let row = noEvidence.ToMarkdown().Split('\n') |> Array.find (fun l -> l.StartsWith "| attnlrp |")
                Expect.equal (row.Split('|', StringSplitOptions.TrimEntries).[3]) "-" "no evidence: '-'"
            }
            test "the JSON report is written atomically and reads back; the SVG has a curve pair per method" {
                let w = gaussian 32 1.0 (2 * 12)
                use e = linearExplainer 6 2 2 w
                let context = AttributionContext(e)
                let report = PerturbationEvaluation.Run(context, samplesOf [ gaussian 60 1.0 12; gaussian 61 1.0 12 ], [| AttributionMethods.Parse "attnlrp"; AttributionMethods.Parse "random" |])
                let dir = Path.Combine(Path.GetTempPath(), sprintf "lxt-eval-%s" (Guid.NewGuid().ToString "N"))
                try
                    let path = Path.Combine(dir, "report.json")
                    report.WriteJson path
                    report.WriteJson path
                    Expect.equal (Directory.GetFiles dir |> Array.map Path.GetFileName) [| "report.json" |] "no temporary file left"
                    let root = JsonDocument.Parse(File.ReadAllText path).RootElement
                    let methods = root.GetProperty("methods")
                    Expect.equal (methods.[0].GetProperty("id").GetString()) "attnlrp" "first method"
                    Expect.floatClose Accuracy.high (methods.[0].GetProperty("abpc").GetDouble()) report.Methods.[0].MeanAbpc "ABPC"
                    Expect.equal (methods.[1].GetProperty("samples").GetArrayLength()) 2 "per-sample curves"
                finally
                    if Directory.Exists dir then Directory.Delete(dir, true)
                let svg = Xml.Linq.XDocument.Parse(report.ToSvg())
                let polylines = svg.Descendants(Xml.Linq.XName.Get("polyline", "http://www.w3.org/2000/svg")) |> Array.ofSeq
                Expect.equal polylines.Length 4 "MoRF and LeRF for each of two methods"
                let points = polylines.[0].Attribute(Xml.Linq.XName.Get "points").Value.Split(' ')
                Expect.equal points.Length 7 "one point per step"
            }
        ]
    ]
