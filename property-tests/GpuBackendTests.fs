// Specifications of the GPU backend, run on ILGPU's CPU accelerator so they hold on every machine: on every op, on
// gradient graphs, on masked softmax, gather errors, top-k and a fixture explanation it computes what the float64
// reference backend computes. With a CUDA device present, the fixture explanation also runs on CUDA.
module Lxt.Tests.GpuBackendTests

open System
open System.Diagnostics
open Expecto
open Lxt
open Lxt.Graph
open Lxt.Graph.Ops
open Lxt.Backend.Gpu

let private config n = { FsCheckConfig.defaultConfig with maxTest = n }

/// One backend for the whole file: an accelerator and its compiled kernels are costly to create.
let private shared = lazy (GpuBackend.Create GpuKind.CpuAccelerator)
let private gpu () = shared.Force() :> IBackend

/// max |gpu − ref| / (1 + max |ref|); NaN and infinities must sit at the same places in both.
let private relativeError (gpu: float[]) (ref: float[]) =
    if gpu.Length <> ref.Length then infinity
    else
        let mutable err, scale = 0.0, 0.0
        for i in 0 .. ref.Length - 1 do
            let r, c = ref.[i], gpu.[i]
            if Double.IsNaN r || Double.IsInfinity r then
                if not (r.Equals c) then err <- infinity
            elif Double.IsNaN c || Double.IsInfinity c then err <- infinity
            else
                err <- max err (Math.Abs(c - r))
                scale <- max scale (Math.Abs r)
        err / (1.0 + scale)

let private agreesOn (backend: IBackend) (description: string) (values: Map<string, float[]>) (outputs: Node list) =
    let expected = Evaluate.reference values outputs
    let actual = Evaluate.onBackend backend values outputs
    Array.zip3 (Array.ofList outputs) expected actual
    |> Array.forall (fun (node, r, c) ->
        let e = relativeError c r
        let ok = e < 1e-5
        if not ok then printfn "%s: %s differs on %s, relative error %g" description (Node.Describe node) backend.Name e
        ok)

let private agrees description values outputs = agreesOn (gpu ()) description values outputs

let private sampleAgrees (sample: RandomGraphs.Sample) (seed: int) =
    agrees sample.Description sample.Values (RandomGraphs.forwardAndGradients seed sample.Output)

let private random (rng: Random) (n: int) = Array.init n (fun _ -> rng.NextDouble() * 2.0 - 1.0)

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
    testSequenced <| testList "gpu backend on the ILGPU CPU accelerator" [
        testList "agrees with the reference on one op, forward and gradients" [
            for op in RandomGraphs.opNames ->
                testPropertyWithConfig (config 6) op (fun (seed: int) ->
                    sampleAgrees (RandomGraphs.build (seed &&& 0x7fffffff) 3 (Some op)) seed)
        ]
        testPropertyWithConfig (config 15) "agrees with the reference on random graphs of depth 5, forward and gradients" (fun (seed: int) ->
            sampleAgrees (RandomGraphs.build (seed &&& 0x7fffffff) 5 None) seed)
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
        testPropertyWithConfig (config 40) "the cuBLAS call plan, run as column-major SGEMM on swapped operands, computes every batched product" (fun (seed: int) ->
            // CI has no GPU: this checks the CUDA path's batching and operand swap on the host, against cuBLAS's
            // documented semantics C(i + j·ldc) = Σp A(i + p·lda) · B(p + j·ldb) for each batch entry
            let rng = Random seed
            let m, k, n = 1 + rng.Next 5, 1 + rng.Next 5, 1 + rng.Next 5
            let batch = [| for _ in 1 .. rng.Next 4 -> 1 + rng.Next 3 |]
            let thin (s: int[]) = s |> Array.map (fun d -> if rng.Next 3 = 0 then 1 else d)
            let aBatch, bBatch = thin batch.[rng.Next(batch.Length + 1) ..], thin batch.[rng.Next(batch.Length + 1) ..]
            let a = input "a" (Array.append aBatch [| m; k |]) Float
            let b = input "b" (Array.append bBatch [| k; n |]) Float
            let y = matmul a b
            let values = Map [ "a", random rng (Shape.numel a.Shape); "b", random rng (Shape.numel b.Shape) ]
            let batchShape = y.Shape.[.. y.Shape.Length - 3]
            let strides (s: Shape) size = Shape.broadcastStrides s batchShape |> Array.map (fun v -> v * size)
            let av, bv = values.["a"], values.["b"]
            let out = Array.zeroCreate (Shape.numel y.Shape)
            for call in GpuBackend.PlanGemmCalls(m, n, k, strides aBatch (m * k), strides bBatch (k * n), batchShape) do
                for e in 0 .. call.Count - 1 do
                    // cublasSgemm(N, N, n, m, k, B, ldb = n, A, lda = k, C, ldc = n)
                    let oa, ob, oc = call.OffsetA + int64 e * call.StrideA, call.OffsetB + int64 e * call.StrideB, call.OffsetC + int64 e * int64 (m * n)
                    for i in 0 .. n - 1 do
                        for j in 0 .. m - 1 do
                            let mutable acc = 0.0
                            for p in 0 .. k - 1 do acc <- acc + bv.[int ob + i + p * n] * av.[int oa + p + j * k]
                            out.[int oc + i + j * n] <- acc
            let expected = Evaluate.reference1 values y
            let err = relativeError out expected
            if err >= 1e-12 then printfn "seed %d: %s x %s: error %g" seed (Shape.show a.Shape) (Shape.show b.Shape) err
            err < 1e-12)
        test "softmax over rows masked partly and entirely to −∞ matches the reference, NaN rows included" {
            let rng = Random 3
            let x = input "x" [| 2; 3; 5 |] Float
            let m = input "m" [| 3; 5 |] Float
            let mask = [| 1.0; 1.0; 0.0; 1.0; 0.0
                          0.0; 0.0; 0.0; 0.0; 0.0
                          1.0; 1.0; 1.0; 1.0; 1.0 |]
            let masked = where m x (fill x.Shape Double.NegativeInfinity)
            let values = Map [ "x", random rng 30; "m", mask ]
            Expect.isTrue (agrees "masked softmax" values [ softmax 2 masked; softmax 1 masked; softmax 0 masked ]) "all axes"
        }
        test "an out-of-range gather index is a binding error naming the index and the table" {
            let e = gather (named "embed.tokens" (parameter "table" [| 4; 2 |])) (input "tokens" [| 3 |] Int)
            let ex = Expect.throwsC (fun () -> Evaluate.onBackend (gpu ()) (Map [ "tokens", [| 0.0; 9.0; 1.0 |]; "table", Array.zeroCreate 8 ]) [ e ] |> ignore) id
            Expect.isTrue (ex :? BindingException) (sprintf "expected BindingException, got %s" (ex.GetType().Name))
            Expect.stringContains ex.Message "index 9" "names the index"
            Expect.stringContains ex.Message "embed.tokens" "names the table"
        }
        test "top-k masks keep the k largest per row, ties to the lower index" {
            let x = input "x" [| 3; 6 |] Float
            let values = Map [ "x", [| 0.5; 0.1; 0.5; 0.9; -1.0; 0.5
                                       1.0; 1.0; 1.0; 1.0; 1.0; 1.0
                                       -3.0; 2.0; -1.0; 0.0; 2.0; 7.0 |] ]
            Expect.isTrue (agrees "top-k" values [ topKMask 1 x; topKMask 3 x; topKMask 6 x ]) "k = 1, 3, 6"
            let got = (Evaluate.onBackend (gpu ()) values [ topKMask 3 x ]).[0]
            Expect.sequenceEqual got.[0 .. 5] [| 1.0; 0.0; 1.0; 1.0; 0.0; 0.0 |] "ties go to the lower index"
        }
        test "float erf and erf-GELU keep relative accuracy 1e-6 and 5e-6 from tiny to large arguments" {
            let grid = Array.append (Array.init 2401 (fun i -> -6.0 + float i * 0.005)) [| for e in -30 .. -1 -> 10.0 ** float e |]
            let xs = grid |> Array.map (fun v -> float (float32 v))
            let x = input "x" [| xs.Length |] Float
            let values = Map [ "x", xs ]
            for node, relative in [ erf x, 1e-6; geluErf x, 5e-6 ] do
                let r = Evaluate.reference1 values node
                let c = (Evaluate.onBackend (gpu ()) values [ node ]).[0]
                for i in 0 .. xs.Length - 1 do
                    if Math.Abs(c.[i] - r.[i]) > relative * Math.Abs r.[i] + 1e-30 then
                        failtestf "%s at %g: gpu %.9g, reference %.9g" (Node.Describe node) xs.[i] c.[i] r.[i]
        }
        test "a convolution and both its gradients agree" {
            let rng = Random 5
            let x = input "image" [| 2; 3; 9; 9 |] Float
            let w = parameter "patch" [| 4; 3; 3; 3 |]
            let values = Map [ "image", random rng (2 * 3 * 9 * 9); "patch", random rng (4 * 3 * 3 * 3) ]
            Expect.isTrue (agrees "conv" values (RandomGraphs.forwardAndGradients 5 (conv2d (2, 2) (1, 1) x w))) "forward and both gradients"
        }
        test "buffers of another backend are rejected" {
            let foreign = (new ReferenceBackend() :> IBackend).Allocate 4
            Expect.throwsT<ArgumentException> (fun () -> (gpu ()).Upload(ReadOnlySpan(Array.zeroCreate<float32> 4), foreign)) "foreign buffer"
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
