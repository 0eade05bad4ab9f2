// What users see: colour maps, token heatmaps (HTML in a real headless Chromium, SVG, PNG, LaTeX), image overlays,
// the relevance trace, lxt demo, and lxt explain --batch (resume after an interruption, per-line errors, Ctrl-C).
module Lxt.Tests.VisualizationTests

open System
open System.Diagnostics
open System.IO
open System.Text.Json
open System.Text.RegularExpressions
open Expecto
open FsCheck
open SkiaSharp
open Lxt
open Lxt.Demo
open Lxt.Visualization
open Lxt.Tests.FixtureTests
open Lxt.Tests.CliTests

let private rgb (c: Rgb) = int c.R, int c.G, int c.B
let private pixel (bitmap: SKBitmap) x y = let c = bitmap.GetPixel(x, y) in int c.Red, int c.Green, int c.Blue
let private red, blue, white, black = (255, 0, 0), (0, 0, 255), (255, 255, 255), (0, 0, 0)

let colorMapTests =
    testList "colour maps" [
        test "bwr: 0 is white, +1 the red extreme, −1 the blue extreme" {
            Expect.equal (rgb (ColorMaps.Bwr 0.0)) white "bwr(0)"
            Expect.equal (rgb (ColorMaps.Bwr 1.0)) red "bwr(1)"
            Expect.equal (rgb (ColorMaps.Bwr -1.0)) blue "bwr(-1)"
            Expect.equal (rgb (ColorMaps.Bwr 7.0)) red "values beyond ±1 are clamped"
            Expect.equal (rgb (ColorMaps.Bwr nan)) white "NaN counts as 0"
        }
        testProperty "bwr is blue/red symmetric: bwr(−v) is bwr(v) with red and blue swapped" <| fun (NormalFloat v) ->
            let v = Math.Clamp(v, -1.0, 1.0)
            let p, n = ColorMaps.Bwr v, ColorMaps.Bwr(-v)
            (int p.R, int p.G, int p.B) = (int n.B, int n.G, int n.R)
        test "coldnhot: black at 0, white at +1, cyan at −1, red and blue on the way" {
            Expect.equal (rgb (ColorMaps.ColdNHot 0.0)) black "coldnhot(0)"
            Expect.equal (rgb (ColorMaps.ColdNHot 1.0)) white "coldnhot(1)"
            Expect.equal (rgb (ColorMaps.ColdNHot -1.0)) (0, 255, 255) "coldnhot(-1)"
            Expect.equal (rgb (ColorMaps.ColdNHot (1.0 / 3.0))) red "coldnhot(1/3)"
            Expect.equal (rgb (ColorMaps.ColdNHot -0.5)) blue "coldnhot(-1/2)"
        }
        testProperty "coldnhot's brightness grows with |v| on both sides of 0" <| fun (a: float) (b: float) (negative: bool) ->
            let clamp x = if Double.IsFinite x then Math.Clamp(abs x % 1.0000001, 0.0, 1.0) else 0.0
            let lo, hi = min (clamp a) (clamp b), max (clamp a) (clamp b)
            let sign = if negative then -1.0 else 1.0
            (ColorMaps.ColdNHot(sign * hi)).Luminance >= (ColorMaps.ColdNHot(sign * lo)).Luminance - 1e-9
        test "colour maps parse by their command-line names" {
            Expect.equal (ColorMaps.Parse "bwr") ColorMap.Bwr "bwr"
            Expect.equal (ColorMaps.Parse "coldnhot") ColorMap.ColdNHot "coldnhot"
            Expect.throwsT<ArgumentException> (fun () -> ColorMaps.Parse "jet" |> ignore) "unknown names are refused"
        }
    ]

// tokens covering the renderers' cases: the most relevant, a negative one, zeros, HTML and LaTeX specials, whitespace
let private tokens = [| "The"; " cat"; " <b>&amp;"; " \n"; " sat"; "a_b%{x}\\"; " " |]
let private relevance = [| 0.5; 2.0; -2.0; 0.0; 0.25; 0.0; 0.1 |]
let private info = HeatmapInfo(Title = "test", Rules = "attnlrp (AttnLRP)", Target = "7 'meow'")

/// The first of $LXT_CHROMIUM, chromium, chromium-browser, google-chrome on the usual paths.
let private chromium =
    [ Environment.GetEnvironmentVariable "LXT_CHROMIUM"; "/usr/bin/chromium"; "/usr/bin/chromium-browser"; "/usr/bin/google-chrome" ]
    |> List.tryFind (fun p -> not (String.IsNullOrEmpty p) && File.Exists p)

/// Loads `htmlPath` in headless Chromium and returns the DOM after its scripts ran.
let private dumpDom (browser: string) (htmlPath: string) =
    let start = ProcessStartInfo(browser, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false)
    for a in [ "--headless"; "--no-sandbox"; "--disable-gpu"; "--disable-quic"; "--no-first-run"; "--disable-background-networking"
               "--disable-component-update"; "--disable-sync"; sprintf "--user-data-dir=%s" (tempDir ()); "--dump-dom"
               Uri(htmlPath).AbsoluteUri ] do
        start.ArgumentList.Add a
    use p = Process.Start start
    let out = p.StandardOutput.ReadToEndAsync()
    p.StandardError.ReadToEndAsync() |> ignore
    if not (p.WaitForExit 90000) then
        p.Kill true
        failwith "chromium did not finish within 90 s"
    out.Result

let htmlTests =
    testList "HTML heatmap" [
        test "the page escapes tokens, shows values on hover, the rules, the target and a colour bar" {
            let page = TokenHeatmap.Html(tokens, relevance, info)
            Expect.stringContains page "&lt;b&gt;&amp;amp;" "HTML in a token is escaped"
            Expect.isFalse (page.Contains "<b>&amp;") "no raw markup from a token"
            Expect.stringContains page "title=\"#1 &#39; cat&#39;: R = 2," "the value on hover"
            Expect.stringContains page "attnlrp (AttnLRP)" "the rule set"
            Expect.stringContains page "7 &#39;meow&#39;" "the target"
            Expect.stringContains page "linear-gradient(to right, #0000ff, #ffffff, #ff0000)" "the colour bar"
            Expect.stringContains page "↵" "a newline token is visible"
            Expect.stringContains page "␣" "a token of spaces is visible"
        }
        test "rendered by headless Chromium: tokens in the DOM, the top token red, a negative one blue, a zero one white" {
            match chromium with
            | None -> skiptest "chromium is not installed (apt-get install -y chromium); the HTML heatmap is not rendered"
            | Some browser ->
                let dir = tempDir ()
                let page = Path.Combine(dir, "heatmap.html")
                TokenHeatmap.WriteHtml(page, tokens, relevance, info)
                // the test's probe, not the page's: computed background colours and texts of the token spans
                let probe =
                    "<script>document.body.insertAdjacentHTML('beforeend', '<pre id=\"lxt-probe\"></pre>');" +
                    "document.getElementById('lxt-probe').textContent = JSON.stringify([...document.querySelectorAll('span.tok')]" +
                    ".map(s => [s.dataset.index, getComputedStyle(s).backgroundColor, s.textContent]));</script>"
                let probed = Path.Combine(dir, "probed.html")
                File.WriteAllText(probed, File.ReadAllText(page).Replace("</body>", probe + "</body>"))
                let dom = dumpDom browser probed
                // the last match: the script's own text holds an empty <pre id="lxt-probe"></pre> too
                let m = Regex.Matches(dom, "<pre id=\"lxt-probe\">(.*?)</pre>", RegexOptions.Singleline) |> Seq.tryLast |> Option.defaultValue Match.Empty
                Expect.isTrue (m.Success && m.Groups.[1].Value <> "") (sprintf "the probe ran in Chromium (DOM: %s)" (dom.Substring(0, min 400 dom.Length)))
                let spans =
                    JsonDocument.Parse(Net.WebUtility.HtmlDecode m.Groups.[1].Value).RootElement.EnumerateArray()
                    |> Seq.map (fun e -> int (e.[0].GetString()), e.[1].GetString(), e.[2].GetString())
                    |> Array.ofSeq
                Expect.equal spans.Length tokens.Length "one span per token"
                let colour i = spans |> Array.find (fun (j, _, _) -> j = i) |> fun (_, c, _) -> c
                let text i = spans |> Array.find (fun (j, _, _) -> j = i) |> fun (_, _, t) -> t
                Expect.equal (colour 1) "rgb(255, 0, 0)" "the most relevant token has the extreme red"
                Expect.equal (colour 2) "rgb(0, 0, 255)" "the most negative token (−max) has the extreme blue"
                Expect.equal (colour 5) "rgb(255, 255, 255)" "a token of zero relevance is white"
                Expect.equal (colour 4) (let c = ColorMaps.Bwr 0.125 in sprintf "rgb(%d, %d, %d)" c.R c.G c.B) "values in between are scaled by max |R|"
                Expect.equal (text 0) "The" "plain tokens are in the DOM"
                Expect.equal (text 1) " cat" "leading spaces are kept"
                Expect.equal (text 2) " <b>&amp;" "markup in a token is text, not markup"
                Expect.equal (text 3) " ↵" "a newline is shown as ↵"
                Expect.equal (text 5) "a_b%{x}\\" "specials survive"
                Expect.equal (text 6) "␣" "a token of spaces is visible"
    }
    ]

let imageTests =
    testList "token heatmap images and LaTeX" [
        test "the PNG decodes, has the layout's size, and boxes carry the colour map's colours" {
            let png = TokenHeatmap.Png(tokens, relevance, info)
            use bitmap = SKBitmap.Decode png
            let layout = TokenHeatmap.Layout(tokens, info)
            let boxes, width, height = layout.Boxes, layout.Width, layout.Height
            Expect.equal (bitmap.Width, bitmap.Height) (width, height) "size"
            let corner i = let b : TokenBox = boxes.[i] in pixel bitmap (int b.X + 1) (int b.Y + 1)
            Expect.equal (corner 1) red "the most relevant token's box is the red extreme"
            Expect.equal (corner 2) blue "−max is the blue extreme"
            Expect.equal (corner 5) white "zero is white"
        }
        test "the SVG parses as XML and has one rect per token, coloured by relevance" {
            let svg = TokenHeatmap.Svg(tokens, relevance, info)
            let doc = Xml.Linq.XDocument.Parse svg
            let ns = Xml.Linq.XNamespace.Get "http://www.w3.org/2000/svg"
            let rects = doc.Descendants(ns + "rect") |> Array.ofSeq
            Expect.equal rects.Length tokens.Length "one rect per token"
            Expect.equal (rects.[1].Attribute(Xml.Linq.XName.Get "fill").Value) "#ff0000" "the most relevant token is red"
            Expect.equal (rects.[2].Attribute(Xml.Linq.XName.Get "fill").Value) "#0000ff" "−max is blue"
            let titles = doc.Descendants(ns + "title") |> Seq.map (fun t -> t.Value) |> Array.ofSeq
            Expect.stringContains titles.[2] "<b>&amp;" "token text survives the XML escaping"
        }
        test "the LaTeX document has a \\colorbox per token with special characters escaped" {
            let tex = TokenHeatmap.Tex(tokens, relevance, info)
            Expect.equal (Regex.Matches(tex, Regex.Escape "\\colorbox[RGB]").Count) tokens.Length "one \\colorbox per token"
            Expect.stringContains tex "\\colorbox[RGB]{255,0,0}" "the most relevant token is red"
            Expect.stringContains tex "a\\_b\\%\\{x\\}\\textbackslash{}" "_ % { } \\ escaped"
            Expect.stringContains tex "\\textless{}b\\textgreater{}\\&amp;" "< > & escaped"
            Expect.stringContains tex "\\textvisiblespace{}" "a token of spaces is visible"
            Expect.stringContains tex "\\documentclass" "a standalone document"
        }
        test "the trace image has a cell per token and layer, each row scaled by its own max |R|" {
            let layers = [| "input embedding"; "layer 0" |]
            let rows : Collections.Generic.IReadOnlyList<float> array = [| relevance; Array.rev relevance |]
            use bitmap = SKBitmap.Decode(RelevanceTrace.Png(tokens, layers, rows |> Array.map (fun r -> r), info))
            let layout = RelevanceTrace.Layout(tokens, layers, info)
            Expect.equal (bitmap.Width, bitmap.Height) (layout.Width, layout.Height) "size"
            let cell row col = pixel bitmap (int (layout.X col + layout.CellWidth / 2.0f)) (int (layout.Y row + layout.CellHeight / 2.0f))
            Expect.equal (cell 0 1) red "bottom row (input): token 1 is the most relevant"
            Expect.equal (cell 1 (tokens.Length - 2)) red "the row above: reversed relevance"
            Expect.equal (cell 0 2) blue "negative relevance is blue"
        }
    ]

let private lxtIn (args: string list) = lxt args

let private vit = Path.Combine(Paths.fixtures, "vit")
let private vitPixels () = Directory.GetFiles(vit, "reference_*.json") |> Array.exactlyOne

let cliTests =
    testList "lxt explain heatmap files" [
        test "--png on an image model overlays relevance: the input's size, the colour map's extreme at the most relevant pixel" {
            for map, extreme in [ "bwr", red; "coldnhot", white ] do
                let dir = tempDir ()
                let png, json = Path.Combine(dir, "heat.png"), Path.Combine(dir, "r.json")
                let code, _, err = lxtIn [ "explain"; "--model"; vit; "--pixels"; vitPixels (); "--rules"; "cp-lrp"; "--png"; png; "--colormap"; map; "--json"; json ]
                Expect.equal code 0 (sprintf "exit code (stderr: %s)" err)
                let rows = (readJson json).GetProperty("relevance")
                let values = Array2D.init (rows.GetArrayLength()) (rows.[0].GetArrayLength()) (fun y x -> rows.[y].[x].GetDouble())
                use bitmap = SKBitmap.Decode png
                Expect.equal (bitmap.Height, bitmap.Width) (Array2D.length1 values, Array2D.length2 values) "the model input's size"
                let best = seq { for y in 0 .. Array2D.length1 values - 1 do for x in 0 .. Array2D.length2 values - 1 -> y, x } |> Seq.maxBy (fun (y, x) -> abs values.[y, x])
                let y, x = best
                let expected = if values.[y, x] > 0.0 then extreme else (if map = "bwr" then blue else (0, 255, 255))
                Expect.equal (pixel bitmap x y) expected (sprintf "%s: the most relevant pixel (%d, %d)" map y x)
                Expect.equal (Directory.GetFiles dir |> Array.map Path.GetFileName |> Array.sort) [| "heat.png"; "r.json" |] "no temporary files"
        }
        test "--png over a picture file has the picture's size" {
            let dir = tempDir ()
            let picture = Path.Combine(dir, "in.png")
            do
                use bitmap = new SKBitmap(64, 48)
                bitmap.Erase(SKColors.Olive)
                use data = bitmap.Encode(SKEncodedImageFormat.Png, 100)
                File.WriteAllBytes(picture, data.ToArray())
            let png = Path.Combine(dir, "heat.png")
            let code, _, err = lxtIn [ "explain"; "--model"; vit; "--image"; picture; "--rules"; "cp-lrp"; "--png"; png ]
            Expect.equal code 0 (sprintf "exit code (stderr: %s)" err)
            use bitmap = SKBitmap.Decode png
            Expect.equal (bitmap.Width, bitmap.Height) (64, 48) "the picture's size"
        }
        test "text outputs and the trace are written for a text model; --trace follows the layer outputs" {
            let dir = tempDir ()
            let file name = Path.Combine(dir, name)
            let llama = load "llama"
            let code, out, err =
                lxtIn [ "explain"; "--model"; llama.Dir; "--input-ids"; idsOf llama; "--html"; file "h.html"; "--svg"; file "h.svg"
                        "--png"; file "h.png"; "--tex"; file "h.tex"; "--trace"; file "t.png"; "--json"; file "r.json" ]
            Expect.equal code 0 (sprintf "exit code (stderr: %s)" err)
            for name in [ "h.html"; "h.svg"; "h.png"; "h.tex"; "t.png" ] do
                Expect.stringContains out name (sprintf "reports %s" name)
            let r = readJson (file "r.json")
            let ids = llama.Ints "input_ids"
            let layerNames = r.GetProperty("layers").EnumerateObject() |> Seq.map (fun p -> p.Name) |> Array.ofSeq
            use model = Lxt.Import.PretrainedModel.Open llama.Dir
            Expect.equal layerNames (Array.append [| "input" |] (Array.ofSeq (model.BuildGraph(ids.Length).LayerOutputs))) "input, then every layer output"
            let input = r.GetProperty("layers").GetProperty("input") |> flatten |> Array.ofSeq
            Expect.equal input (r.GetProperty "relevance" |> flatten |> Array.ofSeq) "the bottom row is the input relevance"
            use bitmap = SKBitmap.Decode(file "t.png")
            Expect.isNotNull bitmap "the trace decodes"
            use heat = SKBitmap.Decode(file "h.png")
            Expect.isNotNull heat "the token PNG decodes"
            Expect.equal (Regex.Matches(File.ReadAllText(file "h.tex"), Regex.Escape "\\colorbox").Count) ids.Length "one \\colorbox per token"
            let svg = Xml.Linq.XDocument.Load(file "h.svg")
            Expect.equal (svg.Descendants(Xml.Linq.XNamespace.Get "http://www.w3.org/2000/svg" + "rect") |> Seq.length) ids.Length "one rect per token"
            Expect.equal (Directory.GetFiles dir |> Array.filter (fun f -> f.EndsWith ".tmp")) [||] "no temporary files"
        }
        test "--pdf without a LaTeX engine fails with one clear line" {
            if Latex.FindEngine() <> null then skiptest "a LaTeX engine is installed"
            let llama = load "llama"
            let dir = tempDir ()
            let code, _, err = lxtIn [ "explain"; "--model"; llama.Dir; "--input-ids"; idsOf llama; "--pdf"; Path.Combine(dir, "h.pdf") ]
            Expect.equal code 1 "exit code"
            Expect.equal (err.Trim()) "error: no LaTeX engine found (install texlive-latex-base)" "the message"
            Expect.isEmpty (Directory.GetFiles dir) "nothing written"
        }
        test "--html on an image model is a usage error" {
            let code, _, err = lxtIn [ "explain"; "--model"; vit; "--pixels"; vitPixels (); "--html"; "x.html" ]
            Expect.equal code 2 "exit code"
            Expect.stringContains err "--html is for text models" "says why"
        }
    ]

/// Serialises tests that change the process's working folder.
let private cwdLock = obj ()

let demoTests =
    testList "lxt demo" [
        test "lxt demo in a fresh folder explains a held-out sentence, names the evidence and writes heatmap.html" {
            let dir = tempDir ()
            let code, out, err =
                lock cwdLock (fun () ->
                    let before = Environment.CurrentDirectory
                    Environment.CurrentDirectory <- dir
                    try lxtIn [ "demo" ] finally Environment.CurrentDirectory <- before)
            Expect.equal code 0 (sprintf "exit code (stderr: %s)" err)
            let example = DemoTask.Generate(1, Lxt.Cli.Commands.DemoCommand.DefaultSeed).[0]
            let animal = DemoTask.Token example.Ids.[example.EvidencePosition]
            Expect.stringContains out (sprintf "evidence: '%s' at position %d" animal example.EvidencePosition) "names the evidence token"
            Expect.stringContains out "AttnLRP found the evidence" "AttnLRP's top token is the animal"
            Expect.stringContains out (sprintf "'%s'" (DemoTask.Token example.Label)) "the predicted sound"
            let page = Path.Combine(dir, "heatmap.html")
            Expect.isTrue (File.Exists page) "heatmap.html in the working folder"
            Expect.stringContains (File.ReadAllText page) (sprintf ">%s</span>" animal) "the page holds the tokens"
            Expect.equal (Directory.GetFiles dir |> Array.map Path.GetFileName) [| "heatmap.html" |] "nothing else is left"
        }
        test "lxt demo --text explains a given sentence; one without an animal has no evidence" {
            let dir = tempDir ()
            let page = Path.Combine(dir, "x.html")
            let code, out, err = lxtIn [ "demo"; "--text"; "the old Dog sat near a tree says"; "--html"; page ]
            Expect.equal code 0 (sprintf "exit code (stderr: %s)" err)
            Expect.stringContains out "evidence: 'dog' at position 2" "the dog is the evidence"
            Expect.stringContains out "'woof'" "the dog says woof"
            let code, out, _ = lxtIn [ "demo"; "--text"; "the old tree says"; "--html"; page ]
            Expect.equal code 0 "exit code"
            Expect.stringContains out "evidence: none known" "no animal, no evidence"
        }
        test "lxt demo --seed picks another sentence" {
            let dir = tempDir ()
            let code, out, _ = lxtIn [ "demo"; "--seed"; "7"; "--html"; Path.Combine(dir, "h.html") ]
            Expect.equal code 0 "exit code"
            let example = DemoTask.Generate(1, 7).[0]
            Expect.stringContains out (example.Text) "the seed's sentence"
        }
    ]

/// The lines of a batch output with the timings (which differ between runs) removed.
let private withoutTimings (path: string) =
    File.ReadAllLines path
    |> Array.map (fun line ->
        let node = Nodes.JsonNode.Parse(line).AsObject()
        node.Remove "timing_ms" |> ignore
        node.ToJsonString())

let private demoDir () = DemoModel.Locate()

/// kill(2): a signal sent at once, with no process of its own to start
[<Runtime.InteropServices.DllImport("libc", SetLastError = true)>]
extern int private kill(int pid, int signal)

let private sigint = 2

/// A batch input over the demo model: sentences, one with an id and a target, a blank line, one token id out of range.
let private batchInput (dir: string) (count: int) =
    let path = Path.Combine(dir, "inputs.jsonl")
    let examples = DemoTask.Generate(count, 99)
    let lines =
        [ for i, e in Seq.indexed examples ->
            match i with
            | 1 -> sprintf """{"id": "second", "text": "%s", "target": %d}""" e.Text (DemoTask.SoundId 0)
            | 2 -> ""
            | 3 -> """{"id": 4, "input_ids": [5, 999, 1]}"""
            | 5 -> sprintf """{"input_ids": [%s]}""" (String.Join(", ", e.Ids))
            | _ -> sprintf """{"text": "%s"}""" e.Text ]
    File.WriteAllLines(path, lines)
    path

let batchTests =
    testList "lxt explain --batch" [
        test "a batch records one result per line, per-line errors, ids and targets" {
            let dir = tempDir ()
            let input = batchInput dir 7
            let out = Path.Combine(dir, "results.jsonl")
            let code, stdout, err = lxtIn [ "explain"; "--model"; demoDir (); "--batch"; input; "--out"; out; "--threads"; "1" ]
            Expect.equal code 0 (sprintf "exit code (stderr: %s)" err)
            Expect.stringContains stdout "6 lines: 5 explained, 1 failed" "the summary"
            let records = File.ReadAllLines out |> Array.map (fun l -> JsonDocument.Parse(l).RootElement.Clone())
            Expect.equal (records |> Array.map (fun r -> r.GetProperty("line").GetInt32())) [| 1; 2; 4; 5; 6; 7 |] "every non-blank line, in order"
            let failed = records.[2]
            Expect.equal (failed.GetProperty("id").GetInt32()) 4 "the failed line keeps its id"
            Expect.stringContains (failed.GetProperty("error").GetString()) "999" "the error names the token id"
            Expect.equal (records.[1].GetProperty("id").GetString()) "second" "ids are copied"
            Expect.equal (records.[1].GetProperty("target").GetInt32()) (DemoTask.SoundId 0) "a line's target is explained"
            for r in records |> Array.filter (fun r -> not (r.TryGetProperty("error") |> fst)) do
                for key in [ "rules"; "target"; "logits"; "tokens"; "relevance"; "relevance_sum"; "timing_ms" ] do
                    Expect.isTrue (fst (r.TryGetProperty key)) (sprintf "line %d has %s" (r.GetProperty("line").GetInt32()) key)
            // a rerun finds everything answered and changes nothing
            let before = File.ReadAllBytes out
            let code, stdout, _ = lxtIn [ "explain"; "--model"; demoDir (); "--batch"; input; "--out"; out ]
            Expect.equal code 0 "rerun exit code"
            Expect.stringContains stdout "6 already in" "everything is skipped"
            Expect.equal (File.ReadAllBytes out) before "the output is unchanged"
        }
        test "a batch cancelled after k lines, with a torn last line, resumes to the output of an uninterrupted run" {
            let dir = tempDir ()
            let input = batchInput dir 9
            let full = Path.Combine(dir, "full.jsonl")
            let code, _, err = lxtIn [ "explain"; "--model"; demoDir (); "--batch"; input; "--out"; full; "--threads"; "1" ]
            Expect.equal code 0 (sprintf "uninterrupted run (stderr: %s)" err)
            for k in [ 1; 3 ] do
                let partial = Path.Combine(dir, sprintf "partial-%d.jsonl" k)
                use cancel = new Threading.CancellationTokenSource()
                let settings = Lxt.Cli.ExplainRequest(demoDir (), Lxt.Cli.ExplainInput.TokenIds [||], Threads = 1)
                let summary =
                    use session = Lxt.Cli.ExplainSession.Open(demoDir (), Device.Cpu, 1)
                    let progress = Lxt.Cli.InlineProgress<Lxt.Cli.BatchProgress>(fun p -> if p.Done >= k then cancel.Cancel())
                    Lxt.Cli.BatchRun.Run(session, settings, input, partial, progress, cancel.Token)
                Expect.isTrue summary.Cancelled "the run stopped"
                Expect.equal (File.ReadAllLines partial).Length k (sprintf "exactly %d whole lines" k)
                Expect.isTrue (File.ReadAllText(partial).EndsWith "\n") "no partial line"
                // a crash in the middle of the next write leaves a torn line
                let next = (File.ReadAllLines full).[k]
                File.AppendAllText(partial, next.Substring(0, next.Length / 2))
                let code, _, err = lxtIn [ "explain"; "--model"; demoDir (); "--batch"; input; "--out"; partial; "--threads"; "1" ]
                Expect.equal code 0 (sprintf "resumed run (stderr: %s)" err)
                Expect.equal (withoutTimings partial) (withoutTimings full) (sprintf "cancelled after %d lines and resumed = uninterrupted" k)
            Expect.equal (Directory.GetFiles dir |> Array.filter (fun f -> f.EndsWith ".tmp")) [||] "no temporary files"
        }
        test "Ctrl-C (SIGINT) stops a batch process after the current line with exit code 130; a rerun completes it" {
            if OperatingSystem.IsWindows() then skiptest "SIGINT is POSIX"
            let cli = Path.Combine(AppContext.BaseDirectory, "lxt.dll")
            if not (File.Exists cli) then skiptest "lxt.dll is not beside the tests"
            let dir = tempDir ()
            let input = Path.Combine(dir, "inputs.jsonl")
            // about 1.5 ms a line on one thread: the signal, sent once 2000 bytes of results are written, comes long
            // before the last line
            let count = 1500
            File.WriteAllLines(input, DemoTask.Generate(count, 5) |> Seq.map (fun e -> sprintf """{"text": "%s"}""" e.Text))
            let out = Path.Combine(dir, "results.jsonl")
            // a process started in the background inherits SIGINT ignored (and .NET then keeps ignoring it): GNU env
            // gives the batch process SIGINT's default, whatever the test runner was started with
            let defaultSignal =
                try
                    use probe = Process.Start(ProcessStartInfo("env", [| "--default-signal=INT"; "true" |], RedirectStandardError = true))
                    probe.WaitForExit()
                    probe.ExitCode = 0
                with _ -> false
            let start = ProcessStartInfo((if defaultSignal then "env" else "dotnet"), RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false)
            let command = [ "dotnet"; cli; "explain"; "--model"; demoDir (); "--batch"; input; "--out"; out; "--threads"; "1" ]
            for a in (if defaultSignal then "--default-signal=INT" :: command else List.tail command) do start.ArgumentList.Add a
            use p = Process.Start start
            let stdout = p.StandardOutput.ReadToEndAsync()
            let stderr = p.StandardError.ReadToEndAsync()
            let clock = Stopwatch.StartNew()
            while not p.HasExited && clock.Elapsed < TimeSpan.FromSeconds 60.0 && (not (File.Exists out) || FileInfo(out).Length < 2000L) do
                Threading.Thread.Sleep 20
            Expect.isFalse p.HasExited (sprintf "the batch was still running (stdout: %s, stderr: %s)" (if p.HasExited then stdout.Result else "") (if p.HasExited then stderr.Result else ""))
            Expect.equal (kill (p.Id, sigint)) 0 "SIGINT sent"
            if not (p.WaitForExit 30000) then
                p.Kill true
                failtest "the batch did not stop within 30 s of SIGINT"
            Expect.equal p.ExitCode 130 (sprintf "exit code (stderr: %s)" stderr.Result)
            Expect.stringContains stderr.Result "run the same command again to resume" "says how to resume"
            let text = File.ReadAllText out
            Expect.isTrue (text.EndsWith "\n") "no partial line"
            let n = (File.ReadAllLines out).Length
            Expect.isLessThan n count "stopped early"
            Expect.equal (Directory.GetFiles dir |> Array.map Path.GetFileName |> Array.sort) [| "inputs.jsonl"; "results.jsonl" |] "no temporary files"
            let code, _, err = lxtIn [ "explain"; "--model"; demoDir (); "--batch"; input; "--out"; out; "--threads"; "1" ]
            Expect.equal code 0 (sprintf "resumed (stderr: %s)" err)
            let lines = File.ReadAllLines out |> Array.map (fun l -> JsonDocument.Parse(l).RootElement.GetProperty("line").GetInt32())
            Expect.equal lines [| 1 .. count |] "every line once, in order"
        }
        test "--batch without --out, or with a single-input option, is a usage error" {
            let code, _, err = lxtIn [ "explain"; "--model"; demoDir (); "--batch"; "x.jsonl" ]
            Expect.equal code 2 "no --out"
            Expect.stringContains err "--out" "names --out"
            let code, _, err = lxtIn [ "explain"; "--model"; demoDir (); "--batch"; "x.jsonl"; "--out"; "y"; "--text"; "hi" ]
            Expect.equal code 2 "with --text"
            Expect.stringContains err "--text does not go with --batch" "says why"
        }
    ]

let tests = testList "what users see" [ colorMapTests; htmlTests; imageTests; cliTests; demoTests; batchTests ]
