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

/// One backend for the whole file: an accelerator and its compiled kernels are costly to create.
let private shared = lazy (GpuBackend.Create GpuKind.CpuAccelerator)
let private gpu () = shared.Force() :> IBackend
let private config = BackendConformance.config
let private random = BackendConformance.random
let private agrees description values outputs = BackendConformance.agreesOn (gpu ()) description values outputs
let private relativeError = BackendConformance.relativeError

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
        yield! BackendConformance.tests gpu { CasesPerOp = 6; RandomGraphs = 15; ErfStep = 0.005; ErfExtremes = false }
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
