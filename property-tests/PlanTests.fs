// Specifications of the plan's memory mechanisms: lazy transposes read by the GEMM, pointwise results written into
// dying operands, host arrays adopted as buffers. Each gives the reference backend's values and bounds memory.
module Lxt.Tests.PlanTests

open System
open System.Collections.Generic
open Expecto
open Lxt.Graph
open Lxt.Graph.Ops
open Lxt.Backend.Cpu

let private config n = { FsCheckConfig.defaultConfig with maxTest = n }

let private close (a: float[]) (b: float[]) =
    let scale = 1.0 + (b |> Array.fold (fun m v -> max m (Math.Abs(v: float))) 0.0)
    Array.length a = Array.length b && Array.forall2 (fun (x: float) y -> Math.Abs(x - y) <= 1e-5 * scale) a b

let private randomValues (rng: Random) (nodes: Node seq) =
    nodes
    |> Seq.choose (fun n -> match n.Op with Input s | Parameter s -> Some(s, Array.init (Shape.numel n.Shape) (fun _ -> rng.NextDouble() * 2.0 - 1.0)) | _ -> None)
    |> Map.ofSeq

/// A small Llama-like block: RMS-norm, q/k/v projections with W stored [out, in], grouped heads, causal softmax
/// attention, an output projection, a gated MLP; the relevance-style gradient of one output row back to x.
let private block (rng: Random) =
    let t, heads, d = 2 + rng.Next 20, 1 + rng.Next 3, 1 + rng.Next 9
    let hidden = heads * d
    let inter = 1 + rng.Next 40
    let x = input "x" [| t; hidden |] Float
    let linear name (x: Node) outF = matmul x (transpose -1 -2 (parameter name [| outF; x.Shape.[1] |]))
    let norm (x: Node) = mul x (rsqrt (addScalar 1e-5 (reduceMean [ -1 ] true (square x))))
    let split (x: Node) = permute [ 1; 0; 2 ] (reshape [| t; heads; d |] x)
    let h = norm x
    let q, k, v = split (linear "q" h hidden), split (linear "k" h hidden), split (linear "v" h hidden)
    let keep = Array.init (t * t) (fun i -> if i % t <= i / t then 1.0 else 0.0)
    let scores = where (constant [| t; t |] keep) (scale (1.0 / Math.Sqrt(float d)) (matmul q (transpose -1 -2 k))) (scalar Double.NegativeInfinity)
    let ctx = reshape [| t; hidden |] (permute [ 1; 0; 2 ] (matmul (softmax 2 scores) v))
    let h2 = add x (linear "o" ctx hidden)
    let mlp = linear "down" (mul (silu (linear "gate" (norm h2) inter)) (linear "up" (norm h2) inter)) hidden
    let y = add h2 mlp
    let seed = constant y.Shape (Array.init (Shape.numel y.Shape) (fun _ -> rng.NextDouble() - 0.5))
    let loss = reduceSum [ 0; 1 ] false (mul y seed)
    let gx = Autodiff.vjp [ loss, scalar 1.0 ] [ x ] |> List.head
    [ y; mul x gx ]

/// A chain of `layers` linear + SiLU layers with residuals, and its input gradient.
let private chain (layers: int) =
    let x = input "x" [| 32; 64 |] Float
    let mutable h = x
    for i in 1 .. layers do
        let w = parameter (sprintf "w%d" i) [| 64; 64 |]
        h <- add h (silu (matmul h (transpose -1 -2 w)))
    let loss = reduceSum [ 0; 1 ] false h
    [ h; Autodiff.vjp [ loss, scalar 1.0 ] [ x ] |> List.head ]

let private run (backend: IBackend) (values: Map<string, float[]>) (outputs: Node list) =
    let plan = Plan.compile outputs
    let host, peak = HostEvaluation.run backend values plan
    host, peak, plan

let tests =
    testList "plans" [
        test "a transpose read only by matmuls is lazy; a transposed transpose is no step at all" {
            let w = parameter "w" [| 5; 3 |]
            let x = input "x" [| 4; 3 |] Float
            let y = matmul x (transpose -1 -2 w)
            let g = matmul (fill [| 4; 5 |] 1.0) (transpose -1 -2 (transpose -1 -2 w))
            let plan = Plan.compile [ y; g ]
            Expect.equal plan.LazyTransposes.Count 1 "the weight's transpose is lazy"
            let permutes = plan.Steps |> Array.filter (fun n -> match n.Op with Permute _ -> true | _ -> false)
            Expect.equal permutes.Length 1 "the double transpose composed away"
            let shared = Plan.compile [ y; exp (transpose -1 -2 w) ]
            Expect.equal shared.LazyTransposes.Count 0 "a transpose with a pointwise reader is computed"
        }
        testPropertyWithConfig (config 40) "a transposed matmul reads either operand transposed, with broadcast batches, as the reference computes" (fun (seed: int) ->
            let rng = Random seed
            let m, k, n = 1 + rng.Next 40, 1 + rng.Next 40, 1 + rng.Next 40
            let batch = [| for _ in 1 .. rng.Next 3 -> 1 + rng.Next 3 |]
            let bBatch = if rng.Next 2 = 0 then [||] else batch
            let transA, transB = rng.Next 2 = 0, rng.Next 2 = 0
            let operand name (b: int[]) r c trans =
                if trans then transpose -1 -2 (input name (Array.append b [| c; r |]) Float) else input name (Array.append b [| r; c |]) Float
            let y = matmul (operand "a" batch m k transA) (operand "b" bBatch k n transB)
            let values = randomValues rng (Traverse.topo [ y ])
            let expected = Evaluate.reference1 values y
            let actual, _, plan = run (new CpuBackend()) values [ y ]
            plan.LazyTransposes.Count = (if transA then 1 else 0) + (if transB then 1 else 0) && close actual.[0] expected)
        testPropertyWithConfig (config 25) "linear layers and attention, forward and input gradient, agree with the reference with lazy transposes and in-place pointwise steps" (fun (seed: int) ->
            let rng = Random seed
            let outputs = block rng
            let values = randomValues rng (Traverse.topo outputs)
            let expected = Evaluate.reference values outputs
            let actual, _, plan = run (new CpuBackend(1)) values outputs
            plan.LazyTransposes.Count >= 7 && Array.forall2 close actual expected)
        test "a chain of pointwise ops runs in one buffer when results overwrite their dying operand" {
            let x = input "x" [| 1000 |] Float
            let ops = List.fold (fun acc i -> if i % 2 = 0 then tanh acc else mul (sin acc) (scalar 0.5)) x [ 1 .. 50 ]
            let values = Map [ "x", Array.init 1000 (fun i -> float i / 1000.0) ]
            let actual, peak, _ = run (new CpuBackend()) values [ ops ]
            Expect.isTrue (close actual.[0] (Evaluate.reference1 values ops)) "same values as the reference"
            // one working buffer, the fresh copy Run returns, and the scalar 0.5
            Expect.isLessThanOrEqual peak (2L * 4000L + 4L) "one buffer for the chain"
        }
        test "the planned peak of a chain of linear layers, forward and gradient, is bounded by its activations" {
            let peakOf layers =
                let outputs = chain layers
                let values = randomValues (Random 3) (Traverse.topo outputs)
                let _, peak, _ = run (new CpuBackend(1)) values outputs
                peak
            let p2, p8, p16 = peakOf 2, peakOf 8, peakOf 16
            let activation = 32L * 64L * 4L
            // the backward pass needs each layer's saved activations (at most three per layer), never the weights' transposes
            Expect.isLessThanOrEqual (p16 - p8) (8L * 3L * activation) "growth per layer is the saved activations only"
            Expect.isLessThanOrEqual (p8 - p2) (6L * 3L * activation) "growth per layer is the saved activations only"
        }
        test "the CPU backend adopts a host array as a buffer without copying it" {
            let backend = new CpuBackend()
            let values = [| 1.0f; 2.0f; 3.0f |]
            let b = (backend :> IHostArrayAdoption).Adopt values :?> CpuBuffer
            Expect.isTrue (obj.ReferenceEquals(b.Array, values)) "the array is the buffer's storage"
            let w = parameter "w" [| 3 |]
            let plan = Plan.compile [ mul w (scalar 2.0) ]
            use exe = new Executable(plan, backend)
            exe.BindParameter("w", b, false)
            let outs = exe.Run(Dictionary())
            let host = Array.zeroCreate 3
            (backend :> IBackend).Download(outs.[0], Span host)
            Expect.equal host [| 2.0f; 4.0f; 6.0f |] "computed from the adopted array"
            Expect.equal values [| 1.0f; 2.0f; 3.0f |] "a parameter's array is never written"
        }
        test "profiling groups steps by op kind" {
            let x = input "x" [| 8; 8 |] Float
            let y = exp (matmul x (transpose -1 -2 x))
            let backend = new CpuBackend()
            use exe = new Executable(Plan.compile [ y ], backend)
            exe.Profiling <- true
            let b = (backend :> IBackend).Allocate 64
            exe.Recycle(exe.Run(Dictionary(dict [ "x", b ])))
            let kinds = exe.Profile |> Array.map (fun p -> p.Kind)
            Expect.contains kinds "Unary Exp" "pointwise ops by function"
            Expect.isTrue (kinds |> Array.exists (fun k -> k.StartsWith "MatMul")) "matmuls by shape"
        }
        test "matrix-only parameters: read by MatMuls directly, through views or lazy transposes, and never otherwise" {
            let x = input "x" [| 3; 4 |] Float
            let direct = matmul x (parameter "direct" [| 4; 5 |])
            let linear = matmul x (transpose -1 -2 (parameter "linear" [| 6; 4 |]))
            let viewed = matmul x (reshape [| 4; 2 |] (parameter "viewed" [| 8 |]))
            let shared = parameter "shared" [| 4; 4 |]
            let alsoAdded = add (matmul x shared) (matmul x shared |> mul (reshape [| 1; 4 |] (parameter "scale" [| 4 |])))
            let mixed = parameter "mixed" [| 4; 4 |]
            let readTwice = add (matmul x mixed) (slice 0 0 3 mixed)
            let output = parameter "output" [| 4; 4 |]
            let plan = Plan.compile [ direct; linear; viewed; alsoAdded; readTwice; matmul x output; reshape [| 16 |] output ]
            Expect.equal (Plan.matMulOnlyParameters true plan) (set [ "direct"; "linear"; "viewed"; "shared" ]) "with lazy transposes"
            Expect.equal (Plan.matMulOnlyParameters false plan) (set [ "direct"; "viewed"; "shared" ]) "a materialised transpose reads the weight"
        }
    ]
