// Specifications of the GPU backend, run on ILGPU's CPU accelerator so they hold on every machine: on every op, on
// gradient graphs, on masked softmax, gather errors, top-k and a fixture explanation it computes what the float64
// reference backend computes. With a CUDA device present, the fixture explanation also runs on CUDA. Products in
// TF32 and bfloat16 compute the reference's product of rounded operands; bfloat16 weights are refused by other ops.
module Lxt.Tests.GpuBackendTests

open System
open System.Collections.Generic
open System.Diagnostics
open Expecto
open Lxt
open Lxt.Graph
open Lxt.Graph.Ops
open Lxt.Backend.Gpu

/// One backend for the whole file: an accelerator and its compiled kernels are costly to create.
let private shared = lazy (GpuBackend.Create GpuKind.CpuAccelerator)
let private gpu () = shared.Force() :> IBackend
let private config = BackendConformance.config
let private random = BackendConformance.random
let private agrees description values outputs = BackendConformance.agreesOn (gpu ()) description values outputs
let private relativeError = BackendConformance.relativeError

let private bf16Shared = lazy (GpuBackend.Create(GpuKind.CpuAccelerator, GemmPrecision.BFloat16))
let private tf32Shared = lazy (GpuBackend.Create(GpuKind.CpuAccelerator, GemmPrecision.TensorFloat32))
let private roundBf16 (v: float) = float (BFloat16Conversion.Round(float32 v))
let private roundTf32 (v: float) = float (BFloat16Conversion.RoundTf32(float32 v))

/// Every kernel of the backend's Kernels class (each op family's non-generic kernel).
let private plainKernels () =
    typeof<GpuBackend>.Assembly.GetType("Lxt.Backend.Gpu.Kernels").GetMethods(Reflection.BindingFlags.Public ||| Reflection.BindingFlags.Static)
    |> Array.filter (fun m -> m.ReturnType = typeof<Void> && not m.IsGenericMethodDefinition)

/// The tensor-core attention kernels for heads of d dimensions, as the backend specializes them, reading B by columns
/// through ldmatrix or not, with Q, K and V stored as `narrow` says (AttentionShape.Narrow).
let private tensorCoreForward d matrix narrow = TensorCoreAttention.ForwardKernel(d, d, matrix, narrow)
let private tensorCoreBackward d matrix narrow = TensorCoreAttention.BackwardKernel(d, d, matrix, narrow)

/// The specializations the PTX tests compile: heads of 64 and 128 dimensions, B by columns through ldmatrix or not,
/// Q, K and V in float32 (0) or bfloat16 (7).
let private tensorCoreVariants =
    [ for d in [ 64; 128 ] do
        for matrix in [ false; true ] do
          for narrow in [ 0; 7 ] -> d, matrix, narrow ]

/// Runs `outputs` on a GPU backend binding parameters as a Session does: those read only by products through
/// AllocateMatrixWeight, the others as float32; the inputs named in `narrowInputs` are given in bfloat16 buffers.
/// Returns the outputs and the names of the parameters stored bfloat16.
let private runWith (backend: GpuBackend) (narrowInputs: Set<string>) (values: Map<string, float[]>) (outputs: Node list) =
    let plan = Plan.compile outputs
    let matrixOnly = Plan.matMulOnlyParameters true plan
    use exe = new Executable(plan, backend)
    let upload (name: string) =
        let v = values.[name] |> Array.map float32
        let b = if narrowInputs.Contains name then backend.AllocateBFloat16 v.Length else backend.Allocate v.Length
        backend.Upload(ReadOnlySpan v, b)
        b
    let narrow = ResizeArray()
    for p in Plan.parameters plan do
        match p.Op with
        | Parameter name ->
            let b = if matrixOnly.Contains name then backend.AllocateMatrixWeight(ReadOnlySpan(values.[name] |> Array.map float32)) else upload name
            if b.IsBFloat16 then narrow.Add name
            exe.BindParameter(name, b)
        | _ -> ()
    let feeds = Dictionary<string, IBuffer>()
    for i in Plan.inputs plan do
        match i.Op with
        | Input name -> feeds.[name] <- upload name
        | _ -> ()
    let outs = exe.Run feeds
    let host = outs |> Array.map (fun b -> let h = Array.zeroCreate b.Length in (backend :> IBackend).DownloadDouble(b, Span h); h)
    exe.Recycle outs
    for b in feeds.Values do b.Dispose()
    host, Set.ofSeq narrow

let private runWithMatrixWeights backend values outputs = runWith backend Set.empty values outputs

/// Products over random sizes: batched, broadcast, each operand plain or stored transposed, and two weights, one
/// stored [k, n] and one [n, k] read through a transpose (a linear layer).
let private products (rng: Random) =
    let m, k, n = 1 + rng.Next 19, 1 + rng.Next 21, 1 + rng.Next 19
    let a = input "a" [| 2; 3; m; k |] Float
    let at = transpose 2 3 (input "at" [| 2; 3; k; m |] Float)
    let b = input "b" [| 3; k; n |] Float
    let bt = transpose 2 3 (input "bt" [| 2; 1; n; k |] Float)
    let w = parameter "w" [| k; n |]
    let wt = transpose 0 1 (parameter "wt" [| n; k |])
    let values = Map [ "a", random rng (6 * m * k); "at", random rng (6 * m * k); "b", random rng (3 * k * n)
                       "bt", random rng (2 * k * n); "w", random rng (k * n); "wt", random rng (k * n) ]
    let outputs = [ matmul a b; matmul at b; matmul a bt; matmul at bt; matmul a w; matmul at wt; matmul (reshape [| 6; m; k |] a) wt ]
    sprintf "m %d, k %d, n %d" m k n, values, outputs

/// The llama fixture explained with AttnLRP on `device`, against the reference JSON.
let private llamaParity (device: Device) =
    let f = FixtureTests.load "llama"
    let graph, e = FixtureTests.explain device Method.AttnLrp f
    let err = FixtureTests.relativeError e.PerPosition (f.Doubles "relevance")
    Expect.isLessThan err 1e-4 (sprintf "llama relevance on %A: relative error %g" device err)
    let ours = graph.LayerOutputs |> Seq.collect e.PerToken |> Array.ofSeq
    let err = FixtureTests.relativeError ours (f.Doubles "latent_relevance_per_layer")
    Expect.isLessThan err 1e-4 (sprintf "llama latent relevance on %A: relative error %g" device err)

let tests =
    Paths.onIlgpuCpu <| testList "gpu backend on the ILGPU CPU accelerator" [
        yield! BackendConformance.tests gpu { CasesPerOp = 6; RandomGraphs = 15; ErfStep = 0.005; ErfExtremes = false }
        test "uploads and downloads survive garbage collections that move the host arrays" {
            // ILGPU copies through the raw address of the host values: unpinned, a collection in between moves a
            // managed array away and the copy reads freed memory or writes into another object (a crash, or wrong
            // values later); another thread allocates and compacts the heap throughout
            let backend = gpu ()
            use stop = new Threading.CancellationTokenSource()
            let churn =
                Threading.Tasks.Task.Run(fun () ->
                    let mutable kept : obj list = []
                    let mutable i = 0
                    while not stop.IsCancellationRequested do
                        kept <- box (Array.zeroCreate<byte> (64 + i % 4000)) :: (if i % 100 = 0 then [] else kept)
                        if i % 50 = 0 then GC.Collect(0, GCCollectionMode.Forced, true, true)
                        i <- i + 1)
            let clock = Stopwatch.StartNew()
            let mutable trips, wrong = 0, 0
            while clock.Elapsed < TimeSpan.FromSeconds 3.0 do
                let n = 1000 + trips % 3000
                let values = Array.init n (fun i -> float32 (i + trips))
                let shift = Array.zeroCreate<byte> (trips % 500) // later arrays land at other offsets
                use buffer = backend.Allocate n
                backend.Upload(ReadOnlySpan values, buffer)
                let back = Array.zeroCreate<float32> n
                backend.Download(buffer, Span back)
                if back <> values then wrong <- wrong + 1
                GC.KeepAlive shift
                trips <- trips + 1
            stop.Cancel()
            churn.Wait()
            Expect.equal wrong 0 (sprintf "round trips with wrong values, of %d" trips)
        }
        testPropertyWithConfig (config 10) "batched products with broadcast batch axes and odd sizes agree" (fun (seed: int) ->
            let rng = Random seed
            let m, k, n = 1 + rng.Next 19, 1 + rng.Next 21, 1 + rng.Next 19
            let a = input "a" [| 2; 3; m; k |] Float
            let b1 = input "b1" [| 3; k; n |] Float
            let b2 = input "b2" [| 2; 1; k; n |] Float
            let b3 = input "b3" [| k; n |] Float
            let b4 = input "b4" [| 1; 2; k; n |] Float
            let values = Map [ "a", random rng (6 * m * k); "b1", random rng (3 * k * n); "b2", random rng (2 * k * n)
                               "b3", random rng (k * n); "b4", random rng (2 * k * n) ]
            agrees (sprintf "seed %d: m %d, k %d, n %d" seed m k n) values
                [ matmul a b1; matmul a b2; matmul a b3; matmul (transpose 0 1 a) b4; matmul (reshape [| 1; 6; m; k |] a) b3 ])
        test "every kernel of the backend compiles to PTX for an SM 9.0 device, with no local memory" {
            // CI has no GPU: ILGPU's PTX backend needs no driver, so code generation for CUDA is checked on every machine
            let kernels = plainKernels ()
            Expect.isGreaterThan kernels.Length 15 "every op family's kernel"
            for k in kernels do
                let ptx = GpuBackend.KernelPtx k
                Expect.stringContains ptx ".visible .entry" (sprintf "%s compiles to a kernel entry" k.Name)
                Expect.isFalse (ptx.Contains ".local") (sprintf "%s keeps its values in registers" k.Name)
        }
        test "softmax and reduction rows agree with the reference whether a row's group is one warp or several" {
            let backend = shared.Force()
            Expect.isGreaterThan (backend.RowGroupWidth 1000) (backend.RowGroupWidth 8) "long rows get several warps"
            let rng = Random 5
            for len in [ 3; 33; 100; 1000 ] do
                let x = input "x" [| 5; len |] Float
                let values = Map [ "x", random rng (5 * len) ]
                Expect.isTrue
                    (agrees (sprintf "rows of %d" len) values
                        [ softmax -1 x; reduceSum [ -1 ] false x; reduceMean [ -1 ] true x; reduceMax [ -1 ] false x ])
                    (sprintf "rows of %d, %d threads a row" len (backend.RowGroupWidth len))
        }
        test "uploads and downloads round-trip exactly below, at and above the staged length, in chunks past the staging buffer" {
            let backend = gpu ()
            for length in [ GpuBackend.StagedTransferLength - 1; GpuBackend.StagedTransferLength; GpuBackend.StagingLength + 12345 ] do
                let values = Array.init length (fun i -> float32 (i % 9973) * 0.5f - 17f)
                use b = backend.Allocate length
                backend.Upload(ReadOnlySpan values, b)
                let back = Array.zeroCreate<float32> length
                backend.Download(b, Span back)
                Expect.sequenceEqual back values (sprintf "%d values" length)
        }
        testPropertyWithConfig (config 200) "a fused walk's division by a multiply-high and a shift gives every quotient below 2³¹ exactly" (fun (seed: int) ->
            // fused kernels split an element's index into its multi-index this way; edges of both ranges, then random
            let rng = Random seed
            let edges = [ 1; 2; 3; 7; 512; 641; 2047; 8192; 65535; 1 <<< 20; (1 <<< 30) + 1; Int32.MaxValue ]
            let divisors = edges @ [ for _ in 1 .. 20 -> 1 + rng.Next() ]
            for d in divisors do
                let magic, shift = FastDivision.Of(d).ToTuple()
                let numerators = [ 0; 1; d - 1; d; Int32.MaxValue; Int32.MaxValue - 1 ] @ [ for _ in 1 .. 200 -> rng.Next() ]
                for n in numerators do
                    if n >= 0 then
                        Expect.equal (FastDivision.Quotient(n, magic, shift)) (n / d) (sprintf "%d / %d" n d))
        test "the tiled product with 4×4 tiles, its groups synchronised by barriers, agrees as the CPU accelerator's default 1×1 tiles do" {
            use tiled = GpuBackend.Create GpuKind.CpuAccelerator
            Expect.equal tiled.Tile 1 "1×1 tiles on the CPU accelerator by default"
            tiled.Tile <- 4
            for seed in 1 .. 3 do
                let description, values, outputs = products (Random seed)
                Expect.isTrue (BackendConformance.agreesOn tiled (sprintf "4×4 tiles, seed %d: %s" seed description) values outputs) description
            Expect.throwsT<ArgumentOutOfRangeException> (fun () -> tiled.Tile <- 64) "no tile larger than a group"
        }
        testPropertyWithConfig (config 60) "the cuBLAS call plan, run as column-major GEMM on swapped operands with op flags, computes every batched product, operands transposed or not" (fun (seed: int) ->
            // CI has no GPU: this checks the CUDA path's batching, operand swap, op flags and leading dimensions on the
            // host, against cuBLAS's documented semantics C(i + j·ldc) = Σp op(A)(i, p) · op(B)(p, j) for each batch
            // entry, where op(X)(r, c) is X(r + c·ld) for CUBLAS_OP_N and X(c + r·ld) for CUBLAS_OP_T
            let rng = Random seed
            let m, k, n = 1 + rng.Next 5, 1 + rng.Next 5, 1 + rng.Next 5
            let transA, transB = rng.Next 2 = 0, rng.Next 2 = 0
            let batch = [| for _ in 1 .. rng.Next 4 -> 1 + rng.Next 3 |]
            let thin (s: int[]) = s |> Array.map (fun d -> if rng.Next 3 = 0 then 1 else d)
            let aBatch, bBatch = thin batch.[rng.Next(batch.Length + 1) ..], thin batch.[rng.Next(batch.Length + 1) ..]
            let stored name batch rows cols trans =
                let x = input name (Array.append batch (if trans then [| cols; rows |] else [| rows; cols |])) Float
                if trans then transpose -1 -2 x else x
            let a = stored "a" aBatch m k transA
            let b = stored "b" bBatch k n transB
            let y = matmul a b
            let values = Map [ "a", random rng (Shape.numel a.Shape); "b", random rng (Shape.numel b.Shape) ]
            let batchShape = y.Shape.[.. y.Shape.Length - 3]
            let strides (s: Shape) size = Shape.broadcastStrides s batchShape |> Array.map (fun v -> v * size)
            let av, bv = values.["a"], values.["b"]
            let g = Cublas.ColumnMajorGemm.Of(m, n, k, transA, transB)
            let op flag (x: float[]) (offset: int64) ld r c = if flag = Cublas.OpN then x.[int offset + r + c * ld] else x.[int offset + c + r * ld]
            // cuBLAS's own argument checks: op N reads an M×K (K×N) matrix, op T a K×M (N×K) one; ld ≥ its rows
            let firstRows, secondRows = (if g.OpFirst = Cublas.OpN then g.M else g.K), (if g.OpSecond = Cublas.OpN then g.K else g.N)
            let argsValid = g.LdFirst >= max 1 firstRows && g.LdSecond >= max 1 secondRows && g.Ldc >= max 1 g.M
            let out = Array.zeroCreate (Shape.numel y.Shape)
            for call in GpuBackend.PlanGemmCalls(m, n, k, strides aBatch (m * k), strides bBatch (k * n), batchShape) do
                for e in 0 .. call.Count - 1 do
                    // the first operand is B, the second A: Cᵀ = op(B)ᵀ·op(A)ᵀ in column-major order
                    let oa, ob, oc = call.OffsetA + int64 e * call.StrideA, call.OffsetB + int64 e * call.StrideB, call.OffsetC + int64 e * int64 (m * n)
                    for i in 0 .. g.M - 1 do
                        for j in 0 .. g.N - 1 do
                            let mutable acc = 0.0
                            for p in 0 .. g.K - 1 do acc <- acc + op g.OpFirst bv ob g.LdFirst i p * op g.OpSecond av oa g.LdSecond p j
                            out.[int oc + i + j * g.Ldc] <- acc
            let expected = Evaluate.reference1 values y
            let err = relativeError out expected
            if err >= 1e-12 || not argsValid then
                printfn "seed %d: %s x %s (transA %b, transB %b): error %g, arguments %A" seed (Shape.show a.Shape) (Shape.show b.Shape) transA transB err g
            argsValid && err < 1e-12)
        testPropertyWithConfig (config 8) "transposed operands read by the product (ITransposedMatMul) agree with the reference in float32" (fun (seed: int) ->
            let description, values, outputs = products (Random seed)
            let lazyTransposes = (Plan.compile outputs).LazyTransposes.Count
            if lazyTransposes <> 3 then printfn "seed %d: %d lazy transposes, expected 3" seed lazyTransposes
            lazyTransposes = 3 && agrees (sprintf "seed %d: %s" seed description) values outputs)
        testPropertyWithConfig (config 8) "bfloat16 products, batched, broadcast and transposed, with weights stored in bfloat16, equal the reference on bfloat16-rounded operands" (fun (seed: int) ->
            let description, values, outputs = products (Random seed)
            let got, narrow = runWithMatrixWeights (bf16Shared.Force()) values outputs
            let onRounded = Evaluate.reference (values |> Map.map (fun _ v -> Array.map roundBf16 v)) outputs
            let exact = Evaluate.reference values outputs
            let agreement = Array.map2 relativeError got onRounded |> Array.max
            // and the rounding shows: the exact product differs by about bfloat16's 2⁻⁹ relative step
            let rounding = Array.map2 relativeError got exact |> Array.max
            let ok = narrow = set [ "w"; "wt" ] && agreement < 1e-5 && rounding > 1e-5 && rounding < 3e-2
            if not ok then printfn "seed %d, %s: weights stored bfloat16 %A, error on rounded operands %g, against exact operands %g" seed description narrow agreement rounding
            ok)
        testPropertyWithConfig (config 4) "TF32 products on the CPU accelerator equal the reference on operands rounded to TF32" (fun (seed: int) ->
            let description, values, outputs = products (Random seed)
            let got = Evaluate.onBackend (tf32Shared.Force()) values outputs
            let onRounded = Evaluate.reference (values |> Map.map (fun _ v -> Array.map roundTf32 v)) outputs
            let agreement = Array.map2 relativeError got onRounded |> Array.max
            if agreement >= 1e-5 then printfn "seed %d, %s: error on TF32-rounded operands %g" seed description agreement
            agreement < 1e-5)
        test "a bfloat16 weight given to any op but a product is refused with a NarrowOperandException naming the op; it downloads widened" {
            let backend = bf16Shared.Force()
            let values = [| 1.0f; 0.1f; -3.14159f; 65504.5f; 1e-20f; -0.0f |]
            use w = backend.AllocateMatrixWeight(ReadOnlySpan values)
            Expect.isTrue w.IsBFloat16 "stored bfloat16 in bfloat16 mode"
            let back = Array.zeroCreate<float32> values.Length
            (backend :> IBackend).Download(w, Span back)
            Expect.sequenceEqual back (values |> Array.map BFloat16Conversion.Round) "downloads give the rounded values"
            use y = backend.Allocate values.Length
            let node = named "mlp.act_fn" (silu (parameter "w" [| 2; 3 |]))
            let e = Expect.throwsC (fun () -> (backend :> IBackend).Execute(node, [| w :> IBuffer |], y)) id
            Expect.isTrue (e :? NarrowOperandException) (sprintf "expected NarrowOperandException, got %s: %s" (e.GetType().Name) e.Message)
            Expect.isTrue (e :? LxtException) "a typed Lxt error"
            Expect.stringContains e.Message "mlp.act_fn" "names the node"
            Expect.stringContains e.Message "bfloat16" "says why"
            Expect.isFalse (e.Message.Contains "\n") "one line"
            Expect.throwsT<NarrowOperandException> (fun () -> (backend :> IBackend).Copy(w, y)) "no copy into float32"
            use f32 = GpuBackend.Create(GpuKind.CpuAccelerator)
            use wide = f32.AllocateMatrixWeight(ReadOnlySpan values)
            Expect.isFalse wide.IsBFloat16 "float32 mode keeps weights float32"
        }
        test "a llama session in bfloat16 stores the weights read only by products in bfloat16 and stays within 5e-2 of float32" {
            let f = FixtureTests.load "llama"
            let model, graph, input = FixtureTests.prepare f
            use model = model
            let target = Nullable(f.Json.GetProperty("target").GetInt32())
            let run (precision: GemmPrecision) =
                let backend = GpuBackend.Create(GpuKind.CpuAccelerator, precision)
                backend.NarrowValuesFrom <- Int32.MaxValue // computed values in float32 alike: the weights tell the plans apart
                let session = new Session(graph.Model, model.WeightsFor graph, backend)
                let logits = (session.Run(dict [ graph.InputName, input ] |> Dictionary)).["logits"].ToDoubleArray()
                let bytes = backend.AllocatedBytes - backend.ScratchBytes
                let explainer = new Explainer(graph.Model, graph.InputName, session)
                let e = explainer.Explain(input, ExplainOptions(Method = Method.AttnLrp, Target = target))
                explainer, backend, logits, bytes, e.PerPosition
            let x32, b32, logits32, bytes32, relevance32 = run GemmPrecision.Float32
            use _ = x32
            let x16, b16, logits16, bytes16, relevance16 = run GemmPrecision.BFloat16
            use _ = x16
            Expect.equal b16.Name "ilgpu-cpu-bf16" "the name says the precision"
            // after the forward run: the same plan and intermediates, so the difference is the narrowed weights
            let plan = Plan.compile [ for o in graph.Model.Outputs.Values -> o.Node ]
            let narrow = Plan.matMulOnlyParameters true plan
            let narrowValues = Plan.parameters plan |> Array.sumBy (fun p -> match p.Op with Parameter n when narrow.Contains n -> int64 (Shape.numel p.Shape) | _ -> 0L)
            Expect.isGreaterThan narrow.Count 4 (sprintf "the projections are read only by products: %A" narrow)
            Expect.equal (bytes32 - bytes16) (2L * narrowValues) "2 bytes less per weight value stored bfloat16"
            let logitsErr = FixtureTests.relativeError logits16 logits32
            let relevanceErr = FixtureTests.relativeError relevance16 relevance32
            let fixtureErr = FixtureTests.relativeError relevance16 (f.Doubles "relevance")
            printfn "llama in bfloat16: logits %g, relevance %g from float32, %g from the fixture; %d of %d parameter bytes saved"
                logitsErr relevanceErr fixtureErr (bytes32 - bytes16) bytes32
            Expect.isLessThan logitsErr 5e-2 "logits within 5e-2 of float32"
            Expect.isLessThan (FixtureTests.relativeError logits16 f.Logits) 5e-2 "logits within 5e-2 of the fixture"
            Expect.isLessThan relevanceErr 5e-2 "relevance within 5e-2 of float32"
            Expect.isLessThan fixtureErr 5e-2 "relevance within 5e-2 of the fixture"
            Expect.isGreaterThan relevanceErr 0.0 "bfloat16 products do change the relevance"
        }
        test "a session keeps a weight in bfloat16 for plans that only multiply by it and uploads a float32 copy for a plan that reads it otherwise" {
            let x = input "x" [| 2; 3 |] Float
            let w = parameter "w" [| 3; 3 |]
            let product, scaled = matmul x w, mul x (slice 0 0 2 w)
            let model = Model.Create(readOnlyDict [ "product", Expr product; "scaled", Expr scaled ])
            let rng = Random 7
            let xs, ws = Array.init 6 (fun _ -> float32 (rng.NextDouble() - 0.5)), Array.init 9 (fun _ -> float32 (rng.NextDouble() - 0.5))
            use session = new Session(model, Weights().Set("w", ws, 3, 3), Device.IlgpuCpu, 0, GemmPrecision.BFloat16)
            let inputs = readOnlyDict [ "x", xs ]
            let eval (node: Node) = (session.Evaluate([| Expr node |], inputs, Threading.CancellationToken.None)).[0].Values |> Array.map float
            let expectValues (ws: float32[]) (node: Node) (narrow: bool) (what: string) =
                let values = Map [ "x", Array.map float xs; "w", Array.map float ws ]
                let values = if narrow then values |> Map.map (fun _ v -> Array.map roundBf16 v) else values
                let err = relativeError (eval node) (Evaluate.reference1 values node)
                Expect.isLessThan err (if narrow then 1e-6 else 1e-7) what
            let ws2 = ws |> Array.map (fun v -> 2.5f * v + 0.125f)
            let ws3 = ws |> Array.map (fun v -> -v)
            expectValues ws product true "the product reads the weight rounded to bfloat16"
            // set while held only narrow: the float32 copy made later starts from the new values, not the source's
            session.SetParameter("w", ReadOnlySpan ws2)
            expectValues ws2 scaled false "the elementwise use reads the new value in float32"
            expectValues ws2 product true "the product reads the new value from its bfloat16 copy"
            // a new value reaches both copies
            session.SetParameter("w", ReadOnlySpan ws3)
            expectValues ws3 product true "the bfloat16 copy is updated"
            expectValues ws3 scaled false "the float32 copy is updated"
        }
        test "TF32 and bfloat16 products are for the GPU devices; the CPU and reference backends refuse them" {
            use b = Backends.Create(Device.IlgpuCpu, 0, GemmPrecision.BFloat16)
            Expect.equal b.Name "ilgpu-cpu-bf16" "ilgpu-cpu in bfloat16"
            for device in [ Device.Cpu; Device.Reference ] do
                for precision in [ GemmPrecision.TensorFloat32; GemmPrecision.BFloat16 ] do
                    let e = Expect.throwsC (fun () -> Backends.Create(device, 0, precision) |> ignore) id
                    Expect.isTrue (e :? ArgumentException) (sprintf "%A %A: %s" device precision (e.GetType().Name))
                    Expect.stringContains e.Message (GpuBackend.IdOf precision) "names the precision"
        }
        test "top-k masks of wide rows with ties (a vocabulary's arg-max) agree with the reference" {
            let rng = Random 11
            let x = input "x" [| 3; 3000 |] Float
            // few distinct values: many ties, which go to the lower index
            let values = Map [ "x", Array.init 9000 (fun _ -> float (rng.Next 7)) ]
            Expect.isTrue (agrees "wide top-k" values [ topKMask 1 x; topKMask 2 x; topKMask 5 x ]) "k = 1, 2, 5 over 3000 entries"
        }
        test "attention on tensor cores (bfloat16 mma fragments over warps of 32) agrees with the reference: output, log-sum-exp, gradients" {
            use tc = GpuBackend.CreateCpuWithCudaWarps GemmPrecision.BFloat16
            use plain = GpuBackend.CreateCpuWithCudaWarps GemmPrecision.BFloat16
            tc.AttentionOnTensorCores <- true
            let rng = Random 5
            // several query and key tiles, rows and keys past a tile's end, grouped heads, windows and offsets, D ≠ Dv
            // the third case's queries are 30 times larger: scores far apart, so a row's running maximum is raised
            // after its first steps too, where the others' mostly is not
            for (h, kv, t, past, d, dv, mask, qScale) in
                [ 2, 1, 70, 5, 32, 16, { Causal = true; Offset = 5; Window = None }, 1.0
                  2, 2, 40, 0, 16, 48, { Causal = true; Offset = 0; Window = Some 23 }, 1.0
                  3, 1, 20, 50, 16, 16, AttentionMask.None, 30.0 ] do
                let q, k, v = input "q" [| h; t; d |] Float, input "k" [| kv; past + t; d |] Float, input "v" [| kv; past + t; dv |] Float
                let o = attention mask (1.0 / Math.Sqrt(float d)) q k v
                let cut = attention mask (1.0 / Math.Sqrt(float d)) (stopGradient q) (stopGradient k) v
                let outputs =
                    RandomGraphs.forwardAndGradients 3 o @ [ attentionPart Output mask (1.0 / Math.Sqrt(float d)) [ q; k; v ] ] // O and L
                    @ [ List.last (RandomGraphs.forwardAndGradients 3 cut) ] // dV alone (Q and K have none)
                let values = Map [ "q", random rng (h * t * d) |> Array.map ((*) qScale); "k", random rng (kv * (past + t) * d); "v", random rng (kv * (past + t) * dv) ]
                let expected = Evaluate.reference values outputs
                let onCores, onWarps = Evaluate.onBackend tc values outputs, Evaluate.onBackend plain values outputs
                // the tiles read by columns through ldmatrix (emulated from the row addresses each lane would give)
                tc.TensorCoreMatrixLoads <- true
                let throughMatrices = Evaluate.onBackend tc values outputs
                tc.TensorCoreMatrixLoads <- false
                let what = sprintf "%d heads over %d, %d tokens after %d, d %d, dv %d, %A" h kv t past d dv mask
                outputs |> List.iteri (fun i node ->
                    // bfloat16 operands (Q, K, V, P, dO, dS) with float32 sums: within 2e-2, as bfloat16 products are
                    Expect.isLessThan (relativeError onCores.[i] expected.[i]) 2e-2 (sprintf "%s: %s" what (Node.Describe node))
                    Expect.isLessThan (relativeError onWarps.[i] expected.[i]) 1e-5 (sprintf "%s: %s on CUDA cores" what (Node.Describe node))
                    // the tensor cores computed it: their bfloat16 operands leave a trace the float32 kernels do not
                    Expect.isGreaterThan (relativeError onCores.[i] onWarps.[i]) 1e-6 (sprintf "%s: %s on tensor cores" what (Node.Describe node))
                    // the same words, so the same sums in the same order
                    Expect.equal throughMatrices.[i] onCores.[i] (sprintf "%s: %s with ldmatrix" what (Node.Describe node)))
                // Q, K and V given in bfloat16, as a model's products leave them: the kernels compiled for that storage
                // read the words the float32 kernels round them to (dQ's atomic sums may meet in another order)
                let rounded = values |> Map.map (fun _ a -> a |> Array.map roundBf16)
                let uncut = outputs |> List.take (outputs.Length - 1) // a stopped gradient is no attention op
                let fromWords, _ = runWith tc (set [ "q"; "k"; "v" ]) values uncut
                let fromRounded = Evaluate.onBackend tc rounded uncut
                uncut |> List.iteri (fun i node ->
                    Expect.isLessThan (relativeError fromWords.[i] fromRounded.[i]) 1e-6 (sprintf "%s: %s from bfloat16 Q, K and V" what (Node.Describe node)))
        }
        test "atomic adds of NaN end on ILGPU's CPU accelerator: a scatter-add and an attention's gradients come out NaN where it reaches, not hung" {
            // a run that hangs fails after two minutes instead of holding the suite (its accelerator is then left
            // undisposed: disposing it would wait for the spinning threads)
            let within (what: string) (f: unit -> float[][]) =
                let task = Threading.Tasks.Task.Run(fun () -> f ())
                Expect.isTrue (task.Wait(TimeSpan.FromSeconds 120.0)) (sprintf "%s finished" what)
                task.Result
            let gpu = GpuBackend.CreateCpuWithCudaWarps GemmPrecision.BFloat16
            // two update rows, one of them NaN, into output row 0; two finite ones into row 1
            let indices, updates = input "i" [| 4 |] Int, input "u" [| 4; 3 |] Float
            let scattered = scatterAdd [| 2; 3 |] indices updates
            let u = [| nan; 1.0; 2.0;  nan; 3.0; 4.0;  0.5; 0.25; 1.0;  1.5; 0.75; 2.0 |]
            let y = (within "a scatter-add adding NaN twice" (fun () -> Evaluate.onBackend gpu (Map [ "i", [| 0.0; 0.0; 1.0; 1.0 |]; "u", u ]) [ scattered ])).[0]
            Expect.isTrue (Double.IsNaN y.[0]) "NaN where the NaN rows were added"
            Expect.sequenceEqual y.[1..] [| 4.0; 6.0; 2.0; 1.0; 3.0 |] "the other sums"
            // a NaN query row on tensor cores: every key it reaches gets a NaN gradient, added by several groups
            gpu.AttentionOnTensorCores <- true
            let h, kv, t, d = 2, 1, 70, 16
            let q, k, v = input "q" [| h; t; d |] Float, input "k" [| kv; t; d |] Float, input "v" [| kv; t; d |] Float
            let outputs = RandomGraphs.forwardAndGradients 3 (attention { Causal = true; Offset = 0; Window = None } 0.25 q k v)
            let rng = Random 6
            let qs = random rng (h * t * d)
            qs.[5 * d] <- nan // query row 5 of head 0
            let results = within "attention with a NaN query" (fun () -> Evaluate.onBackend gpu (Map [ "q", qs; "k", random rng (kv * t * d); "v", random rng (kv * t * d) ]) outputs)
            Expect.isTrue (results |> Array.exists (Array.exists Double.IsNaN)) "the NaN reaches the gradients"
            gpu.Dispose()
        }
        test "one tensor-core product of one warp is A·B + C with A and B rounded to bfloat16, as the GPU check asks of a device" {
            use tc = GpuBackend.CreateCpuWithCudaWarps GemmPrecision.BFloat16
            let rng = Random 8
            let draw n = Array.init n (fun _ -> float32 (rng.NextDouble() * 4.0 - 2.0))
            let a, b, c = draw 256, draw 128, draw 128
            let d = tc.ProductOnTensorCores(ReadOnlySpan a, ReadOnlySpan b, ReadOnlySpan c)
            let round (x: float32) = float (BFloat16Conversion.ToFloat(BFloat16Conversion.FromFloat x))
            for i in 0 .. 15 do
                for j in 0 .. 7 do
                    let expected = float c.[i * 8 + j] + Seq.sum (seq { for k in 0 .. 15 -> round a.[i * 16 + k] * round b.[k * 8 + j] })
                    Expect.floatClose { absolute = 1e-5; relative = 1e-6 } (float d.[i * 8 + j]) expected (sprintf "D[%d][%d]" i j)
            // not the product of unrounded operands: the rounding is the tensor cores'
            let unrounded = float c.[0] + Seq.sum (seq { for k in 0 .. 15 -> float a.[k] * float b.[k * 8] })
            Expect.isGreaterThan (Math.Abs(float d.[0] - unrounded)) 1e-4 "A and B rounded to bfloat16"
            use narrow = GpuBackend.Create(GpuKind.CpuAccelerator)
            if narrow.WarpSize <> TensorCores.Lanes then
                let e = Expect.throwsC (fun () -> narrow.ProductOnTensorCores(ReadOnlySpan a, ReadOnlySpan b, ReadOnlySpan c) |> ignore) id
                Expect.isTrue (e :? NotSupportedException) (sprintf "warps of %d lanes: %s" narrow.WarpSize (e.GetType().Name))
            let e = Expect.throwsC (fun () -> tc.ProductOnTensorCores(ReadOnlySpan(Array.sub a 0 255), ReadOnlySpan b, ReadOnlySpan c) |> ignore) id
            Expect.isTrue (e :? ArgumentException) "A of 255 values"
        }
        test "a warp's fragment reads of the tensor-core kernels' shared tiles meet no bank conflict, at every head size" {
            // lane l of quad g = l / 4 at t = l % 4 reads bfloat16 (row, col) at 16-bit index row · stride + col, in 32
            // banks of 4 bytes; lanes reading one word share it, lanes reading different words of one bank wait
            let conflictFree (indices: int seq) =
                indices |> Seq.map (fun i -> i / 2) |> Seq.distinct |> Seq.countBy (fun word -> word % 32) |> Seq.forall (fun (_, n) -> n = 1)
            let lanes = [ for l in 0 .. 31 -> l / 4, l % 4 ]
            for width in [ 16 .. 16 .. TensorCoreAttention.MaxDim ] @ [ TensorCoreAttention.Tile ] do
                let stride = TensorCoreAttention.Stride width
                for row0 in [ 0; 8; 16 ] do
                    for col0 in [ 0; 8; 16 ] do
                        // a B fragment by rows (tile row n + g, columns c + 2t and + 1) and by columns (rows k + 2t and
                        // + 1, column n + g): each of the two loads a lane makes
                        let byRows = lanes |> List.map (fun (g, t) -> (row0 + g) * stride + col0 + 2 * t)
                        Expect.isTrue (conflictFree byRows) (sprintf "width %d: row pairs from row %d, column %d" width row0 col0)
                        for below in [ 0; 1 ] do
                            let byColumns = lanes |> List.map (fun (g, t) -> (row0 + 2 * t + below) * stride + col0 + g)
                            Expect.isTrue (conflictFree byColumns) (sprintf "width %d: column pairs from row %d, column %d" width row0 col0)
        }
        test "the tensor-core attention kernels compile to PTX's mma.sync for an SM 9.0 device, their fragments in registers" {
            let mmaCount (ptx: string) = ptx.Split("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32").Length - 1
            // B fragments read by rows: two bfloat16 side by side, one 32-bit load each (two per mma)
            let wordLoads (ptx: string) = ptx.Split("ld.shared.b32").Length - 1
            // and those loads need tiles of bfloat16 aligned to words
            let wordAligned (ptx: string) =
                let tiles = Text.RegularExpressions.Regex.Matches(ptx, @"\.shared \.align (\d+)")
                tiles.Count > 0 && tiles |> Seq.forall (fun m -> int m.Groups.[1].Value >= 4)
            // values rounded to bfloat16 by the instruction, a pair at a time (the software rounding stays for other
            // accelerators, behind a branch the PTX itself decides)
            let pairRoundings (ptx: string) = ptx.Split("cvt.rn.bf16x2.f32").Length - 1
            // a division by a value known only at run time is a long sequence of instructions: each comes before the
            // kernel's second barrier, once a kernel, none in the loops over tiles (the tile loads step their indices)
            let divisionsFirst (ptx: string) =
                let at (pattern: string) = Text.RegularExpressions.Regex.Matches(ptx, pattern) |> Seq.map (fun m -> m.Index) |> List.ofSeq
                let divisions = at @"\b(div|rem)\.s32\b"
                match at @"\bbar\.sync\b" with
                | _ :: second :: _ -> divisions |> List.forall (fun i -> i < second)
                | _ -> false
            // ldmatrix's row addresses: the shared allocation a kernel names (ILGPU's __shared_allocaN, N its order)
            // is the tile read by columns, by its size, and starts on 16 bytes as loaded
            let sharedTile (ptx: string) (n: int) (values: int) =
                Text.RegularExpressions.Regex.IsMatch(ptx, sprintf @"mov\.u64\s+%%rd\d+, __shared_alloca%d;" n)
                && Text.RegularExpressions.Regex.IsMatch(ptx, sprintf @"\.shared \.align 16 \.b8 __shared_alloca%d\[%d\];" n (2 * values))
            // ptxas refuses a mov without a type (ILGPU's AlignTo emitted one, and the device loaded neither kernel)
            let typedMoves (ptx: string) = not (Text.RegularExpressions.Regex.IsMatch(ptx, @"(?m)^\s*(@!?%p\d+\s+)?mov\s"))
            let matrixLoads (ptx: string) = ptx.Split("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16").Length - 1
            // no local memory: ILGPU passes inline PTX's operands through local scalars, which ptxas kept in memory (some
            // twenty local loads and stores an mma.sync) until the kernels were loaded with them in registers
            let noLocals (ptx: string) = not (ptx.Contains ".local") && not (ptx.Contains "__local_depot")
            // every shared tile read and written as shared: a view that ILGPU merges with a generic one (a struct's
            // field left at its default on one path) turns every access to it generic
            let sharedOnly (ptx: string) = not (ptx.Contains "cvta.shared")
            // the longest run of loads from device memory with no shared store, branch, barrier or label between them:
            // a tile's words all go out before the first is waited on (one load a word was once a trip to memory each)
            let loadRun (ptx: string) =
                let load = Text.RegularExpressions.Regex(@"^(@!?%p\d+\s+)?ld\.(f32|b32|u32)\s")
                let stop = Text.RegularExpressions.Regex(@"^(st\.shared|bar\.sync|(@!?%p\d+\s+)?bra(\.uni)?\s)|:$")
                ptx.Split('\n')
                |> Array.fold (fun (run, best) line ->
                    let l = line.Trim()
                    if load.IsMatch l then run + 1, max best (run + 1)
                    elif stop.IsMatch l then 0, best
                    else run, best) (0, 0)
                |> snd
            for d, matrix, narrow in tensorCoreVariants do
                let how = sprintf "d %d, %s, Q, K and V in %s" d (if matrix then "ldmatrix" else "16-bit loads") (if narrow = 0 then "float32" else "bfloat16")
                // fragments of nested types: every product over a head's dimensions unrolled
                let forward = tensorCoreForward d matrix narrow
                let ptx = GpuBackend.KernelPtx forward
                Expect.equal (mmaCount ptx) (2 * d / 16 + d / 8) (sprintf "forward, %s: Q·Kᵀ for two tiles of 8 keys, d / 16 steps each, and P·V, d / 8 tiles" how)
                Expect.isTrue (noLocals ptx) (sprintf "forward, %s: no local memory" how)
                Expect.isTrue (sharedOnly ptx) (sprintf "forward, %s: no generic pointer to a shared tile" how)
                Expect.isTrue (divisionsFirst ptx) (sprintf "forward, %s: no division in a loop" how)
                Expect.isTrue (typedMoves ptx) (sprintf "forward, %s: every mov typed" how)
                Expect.equal (wordLoads ptx) (d / 4) (sprintf "forward, %s: each row pair of K one shared load" how)
                Expect.isTrue (wordAligned ptx) (sprintf "forward, %s: shared tiles aligned to words" how)
                // a thread's words of a tile: d / 4 of K and of V, each read as a whole tile or at the slab's end
                let wide = if narrow = 0 then d / 4 + 2 * (d / 4) + 2 * (d / 4) else 0
                Expect.equal (pairRoundings ptx) (wide + 4) (sprintf "forward, %s: Q's fragments and the K and V tiles' words where float32, P's four words" how)
                if narrow <> 0 then Expect.equal (loadRun ptx) (d / 4) (sprintf "forward, %s: a thread's words of a tile of K one run of loads" how)
                Expect.equal (matrixLoads ptx) (if matrix then d / 8 else 0) (sprintf "forward, %s: one ldmatrix for each tile of V of P·V" how)
                if matrix then
                    Expect.isTrue (sharedTile ptx 1 (TensorCoreAttention.Tile * (TensorCoreAttention.MaxDim + TensorCoreAttention.Pad))) "forward: V's tile is allocation 1"
                let backward = tensorCoreBackward d matrix narrow
                let ptx = GpuBackend.KernelPtx backward
                Expect.equal (mmaCount ptx) (2 + 2 * d / 16 + 2 * d / 8 + 1) (sprintf "backward, %s: K·Qᵀ in a loop and V·dOᵀ for two tiles of 8 rows, Pᵀ·dO and dSᵀ·Q, and dS·K in a loop" how)
                Expect.isTrue (noLocals ptx) (sprintf "backward, %s: no local memory" how)
                Expect.isTrue (sharedOnly ptx) (sprintf "backward, %s: no generic pointer to a shared tile" how)
                Expect.isTrue (divisionsFirst ptx) (sprintf "backward, %s: no division in a loop" how)
                Expect.isTrue (typedMoves ptx) (sprintf "backward, %s: every mov typed" how)
                // K·Qᵀ's loop: four of K (from its shared tile, not registers) and two of each tile of Q a step
                Expect.equal (wordLoads ptx) (8 + d / 4 + 4) (sprintf "backward, %s: each row pair of K, Q, dO and dS one shared load" how)
                Expect.isTrue (wordAligned ptx) (sprintf "backward, %s: shared tiles aligned to words" how)
                // a thread's words of a tile: d / 4 of K's, d / 8 of Q's and of dO's (always float32), each read as a
                // whole tile or at the slab's end
                let wide = if narrow = 0 then d / 4 + 2 * (d / 4) + 2 * (d / 8) else 0
                Expect.equal (pairRoundings ptx) (wide + 2 * (d / 8) + 4 + 4) (sprintf "backward, %s: V's fragments and the K and Q tiles' words where float32, dO's words, Pᵀ's and dSᵀ's four words (dS's tile stores dSᵀ's halves)" how)
                if narrow <> 0 then Expect.equal (loadRun ptx) (d / 4) (sprintf "backward, %s: a thread's words of K's tile one run of loads" how)
                // dQ's adds (and dK's and dV's under grouped heads) go into device memory as such: a generic one makes
                // ptxas test the address's space and keep a shared-memory loop beside each
                Expect.isGreaterThan (ptx.Split("red.global.add.f32").Length - 1) 0 (sprintf "backward, %s: atomic adds into device memory" how)
                Expect.isFalse (Text.RegularExpressions.Regex.IsMatch(ptx, @"\bred\.add\.")) (sprintf "backward, %s: no atomic add through a generic address" how)
                Expect.equal (matrixLoads ptx) (if matrix then 2 * d / 8 + 1 else 0) (sprintf "backward, %s: one ldmatrix for each tile of dO in Pᵀ·dO and of Q in dSᵀ·Q, and for K in dS·K's loop" how)
                if matrix then
                    let rows = TensorCoreAttention.BackwardRows * (TensorCoreAttention.MaxDim + TensorCoreAttention.Pad)
                    Expect.isTrue (sharedTile ptx 0 rows) "backward: Q's tile is allocation 0"
                    Expect.isTrue (sharedTile ptx 1 rows) "backward: dO's tile is allocation 1"
                    Expect.isTrue (sharedTile ptx 2 (TensorCoreAttention.Tile * (TensorCoreAttention.MaxDim + TensorCoreAttention.Pad))) "backward: K's tile is allocation 2"
        }
        test "PTX rewrites: local scalars of inline PTX become registers (only those whose address nothing else uses, of the size accessed), shared allocations start on 16 bytes, atomic adds go into device memory" {
            let lines =
                [ ".visible .entry K("; "\t.param .u64 _p"; ")"; "{"
                  "\t.local .align 4 .b8 __local_depot0[4];"
                  "\t.local .align 4 .b8 __local_depot1[4];"
                  "\t.local .align 8 .b8 __local_depot2[8];"
                  "\t.local .align 4 .b8 __local_depot3[4];"
                  "\tmov.b64\t%rd1, __local_depot0;"
                  "\tmov.b64\t%rd2, __local_depot1;"
                  "\tmov.b64\t%rd3, __local_depot2;"
                  "\tmov.b64\t%rd4, __local_depot3;"
                  "\tst.local.f32\t[%rd1], 0f3F800000;"
                  "\t@!%p1 st.local.b32\t[%rd1], %r1;"
                  "\tld.local.f32\t%f1, [%rd1];"
                  "\tst.local.b64\t[%rd3], %rd5;"
                  "\tld.local.b64\t%rd6, [%rd3];"
                  "\tst.local.b32\t[%rd2], %r2;"
                  "\tadd.u64\t%rd7, %rd2, 4;"
                  "\tld.local.b32\t%r3, [%rd2];"
                  "\tst.local.b16\t[%rd4], %rs1;"
                  "\tld.local.b32\t%r4, [%rd4];"
                  "}" ]
            // depots 0 and 2 become registers, their float literal its bits; depot 1's address is also added to and
            // depot 3 has 16 bits stored: both stay in memory, every other line as it was
            let changed =
                Map [ 4, "\t.reg .b32 %lxl0;"; 6, "\t.reg .b64 %lxl1;"; 8, ""; 10, ""
                      12, "\tmov.b32\t%lxl0, 0x3F800000;"; 13, "\t@!%p1 mov.b32\t%lxl0, %r1;"; 14, "\tmov.b32\t%f1, %lxl0;"
                      15, "\tmov.b64\t%lxl1, %rd5;"; 16, "\tmov.b64\t%rd6, %lxl1;" ]
            let expected = lines |> List.mapi (fun i line -> changed |> Map.tryFind i |> Option.defaultValue line)
            let text (lines: string list) = String.Join("\n", lines)
            Expect.equal (PtxRewrites.PromoteLocals(text lines)) (text expected) "depots 0 and 2 in registers"
            Expect.equal (PtxRewrites.PromoteLocals(text expected)) (text expected) "nothing left to promote"
            // shared allocations on 16 bytes, for ldmatrix's rows
            let shared = "\t.shared .align 8 .b8 __shared_alloca0[16];\n\t.shared .align 32 .b8 __shared_alloca1[64];\n\t.shared .align 2 .b8 __shared_alloca2[6];"
            Expect.isFalse (PtxRewrites.SharedAligned shared) "ILGPU's alignments"
            Expect.equal (PtxRewrites.AlignShared shared) "\t.shared .align 16 .b8 __shared_alloca0[16];\n\t.shared .align 32 .b8 __shared_alloca1[64];\n\t.shared .align 16 .b8 __shared_alloca2[6];" "raised to 16, never lowered"
            Expect.isTrue (PtxRewrites.SharedAligned(PtxRewrites.AlignShared shared)) "every allocation on 16 bytes"
            // atomic adds through generic addresses into device memory, one of them guarded
            let reductions =
                "\t.reg .b64\t%rd<9>;\n\tred.add.f32\t[%rd3], %f1;\n\t@!%p2 red.add.f32\t[%rd4], %f2;\n\tst.global.f32\t[%rd5], %f3;"
            Expect.equal (PtxRewrites.GlobalReductions reductions)
                ("\t.reg .b64\t%rd<9>;\n\t.reg .b64\t%lxg;\n\tcvta.to.global.u64\t%lxg, %rd3;\n\tred.global.add.f32\t[%lxg], %f1;\n"
                 + "\t@!%p2 cvta.to.global.u64\t%lxg, %rd4;\n\t@!%p2 red.global.add.f32\t[%lxg], %f2;\n\tst.global.f32\t[%rd5], %f3;")
                "each add converts its address and adds into device memory; the register declared once"
            Expect.equal (PtxRewrites.GlobalReductions "\t.reg .b64\t%rd<9>;\n\tst.global.f32\t[%rd5], %f3;") "\t.reg .b64\t%rd<9>;\n\tst.global.f32\t[%rd5], %f3;" "no add, no change"
        }
        test "every kernel with inline PTX, and every kernel of the backend, assembles for SM 9.0 with no stack frame or spills (where ptxas is)" {
            match Ptxas.find () with
            | None -> skiptest "no ptxas here (set LXT_PTXAS)"
            | Some ptxas ->
                let generic =
                    [ for d, matrix, narrow in tensorCoreVariants do
                        let how = sprintf "d %d%s%s" d (if matrix then " ldmatrix" else "") (if narrow = 0 then "" else " bfloat16")
                        yield "forward " + how, tensorCoreForward d matrix narrow
                        yield "backward " + how, tensorCoreBackward d matrix narrow ]
                let plain = plainKernels () |> Array.map (fun m -> m.Name, m) |> List.ofArray
                for name, kernel in ("tensor-core product", typeof<TensorCores>.GetMethod "Product") :: generic @ plain do
                    Ptxas.expectRegistersOnly ptxas name (GpuBackend.KernelPtx kernel)
        }
        test "the llama fixture's AttnLRP relevance matches the reference on the ILGPU CPU accelerator" {
            llamaParity Device.IlgpuCpu
        }
        test "Device.Cuda without a usable GPU fails with one clear GpuUnavailableException, else matches the fixture" {
            let attempt = try Choice1Of2(Backends.Create Device.Cuda) with e -> Choice2Of2 e
            match attempt with
            | Choice1Of2 backend ->
                backend.Dispose()
                llamaParity Device.Cuda
            | Choice2Of2 e ->
                Expect.isTrue (e :? GpuUnavailableException) (sprintf "expected GpuUnavailableException, got %s: %s" (e.GetType().Name) e.Message)
                Expect.isTrue (e :? LxtException) "a typed Lxt error"
                Expect.stringContains e.Message "CUDA" "says what is missing"
                Expect.stringContains e.Message "--device cpu" "says what to do instead"
                Expect.isFalse (e.Message.Contains "\n") "one line"
        }
    ]
