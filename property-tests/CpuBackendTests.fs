// Specifications of the float32 CPU backend: on every op, on gradient graphs, and on shapes large enough to reach the
// vectorised and parallel paths, it computes what the float64 reference backend computes.
module Lxt.Tests.CpuBackendTests

open System
open Expecto
open Lxt.Graph
open Lxt.Graph.Ops
open Lxt.Backend.Cpu

let private config = BackendConformance.config
let private cpu () = new CpuBackend() :> IBackend
let private agrees description values outputs = BackendConformance.agreesOn (cpu ()) description values outputs

/// A random graph over shapes large enough for vector bodies, tails and parallel splits.
let private largeSample (seed: int) =
    let rng = Random seed
    let mutable values = Map.empty
    let mutable count = 0
    let leaf (shape: Shape) =
        count <- count + 1
        let name = sprintf "x%d" count
        values <- values.Add(name, Array.init (Shape.numel shape) (fun _ -> rng.NextDouble() * 2.0 - 1.0))
        input name shape Float
    let batch = [| for _ in 1 .. rng.Next 3 -> 1 + rng.Next 3 |]
    let m, k, n = 1 + rng.Next 64, 1 + rng.Next 130, 1 + rng.Next 130
    let x = leaf (Array.append batch [| m; k |])
    let r = batch.Length + 2
    let outputs =
        [ matmul x (leaf [| k; n |])
          matmul x (leaf (Array.append (if batch.Length > 0 then batch.[1..] else [||]) [| k; n |]))
          matmul (transpose -1 -2 (leaf (Array.append batch [| k; m |]))) (leaf (Array.append batch [| k; n |]))
          softmax (r - 1) x
          softmax (rng.Next r) x
          reduceSum [ r - 1 ] false x
          reduceMean [ rng.Next r ] true x
          reduceMax [ rng.Next r ] false x
          (if r >= 3 then reduceSum [ 0; r - 1 ] true x else reduceMax [ 0; 1 ] false x)
          permute (List.init r (fun i -> (i + 1) % r)) x
          geluErf (add x (leaf [| k |]))
          mul (tanh x) (sigmoid (leaf (Array.append batch [| m; 1 |])))
          (let scores = matmul x (transpose -1 -2 (leaf (Array.append batch [| n; k |])))
           // some rows masked entirely: the reference gives NaN there, so must the backend
           let mask = greater (leaf [| m; n |]) (scalar (if rng.Next 2 = 0 then 0.0 else 0.9))
           softmax (r - 1) (where mask scores (fill scores.Shape Double.NegativeInfinity))) ]
    let desc = sprintf "seed %d: batch %A, m %d, k %d, n %d" seed batch m k n
    desc, values, outputs

let private referenceGemm transA transB m n k (a: float32[]) lda (b: float32[]) ldb =
    Array.init (m * n) (fun idx ->
        let i, j = idx / n, idx % n
        let mutable acc = 0.0
        for p in 0 .. k - 1 do
            let av = if transA then a.[p * lda + i] else a.[i * lda + p]
            let bv = if transB then b.[j * ldb + p] else b.[p * ldb + j]
            acc <- acc + float av * float bv
        acc)

let tests =
    testList "cpu backend" [
        test "attention as one op gives the same bits on one thread and on several: each head's dQ is its own, dK and dV summed in head order" {
            let rng = Random 4
            let h, kv, t, d = 8, 2, 300, 16
            let q, k, v = input "q" [| h; t; d |] Float, input "k" [| kv; t; d |] Float, input "v" [| kv; t; d |] Float
            let o = attention { Causal = true; Offset = 0; Window = None } 0.25 q k v
            let values = Map [ "q", BackendConformance.random rng (h * t * d); "k", BackendConformance.random rng (kv * t * d); "v", BackendConformance.random rng (kv * t * d) ]
            let outputs = RandomGraphs.forwardAndGradients 3 o
            let on threads = Evaluate.onBackend (new CpuBackend(threads)) values outputs
            let one, four = on 1, on 4
            for i in 0 .. outputs.Length - 1 do
                Expect.sequenceEqual four.[i] one.[i] (sprintf "%s: bit for bit" (Node.Describe outputs.[i]))
            Expect.isLessThan (BackendConformance.relativeError one.[1] (Evaluate.reference values outputs).[1]) 1e-5 "and the reference's gradient"
        }
        yield! BackendConformance.tests cpu { CasesPerOp = 30; RandomGraphs = 100; ErfStep = 0.0005; ErfExtremes = true }
        testPropertyWithConfig (config 20) "agrees on large matmul, softmax (masked too), reduce, permute and elementwise shapes" (fun (seed: int) ->
            let desc, values, outputs = largeSample (seed &&& 0x7fffffff)
            agrees desc values outputs)
        testPropertyWithConfig (config 20) "gradients agree on large shapes" (fun (seed: int) ->
            let desc, values, outputs = largeSample (seed &&& 0x7fffffff)
            let out = outputs.[(seed &&& 0x7fffffff) % outputs.Length]
            agrees desc values (RandomGraphs.forwardAndGradients seed out))
        testPropertyWithConfig (config 40) "the GEMM matches a float64 product across blocking boundaries and transposes" (fun (seed: int) ->
            let rng = Random seed
            let size () = if rng.Next 3 = 0 then 1 + rng.Next 8 else 1 + rng.Next 300
            let m, n, k = size (), (if rng.Next 4 = 0 then 1000 + rng.Next 100 else size ()), (if rng.Next 4 = 0 then 250 + rng.Next 300 else size ())
            let transA, transB, accumulate = rng.Next 2 = 0, rng.Next 2 = 0, rng.Next 2 = 0
            let lda = (if transA then m else k) + rng.Next 3
            let ldb = (if transB then k else n) + rng.Next 3
            let ldc = n + rng.Next 3
            let fill len = Array.init len (fun _ -> float32 (rng.NextDouble() * 2.0 - 1.0))
            let a = fill ((if transA then k else m) * lda)
            let b = fill ((if transB then n else k) * ldb)
            let c = fill (m * ldc)
            let before = Array.copy c
            Kernels.Gemm(transA, transB, m, n, k, ReadOnlySpan a, lda, ReadOnlySpan b, ldb, Span c, ldc, accumulate, 1 + rng.Next 2)
            let expected = referenceGemm transA transB m n k a lda b ldb
            let mutable err, scale = 0.0, 0.0
            for i in 0 .. m - 1 do
                for j in 0 .. n - 1 do
                    let e = expected.[i * n + j] + (if accumulate then float before.[i * ldc + j] else 0.0)
                    err <- max err (Math.Abs(float c.[i * ldc + j] - e))
                    scale <- max scale (Math.Abs e)
                for j in n .. ldc - 1 do
                    if c.[i * ldc + j] <> before.[i * ldc + j] then err <- infinity
            let worst = err / (1.0 + scale)
            if worst >= 1e-5 then printfn "gemm %b %b %dx%dx%d: error %g" transA transB m n k worst
            worst < 1e-5)
        testPropertyWithConfig (config 20) "a row vector times a matrix (the GEMV path) matches a float64 product in both layouts, on one or two threads" (fun (seed: int) ->
            let rng = Random seed
            let n, k = 1 + rng.Next 3000, 1 + rng.Next 700
            let transA, transB, accumulate = rng.Next 2 = 0, rng.Next 2 = 0, rng.Next 2 = 0
            let lda = (if transA then 1 else k) + rng.Next 3
            let ldb = (if transB then k else n) + rng.Next 3
            let fill len = Array.init len (fun _ -> float32 (rng.NextDouble() * 2.0 - 1.0))
            let a = fill ((if transA then k else 1) * lda)
            let b = fill ((if transB then n else k) * ldb)
            let c = fill n
            let before = Array.copy c
            Kernels.Gemm(transA, transB, 1, n, k, ReadOnlySpan a, lda, ReadOnlySpan b, ldb, Span c, n, accumulate, 1 + rng.Next 2)
            let expected = referenceGemm transA transB 1 n k a lda b ldb
            let mutable err, scale = 0.0, 0.0
            for j in 0 .. n - 1 do
                let e = expected.[j] + (if accumulate then float before.[j] else 0.0)
                err <- max err (Math.Abs(float c.[j] - e))
                scale <- max scale (Math.Abs e)
            err / (1.0 + scale) < 1e-5)
    ]
