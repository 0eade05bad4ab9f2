// The lxt command line, run in-process: reference parity through the JSON it writes, exit codes and error lines,
// atomic JSON, images, tokenizers; and the TextExplainer / ImageExplainer facade it runs on.
module Lxt.Tests.CliTests

open System
open System.IO
open System.Text.Json
open Expecto
open Lxt
open Lxt.Import
open Lxt.Tests.FixtureTests

/// Runs `lxt args` in-process: exit code, stdout, stderr.
let lxt (args: string list) =
    use out = new StringWriter()
    use err = new StringWriter()
    let code = Lxt.Cli.Program.Run(Array.ofList args, out, err)
    code, out.ToString(), err.ToString()

/// This run's scratch folder under the system temp folder, removed when the test process exits.
let private scratch =
    let root = Path.Combine(Path.GetTempPath(), sprintf "lxt-cli-tests-%d" Environment.ProcessId)
    AppDomain.CurrentDomain.ProcessExit.Add(fun _ -> try Directory.Delete(root, true) with _ -> ())
    root

/// A fresh empty folder in the scratch folder.
let tempDir () =
    let dir = Path.Combine(scratch, Guid.NewGuid().ToString("N"))
    Directory.CreateDirectory dir |> ignore
    dir

/// A copy of a fixture's model folder (config.json, model.safetensors) in a fresh temp folder.
let copyFixture (name: string) =
    let dir = tempDir ()
    for file in [ "config.json"; "model.safetensors" ] do
        File.Copy(Path.Combine(Paths.fixtures, name, file), Path.Combine(dir, file))
    dir

let idsOf (f: Fixture) = f.Ints "input_ids" |> Array.map string |> String.concat ","

/// The command-line input and rule options that reproduce a fixture.
let fixtureArgs (f: Fixture) =
    let reference = Directory.GetFiles(f.Dir, "reference_*.json") |> Array.exactlyOne
    match f.Name with
    | "vit" -> [ "--pixels"; reference; "--rules"; "cp-lrp"; "--gamma-conv"; "0.25"; "--gamma-linear"; "0.05" ]
    | "vit-hf" -> [ "--pixels"; reference; "--rules"; "cp-lrp" ]
    | _ -> [ "--input-ids"; idsOf f; "--rules"; "attnlrp" ]

let rec flatten (e: JsonElement) : double seq =
    if e.ValueKind = JsonValueKind.Array then e.EnumerateArray() |> Seq.collect flatten else Seq.singleton (e.GetDouble())

let readJson (path: string) = JsonDocument.Parse(File.ReadAllText path).RootElement.Clone()

/// The tolerances FixtureTests uses: 1e-4 in float32; in float64 1e-7, with the references' own floors
/// (qwen3_moe ran in float32; the Llama family keeps Hugging Face's float32 rotary tables).
let tolerance (name: string) (precision: string) =
    match precision, name with
    | "float32", _ -> 1e-4
    | _, "qwen3_moe" -> 1e-5
    | _, ("llama" | "qwen2") -> 3e-7
    | _ -> 1e-7

let parityTests =
    testList "fixtures reproduced through lxt explain --json" [
        for precision in [ "float32"; "float64" ] do
            for name in names do
                test (sprintf "%s in %s" name precision) {
                    let f = load name
                    let dir = tempDir ()
                    let json = Path.Combine(dir, "out.json")
                    let layers =
                        if f.Has "latent_relevance_per_layer" then
                            use model = PretrainedModel.Open f.Dir
                            (model.BuildGraph(f.Ints("input_ids").Length)).LayerOutputs |> List.ofSeq
                        else []
                    let nodes = if layers.IsEmpty then [] else [ "--nodes"; String.Join(",", layers) ]
                    let code, _, err =
                        lxt ([ "explain"; "--model"; f.Dir; "--precision"; precision; "--json"; json ] @ fixtureArgs f @ nodes)
                    Expect.equal code 0 (sprintf "exit code (stderr: %s)" err)
                    let r = readJson json
                    let tol = tolerance name precision
                    Expect.equal (r.GetProperty("target").GetInt32()) (f.Json.GetProperty("target").GetInt32()) "target"
                    let logits = r.GetProperty "logits" |> flatten |> Array.ofSeq
                    let err = relativeError logits f.Logits
                    Expect.isLessThan err tol (sprintf "logits: relative error %g" err)
                    let relevance = r.GetProperty "relevance" |> flatten |> Array.ofSeq
                    let err = relativeError relevance (f.Doubles "relevance")
                    Expect.isLessThan err tol (sprintf "relevance: relative error %g" err)
                    Expect.floatClose Accuracy.high (r.GetProperty("relevance_sum").GetDouble()) (Array.sum relevance) "relevance_sum = Σ relevance"
                    Expect.floatClose Accuracy.high (r.GetProperty("target_logit").GetDouble()) logits.[f.Json.GetProperty("target").GetInt32()] "target_logit"
                    for key in [ "load"; "forward"; "relevance" ] do
                        Expect.isGreaterThanOrEqual (r.GetProperty("timing_ms").GetProperty(key).GetDouble()) 0.0 key
                    if f.Has "input_ids" then
                        let tokens = r.GetProperty("tokens").EnumerateArray() |> Seq.map (fun t -> t.GetString()) |> Array.ofSeq
                        Expect.equal tokens (f.Ints "input_ids" |> Array.map string) "tokens are the ids as strings without a tokenizer"
                    else
                        Expect.equal (r.GetProperty("tokens").ValueKind) JsonValueKind.Null "no tokens for images"
                        let rows = r.GetProperty("relevance")
                        Expect.equal (rows.GetArrayLength(), rows.[0].GetArrayLength()) (32, 32) "relevance is [H][W]"
                    if f.Has "latent_relevance_per_layer" then
                        let nodes = r.GetProperty "nodes"
                        let ours = layers |> Seq.collect (fun l -> flatten (nodes.GetProperty l)) |> Array.ofSeq
                        let err = relativeError ours (f.Doubles "latent_relevance_per_layer")
                        Expect.isLessThan err tol (sprintf "latent relevance: relative error %g" err)
                    Expect.equal (Directory.GetFiles dir) [| json |] "no temporary file is left beside the JSON"
                }
    ]

/// Expects a failed run: exit 1, exactly one "error: " line on stderr, no stack trace, no JSON file.
let expectFailure (args: string list) (mentions: string) =
    let dir = tempDir ()
    let json = Path.Combine(dir, "out.json")
    let code, _, err = lxt (args @ [ "--json"; json ])
    Expect.equal code 1 (sprintf "exit code (stderr: %s)" err)
    let lines = err.Split('\n', StringSplitOptions.RemoveEmptyEntries)
    Expect.equal lines.Length 1 (sprintf "one line on stderr: %s" err)
    Expect.stringStarts lines.[0] "error: " "the line starts with 'error: '"
    Expect.isFalse (err.Contains "   at ") "no stack trace"
    // the catch-all names the exception type; known failures come through the typed path without it
    Expect.isFalse (Text.RegularExpressions.Regex.IsMatch(lines.[0].TrimEnd(), @"\(\w+Exception\)$")) (sprintf "a typed Lxt or IO error: %s" lines.[0])
    Expect.stringContains (err.ToLowerInvariant()) (mentions.ToLowerInvariant()) "the message says what was wrong"
    Expect.isEmpty (Directory.GetFiles dir) "no JSON (and no temporary file) is written when the run fails"

let llamaIds () = idsOf (load "llama")

let usageTests =
    let expectUsage (args: string list) (mentions: string) =
        let code, out, err = lxt args
        Expect.equal code 2 (sprintf "exit code (stderr: %s)" err)
        Expect.stringContains err "usage: lxt" "usage on stderr"
        Expect.stringContains err mentions "the error names the problem"
        Expect.isEmpty out "nothing on stdout"
    let llama = Path.Combine(Paths.fixtures, "llama")
    testList "wrong arguments exit with 2 and the usage" [
        test "no command" { expectUsage [] "usage" }
        test "an unknown command" { expectUsage [ "explian" ] "unknown command 'explian'" }
        test "an unknown option" { expectUsage [ "explain"; "--model"; llama; "--input-ids"; "1"; "--colour" ] "unknown option '--colour'" }
        test "a missing value" { expectUsage [ "explain"; "--input-ids"; "1"; "--model" ] "'--model' needs a value" }
        test "a value-less option followed by another option" { expectUsage [ "explain"; "--model"; "--input-ids"; "1" ] "'--model' needs a value" }
        test "both --text and --input-ids" { expectUsage [ "explain"; "--model"; llama; "--text"; "hi"; "--input-ids"; "1" ] "only one of --text, --input-ids" }
        test "no input" { expectUsage [ "explain"; "--model"; llama ] "give one of" }
        test "no model" { expectUsage [ "explain"; "--input-ids"; "1" ] "'--model' is required" }
        test "an unknown rule set" { expectUsage [ "explain"; "--model"; llama; "--input-ids"; "1"; "--rules"; "lrp-magic" ] "lrp-magic" }
        test "Gamma with attnlrp" { expectUsage [ "explain"; "--model"; llama; "--input-ids"; "1"; "--gamma-conv"; "0.25" ] "Gamma" }
        test "a bad number" { expectUsage [ "explain"; "--model"; llama; "--input-ids"; "1"; "--target"; "seven" ] "'seven'" }
        test "a bad gamma" { expectUsage [ "explain"; "--model"; llama; "--input-ids"; "1"; "--rules"; "cp-lrp"; "--gamma-linear"; "1,5" ] "'1,5'" }
        test "a bad token id list" { expectUsage [ "explain"; "--model"; llama; "--input-ids"; "1,x,3" ] "'x'" }
        test "a negative target" { expectUsage [ "explain"; "--model"; llama; "--input-ids"; "1"; "--target"; "-1" ] "at least 0" }
        test "an unknown precision" { expectUsage [ "explain"; "--model"; llama; "--input-ids"; "1"; "--precision"; "float16" ] "float16" }
        test "an option given twice" { expectUsage [ "explain"; "--model"; llama; "--model"; llama; "--input-ids"; "1" ] "twice" }
        test "lxt --help lists the commands and exits with 0" {
            let code, out, _ = lxt [ "--help" ]
            Expect.equal code 0 "exit code"
            Expect.stringContains out "explain" "lists explain"
            Expect.stringContains out "nodes" "lists nodes"
        }
        test "lxt explain --help lists the options and exits with 0" {
            let code, out, _ = lxt [ "explain"; "--help" ]
            Expect.equal code 0 "exit code"
            for option in [ "--model"; "--text"; "--input-ids"; "--image"; "--pixels"; "--rules"; "--gamma-conv"; "--gamma-linear"
                            "--target"; "--precision"; "--json"; "--threads"; "--nodes" ] do
                Expect.stringContains out option (sprintf "lists %s" option)
        }
    ]

/// Rewrites a model folder's model.safetensors with `change` applied to one tensor's values.
let rewriteTensor (dir: string) (tensor: string) (change: float32[] -> unit) =
    let path = Path.Combine(dir, "model.safetensors")
    let tensors =
        use checkpoint = SafetensorsCheckpoint.Open path
        [ for name in checkpoint.Names ->
            let values = checkpoint.ReadFloat32 name
            if name = tensor then change values
            struct (name, TensorDType.F32, checkpoint.Shape(name) |> Array.ofSeq, values) ]
    SafetensorsWriter.Write(path, tensors |> Seq.map (fun struct (n, d, s, v) -> (n, d, s, v)))

let failureTests =
    let llama = Path.Combine(Paths.fixtures, "llama")
    testList "a failed run exits with 1 and one error line" [
        test "a missing model folder" {
            expectFailure [ "explain"; "--model"; Path.Combine(tempDir (), "nowhere"); "--input-ids"; "1" ] "does not exist"
        }
        test "a folder without config.json" {
            expectFailure [ "explain"; "--model"; tempDir (); "--input-ids"; "1" ] "config.json"
        }
        test "a truncated safetensors file" {
            let dir = copyFixture "llama"
            let file = Path.Combine(dir, "model.safetensors")
            let length = FileInfo(file).Length
            use stream = new FileStream(file, FileMode.Open)
            stream.SetLength(length / 2L)
            stream.Dispose()
            expectFailure [ "explain"; "--model"; dir; "--input-ids"; llamaIds () ] "safetensors"
        }
        test "a config that does not match the weights" {
            let dir = copyFixture "llama"
            let config = Path.Combine(dir, "config.json")
            File.WriteAllText(config, File.ReadAllText(config).Replace("\"hidden_size\": 32", "\"hidden_size\": 48"))
            expectFailure [ "explain"; "--model"; dir; "--input-ids"; llamaIds () ] "shape"
        }
        test "a token id outside the vocabulary" {
            expectFailure [ "explain"; "--model"; llama; "--input-ids"; "1,2,500" ] "token id 500"
        }
        test "NaN in the weights" {
            let dir = copyFixture "llama"
            rewriteTensor dir "model.layers.0.mlp.down_proj.weight" (fun v -> v.[7] <- nanf)
            expectFailure [ "explain"; "--model"; dir; "--input-ids"; llamaIds () ] "model.layers.0.mlp.down_proj.weight"
        }
        test "token ids for an image model" {
            expectFailure [ "explain"; "--model"; Path.Combine(Paths.fixtures, "vit"); "--input-ids"; "1,2" ] "image model"
        }
        test "pixels of the wrong shape" {
            let dir = tempDir ()
            let pixels = Path.Combine(dir, "pixels.json")
            File.WriteAllText(pixels, "[[[0.0, 1.0], [2.0, 3.0]]]")
            expectFailure [ "explain"; "--model"; Path.Combine(Paths.fixtures, "vit"); "--pixels"; pixels ] "[1, 2, 2]"
        }
        test "a pixel file that is not JSON" {
            let dir = tempDir ()
            let pixels = Path.Combine(dir, "pixels.json")
            File.WriteAllText(pixels, "[[[0.0,")
            expectFailure [ "explain"; "--model"; Path.Combine(Paths.fixtures, "vit"); "--pixels"; pixels ] "not valid JSON"
        }
        test "an image file that is no image" {
            let dir = tempDir ()
            let image = Path.Combine(dir, "cat.png")
            File.WriteAllText(image, "not a png")
            expectFailure [ "explain"; "--model"; Path.Combine(Paths.fixtures, "vit"); "--image"; image ] "cat.png"
        }
        test "a target outside the outputs" {
            expectFailure [ "explain"; "--model"; llama; "--input-ids"; "1,2"; "--target"; "97" ] "target 97"
        }
        test "an unknown node" {
            expectFailure [ "explain"; "--model"; llama; "--input-ids"; "1,2"; "--nodes"; "model.layers.9" ] "model.layers.9"
        }
        test "--text without a tokenizer.json" {
            expectFailure [ "explain"; "--model"; llama; "--text"; "Hello world" ] "tokenizer.json"
        }
        test "a JSON file in a folder that does not exist" {
            let code, _, err = lxt [ "explain"; "--model"; llama; "--input-ids"; "1"; "--json"; Path.Combine(tempDir (), "no", "out.json") ]
            Expect.equal code 1 "exit code"
            Expect.stringStarts err "error: " "one error line"
            Expect.isFalse (err.Contains "   at ") "no stack trace"
        }
    ]

let jsonTests =
    testList "JSON output" [
        test "an existing JSON file is replaced whole, and nothing else is left in its folder" {
            let dir = tempDir ()
            let json = Path.Combine(dir, "out.json")
            File.WriteAllText(json, String('x', 100000))
            let code, _, err = lxt [ "explain"; "--model"; Path.Combine(Paths.fixtures, "llama"); "--input-ids"; "1,2,3"; "--json"; json ]
            Expect.equal code 0 err
            let r = readJson json
            Expect.equal (r.GetProperty("relevance").GetArrayLength()) 3 "one relevance per token"
            Expect.equal (r.GetProperty("rules").GetString()) "attnlrp" "rules"
            Expect.equal (Directory.GetFiles dir) [| json |] "only the JSON file"
        }
        test "--target explains the given output" {
            let dir = tempDir ()
            let json = Path.Combine(dir, "out.json")
            let code, out, err = lxt [ "explain"; "--model"; Path.Combine(Paths.fixtures, "llama"); "--input-ids"; "1,2,3"; "--target"; "5"; "--json"; json ]
            Expect.equal code 0 err
            Expect.equal ((readJson json).GetProperty("target").GetInt32()) 5 "target"
            Expect.stringContains out "target     5" "the terminal shows the target"
        }
        test "redirected output has no colour codes and shows every token" {
            let code, out, _ = lxt [ "explain"; "--model"; Path.Combine(Paths.fixtures, "gpt2"); "--input-ids"; "4,8,15,16,23,42" ]
            Expect.equal code 0 "exit code"
            Expect.isFalse (out.Contains "\u001b[") "no ANSI escapes"
            for id in [ "'4'"; "'8'"; "'15'"; "'16'"; "'23'"; "'42'" ] do Expect.stringContains out id "a row per token"
        }
    ]

let nodesTests =
    testList "lxt nodes" [
        test "lists the layer outputs of a text model" {
            let code, out, err = lxt [ "nodes"; "--model"; Path.Combine(Paths.fixtures, "llama"); "--input-ids"; "1,2,3" ]
            Expect.equal code 0 err
            Expect.stringContains out "model.layers.0\t[3, 32]\tlayer output" "layer 0 with its shape"
            Expect.stringContains out "model.layers.1\t" "layer 1"
        }
        test "lists the named nodes of an image model" {
            let code, out, err = lxt [ "nodes"; "--model"; Path.Combine(Paths.fixtures, "vit-hf") ]
            Expect.equal code 0 err
            Expect.stringContains out "vit.encoder.layer.0" "encoder layer 0"
        }
        test "every listed name is accepted by explain --nodes" {
            let _, out, _ = lxt [ "nodes"; "--model"; Path.Combine(Paths.fixtures, "gpt2"); "--input-ids"; "1,2" ]
            let rows = out.Split('\n', StringSplitOptions.RemoveEmptyEntries) |> Array.map (fun l -> l.Split('\t'))
            let names = rows |> Array.map (fun r -> r.[0])
            let layers = rows |> Array.filter (fun r -> r.Length = 3) |> Array.map (fun r -> r.[0])
            Expect.isNonEmpty layers "some layer outputs"
            Expect.isFalse (names |> Array.exists (fun n -> n.EndsWith ".weight")) "parameters are not listed"
            let json = Path.Combine(tempDir (), "out.json")
            let code, _, err = lxt [ "explain"; "--model"; Path.Combine(Paths.fixtures, "gpt2"); "--input-ids"; "1,2"; "--nodes"; String.Join(",", names); "--json"; json ]
            Expect.equal code 0 err
            let nodes = (readJson json).GetProperty "nodes"
            for n in names do Expect.isGreaterThan (nodes.GetProperty(n).GetArrayLength()) 0 n
            for l in layers do Expect.equal (nodes.GetProperty(l).GetArrayLength()) 2 (sprintf "%s: one value per token" l)
        }
    ]

/// Writes a solid-colour PNG of the given size.
let solidPng (path: string) (width: int) (height: int) (r: byte, g: byte, b: byte) =
    use bitmap = new SkiaSharp.SKBitmap(width, height)
    bitmap.Erase(SkiaSharp.SKColor(r, g, b))
    use data = bitmap.Encode(SkiaSharp.SKEncodedImageFormat.Png, 100)
    File.WriteAllBytes(path, data.ToArray())

let imageTests =
    testList "images" [
        test "a PNG is resized to the model's size and normalised with ImageNet's mean and std" {
            let png = Path.Combine(tempDir (), "solid.png")
            solidPng png 50 40 (200uy, 100uy, 50uy)
            let pixels = Lxt.Cli.PixelInput.ReadImage(png, [| 3; 32; 32 |], Lxt.Cli.Normalization.ImageNet)
            Expect.equal pixels.Length (3 * 32 * 32) "[3, 32, 32]"
            for c, value, mean, std in [ 0, 200.0, 0.485, 0.229; 1, 100.0, 0.456, 0.224; 2, 50.0, 0.406, 0.225 ] do
                let expected = (value / 255.0 - mean) / std
                for i in 0 .. 32 * 32 - 1 do
                    Expect.floatClose Accuracy.medium (float pixels.[c * 1024 + i]) expected (sprintf "channel %d" c)
        }
        test "preprocessor_config.json's image_mean and image_std replace ImageNet's" {
            let dir = copyFixture "vit-hf"
            File.WriteAllText(Path.Combine(dir, "preprocessor_config.json"), """{"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}""")
            let n = Lxt.Cli.Normalization.For dir
            Expect.equal (n.Mean, n.Std) ([| 0.5; 0.5; 0.5 |], [| 0.5; 0.5; 0.5 |]) "mean and std"
            let png = Path.Combine(dir, "white.png")
            solidPng png 32 32 (255uy, 255uy, 255uy)
            let json = Path.Combine(dir, "out.json")
            let code, out, err = lxt [ "explain"; "--model"; dir; "--image"; png; "--rules"; "cp-lrp"; "--json"; json ]
            Expect.equal code 0 err
            let r = readJson json
            Expect.equal (r.GetProperty("relevance").GetArrayLength()) 32 "[H][W]"
            Expect.stringContains out "LABEL_" "the target's label"
            // white is 1.0 in every channel after (1 − 0.5) / 0.5: the same as explaining those pixels directly
            let pixels = Path.Combine(dir, "ones.json")
            File.WriteAllText(pixels, JsonSerializer.Serialize(Array.init 3 (fun _ -> Array.init 32 (fun _ -> Array.create 32 1.0))))
            let json2 = Path.Combine(dir, "out2.json")
            let code, _, err = lxt [ "explain"; "--model"; dir; "--pixels"; pixels; "--rules"; "cp-lrp"; "--json"; json2 ]
            Expect.equal code 0 err
            Expect.equal (flatten ((readJson json2).GetProperty "relevance") |> Array.ofSeq) (flatten (r.GetProperty "relevance") |> Array.ofSeq) "same relevance"
        }
    ]

let facadeTests =
    testList "TextExplainer and ImageExplainer" [
        test "TextExplainer reproduces the llama reference in float64" {
            let f = load "llama"
            use lxt = TextExplainer.Open(f.Dir, Device.Reference)
            let e = lxt.Explain(f.Ints "input_ids")
            Expect.equal e.Target (f.Json.GetProperty("target").GetInt32()) "target"
            Expect.isLessThan (relativeError e.PerPosition (f.Doubles "relevance")) 3e-7 "relevance"
            Expect.equal (lxt.Tokens [| 5; 6 |] |> List.ofSeq) [ "5"; "6" ] "ids as text without a tokenizer"
        }
        test "ImageExplainer reproduces the vit reference in float32" {
            let f = load "vit"
            use lxt = ImageExplainer.Open(f.Dir)
            let e = lxt.Explain(f.Doubles "image" |> Array.map float32, ExplainOptions(Method = Method.CpLrpGamma(0.25, 0.05)))
            Expect.isLessThan (relativeError e.PerPosition (f.Doubles "relevance")) 1e-4 "relevance"
        }
        test "the explainers refuse the other kind of model" {
            Expect.throwsT<LxtImportException> (fun () -> TextExplainer.Open(Path.Combine(Paths.fixtures, "vit")) |> ignore) "text on vit"
            Expect.throwsT<LxtImportException> (fun () -> ImageExplainer.Open(Path.Combine(Paths.fixtures, "llama")) |> ignore) "image on llama"
        }
    ]

/// $LXT_TOKENIZERS/<model>/tokenizer.json, fetched by scripts/fetch-tokenizers.sh; None skips the test.
let tokenizer (model: string) =
    match Environment.GetEnvironmentVariable "LXT_TOKENIZERS" with
    | null | "" -> skiptest "LXT_TOKENIZERS is not set (scripts/fetch-tokenizers.sh DEST fetches the tokenizers; export LXT_TOKENIZERS=DEST)"
    | dir ->
        let path = Path.Combine(dir, model, "tokenizer.json")
        if not (File.Exists path) then skiptest (sprintf "%s is missing (run scripts/fetch-tokenizers.sh %s)" path dir)
        path

let tokenizerTests =
    testList "tokenizers from LXT_TOKENIZERS" [
        test "llama3 encodes \"Hello world\" as 9906, 1917" {
            use t = TextTokenizer.Open(tokenizer "llama3")
            Expect.equal (t.Encode "Hello world") [| 9906; 1917 |] "ids"
            Expect.equal (t.TokenText 9906, t.TokenText 1917) ("Hello", " world") "token texts"
        }
        for model in [ "qwen3"; "gemma3"; "gpt2" ] do
            test (sprintf "%s decodes what it encodes" model) {
                use t = TextTokenizer.Open(tokenizer model)
                let text = "Layer-wise relevance, explained."
                let ids = t.Encode text
                Expect.isNonEmpty ids "some tokens"
                Expect.equal (t.Decode ids) text "round trip"
            }
        test "--text on the llama fixture with the llama3 tokenizer: ids beyond its 97 tokens fail with exit 1" {
            let path = tokenizer "llama3"
            let dir = copyFixture "llama"
            File.Copy(path, Path.Combine(dir, "tokenizer.json"))
            expectFailure [ "explain"; "--model"; dir; "--text"; "Hello world" ] "token id 9906"
        }
        test "--input-ids on a folder with a tokenizer shows the token texts" {
            let path = tokenizer "llama3"
            let dir = copyFixture "llama"
            File.Copy(path, Path.Combine(dir, "tokenizer.json"))
            let json = Path.Combine(dir, "out.json")
            let code, out, err = lxt [ "explain"; "--model"; dir; "--input-ids"; "39,40,41"; "--json"; json ]
            Expect.equal code 0 err
            let tokens = (readJson json).GetProperty("tokens").EnumerateArray() |> Seq.map (fun t -> t.GetString()) |> List.ofSeq
            Expect.equal tokens [ "H"; "I"; "J" ] "llama3 ids 39..41 are the letters H, I, J"
            Expect.stringContains out "'H'" "the table shows the token text"
        }
    ]

let tests =
    testList "lxt command line" [ parityTests; usageTests; failureTests; jsonTests; nodesTests; imageTests; facadeTests; tokenizerTests ]
