// Specifications of narrow values: in bfloat16 mode the GPU backend stores large values in bfloat16 where every kernel
// involved can (Plan.narrowWhere), on ILGPU's CPU accelerator. Kernels writing narrow store exactly their float32
// result rounded, kernels reading narrow read exactly the rounded values; plans narrow no output and nothing a plain
// kernel other than a product or a layout copy reads; random graphs and the AttnLRP graphs of the architectures agree
// with the float64 reference rounded where the plan narrows, and fixture explanations stay close to their references.
module Lxt.Tests.NarrowValuesTests

open System
open System.Collections.Generic
open Expecto
open Lxt
open Lxt.Graph
open Lxt.Graph.Ops
open Lxt.Backend.Gpu

/// A bfloat16 backend narrowing every value it can (no size threshold).
let private backend =
    lazy (let b = GpuBackend.Create(GpuKind.CpuAccelerator, GemmPrecision.BFloat16) in b.NarrowValuesFrom <- 0; b)

let private roundBf16 (v: float) = float (BFloat16Conversion.Round(float32 v))

/// `n` random multiples of 1/8 in [−4, 4): exact in bfloat16, their products exact in float32.
let private eighths (rng: Random) (n: int) = Array.init n (fun _ -> float32 (rng.Next(-32, 32)) / 8f)

let private upload (gpu: GpuBackend) (narrow: bool) (values: float32[]) =
    let b = if narrow then gpu.AllocateBFloat16 values.Length else gpu.Allocate values.Length
    (gpu :> IBackend).Upload(ReadOnlySpan values, b)
    b

let private download (gpu: GpuBackend) (b: GpuBuffer) =
    let h = Array.zeroCreate<float32> b.Length
    (gpu :> IBackend).Download(b, Span h)
    h

/// Runs `body` with kernels taking values one at a time, in pairs where every value a thread moves is bfloat16, and in
/// pairs wherever they can, each with fused programs reading their tables from device memory and from kernel parameters, then
/// restores the defaults.
let private eachPairing (gpu: GpuBackend) (body: string -> unit) =
    try
        for pairing in [ PairedKernels.None; PairedKernels.NarrowPointwise ||| PairedKernels.NarrowCopies; PairedKernels.All ] do
            for parameters in [ false; true ] do
                gpu.PairedKernels <- pairing
                gpu.ProgramTablesAsParameters <- parameters
                body (sprintf "pairs: %A, tables as parameters: %b" pairing parameters)
    finally
        gpu.PairedKernels <- GpuBackend.DefaultPairedKernels
        gpu.ProgramTablesAsParameters <- false

/// The outputs of `plan` by the float64 reference, with the plan's narrow values and every product operand rounded to
/// bfloat16 as the backend stores and reads them.
let emulated (values: Map<string, float[]>) (plan: Plan) : float[][] =
    let value = Dictionary<Node, float[]>(HashIdentity.Reference)
    for n in Traverse.topo (List.ofArray plan.Outputs) do
        let v =
            match n.Op with
            | Input name | Parameter name -> values.[name]
            | Constant c -> c.Values
            | _ ->
                let args = n.Children |> List.map (fun c -> value.[c]) |> Array.ofList
                let args = match n.Op with MatMul _ -> args |> Array.map (Array.map roundBf16) | _ -> args
                Reference.evaluate n args
        value.[n] <- if plan.Narrow.Contains n then Array.map roundBf16 v else v
    plan.Outputs |> Array.map (fun o -> value.[o])

/// Everything wrong with the narrow values of `plan` (as an executable on the GPU backend runs it).
let violations (plan: Plan) : string list =
    let readers = Traverse.readersBy (Plan.reads plan) plan.Steps
    let outputs = HashSet<Node>(plan.Outputs, HashIdentity.Reference)
    [ for n in plan.Narrow do
        if outputs.Contains n then yield sprintf "output %s is narrow" (Node.Describe n)
        match n.Op with
        | Input _ | Parameter _ | Constant _ -> yield sprintf "leaf %s is narrow" (Node.Describe n)
        | _ -> ()
        if Plan.sharesBuffer plan n && not (plan.Narrow.Contains n.Children.Head) then
            yield sprintf "%s shares the wide buffer of %s" (Node.Describe n) (Node.Describe n.Children.Head)
        match readers.TryGetValue n with
        | true, r ->
            for u in r do
                let fine = plan.Narrow.Contains u && Plan.sharesBuffer plan u
                           || Plan.isFusedStep plan u
                           || (match u.Op with
                               | MatMul _ | Permute _ | Slice _ | Concat _ | Broadcast _ -> true
                               // attention on tensor cores reads its queries, keys and values, operands 0 to 2, narrow
                               | Attention(_, _, _, xs) -> xs |> List.indexed |> List.forall (fun (i, x) -> not (obj.ReferenceEquals(x, n)) || i < TensorCoreAttention.NarrowOperands)
                               | _ -> false)
                if not fine then yield sprintf "%s is read by %s, a plain kernel" (Node.Describe n) (Node.Describe u)
        | _ -> () ]

let tests =
    Paths.onIlgpuCpu <| testList "narrow values on the GPU backend" [
        test "a fused group reads bfloat16 operands, contiguous, broadcast and scalar, of odd lengths, and writes its float32 result rounded, in place too" {
            let gpu = backend.Force()
            let rng = Random 5
            let x, b, s, c = input "x" [| 3; 7 |] Float, input "b" [| 1; 7 |] Float, input "s" [| 1 |] Float, input "c" [| 3; 7 |] Float
            let y = add (mul (mul x b) s) c
            let group = (Plan.fuse (Plan.compile [ y ])).Fusion.Values |> Seq.exactlyOne
            let values = group.Operands |> Array.map (fun o -> eighths rng (Shape.numel o.Shape))
            let byName = Array.zip (group.Operands |> Array.map (fun o -> match o.Op with Input n -> n | _ -> "")) values |> Map.ofArray
            // every product and sum of eighths below 2⁸ is exact in float32: the result rounds the same everywhere
            let exact = Array.init 21 (fun i -> byName.["x"].[i] * byName.["b"].[i % 7] * byName.["s"].[0] + byName.["c"].[i])
            let expected = exact |> Array.map BFloat16Conversion.Round
            Expect.isTrue (Array.exists2 (<>) exact expected) "the rounding shows"
            eachPairing gpu <| fun pairing ->
              for narrowMask in [ 0b1111; 0b0101; 0b1010 ] do
                let buffers = values |> Array.mapi (fun k v -> upload gpu ((narrowMask >>> k) &&& 1 = 1) v)
                use out = gpu.AllocateBFloat16 21
                gpu.ExecuteFused(group, buffers |> Array.map (fun b -> b :> IBuffer), out)
                Expect.sequenceEqual (download gpu out) expected (sprintf "operands narrow by mask %x, %s" narrowMask pairing)
                // in place: the result overwrites the narrow operand x of the root's shape, element by element
                let xAt = group.Operands |> Array.findIndex (fun o -> o.Op = Input "x")
                if buffers.[xAt].IsBFloat16 then
                    gpu.ExecuteFused(group, buffers |> Array.map (fun b -> b :> IBuffer), buffers.[xAt])
                    Expect.sequenceEqual (download gpu buffers.[xAt]) expected (sprintf "written over its narrow operand, %s" pairing)
                // into float32: the exact values
                use wide = gpu.Allocate 21
                gpu.ExecuteFused(group, values |> Array.map (fun v -> upload gpu false v :> IBuffer), wide)
                Expect.sequenceEqual (download gpu wide) exact (sprintf "into float32, %s" pairing)
                for b in buffers do b.Dispose()
        }
        test "a softmax through a prologue and a product write exactly their float32 results rounded to bfloat16" {
            let gpu = backend.Force()
            let rng = Random 9
            // rows of odd and even length: threads take values one at a time or in pairs
            for len in [ 9; 8 ] do
                let x, mask = input "x" [| 2; 3; len |] Float, input "mask" [| 3; len |] Float
                let y = softmax -1 (add (mul x (scalar 0.5)) mask)
                let prologue = (Plan.fuseWith (fun _ -> true) (Plan.compile [ y ])).Prologues.Values |> Seq.exactlyOne
                let xs, masks = eighths rng (6 * len), Array.init (3 * len) (fun i -> if i % 4 = 0 then -1e9f else 0f)
                let operands narrow = prologue.Group.Operands |> Array.map (fun o -> upload gpu narrow (if o.Op = Input "x" then xs else masks))
                let run (narrowIn: bool) (out: GpuBuffer) =
                    let ins = operands narrowIn
                    gpu.ExecuteWithPrologue(prologue, ins |> Array.map (fun b -> b :> IBuffer), out)
                    for b in ins do b.Dispose()
                    download gpu out
                let expected = Evaluate.reference1 (Map [ "x", Array.map float xs; "mask", Array.map float masks ]) y
                eachPairing gpu <| fun pairing ->
                  for warpRows, registerRows in [ false, false; true, false; false, true ] do
                    gpu.SoftmaxWarpPerRow <- warpRows
                    gpu.SoftmaxRowsInRegisters <- registerRows
                    try
                        let what = sprintf "rows of %d, %s, warp per row %b, in registers %b" len pairing warpRows registerRows
                        use wide = gpu.Allocate (6 * len)
                        use narrow = gpu.AllocateBFloat16 (6 * len)
                        let wideValues = run false wide
                        Expect.isLessThan (BackendConformance.relativeError (Array.map float wideValues) expected) 1e-6 (sprintf "softmax of %s" what)
                        Expect.sequenceEqual (run true narrow) (wideValues |> Array.map BFloat16Conversion.Round) (sprintf "softmax: the float32 rows, rounded (%s)" what)
                    finally
                        gpu.SoftmaxWarpPerRow <- false
                        gpu.SoftmaxRowsInRegisters <- false
            // a reduction through a prologue writes float32 only
            let x = input "x" [| 2; 3; 9 |] Float
            let r = reduceSum [ 2 ] true (mul x (scalar 2.0))
            let sumPrologue = (Plan.fuseWith (fun _ -> true) (Plan.compile [ r ])).Prologues.Values |> Seq.exactlyOne
            use xb = upload gpu true (eighths rng 54)
            use narrowSums = gpu.AllocateBFloat16 6
            Expect.throwsT<NarrowOperandException> (fun () -> gpu.ExecuteWithPrologue(sumPrologue, [| xb :> IBuffer |], narrowSums)) "no narrow sums"
            // products: the tiled kernel's float32 sums, rounded once
            let a, w = input "a" [| 2; 5; 3 |] Float, input "w" [| 3; 4 |] Float
            let product = matmul a w
            let av, wv = Array.init 30 (fun _ -> float32 (rng.NextDouble() - 0.5)), Array.init 12 (fun _ -> float32 (rng.NextDouble() - 0.5))
            use ab = upload gpu false av
            use wb = upload gpu true wv
            use wideProduct = gpu.Allocate 40
            use narrowProduct = gpu.AllocateBFloat16 40
            (gpu :> IBackend).Execute(product, [| ab; wb |], wideProduct)
            (gpu :> IBackend).Execute(product, [| ab; wb |], narrowProduct)
            Expect.sequenceEqual (download gpu narrowProduct) (download gpu wideProduct |> Array.map BFloat16Conversion.Round) "product rounded"
            // plain kernels refuse narrow values, naming the node
            let e = Expect.throwsC (fun () -> (gpu :> IBackend).Execute(named "probs.exp" (exp (input "p" [| 40 |] Float)), [| narrowProduct |], wideProduct)) id
            Expect.isTrue (e :? NarrowOperandException) (sprintf "got %s" (e.GetType().Name))
            Expect.stringContains e.Message "probs.exp" "names the node"
            use f32 = GpuBackend.Create(GpuKind.CpuAccelerator)
            Expect.isFalse ((f32 :> INarrowValues).WritesNarrow(product, false, [| true; true |], true)) "float32 mode stores no value narrow"
        }
        test "a softmax through a prologue gives the same rows with one warp per row, online or in registers, as with one group per row, special values included" {
            let gpu = backend.Force()
            let rng = Random 21
            // (the CPU accelerator's warps are narrower than a CUDA device's, so these rows take up to 32 cells a lane)
            let warp = gpu.WarpSize
            for rows, len in [ 1, 1; 5, 3; 7, 8; 9, 9; 6, 37; 11, 64; 5, 64 * warp; 5, 64 * warp - 1; 3, 64 * warp + 2 ] do
                let x = input "x" [| rows; len |] Float
                let prologue = (Plan.fuseWith (fun _ -> true) (Plan.compile [ softmax -1 (mul x (scalar 0.5)) ])).Prologues.Values |> Seq.exactlyOne
                let values =
                    Array.init (rows * len) (fun i ->
                        match i / len, i % len with
                        | 1, _ -> Single.NegativeInfinity // a row of −∞: 0/0 throughout
                        | 2, 0 -> Single.NaN
                        | 3, c when c = len / 2 -> Single.PositiveInfinity
                        | 4, c when c % 2 = 0 -> Single.NegativeInfinity
                        | _ -> float32 (rng.NextDouble() * 20.0 - 10.0))
                let run (warpRows: bool) (registerRows: bool) (pairing: PairedKernels) =
                    gpu.SoftmaxWarpPerRow <- warpRows
                    gpu.SoftmaxRowsInRegisters <- registerRows
                    gpu.PairedKernels <- pairing
                    try
                        use xb = upload gpu false values
                        use y = gpu.Allocate (rows * len)
                        gpu.ExecuteWithPrologue(prologue, [| xb :> IBuffer |], y)
                        download gpu y
                    finally
                        gpu.SoftmaxWarpPerRow <- false
                        gpu.SoftmaxRowsInRegisters <- false
                        gpu.PairedKernels <- GpuBackend.DefaultPairedKernels
                let byGroup = run false false PairedKernels.None
                for pairing, registerRows in List.allPairs [ PairedKernels.None; PairedKernels.All ] [ false; true ] do
                    let byWarp = run (not registerRows) registerRows pairing
                    let what = sprintf "%d rows of %d, %A, in registers %b" rows len pairing registerRows
                    Expect.sequenceEqual (byWarp |> Array.map Single.IsNaN) (byGroup |> Array.map Single.IsNaN) (sprintf "NaN where one group per row gives NaN (%s)" what)
                    let close = Array.forall2 (fun (a: float32) (b: float32) -> Single.IsNaN a || Math.Abs(a - b) <= 1e-6f * Math.Max(1f, Math.Abs b)) byWarp byGroup
                    Expect.isTrue close (sprintf "the same values (%s)" what)
                if rows > 1 then Expect.isTrue (byGroup.[len .. 2 * len - 1] |> Array.forall Single.IsNaN) "a row of −∞ gives 0/0"
        }
        test "layout copies (permute, slice, concat, broadcast) copy bfloat16 values, round float32 into bfloat16 and widen bfloat16 exactly" {
            let gpu = backend.Force()
            let rng = Random 12
            let check (x: Node) (nodes: Node list) =
                let values = Array.init (Shape.numel x.Shape) (fun _ -> float32 (rng.NextDouble() - 0.5))
                eachPairing gpu <| fun pairing ->
                 for node in nodes do
                    let expected = Evaluate.reference1 (Map [ "x", Array.map float values ]) node |> Array.map (float32 >> BFloat16Conversion.Round)
                    let n = Shape.numel node.Shape
                    let run (narrowIn: bool) (narrowOut: bool) =
                        use xb = upload gpu narrowIn values
                        use y = if narrowOut then gpu.AllocateBFloat16 n else gpu.Allocate n
                        (gpu :> IBackend).Execute(node, Array.create node.Children.Length (xb :> IBuffer), y)
                        download gpu y
                    for narrowIn, narrowOut in [ true, true; false, true; true, false ] do
                        Expect.sequenceEqual (run narrowIn narrowOut) expected (sprintf "%s, narrow in %b, out %b, %s" (Node.Describe node) narrowIn narrowOut pairing)
                    Expect.sequenceEqual (run false false |> Array.map BFloat16Conversion.Round) expected (sprintf "float32 throughout, rounded after, %s" pairing)
                values
            // an odd innermost axis: one value per thread
            let x = input "x" [| 3; 5; 7 |] Float
            let values = check x [ permute [ 2; 0; 1 ] x; slice 1 1 4 x; concat 2 [ x; x ]; broadcastTo [| 2; 3; 5; 7 |] x ]
            Expect.isTrue (Array.exists2 (<>) values (Array.map BFloat16Conversion.Round values)) "the rounding shows"
            // an even one: two values per thread where both sides walk it contiguously and each bfloat16 side's base
            // and strides are even (a slice from an odd start copies one at a time into bfloat16 or from it)
            let w = input "x" [| 3; 4; 6 |] Float
            check w [ permute [ 1; 0; 2 ] w; slice 2 2 6 w; slice 2 1 5 w; slice 2 1 4 w; slice 1 1 3 w; concat 2 [ w; w ]
                      concat 1 [ w; w ]; broadcastTo [| 2; 3; 4; 6 |] w ] |> ignore
        }
        test "a layout copy walks two values at a time only where each pair is one word of each bfloat16 side" {
            let w = input "x" [| 3; 4; 6 |] Float
            let permuted = Walk.Of(w, [| 4; 3; 6 |], [| 6; 24; 1 |], [| 18; 6; 1 |])
            Expect.isTrue (permuted.InPairs(0, true, 0, true)) "a permute keeping the even innermost axis"
            Expect.isFalse (permuted.InPairs(1, true, 0, true)) "an odd base of a bfloat16 side"
            Expect.isTrue (permuted.InPairs(1, false, 0, true)) "an odd base of a float32 side"
            let oddRows = Walk.Of(w, [| 3; 4; 6 |], [| 24; 6; 1 |], [| 36; 9; 1 |])
            Expect.isFalse (oddRows.InPairs(0, false, 0, true)) "odd strides of a bfloat16 side"
            Expect.isTrue (oddRows.InPairs(0, true, 0, false)) "odd strides of a float32 side"
            let transposed = Walk.Of(w, [| 6; 4; 3 |], [| 1; 6; 24 |], [| 12; 3; 1 |])
            Expect.isFalse (transposed.InPairs(0, false, 0, false)) "an innermost axis walked with a stride"
        }
        testPropertyWithConfig (BackendConformance.config 25) "random graphs of every op, forward and gradients, narrow only what fused and product kernels read, and agree with the reference rounded where the plan narrows" (fun (seed: int) ->
            let sample = RandomGraphs.build (seed &&& 0x7fffffff) 5 None
            let outputs = RandomGraphs.forwardAndGradients seed sample.Output
            let gpu = backend.Force()
            use exe = new Executable(Plan.compile outputs, gpu)
            match violations exe.Plan with
            | [] ->
                // every kernel that can takes values in pairs for odd seeds, one at a time for even ones; every third
                // seed's programs read their tables from kernel parameters, two seeds in five run softmax rows a warp each
                // and another two in five hold them in registers
                gpu.PairedKernels <- if seed % 2 = 0 then PairedKernels.None else PairedKernels.All
                gpu.ProgramTablesAsParameters <- seed % 3 = 0
                gpu.SoftmaxWarpPerRow <- seed % 5 < 2
                gpu.SoftmaxRowsInRegisters <- seed % 5 >= 3
                let actual, _ =
                    try HostEvaluation.run gpu sample.Values (Plan.compile outputs)
                    finally
                        gpu.PairedKernels <- GpuBackend.DefaultPairedKernels
                        gpu.ProgramTablesAsParameters <- false
                        gpu.SoftmaxWarpPerRow <- false
                        gpu.SoftmaxRowsInRegisters <- false
                let expected = emulated sample.Values exe.Plan
                let err = Array.map2 BackendConformance.relativeError actual expected |> Array.max
                if err >= 1e-4 then printfn "%s: %d narrow values, relative error %g" sample.Description exe.Plan.Narrow.Count err
                err < 1e-4
            | problems -> failtestf "%s: %s" sample.Description (String.Join("; ", problems)))
        test "fixture explanations (llama, bert, vit-hf) with every value narrowed that can be stay within 5e-2 of their references; llama's attention is in bfloat16" {
            for name in [ "llama"; "bert"; "vit-hf" ] do
                let f = FixtureTests.load name
                let model, graph, input = FixtureTests.prepare f
                use model = model
                let options = ExplainOptions(Method = FixtureTests.methodOf f, Target = Nullable(f.Json.GetProperty("target").GetInt32()))
                let explain (narrowFrom: int) =
                    let gpu = GpuBackend.Create(GpuKind.CpuAccelerator, GemmPrecision.BFloat16)
                    gpu.NarrowValuesFrom <- narrowFrom
                    use session = new Session(graph.Model, model.WeightsFor graph, gpu)
                    use explainer = new Explainer(graph.Model, graph.InputName, session)
                    let e = explainer.Explain(input, options)
                    e.PerPosition, gpu.PeakAllocatedBytes
                let narrow, narrowPeak = explain 0
                let wide, widePeak = explain Int32.MaxValue
                let err = FixtureTests.relativeError narrow (f.Doubles "relevance")
                let fromWide = FixtureTests.relativeError narrow wide
                printfn "%s with narrow values: %g from the fixture, %g from float32 values; peak %d against %d bytes" name err fromWide narrowPeak widePeak
                Expect.isLessThan err 5e-2 (sprintf "%s within 5e-2 of the fixture" name)
                Expect.isGreaterThan fromWide 0.0 (sprintf "%s: narrow values change the relevance" name)
                Expect.isLessThan narrowPeak widePeak (sprintf "%s: narrow values hold less memory" name)
            // the attention's values are among them: scores and their products, the softmax, fused passes
            let outputs = FusionTests.llamaRelevanceOutputs ()
            use exe = new Executable(Plan.compile outputs, backend.Force())
            Expect.isEmpty (violations exe.Plan) "a valid narrowing"
            let kinds = exe.Plan.Narrow |> Seq.filter (Plan.sharesBuffer exe.Plan >> not) |> Seq.map (fun n ->
                            match n.Op with MatMul _ -> "product" | Softmax _ -> "softmax" | _ -> "fused") |> Seq.countBy id |> Map.ofSeq
            for kind in [ "product"; "softmax"; "fused" ] do
                Expect.isTrue (kinds.ContainsKey kind) (sprintf "some %s values are narrow: %A" kind kinds)
        }
        test "architectures without fixtures (Mistral, Qwen3, Gemma 3, Mixtral, Llama 3, BERT MLM), every value narrowed that can be, agree with the reference rounded where the plan narrows" {
            for name, json in ArchitectureTests.configs do
                let graph, weights, input = ArchitectureTests.build json
                use explainer = new Explainer(graph.Model, graph.InputName, weights, Device.Reference)
                let output = explainer.OutputExpr.Node
                let ruleSet = Method.AttnLrp.RuleSet
                let seed = Ops.input "seed" output.Shape Float
                let outputs = Lxt.Rules.Lrp.rewrite ruleSet [ output ] @ Lxt.Rules.Lrp.relevance ruleSet output seed [ explainer.InputNode ]
                let rng = Random 21
                let values =
                    Map [ for n in Traverse.topo outputs do
                            match n.Op with
                            | Parameter p -> yield p, weights.Read(p, n.Shape) |> Array.map float
                            | Input i when i = graph.InputName -> yield i, input |> Array.map float
                            | Input i -> yield i, Array.init (Shape.numel n.Shape) (fun _ -> rng.NextDouble() - 0.5)
                            | _ -> () ]
                let gpu = backend.Force()
                use exe = new Executable(Plan.compile outputs, gpu)
                Expect.isEmpty (violations exe.Plan) (sprintf "%s: a valid narrowing" name)
                Expect.isGreaterThan exe.Plan.Narrow.Count 0 (sprintf "%s: values narrowed" name)
                let actual, _ = HostEvaluation.run gpu values (Plan.compile outputs)
                // relative to each output's largest value (relevances are small)
                let err = Array.map2 ArchitectureTests.relErr actual (emulated values exe.Plan) |> Array.max
                let unrounded = Array.map2 ArchitectureTests.relErr actual (Evaluate.reference values outputs) |> Array.max
                printfn "%s with narrow values: %g from the reference rounded alike, %g from the unrounded reference" name err unrounded
                Expect.isLessThan err 1e-4 (sprintf "%s: relevance and logits" name)
        }
        test "profiles tell steps writing or reading narrow values apart" {
            let gpu = backend.Force()
            let x, w = input "x" [| 8; 16 |] Float, input "w" [| 16; 4 |] Float
            use exe = new Executable(Plan.compile [ matmul (exp x) w ], gpu)
            exe.Profiling <- true
            use xb = upload gpu false (Array.create 128 0.5f)
            use wb = upload gpu false (Array.create 64 0.25f)
            exe.Recycle(exe.Run(Dictionary(dict [ "x", xb :> IBuffer; "w", wb :> IBuffer ])))
            let kinds = exe.Profile |> Array.map (fun p -> p.Kind)
            Expect.contains kinds "Fused 1 ops to Unary Exp (narrow)" "the exponential is stored narrow"
            Expect.isTrue (kinds |> Array.exists (fun k -> k.StartsWith "MatMul" && k.EndsWith "(narrow in)")) (sprintf "the product reads it: %A" kinds)
        }
        test "profiles count a weight bound in bfloat16 at two bytes a value, as the product reads it" {
            let gpu = backend.Force()
            let x, w = input "x" [| 8; 16 |] Float, parameter "w" [| 16; 4 |]
            let bytes (narrowWeight: bool) =
                use exe = new Executable(Plan.compile [ matmul x w ], gpu)
                exe.Profiling <- true
                let weights = Array.create 64 0.25f
                exe.BindParameter("w", (if narrowWeight then gpu.AllocateMatrixWeight weights else upload gpu false weights), true)
                use xb = upload gpu false (Array.create 128 0.5f)
                exe.Recycle(exe.Run(Dictionary(dict [ "x", xb :> IBuffer ])))
                let p = exe.Profile |> Array.exactlyOne
                p.Kind, p.Bytes
            let narrowKind, narrowBytes = bytes true
            let wideKind, wideBytes = bytes false
            // x and the result in float32; the weight at 2 bytes a value where it is bfloat16
            Expect.equal wideBytes ((128L + 64L + 32L) * 4L) (sprintf "a float32 weight: %s" wideKind)
            Expect.equal narrowBytes ((128L + 32L) * 4L + 64L * 2L) (sprintf "a bfloat16 weight: %s" narrowKind)
            Expect.stringEnds narrowKind "(narrow in)" "the kind says a narrow operand is read"
        }
        test "a value only products read is narrow at any size, so is a layout copy of it, and the products give the same bits" {
            let x, w, v = input "x" [| 6; 8 |] Float, input "w" [| 8; 5 |] Float, input "v" [| 6; 3 |] Float
            let h = tanh (mul x (scalar 0.5))
            let s = sigmoid x
            // h: two products, one through a lazy transpose, and a slice read by a product; s: a product and a reduction
            let outputs = [ matmul h w; matmul (transpose 0 1 h) v; matmul (slice 0 1 4 h) w; add (matmul s w) (reduceSum [ 1 ] true s) ]
            let rng = Random 3
            let feeds = [ "x", 48; "w", 40; "v", 18 ] |> List.map (fun (name, n) -> name, Array.init n (fun _ -> float32 (rng.NextDouble() - 0.5)))
            let run (narrowFrom: int) =
                use gpu = GpuBackend.Create(GpuKind.CpuAccelerator, GemmPrecision.BFloat16)
                gpu.NarrowValuesFrom <- narrowFrom
                use exe = new Executable(Plan.compile outputs, gpu)
                let inputs = feeds |> List.map (fun (name, values) -> name, upload gpu false values :> IBuffer) |> dict |> Dictionary
                let results = exe.Run inputs |> Array.map (fun b -> download gpu (b :?> GpuBuffer))
                for b in inputs.Values do b.Dispose()
                Expect.isEmpty (violations exe.Plan) "no narrow value where it may not be"
                exe.Plan.Narrow |> Seq.filter (fun n -> not (Plan.sharesBuffer exe.Plan n)) |> Seq.map (fun n -> n.Op) |> List.ofSeq, results
            let narrowOps, narrowResults = run GpuBackend.DefaultNarrowValuesFrom
            let wideOps, wideResults = run Int32.MaxValue
            Expect.isEmpty wideOps "off: nothing narrow"
            Expect.equal (narrowOps |> List.map (fun op -> match op with Unary(o, _) -> string o | op -> op.GetType().Name) |> List.sort) [ "Slice"; "Tanh" ]
                "48 values, far below the threshold: h and its slice, not s"
            Array.iter2 (fun (a: float32[]) b -> Expect.sequenceEqual a b "the same products, bit for bit") narrowResults wideResults
        }
        test "attention on tensor cores reads its queries, keys and values narrow at any size, with the same bits as from float32" {
            // Q and K computed by fused groups, V by a layout copy, each read by the attention's parts alone (a product
            // with a scalar reads no value of its own in its gradient), so each is narrow although far below the
            // threshold; the kernels round them to bfloat16 as they load them, so the stored values give the same words
            let h, kv, t, d, dv = 2, 1, 40, 32, 16
            let q0, k0, v0 = input "q" [| h; t; d |] Float, input "k" [| kv; t; d |] Float, input "v" [| t; kv; dv |] Float
            let q, k, v = mul q0 (scalar 2.0), mul k0 (scalar 0.5), permute [ 1; 0; 2 ] v0
            let mask = { Causal = true; Offset = 0; Window = None }
            let scale = 1.0 / Math.Sqrt(float d)
            // every part: the output, the three gradients, and dV alone where Q and K have none (CP-LRP's cut)
            let outputs = RandomGraphs.forwardAndGradients 3 (attention mask scale q k v)
                          @ [ List.last (RandomGraphs.forwardAndGradients 3 (attention mask scale (stopGradient q) (stopGradient k) v)) ]
            let rng = Random 4
            let feeds = [ "q", h * t * d; "k", kv * t * d; "v", t * kv * dv ] |> List.map (fun (name, n) -> name, Array.init n (fun _ -> float32 (rng.NextDouble() - 0.5)))
            use gpu = GpuBackend.CreateCpuWithCudaWarps GemmPrecision.BFloat16
            gpu.AttentionOnTensorCores <- true
            let run (narrowFrom: int) (exe: Executable) =
                gpu.NarrowValuesFrom <- narrowFrom
                let inputs = feeds |> List.map (fun (name, values) -> name, upload gpu false values :> IBuffer) |> dict |> Dictionary
                try exe.Run inputs |> Array.map (fun b -> download gpu (b :?> GpuBuffer))
                finally for b in inputs.Values do b.Dispose()
            let compiled (narrowFrom: int) (outputs: Node list) =
                gpu.NarrowValuesFrom <- narrowFrom
                new Executable(Plan.compile outputs, gpu)
            use narrowExe = compiled GpuBackend.DefaultNarrowValuesFrom outputs
            use wideExe = compiled Int32.MaxValue outputs
            // K asked for as an output too: outputs are never narrow, so the kernels read Q and V narrow, K wide
            use mixedExe = compiled GpuBackend.DefaultNarrowValuesFrom (outputs @ [ k ])
            Expect.isEmpty (violations narrowExe.Plan) "no narrow value where it may not be"
            for x in [ q; k; v ] do
                Expect.isTrue (narrowExe.Plan.Narrow.Contains x) (sprintf "%s is narrow" (Node.Describe x))
                Expect.isFalse (wideExe.Plan.Narrow.Contains x) (sprintf "off: %s is not" (Node.Describe x))
                Expect.equal (mixedExe.Plan.Narrow.Contains x) (not (obj.ReferenceEquals(x, k))) (sprintf "K an output: %s" (Node.Describe x))
            let narrowResults, wideResults = run GpuBackend.DefaultNarrowValuesFrom narrowExe, run Int32.MaxValue wideExe
            let mixedResults = run GpuBackend.DefaultNarrowValuesFrom mixedExe
            Array.iter2 (fun (a: float32[]) b -> Expect.sequenceEqual a b "the same output and gradients, bit for bit") narrowResults wideResults
            Array.iter2 (fun (a: float32[]) b -> Expect.sequenceEqual a b "with K wide, the same bits too") (Array.truncate outputs.Length mixedResults) wideResults
            // the kernels on CUDA cores read float32 only: a plan made for tensor cores, run without them, is refused
            gpu.AttentionOnTensorCores <- false
            let e = Expect.throwsC (fun () -> run GpuBackend.DefaultNarrowValuesFrom narrowExe |> ignore) id
            Expect.isTrue (e :? NarrowOperandException) (sprintf "a typed error, got %s: %s" (e.GetType().Name) e.Message)
            Expect.stringContains e.Message "Attention" "names the attention op"
        }
        test "$LXT_NARROW_VALUES_FROM sets where narrow values start: a count, off, or a typed error naming the variable" {
            let saved = Environment.GetEnvironmentVariable "LXT_NARROW_VALUES_FROM"
            try
                let from (value: string) =
                    Environment.SetEnvironmentVariable("LXT_NARROW_VALUES_FROM", value)
                    GpuBackend.NarrowValuesFromEnvironment()
                Expect.equal (from null) GpuBackend.DefaultNarrowValuesFrom "unset: the default"
                Expect.equal (from "1024") 1024 "a count"
                Expect.equal (from " OFF ") Int32.MaxValue "off: none"
                for bad in [ "-3"; "lots"; "1e6" ] do
                    let e = Expect.throwsC (fun () -> from bad |> ignore) id
                    Expect.isTrue (e :? LxtException) (sprintf "%s: a typed error, got %s" bad (e.GetType().Name))
                    Expect.stringContains e.Message "LXT_NARROW_VALUES_FROM" "names the variable"
                    Expect.stringContains e.Message bad "quotes the value"
                Environment.SetEnvironmentVariable("LXT_NARROW_VALUES_FROM", "512")
                use b = GpuBackend.Create(GpuKind.CpuAccelerator, GemmPrecision.BFloat16)
                Expect.equal b.NarrowValuesFrom 512 "a new backend starts from it"
                Expect.throwsT<ArgumentOutOfRangeException> (fun () -> b.NarrowValuesFrom <- -1) "no negative count"
            finally Environment.SetEnvironmentVariable("LXT_NARROW_VALUES_FROM", saved)
        }
        test "a dry run plans narrow values at two bytes, as the backend it mirrors narrows them" {
            let outputs = FusionTests.llamaRelevanceOutputs ()
            let peak (narrowFrom: int) =
                use gpu = GpuBackend.Create(GpuKind.CpuAccelerator, GemmPrecision.BFloat16)
                gpu.NarrowValuesFrom <- narrowFrom
                let dry = new DryRunBackend(gpu)
                use real = new Executable(Plan.compile outputs, gpu)
                use planned = new Executable(Plan.compile outputs, dry)
                Expect.sequenceEqual (planned.Plan.Narrow |> Seq.map (fun n -> n.Id) |> Seq.sort) (real.Plan.Narrow |> Seq.map (fun n -> n.Id) |> Seq.sort) "the same narrow values"
                let values = Map [ for n in Traverse.topo outputs do
                                     match n.Op with
                                     | Input name | Parameter name -> yield name, Array.zeroCreate (Shape.numel n.Shape)
                                     | _ -> () ]
                snd (HostEvaluation.run dry values (Plan.compile outputs)), real.Plan.Narrow.Count
            let narrowPeak, narrowCount = peak 0
            let widePeak, wideCount = peak Int32.MaxValue
            Expect.equal wideCount 0 "no threshold met: nothing narrow"
            Expect.isGreaterThan narrowCount 0 "values narrowed"
            Expect.isLessThan narrowPeak widePeak "narrow values plan less memory"
        }
    ]
