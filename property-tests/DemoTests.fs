// Training and the demo model: Adam on convex problems, cross-entropy gradients against finite differences, weight
// replacement in a session, the committed demo model's accuracy and evidence, reproducible training.
module Lxt.Tests.DemoTests

open System
open System.Collections.Generic
open System.IO
open Expecto
open Lxt
open Lxt.Training
open Lxt.Demo
open Lxt.Import

let private feeds (pairs: (string * float32[]) list) =
    Dictionary<string, float32[]>(dict pairs) :> IReadOnlyDictionary<string, float32[]>

let private noInputs = feeds []

/// Runs `steps` Adam steps with a learning rate decaying linearly to 1 % of `lr` (so the iterate settles); returns
/// the first and the last loss.
let private train (trainer: Trainer) (steps: int) (lr: float) =
    let first = trainer.Step(noInputs).Loss
    let mutable last = first
    for i in 1 .. steps - 1 do
        trainer.Optimizer.LearningRate <- lr * (1.0 - 0.99 * float i / float steps)
        last <- trainer.Step(noInputs).Loss
    first, last

/// Solves the 3 × 3 system a·x = b by Gaussian elimination with partial pivoting.
let private solve3 (a: float[,]) (b: float[]) =
    let a = Array2D.copy a
    let b = Array.copy b
    for col in 0 .. 2 do
        let pivot = [ col .. 2 ] |> List.maxBy (fun r -> abs a.[r, col])
        for c in 0 .. 2 do
            let t = a.[col, c] in a.[col, c] <- a.[pivot, c]; a.[pivot, c] <- t
        let t = b.[col] in b.[col] <- b.[pivot]; b.[pivot] <- t
        for r in col + 1 .. 2 do
            let f = a.[r, col] / a.[col, col]
            for c in col .. 2 do a.[r, c] <- a.[r, c] - f * a.[col, c]
            b.[r] <- b.[r] - f * b.[col]
    let x = Array.zeroCreate 3
    for r in 2 .. -1 .. 0 do
        x.[r] <- (b.[r] - (List.sum [ for c in r + 1 .. 2 -> a.[r, c] * x.[c] ])) / a.[r, r]
    x

let optimiserTests =
    testList "Adam" [
        test "Adam minimises a badly scaled convex quadratic to its minimum" {
            let b = GraphBuilder()
            let w = b.Parameter("w", 4)
            let centre = [| 1.5; -2.0; 0.25; 3.0 |]
            let loss = ((w - b.Constant(centre, 4)).Square() * b.Constant([| 1.0; 10.0; 0.1; 4.0 |], 4)).Sum(0)
            let weights = Weights().Set("w", Array.zeroCreate 4, 4)
            use trainer = new Trainer(b.Build("loss", loss), weights, AdamOptions(LearningRate = 0.1))
            let first, last = train trainer 1000 0.1
            Expect.isLessThan last (first * 1e-5) (sprintf "loss went from %g to %g" first last)
            let found = weights.Read("w", [| 4 |])
            for i in 0 .. 3 do
                Expect.floatClose { absolute = 1e-2; relative = 0.0 } (float found.[i]) centre.[i] (sprintf "w[%d]" i)
        }

        test "Adam fits a logistic regression built from the cross-entropy graph to the Newton optimum" {
            let rng = Random(3)
            let n = 200
            let xs = Array.init n (fun _ -> [| rng.NextDouble() * 4.0 - 2.0; rng.NextDouble() * 4.0 - 2.0 |])
            let ys = xs |> Array.map (fun x -> if rng.NextDouble() < 1.0 / (1.0 + exp -(1.5 * x.[0] - 2.0 * x.[1] + 0.5)) then 1 else 0)
            // the optimum of the equivalent binary problem, θ = (w₁, w₂, b), by Newton's method in float64
            let theta = Array.zeroCreate 3
            let features (x: float[]) = [| x.[0]; x.[1]; 1.0 |]
            let prob (x: float[]) = 1.0 / (1.0 + exp -(Array.map2 (*) theta (features x) |> Array.sum))
            for _ in 1 .. 30 do
                let g = Array.zeroCreate 3
                let h = Array2D.zeroCreate 3 3
                for x, y in Array.zip xs ys do
                    let p, f = prob x, features x
                    for i in 0 .. 2 do
                        g.[i] <- g.[i] + (p - float y) * f.[i]
                        for j in 0 .. 2 do h.[i, j] <- h.[i, j] + p * (1.0 - p) * f.[i] * f.[j]
                let step = solve3 h g
                for i in 0 .. 2 do theta.[i] <- theta.[i] - step.[i]
            let optimum =
                Array.zip xs ys |> Array.averageBy (fun (x, y) -> let p = prob x in -(if y = 1 then log p else log (1.0 - p)))

            let b = GraphBuilder()
            let x = b.Constant(xs |> Array.concat, n, 2)
            let target = b.Constant(ys |> Array.collect (fun y -> if y = 1 then [| 0.0; 1.0 |] else [| 1.0; 0.0 |]), n, 2)
            let logits = b.Linear("classifier", x, 2)
            let model = b.Build(readOnlyDict [ "loss", Losses.CrossEntropy(logits, target).Mean(0); "accuracy", Losses.Correct(logits, target).Mean(0) ])
            let weights = Weights().Set("classifier.weight", Array.zeroCreate 4, 2, 2).Set("classifier.bias", Array.zeroCreate 2, 2)
            use trainer = new Trainer(model, weights, AdamOptions(LearningRate = 0.05))
            let first, last = train trainer 1500 0.05
            Expect.floatClose { absolute = 1e-5; relative = 0.0 } first (log 2.0) "zero weights give loss log 2"
            Expect.isLessThan (last - optimum) 1e-5 (sprintf "Adam reached %.6f, the optimum is %.6f" last optimum)
        }

        test "gradient clipping bounds the update by the global norm and weight decay shrinks the weights" {
            let adam = Adam(AdamOptions(LearningRate = 0.1, MaxGradientNorm = 1.0, WeightDecay = 0.5))
            let w = [| 1.0f; -1.0f |]
            let norm = adam.Step([| struct ("w", w, [| 300.0f; -400.0f |]) |])
            Expect.floatClose Accuracy.high norm 500.0 "the norm is reported before clipping"
            // first step: m̂/√v̂ = sign(g); w ← w(1 − lr·λ) − lr·sign(g)
            Expect.floatClose Accuracy.medium (float w.[0]) (1.0 * 0.95 - 0.1) "w[0]"
            Expect.floatClose Accuracy.medium (float w.[1]) (-1.0 * 0.95 + 0.1) "w[1]"
            Expect.equal adam.StepCount 1 "one step"
        }
    ]

let gradientTests =
    testList "gradients" [
        test "cross-entropy gradients match central finite differences in float64" {
            let b = GraphBuilder()
            let w = b.Parameter("w", 5, 4)
            let x = b.Input("x", 3, 4)
            let target = b.Input("target", 3, 5)
            let loss = Losses.CrossEntropy(x.MatMul(w.Transpose()), target).Mean(0)
            let grad = (Gradients.Of(loss, [ w ])).[0]
            let rng = Random(5)
            // multiples of 1/64 and a step of 1/1024: w ± h is exact in float32, so the differences see float64 only
            let values = Array.init 20 (fun _ -> float32 (rng.Next(-128, 129)) / 64.0f)
            let inputs =
                feeds [ "x", Array.init 12 (fun _ -> float32 (rng.Next(-32, 33)) / 16.0f)
                        "target", Array.init 15 (fun i -> if i % 5 = (i / 5 * 2) % 5 then 1.0f else 0.0f) ]
            use session = new Session(b.Build("loss", loss), Weights().Set("w", values, 5, 4), Device.Reference)
            let analytic = session.Evaluate([| grad |], inputs).[0].ToDoubleArray()
            let h = 1.0f / 1024.0f
            let lossAt (v: float32[]) =
                session.SetParameter("w", ReadOnlySpan<float32>(v))
                session.Evaluate([| loss |], inputs).[0].Float64.[0]
            for i in 0 .. values.Length - 1 do
                let shifted d = values |> Array.mapi (fun j v -> if j = i then v + d else v)
                let numeric = (lossAt (shifted h) - lossAt (shifted -h)) / (2.0 * float h)
                Expect.floatClose { absolute = 1e-6; relative = 1e-5 } analytic.[i] numeric (sprintf "∂loss/∂w[%d]" i)
        }

        test "Session.SetParameter and UpdateWeights replace weights for later runs and check them" {
            let b = GraphBuilder()
            let w = b.Parameter("w", 3)
            let out = (b.Input("x", 3) * w).Sum(0)
            let x = feeds [ "x", [| 1.0f; 1.0f; 1.0f |] ]
            use session = new Session(b.Build("out", out), Weights().Set("w", [| 1.0f; 2.0f; 3.0f |], 3), Device.Cpu)
            let run () = session.Evaluate([| out |], x).[0].[0]
            Expect.equal (run ()) 6.0 "initial weights"
            session.SetParameter("w", ReadOnlySpan<float32>([| 0.0f; 0.0f; 1.0f |]))
            Expect.equal (run ()) 1.0 "after SetParameter"
            Expect.throwsT<Lxt.Graph.BindingException> (fun () -> session.SetParameter("w", ReadOnlySpan<float32>([| 1.0f |]))) "wrong length"
            Expect.throwsT<Lxt.Graph.BindingException> (fun () -> session.SetParameter("w", ReadOnlySpan<float32>([| 1.0f; nanf; 0.0f |]))) "NaN"
            session.UpdateWeights(Weights().Set("w", [| 2.0f; 2.0f; 2.0f |], 3))
            Expect.equal (run ()) 6.0 "after UpdateWeights"
        }

        test "Expr.Replace substitutes a node and keeps the rest of the graph" {
            let b = GraphBuilder()
            let x = b.Input("x", 2)
            let y = (x * 3.0 + 1.0).Named("y")
            let replaced = y.Replace(x, b.Constant([| 1.0; 2.0 |], 2))
            Expect.equal replaced.Name "y" "the name is kept"
            use session = new Session(b.Build("y", replaced), Weights(), Device.Reference)
            Expect.equal (session.Evaluate([| replaced |], noInputs).[0].ToDoubleArray()) [| 4.0; 7.0 |] "x replaced by [1, 2]"
        }
    ]

let demoTests =
    testList "demo" [
        test "every demo sequence holds exactly one animal, closes with 'says', and is labelled with the animal's sound" {
            for e in DemoTask.Generate(500, 11) do
                Expect.isTrue (e.Ids.Length >= DemoTask.MinLength && e.Ids.Length <= DemoTask.MaxLength) "length"
                let struct (label, evidence) = DemoTask.Answer(e.Ids).Value
                Expect.equal (label, evidence) (e.Label, e.EvidencePosition) "label and evidence"
                Expect.isTrue (DemoTask.IsEvidence e.Ids.[evidence]) "the evidence is an animal"
                Expect.equal (DemoTask.Token e.Ids.[e.Ids.Length - 1]) DemoTask.QueryToken "closes with says"
            Expect.equal (DemoTask.Generate(20, 4) |> Seq.map (fun e -> e.Text) |> List.ofSeq)
                         (DemoTask.Generate(20, 4) |> Seq.map (fun e -> e.Text) |> List.ofSeq) "same seed, same examples"
        }

        test "the committed demo model is accurate on fresh held-out sequences and AttnLRP ranks the animal first" {
            use model = DemoModel.Open()
            let result = DemoEvaluation.Run(model, DemoTask.Generate(200, 31337), Method.AttnLrp, Device.Cpu)
            // measured: 100 % accuracy, the animal most relevant in 100 % of the sequences
            Expect.isGreaterThanOrEqual result.Accuracy 0.95 (sprintf "held-out accuracy %.3f" result.Accuracy)
            Expect.isGreaterThanOrEqual result.EvidenceHitRate 0.95 (sprintf "evidence hit rate %.3f" result.EvidenceHitRate)
        }

        test "the demo tokenizer loads with the tokenizers library and round-trips the task's sentences" {
            use tokenizer = TextTokenizer.Open(DemoModel.Locate())
            for e in DemoTask.Generate(50, 8) do
                Expect.equal (tokenizer.Encode e.Text) e.Ids e.Text
                Expect.equal (tokenizer.Decode e.Ids) e.Text "decode"
            Expect.equal (tokenizer.Encode "The CAT says") [| DemoTask.Id "the"; DemoTask.Id "cat"; DemoTask.Id "says" |] "lower-cased"
            Expect.equal (tokenizer.Encode "zebra says") [| 0; DemoTask.Id "says" |] "unknown words are <unk>"
        }

        test "demo training is deterministic and its checkpoint loads as a Llama model" {
            let options =
                DemoTrainingOptions(Architecture = DemoArchitecture(Hidden = 16, Layers = 1, Heads = 2, Intermediate = 32),
                                    Steps = 3, BatchSize = 2, WarmupSteps = 1)
            let first = DemoTraining.Train(options)
            let second = DemoTraining.Train(options)
            Expect.equal (first.History |> Seq.map (fun s -> s.Loss) |> List.ofSeq) (second.History |> Seq.map (fun s -> s.Loss) |> List.ofSeq) "losses"
            for KeyValue(name, shape) in first.Shapes do
                Expect.equal (first.Weights.Read(name, shape)) (second.Weights.Read(name, shape)) name
            let folder = Path.Combine(Path.GetTempPath(), sprintf "lxt-demo-%s" (Guid.NewGuid().ToString "N"), "demo")
            try
                DemoModel.Save(folder, first.Architecture, first.Weights, first.Shapes)
                DemoModel.Save(folder, first.Architecture, first.Weights, first.Shapes) // replaces the folder in place
                use model = PretrainedModel.Open folder
                let graph = model.BuildGraph 12
                Expect.equal graph.Architecture "llama" "architecture"
                let stored = model.Checkpoint.ReadFloat32 "model.embed_tokens.weight"
                Expect.equal stored (first.Weights.Read("model.embed_tokens.weight", first.Shapes.["model.embed_tokens.weight"])) "embedding table"
            finally
                Directory.Delete(Path.GetDirectoryName folder, true)
        }
    ]

let tests = testList "training and demo" [ optimiserTests; gradientTests; demoTests ]
