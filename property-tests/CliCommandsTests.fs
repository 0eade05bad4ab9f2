// The lxt commands beyond explain, run in-process on the reference fixtures and the demo model: evaluate (JSON,
// markdown rows, hit rate), generate (last line, steering, --explain), neurons, activations (escaped HTML), check
// (leaks by name), plan (planned memory and kernels), the shared --device option, and wrong arguments.
module Lxt.Tests.CliCommandsTests

open System
open System.IO
open System.Globalization
open System.Text.RegularExpressions
open Expecto
open Lxt
open Lxt.Tests.CliTests

let private llama = Path.Combine(Paths.fixtures, "llama")
let private demo = Path.Combine(Paths.repoRoot, "models", "demo")
let private llamaPrompt = "1,5,9,13,20"

/// Expects exit 0 and returns stdout.
let private ok (args: string list) =
    let code, out, err = lxt args
    Expect.equal code 0 (sprintf "exit code (stderr: %s)" err)
    out

/// Expects a failed run: exit 1 and exactly one "error: " line that mentions `mentions`.
let private expectError (args: string list) (mentions: string) =
    let code, _, err = lxt args
    Expect.equal code 1 (sprintf "exit code (stderr: %s)" err)
    let lines = err.Split('\n', StringSplitOptions.RemoveEmptyEntries)
    Expect.equal lines.Length 1 (sprintf "one line on stderr: %s" err)
    Expect.stringStarts lines.[0] "error: " "the line starts with 'error: '"
    Expect.isFalse (Regex.IsMatch(lines.[0].TrimEnd(), @"\(\w+Exception\)$")) (sprintf "a typed error: %s" lines.[0])
    Expect.stringContains lines.[0] mentions "the message says what was wrong"

/// Expects exit 2 with the command's usage on stderr and nothing on stdout.
let private expectUsage (args: string list) (mentions: string) =
    let code, out, err = lxt args
    Expect.equal code 2 (sprintf "exit code (stderr: %s)" err)
    Expect.stringContains err "usage: lxt" "usage on stderr"
    Expect.stringContains err mentions "the error names the problem"
    Expect.isEmpty out "nothing on stdout"

let private lastLine (out: string) = out.Split('\n', StringSplitOptions.RemoveEmptyEntries) |> Array.last |> fun l -> l.TrimEnd()

let private number (s: string) = Double.Parse(s.Trim(), CultureInfo.InvariantCulture)

/// The markdown row of a method: its cells after the id.
let private row (markdown: string) (id: string) =
    let rows = markdown.Split('\n') |> Array.filter (fun l -> l.StartsWith(sprintf "| %s |" id))
    Expect.equal rows.Length 1 (sprintf "one row starts with '| %s |'" id)
    rows.[0].Split('|', StringSplitOptions.TrimEntries) |> Array.filter (fun c -> c <> "") |> Array.tail

/// A one-line data file of token ids (ids below 64 fit the demo model and the fixtures).
let private data (_: string) =
    let path = Path.Combine(tempDir (), "data.jsonl")
    File.WriteAllText(path, """{"input_ids": [1, 5, 9, 13]}""" + "\n")
    path

let evaluateTests =
    testList "lxt evaluate" [
        test "--demo writes JSON, SVG and a markdown row per method: the id, then ABPC, then the evidence hit rate" {
            let dir = tempDir ()
            let json, md, svg = Path.Combine(dir, "r.json"), Path.Combine(dir, "r.md"), Path.Combine(dir, "r.svg")
            let methods = [ "attnlrp"; "input-x-gradient"; "attention-rollout"; "random" ]
            let out = ok [ "evaluate"; "--demo"; "--samples"; "6"; "--seed"; "3"; "--methods"; String.Join(",", methods)
                           "--json"; json; "--markdown"; md; "--plot"; svg; "--threads"; "1" ]
            let markdown = File.ReadAllText md
            let report = readJson json
            let byId = report.GetProperty("methods").EnumerateArray() |> Seq.map (fun m -> m.GetProperty("id").GetString(), m) |> Map.ofSeq
            Expect.equal (byId |> Map.keys |> Set.ofSeq) (Set.ofList methods) "one JSON entry per method"
            for id in methods do
                let cells = row markdown id
                let abpc = number (cells.[0].Split('±').[0])
                let m = byId.[id]
                Expect.floatClose { absolute = 1e-4; relative = 1e-4 } abpc (m.GetProperty("abpc").GetDouble()) (sprintf "%s: the first number is the ABPC" id)
                let hit = number cells.[1]
                Expect.floatClose { absolute = 1e-3; relative = 0.0 } hit (m.GetProperty("evidence_hit_rate").GetDouble()) (sprintf "%s: then the hit rate" id)
                Expect.isTrue (hit >= 0.0 && hit <= 1.0) "a rate"
                Expect.equal (m.GetProperty("samples").GetArrayLength()) 6 "per-sample curves"
                Expect.equal (m.GetProperty("morf").GetArrayLength()) (m.GetProperty("fractions").GetArrayLength()) "a mean MoRF curve"
                Expect.stringContains out id "the terminal table names the method"
            Expect.isGreaterThanOrEqual (number (row markdown "attnlrp").[1]) 0.8 "AttnLRP finds the animal"
            Expect.isGreaterThan (byId.["attnlrp"].GetProperty("abpc").GetDouble()) (byId.["random"].GetProperty("abpc").GetDouble()) "AttnLRP beats random"
            Expect.stringStarts (File.ReadAllText svg) "<svg" "an SVG plot"
            Expect.stringContains markdown "lxt evaluate --demo --samples 6 --seed 3" "the report names its command"
            Expect.equal (Directory.GetFiles dir |> Array.sort) ([| json; md; svg |] |> Array.sort) "no temporary files"
        }
        test "--data reads text, input_ids, target and evidence; --limit keeps the first lines" {
            let dir = tempDir ()
            let data = Path.Combine(dir, "data.jsonl")
            File.WriteAllLines(data, [ """{"text": "the old cat sat near a tree says", "evidence": 2}"""
                                       ""
                                       """{"input_ids": [18, 5, 58, 1], "target": 13, "evidence": 1}"""
                                       """{"text": "never read"}""" ])
            let json = Path.Combine(dir, "r.json")
            let out = ok [ "evaluate"; "--model"; demo; "--data"; data; "--limit"; "2"; "--methods"; "attnlrp,occlusion"; "--json"; json ]
            let samples = (readJson json).GetProperty("methods").[0].GetProperty("samples")
            Expect.equal (samples.GetArrayLength()) 2 "two samples"
            Expect.equal (samples.[1].GetProperty("target").GetInt32()) 13 "the given target"
            Expect.equal (samples.[0].GetProperty("evidence_position").GetInt32()) 2 "the evidence"
            Expect.stringContains out "2 samples" "the terminal says how many"
        }
        test "Integrated Gradients starts from the pad token's embedding when the config has one, else from zeros" {
            let name (dir: string) =
                let json = Path.Combine(tempDir (), "r.json")
                ok [ "evaluate"; "--model"; dir; "--data"; data dir; "--methods"; "integrated-gradients"; "--ig-steps"; "4"; "--json"; json ] |> ignore
                (readJson json).GetProperty("methods").[0].GetProperty("name").GetString()
            Expect.stringContains (name llama) "zero baseline" "the fixture's pad_token_id is null"
            let padded = copyFixture "llama"
            let config = Path.Combine(padded, "config.json")
            File.WriteAllText(config, File.ReadAllText(config).Replace("\"pad_token_id\": null", "\"pad_token_id\": 3"))
            Expect.stringContains (name padded) "pad-token baseline (id 3)" "with pad_token_id 3"
        }
        test "a data line that does not fit fails with one error line naming the line" {
            let dir = tempDir ()
            let data = Path.Combine(dir, "data.jsonl")
            File.WriteAllLines(data, [ """{"input_ids": [1, 2, 3]}"""; """{"input_ids": [1, 2], "evidence": 5}""" ])
            expectError [ "evaluate"; "--model"; llama; "--data"; data; "--methods"; "random" ] "data.jsonl:2"
            File.WriteAllLines(data, [ """{"pixels": [[[0.0]]]}""" ])
            expectError [ "evaluate"; "--model"; llama; "--data"; data; "--methods"; "random" ] "text model"
            expectError [ "evaluate"; "--model"; llama; "--data"; Path.Combine(dir, "missing.jsonl") ] "does not exist"
        }
        test "wrong arguments exit with 2" {
            expectUsage [ "evaluate"; "--model"; llama ] "give one of --data, --demo"
            expectUsage [ "evaluate"; "--demo"; "--methods"; "attnlrp,magic" ] "unknown method 'magic'"
            expectUsage [ "evaluate"; "--demo"; "--methods"; "random,random" ] "twice"
            expectUsage [ "evaluate"; "--model"; llama; "--data"; "x.jsonl"; "--samples"; "3" ] "--samples goes with --demo"
            expectUsage [ "evaluate"; "--demo"; "--samples"; "0" ] "at least 1"
            expectUsage [ "evaluate"; "--demo"; "--ig-baseline"; "noise" ] "noise"
        }
    ]

let generateTests =
    let generate (extra: string list) =
        let json = Path.Combine(tempDir (), "g.json")
        let out = ok ([ "generate"; "--model"; llama; "--input-ids"; llamaPrompt; "--max-new-tokens"; "6"; "--no-stop"; "--json"; json ] @ extra)
        let ids = (readJson json).GetProperty("generated_ids").EnumerateArray() |> Seq.map (fun v -> v.GetInt32()) |> List.ofSeq
        out, ids
    testList "lxt generate" [
        test "the last printed line is the generated token ids (no tokenizer)" {
            let out, ids = generate []
            Expect.equal ids.Length 6 "--no-stop generates --max-new-tokens tokens"
            Expect.equal (lastLine out) (String.Join(",", ids)) "the last line"
        }
        test "a steer of +0 leaves the ids unchanged; a strong steer changes them" {
            let _, plain = generate []
            let _, zero = generate [ "--steer"; "model.layers.0.mlp.act_fn:3=+0"; "--steer"; "model.layers.1.mlp.act_fn:5*1" ]
            Expect.equal zero plain "+0 and *1 change nothing"
            let out, strong = generate [ "--steer"; "model.layers.1.mlp.act_fn:3=+50"; "--steer"; "model.layers.1.mlp.act_fn:5=+50" ]
            Expect.notEqual strong plain "a strong steer changes the generated ids"
            Expect.equal (lastLine out) (String.Join(",", strong)) "the last line is the steered ids"
            Expect.stringContains out "model.layers.1.mlp.act_fn:3=+50" "the steering is shown"
        }
        test "with a tokenizer the last line is the text: the demo model says meow after a cat" {
            let out = ok [ "generate"; "--model"; demo; "--text"; "the old cat sat near a tree says"; "--max-new-tokens"; "1" ]
            Expect.equal (lastLine out) "meow" "the generated text"
        }
        test "--explain prints the generated-token × token relevance matrix and writes it to JSON" {
            let json = Path.Combine(tempDir (), "g.json")
            let out = ok [ "generate"; "--model"; demo; "--text"; "the dog ran says"; "--max-new-tokens"; "2"; "--explain"; "--json"; json ]
            Expect.stringContains out "relevance (attnlrp)" "the matrix title"
            let rows = (readJson json).GetProperty("relevance").GetProperty("rows")
            Expect.equal (rows.GetArrayLength()) 2 "a row per generated token"
            Expect.equal (rows.[0].GetArrayLength()) 6 "a column per token"
            let first = rows.[0].EnumerateArray() |> Seq.map (fun v -> v.GetDouble()) |> Array.ofSeq
            Expect.equal (Array.IndexOf(first, Array.max first)) 1 "the first generated token rests on 'dog'"
            Expect.equal first.[4..] [| 0.0; 0.0 |] "tokens after the explained one get nothing"
        }
        test "sampling with a seed is reproducible" {
            let _, a = generate [ "--temperature"; "1.5"; "--top-k"; "20"; "--top-p"; "0.9"; "--seed"; "4" ]
            let _, b = generate [ "--temperature"; "1.5"; "--top-k"; "20"; "--top-p"; "0.9"; "--seed"; "4" ]
            Expect.equal a b "same seed, same ids"
        }
        test "wrong arguments exit with 2; a bad node fails with 1" {
            expectUsage [ "generate"; "--model"; llama; "--input-ids"; "1,2" ] "'--max-new-tokens' is required"
            expectUsage [ "generate"; "--model"; llama; "--input-ids"; "1,2"; "--max-new-tokens"; "2"; "--steer"; "model.layers.0.mlp.act_fn=3" ] "steering spec"
            expectUsage [ "generate"; "--model"; llama; "--input-ids"; "1,2"; "--max-new-tokens"; "2"; "--top-p"; "1.5" ] "top-p"
            expectUsage [ "generate"; "--model"; llama; "--max-new-tokens"; "2" ] "give one of --text, --input-ids"
            expectError [ "generate"; "--model"; llama; "--input-ids"; "1,2"; "--max-new-tokens"; "2"; "--steer"; "model.layers.7.mlp.act_fn:1=+1" ] "model.layers.7"
        }
    ]

/// The rows "rank  index  value" of a neurons table.
let private neuronRows (out: string) =
    out.Split('\n')
    |> Array.choose (fun l ->
        let m = Regex.Match(l, @"^\s*(\d+)\s+(\d+)\s+(-?\d+\.\d+)")
        if m.Success then Some(int m.Groups.[1].Value, int m.Groups.[2].Value, number m.Groups.[3].Value) else None)

let neuronsTests =
    testList "lxt neurons" [
        test "lists the K most relevant neurons of a node for one prediction, best first" {
            let out = ok [ "neurons"; "--model"; llama; "--input-ids"; llamaPrompt; "--node"; "model.layers.0.mlp.act_fn"; "--top"; "5" ]
            let rows = neuronRows out
            Expect.equal (rows |> Array.map (fun (r, _, _) -> r)) [| 1 .. 5 |] "five ranks"
            let values = rows |> Array.map (fun (_, _, v) -> v)
            Expect.equal values (Array.sortDescending values) "best first"
            Expect.equal (rows |> Array.map (fun (_, i, _) -> i) |> Array.distinct).Length 5 "five distinct neurons"
        }
        test "ranks attention heads of attention weights" {
            let out = ok [ "neurons"; "--model"; demo; "--text"; "the cow says"; "--node"; "model.layers.1.self_attn.attn_weights"; "--top"; "4" ]
            Expect.stringContains out "head" "the column names heads"
            Expect.equal (neuronRows out |> Array.map (fun (_, i, _) -> i) |> Array.sort) [| 0; 1; 2; 3 |] "the demo model's four heads"
        }
        test "aggregates over a data file" {
            let dir = tempDir ()
            let data = Path.Combine(dir, "d.jsonl")
            File.WriteAllLines(data, [ """{"text": "the cat sat says"}"""; """{"input_ids": [18, 3, 1], "target": 11}""" ])
            let out = ok [ "neurons"; "--model"; demo; "--data"; data; "--node"; "model.layers.0.mlp.act_fn"; "--top"; "3"; "--ranking"; "absolute" ]
            Expect.stringContains out "2 examples" "both lines"
            Expect.equal (neuronRows out).Length 3 "three neurons"
        }
        test "an unknown node fails with 1; wrong arguments exit with 2" {
            expectError [ "neurons"; "--model"; llama; "--input-ids"; "1,2"; "--node"; "model.layers.0.mlp.act" ] "model.layers.0.mlp.act"
            expectUsage [ "neurons"; "--model"; llama; "--input-ids"; "1,2" ] "'--node' is required"
            expectUsage [ "neurons"; "--model"; llama; "--input-ids"; "1,2"; "--node"; "x"; "--top"; "0" ] "at least 1"
            expectUsage [ "neurons"; "--model"; llama; "--data"; "d.jsonl"; "--node"; "x"; "--token"; "1" ] "--token and --target"
        }
    ]

let activationsTests =
    testList "lxt activations" [
        test "writes an HTML report with the corpus text escaped, atomically" {
            // the demo model with one word of its vocabulary renamed to markup
            let dir = tempDir ()
            let model = Path.Combine(dir, "model")
            Directory.CreateDirectory model |> ignore
            for file in [ "config.json"; "model.safetensors"; "tokenizer.json" ] do File.Copy(Path.Combine(demo, file), Path.Combine(model, file))
            let tokenizer = Path.Combine(model, "tokenizer.json")
            File.WriteAllText(tokenizer, File.ReadAllText(tokenizer).Replace("\"tree\":", "\"<b>&tree\":"))
            let corpus = Path.Combine(dir, "corpus.txt")
            File.WriteAllLines(corpus, [ "the cat sat by a <b>&tree says"; "a dog ran says"; "the owl says" ])
            let out = Path.Combine(dir, "reports")
            Directory.CreateDirectory out |> ignore
            let html = Path.Combine(out, "neuron.html")
            let stdout = ok [ "activations"; "--model"; model; "--corpus"; corpus; "--node"; "model.layers.0.mlp.act_fn"; "--index"; "5"; "--html"; html ]
            let text = File.ReadAllText html
            Expect.stringContains text "&lt;b&gt;&amp;tree" "the token is escaped"
            Expect.isFalse (text.Contains "<b>") "no raw markup from the corpus"
            Expect.stringContains text "Top-activating windows" "the activation list"
            Expect.stringContains text "Top-relevant windows" "the relevance list"
            Expect.stringContains stdout "3 examples" "the summary"
            Expect.equal (Directory.GetFiles out) [| html |] "no temporary file"
        }
        test "a neuron outside the node fails with 1; a missing --html exits with 2" {
            let corpus = Path.Combine(tempDir (), "c.txt")
            File.WriteAllText(corpus, "the cat says\n")
            let html = Path.Combine(tempDir (), "n.html")
            expectError [ "activations"; "--model"; demo; "--corpus"; corpus; "--node"; "model.layers.0.mlp.act_fn"; "--index"; "64"; "--html"; html ] "index 64"
            expectUsage [ "activations"; "--model"; demo; "--corpus"; corpus; "--node"; "model.layers.0.mlp.act_fn"; "--index"; "1" ] "'--html' is required"
        }
    ]

let checkTests =
    testList "lxt check" [
        test "CP-LRP conserves relevance across the llama fixture's layers" {
            let out = ok [ "check"; "--model"; llama; "--input-ids"; llamaPrompt; "--rules"; "cp-lrp" ]
            Expect.stringContains out "model.layers.0" "a row per layer"
            Expect.stringContains out "no leak beyond the tolerance" "no leak"
            Expect.stringContains out "no NaN/∞" "no NaN"
        }
        test "AttnLRP leaks (softmax absorbs relevance): the check names the layer and still exits with 0" {
            let out = ok [ "check"; "--model"; llama; "--input-ids"; llamaPrompt; "--device"; "reference" ]
            Expect.stringContains out "first leak: 'model.layers.1'" "the first leaking layer, from the output down"
        }
        test "a glob picks the boundaries; one matching nothing fails" {
            let out = ok [ "check"; "--model"; llama; "--input-ids"; llamaPrompt; "--rules"; "cp-lrp"; "--boundaries"; "model.layers.*.mlp.act_fn" ]
            Expect.stringContains out "model.layers.1.mlp.act_fn" "the matched nodes are rows"
            expectError [ "check"; "--model"; llama; "--input-ids"; llamaPrompt; "--boundaries"; "model.nothing.*" ] "model.nothing.*"
        }
        test "image models take pixels" {
            let f = FixtureTests.load "vit"
            let reference = Directory.GetFiles(f.Dir, "reference_*.json") |> Array.exactlyOne
            let out = ok [ "check"; "--model"; f.Dir; "--pixels"; reference; "--rules"; "cp-lrp"; "--gamma-conv"; "0.25" ]
            Expect.stringContains out "conservation under" "the report"
        }
        test "wrong arguments exit with 2" {
            expectUsage [ "check"; "--model"; llama ] "give one of"
            expectUsage [ "check"; "--model"; llama; "--input-ids"; "1"; "--tolerance"; "-1" ] "at least 0"
            expectUsage [ "check"; "--model"; llama; "--input-ids"; "1"; "--rules"; "attnlrp"; "--gamma-linear"; "0.1" ] "Gamma"
        }
    ]

let deviceTests =
    testList "--device" [
        test "every command that runs a model takes --device and --threads, and refuses an unknown device with 2" {
            for command in [ "explain"; "evaluate"; "generate"; "neurons"; "check" ] do
                let _, help, _ = lxt [ command; "--help" ]
                Expect.stringContains help "--device" (sprintf "%s lists --device" command)
                Expect.stringContains help "--threads" (sprintf "%s lists --threads" command)
            expectUsage [ "explain"; "--model"; llama; "--input-ids"; "1"; "--device"; "tpu" ] "takes one of cpu, reference, cuda, ilgpu-cpu, not 'tpu'"
            expectUsage [ "evaluate"; "--demo"; "--device"; "tpu" ] "'tpu'"
            expectUsage [ "generate"; "--model"; llama; "--input-ids"; "1"; "--max-new-tokens"; "1"; "--device"; "tpu" ] "'tpu'"
            expectUsage [ "neurons"; "--model"; llama; "--input-ids"; "1"; "--node"; "x"; "--device"; "tpu" ] "'tpu'"
            expectUsage [ "check"; "--model"; llama; "--input-ids"; "1"; "--device"; "tpu" ] "'tpu'"
        }
        test "explain --device reference is --precision float64; contradicting them exits with 2" {
            let run (extra: string list) =
                let json = Path.Combine(tempDir (), "e.json")
                ok ([ "explain"; "--model"; llama; "--input-ids"; llamaPrompt; "--json"; json ] @ extra) |> ignore
                (readJson json).GetProperty("relevance") |> flatten |> Array.ofSeq
            Expect.equal (run [ "--device"; "reference" ]) (run [ "--precision"; "float64" ]) "the same float64 run"
            expectUsage [ "explain"; "--model"; llama; "--input-ids"; "1"; "--precision"; "float32"; "--device"; "reference" ] "contradicts"
        }
        test "generate on the reference device gives the CPU's greedy tokens" {
            let ids device = lastLine (ok [ "generate"; "--model"; demo; "--text"; "a frog sat says"; "--max-new-tokens"; "3"; "--device"; device; "--threads"; "1" ])
            Expect.equal (ids "reference") (ids "cpu") "same tokens"
        }
    ]

let gpuDeviceTests =
    Paths.onIlgpuCpu <| testList "gpu devices" [
        test "--device ilgpu-cpu runs the GPU kernels and agrees with the CPU backend" {
            let target (out: string) = Regex.Match(out, @"target\D+(\d+)").Groups.[1].Value
            let onCpu = ok [ "explain"; "--model"; llama; "--input-ids"; llamaPrompt; "--device"; "cpu" ]
            let onIlgpu = ok [ "explain"; "--model"; llama; "--input-ids"; llamaPrompt; "--device"; "ilgpu-cpu" ]
            Expect.equal (target onIlgpu) (target onCpu) "same explained target"
        }
        test "--precision bf16 --device ilgpu-cpu explains in bfloat16 products; tf32 and bf16 on cpu or reference are usage errors" {
            let json = Path.Combine(tempDir (), "bf16.json")
            let out = ok [ "explain"; "--model"; llama; "--input-ids"; llamaPrompt; "--device"; "ilgpu-cpu"; "--precision"; "bf16"; "--json"; json ]
            Expect.stringContains out "target" "the explanation is printed"
            Expect.stringContains out "ilgpu-cpu (float32, bf16 products)" "the header says how it computes"
            let relevance = (readJson json).GetProperty("relevance") |> flatten |> Array.ofSeq
            Expect.equal relevance.Length 5 "one relevance per token"
            Expect.isTrue (relevance |> Array.forall Double.IsFinite) "finite relevance"
            for precision in [ "bf16"; "tf32" ] do
                expectUsage [ "explain"; "--model"; llama; "--input-ids"; llamaPrompt; "--device"; "cpu"; "--precision"; precision ] "--device cuda or ilgpu-cpu"
                expectUsage [ "explain"; "--model"; llama; "--input-ids"; llamaPrompt; "--precision"; precision ] "--device cuda or ilgpu-cpu"
                expectUsage [ "explain"; "--model"; llama; "--input-ids"; llamaPrompt; "--device"; "reference"; "--precision"; precision ] "contradicts"
            let _, _, err = lxt [ "explain"; "--model"; llama; "--input-ids"; llamaPrompt; "--device"; "cpu"; "--precision"; "bf16" ]
            let errorLines = err.Split('\n') |> Array.filter (fun l -> l.StartsWith "error")
            Expect.equal errorLines.Length 1 (sprintf "one error line: %s" err)
        }
        test "--device cuda without a GPU is one clear error" {
            if not (File.Exists "/dev/nvidia0") then
                expectError [ "explain"; "--model"; llama; "--input-ids"; llamaPrompt; "--device"; "cuda" ] "CUDA"
        }
    ]

/// Runs `body` with a function giving the per-token relevance `lxt explain` writes for the llama fixture's prompt with
/// the given options (through --json, into a folder removed afterwards).
let private withRelevance (body: (string list -> double[]) -> unit) =
    let dir = Path.Combine(Path.GetTempPath(), "lxt-relevance-" + Guid.NewGuid().ToString("N"))
    Directory.CreateDirectory dir |> ignore
    try
        let mutable runs = 0
        body (fun options ->
            runs <- runs + 1
            let json = Path.Combine(dir, sprintf "%d.json" runs)
            ok ([ "explain"; "--model"; llama; "--input-ids"; llamaPrompt ] @ options @ [ "--json"; json ]) |> ignore
            use doc = System.Text.Json.JsonDocument.Parse(File.ReadAllText json)
            doc.RootElement.GetProperty("relevance").EnumerateArray() |> Seq.map (fun e -> e.GetDouble()) |> Array.ofSeq)
    finally Directory.Delete(dir, true)

let checkpointingTests =
    testList "checkpointing" [
        test "--checkpointing layers, sqrt, products and products:GiB give the relevance of a plain run" {
            withRelevance <| fun explainRelevance ->
                let relevance (mode: string) (device: string) = explainRelevance [ "--device"; device; "--checkpointing"; mode ]
                let plain = relevance "none" "reference"
                for mode in [ "layers"; "sqrt"; "products" ] do
                    let r = relevance mode "reference"
                    Expect.equal r.Length plain.Length "one value per token"
                    for a, b in Array.zip r plain do Expect.floatClose Accuracy.veryHigh a b (sprintf "%s: same relevance" mode)
                // a budget is planned by dry runs of the backend computing the explanation (not the reference)
                let cpu = relevance "none" "cpu"
                for mode in [ "products:0.0001"; "products:4" ] do
                    let r = relevance mode "cpu"
                    for a, b in Array.zip r cpu do Expect.floatClose Accuracy.high a b (sprintf "%s: same relevance" mode)
        }
        test "--checkpointing takes none, layers, sqrt, products or products:GiB" {
            expectUsage [ "explain"; "--model"; llama; "--input-ids"; llamaPrompt; "--checkpointing"; "half" ] "none, layers, sqrt, products or products:GiB"
            expectUsage [ "explain"; "--model"; llama; "--input-ids"; llamaPrompt; "--checkpointing"; "products:-2" ] "products:GiB"
        }
        test "--checkpointing products:GiB on the float64 reference says it cannot plan a budget there" {
            expectUsage [ "explain"; "--model"; llama; "--input-ids"; llamaPrompt; "--device"; "reference"; "--checkpointing"; "products:1" ] "memory budget"
        }
        test "--attention-blocks 2 gives the relevance of whole attention (--attention-blocks 0), checkpointed at the products too" {
            withRelevance <| fun explainRelevance ->
                let relevance (rows: string) (mode: string) =
                    explainRelevance [ "--device"; "reference"; "--attention-blocks"; rows; "--checkpointing"; mode ]
                let whole = relevance "0" "none"
                for mode in [ "none"; "products" ] do
                    for a, b in Array.zip (relevance "2" mode) whole do Expect.floatClose Accuracy.veryHigh a b (sprintf "blocks of 2, %s: same relevance" mode)
            expectUsage [ "explain"; "--model"; llama; "--input-ids"; llamaPrompt; "--attention-blocks"; "-1" ] "attention-blocks"
        }
        test "--all-positions gives the relevance of the default, which computes the last layer at the explained position" {
            withRelevance <| fun explainRelevance ->
                let every = explainRelevance [ "--device"; "reference"; "--all-positions" ]
                let read = explainRelevance [ "--device"; "reference" ]
                Expect.equal read.Length every.Length "one value per token"
                for a, b in Array.zip read every do Expect.floatClose Accuracy.veryHigh a b "same relevance"
        }
        test "--fused-attention gives the relevance of attention as products, on the reference and on the cpu" {
            withRelevance <| fun explainRelevance ->
                let products = explainRelevance [ "--device"; "reference" ]
                let fused = explainRelevance [ "--device"; "reference"; "--fused-attention" ]
                for a, b in Array.zip fused products do Expect.floatClose Accuracy.veryHigh a b "same relevance in float64"
                let cpu = explainRelevance [ "--device"; "cpu"; "--fused-attention" ]
                for a, b in Array.zip cpu products do Expect.floatClose { absolute = 1e-5; relative = 1e-4 } a b "and in float32"
        }
    ]

let planTests =
    testList "lxt plan" [
        test "prints each checkpointing choice's planned peak and kernels, as ExplanationPlanner plans them, reading no weight" {
            let out = ok [ "plan"; "--model"; llama; "--tokens"; "256"; "--device"; "ilgpu-cpu"; "--checkpointing"; "none,layers" ]
            let rows =
                out.Split('\n', StringSplitOptions.RemoveEmptyEntries)
                |> Array.map (fun l -> l.Split(' ', StringSplitOptions.RemoveEmptyEntries))
                |> Array.filter (fun cells -> cells.Length = 3 && (cells.[0] = "none" || cells.[0] = "layers"))
            Expect.equal (rows |> Array.map (fun r -> r.[0])) [| "none"; "layers" |] "one row per choice, in order"
            use model = Lxt.Import.PretrainedModel.Open llama
            let graph = model.BuildGraph 256
            let plans = ExplanationPlanner.Plan(graph.Model, graph.InputName, graph.LayerOutputs, Device.IlgpuCpu, Lxt.Backend.Gpu.GemmPrecision.Float32, [ Checkpointing.None; Checkpointing.EveryLayer ])
            for row, plan in Array.zip rows (Array.ofSeq plans) do
                Expect.floatClose Accuracy.high (number row.[1]) (Math.Round(float plan.PeakBytes / 1048576.0, 1)) (sprintf "%s: the planned MiB" row.[0])
                Expect.equal (int64 row.[2]) plan.Kernels (sprintf "%s: the kernels" row.[0])
                Expect.isGreaterThan plan.Kernels 0L "kernels are counted"
            Expect.isLessThan plans.[1].PeakBytes plans.[0].PeakBytes "at 256 tokens, checkpointing every layer plans less memory than none"
            Expect.isGreaterThan plans.[1].Kernels plans.[0].Kernels "and recomputes, so launches more kernels"
        }
        test "--attention-blocks 64 at 256 tokens plans less memory than whole attention and more kernels" {
            let plan (rows: string) =
                let out = ok [ "plan"; "--model"; llama; "--tokens"; "256"; "--device"; "ilgpu-cpu"; "--checkpointing"; "none"; "--attention-blocks"; rows ]
                let cells = out.Split('\n') |> Array.map (fun l -> l.Split(' ', StringSplitOptions.RemoveEmptyEntries)) |> Array.find (fun c -> c.Length = 3 && c.[0] = "none")
                number cells.[1], int64 cells.[2]
            let (wholeMiB, wholeKernels), (blockedMiB, blockedKernels) = plan "0", plan "64"
            Expect.isLessThan blockedMiB wholeMiB "four blocks of 64 causal rows keep 5/8 of the probabilities"
            Expect.isGreaterThan blockedKernels wholeKernels "and launch kernels for each block"
        }
        test "a folder holding only config.json plans as the folder with its checkpoint does" {
            let dir = Path.Combine(Path.GetTempPath(), sprintf "lxt-plan-config-%d" (Random().Next()))
            Directory.CreateDirectory dir |> ignore
            try
                File.Copy(Path.Combine(llama, "config.json"), Path.Combine(dir, "config.json"))
                let rows (folder: string) =
                    let out = ok [ "plan"; "--model"; folder; "--tokens"; "64"; "--device"; "ilgpu-cpu"; "--checkpointing"; "none,products" ]
                    out.Split('\n') |> Array.filter (fun l -> l.StartsWith "none" || l.StartsWith "products")
                let planned = rows dir
                Expect.equal planned.Length 2 "a row for each choice"
                Expect.equal planned (rows llama) "the same memory and kernels"
            finally Directory.Delete(dir, true)
            expectError [ "plan"; "--model"; Path.Combine(Path.GetTempPath(), "lxt-no-such-folder") ] "does not exist"
        }
        test "--all-positions at 256 tokens plans more memory than computing the last layer at the explained position" {
            let plan (extra: string list) =
                let out = ok ([ "plan"; "--model"; llama; "--tokens"; "256"; "--device"; "ilgpu-cpu"; "--checkpointing"; "none" ] @ extra)
                let cells = out.Split('\n') |> Array.map (fun l -> l.Split(' ', StringSplitOptions.RemoveEmptyEntries)) |> Array.find (fun c -> c.Length = 3 && c.[0] = "none")
                number cells.[1]
            Expect.isLessThan (plan []) (plan [ "--all-positions" ]) "the last layer's activations at one position"
        }
        test "--fused-attention at 256 tokens plans less memory and fewer kernels than attention as products and a softmax" {
            let plan (extra: string list) =
                let out = ok ([ "plan"; "--model"; llama; "--tokens"; "256"; "--device"; "ilgpu-cpu"; "--checkpointing"; "none" ] @ extra)
                let cells = out.Split('\n') |> Array.map (fun l -> l.Split(' ', StringSplitOptions.RemoveEmptyEntries)) |> Array.find (fun c -> c.Length = 3 && c.[0] = "none")
                number cells.[1], int64 cells.[2]
            let (productsMiB, productsKernels), (fusedMiB, fusedKernels) = plan [], plan [ "--fused-attention" ]
            Expect.isLessThan fusedMiB productsMiB "no [heads, tokens, tokens] scores or probabilities"
            Expect.isLessThan fusedKernels productsKernels "four kernels an attention, forward and backward"
        }
        test "attention is one op by default on the cpu and products and a softmax on ilgpu-cpu; --no-fused-attention asks for products" {
            let plan (device: string) (extra: string list) =
                let out = ok ([ "plan"; "--model"; llama; "--tokens"; "256"; "--device"; device; "--checkpointing"; "none" ] @ extra)
                out.Split('\n') |> Array.find (fun l -> l.StartsWith "none ")
            Expect.equal (plan "cpu" []) (plan "cpu" [ "--fused-attention" ]) "the cpu: attention as one op"
            Expect.notEqual (plan "cpu" []) (plan "cpu" [ "--no-fused-attention" ]) "unless told otherwise"
            Expect.equal (plan "ilgpu-cpu" []) (plan "ilgpu-cpu" [ "--no-fused-attention" ]) "CUDA cores: products and a softmax"
            expectUsage [ "plan"; "--model"; llama; "--fused-attention"; "--no-fused-attention" ] "contradict"
            expectUsage [ "explain"; "--model"; llama; "--input-ids"; llamaPrompt; "--fused-attention"; "--no-fused-attention" ] "contradict"
        }
        test "in bfloat16 the header says which computed values are stored in bfloat16" {
            let out = ok [ "plan"; "--model"; llama; "--tokens"; "16"; "--device"; "ilgpu-cpu"; "--precision"; "bf16"; "--checkpointing"; "none" ]
            Expect.stringContains out (sprintf "values of %d elements or more in bfloat16" (Lxt.Backend.Gpu.GpuBackend.NarrowValuesFromEnvironment())) "the threshold"
            let f32 = ok [ "plan"; "--model"; llama; "--tokens"; "16"; "--device"; "ilgpu-cpu"; "--checkpointing"; "none" ]
            Expect.isFalse (f32.Contains "in bfloat16") "float32 products store no value narrow"
        }
        test "the float64 reference plans no device memory, and bfloat16 products need a GPU device" {
            expectUsage [ "plan"; "--model"; llama; "--device"; "reference" ] "plans no device memory"
            expectUsage [ "plan"; "--model"; llama; "--device"; "cpu"; "--precision"; "bf16" ] "cuda or ilgpu-cpu"
            expectUsage [ "plan"; "--model"; llama; "--checkpointing"; "half" ] "none, layers, sqrt, products or products:GiB"
            Expect.throwsT<ArgumentException> (fun () -> ExplanationPlanner.DecisionsFor(Device.Reference) |> ignore) "from C# too"
        }
    ]

let tests =
    testList "lxt commands" [ planTests; checkpointingTests; gpuDeviceTests; evaluateTests; generateTests; neuronsTests; activationsTests; checkTests; deviceTests
                              test "lxt --help lists every command" {
                                  let _, out, _ = lxt [ "--help" ]
                                  for c in [ "evaluate"; "generate"; "neurons"; "activations"; "check" ] do Expect.stringContains out c c
                              } ]
