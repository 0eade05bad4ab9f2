module Lxt.Tests.SgemmTests

open System
open Expecto
open FsCheck
open FsCheck.FSharp
open Lxt.Backend.Cpu

/// One randomly generated GEMM problem. Pad* are extra elements per row beyond the stored width (ld = width + pad).
type GemmCase =
    { TransA: bool
      TransB: bool
      M: int
      N: int
      K: int
      PadA: int
      PadB: int
      PadC: int
      Accumulate: bool
      Threads: int
      /// Integer-valued inputs in [-4, 4]: every product and partial sum is exact in float32, so C must match exactly.
      Exact: bool
      Seed: int }

/// Sizes 1..150 with extra weight on values around register-tile (14, 32) and block edges.
let private dimGen =
    Gen.frequency
        [ 4, Gen.choose (1, 150)
          3, Gen.elements [ 1; 2; 3; 7; 8; 13; 14; 15; 16; 17; 27; 28; 29; 31; 32; 33; 41; 42; 43; 63; 64; 65; 95; 96; 97; 127; 128; 129 ]
          1, Gen.elements [ 167; 168; 169 ] ]

/// k additionally crosses the depth-blocking edge (256) now and then.
let private kGen = Gen.frequency [ 9, dimGen; 1, Gen.elements [ 255; 256; 257; 300 ] ]

let private padGen = Gen.frequency [ 3, Gen.constant 0; 2, Gen.choose (1, 9) ]

let private caseGen =
    gen {
        let! ta = Gen.elements [ false; true ]
        let! tb = Gen.elements [ false; true ]
        let! m = dimGen
        let! n = dimGen
        let! k = kGen
        let! pa = padGen
        let! pb = padGen
        let! pc = padGen
        let! acc = Gen.elements [ false; true ]
        let! th = Gen.elements [ 1; 2; 0 ]
        let! exact = Gen.elements [ false; true ]
        let! seed = Gen.choose (0, Int32.MaxValue - 1)
        return
            { TransA = ta; TransB = tb; M = m; N = n; K = k; PadA = pa; PadB = pb; PadC = pc
              Accumulate = acc; Threads = th; Exact = exact; Seed = seed }
    }

let private caseArb = Arb.fromGen caseGen

// stored shapes: A is (transA ? k×m : m×k), B is (transB ? n×k : k×n)
let private lda (c: GemmCase) = (if c.TransA then c.M else c.K) + c.PadA
let private ldb (c: GemmCase) = (if c.TransB then c.K else c.N) + c.PadB
let private ldc (c: GemmCase) = c.N + c.PadC
let private lenA (c: GemmCase) = (if c.TransA then c.K else c.M) * lda c
let private lenB (c: GemmCase) = (if c.TransB then c.N else c.K) * ldb c
let private lenC (c: GemmCase) = c.M * ldc c

let private randomArray (c: GemmCase) (rng: Random) (len: int) =
    if c.Exact then Array.init len (fun _ -> float32 (rng.Next(-4, 5)))
    else Array.init len (fun _ -> float32 (rng.NextDouble() * 2.0 - 1.0))

/// Checks C (offset offC) against a double-precision triple loop over A (offA), B (offB) and the original C0.
/// Elements of C outside the m×n window (row padding) must be left untouched.
let private check (c: GemmCase) (a: float32[]) offA (b: float32[]) offB (c0: float32[]) (got: float32[]) offC (what: string) =
    let lda, ldb, ldc = lda c, ldb c, ldc c
    let opA i p = if c.TransA then a.[offA + p * lda + i] else a.[offA + i * lda + p]
    let opB p j = if c.TransB then b.[offB + j * ldb + p] else b.[offB + p * ldb + j]
    // Error relative to sum |a·b| (+ |C0|). The worst-case float32 bound is about (k+1)·2^-24 ≈ 6e-8·(k+1);
    // 1e-6·(k+1) stays well inside "1e-5 scaled by k" while still catching a single dropped or doubled term.
    let tol = if c.Exact then 0.0 else 1e-6 * float (c.K + 1)
    for i in 0 .. c.M - 1 do
        for j in 0 .. c.N - 1 do
            let mutable sum = 0.0
            let mutable mag = 0.0
            for p in 0 .. c.K - 1 do
                let t = float (opA i p) * float (opB p j)
                sum <- sum + t
                mag <- mag + abs t
            let idx = offC + i * ldc + j
            if c.Accumulate then
                sum <- sum + float c0.[idx]
                mag <- mag + abs (float c0.[idx])
            let err = abs (float got.[idx] - sum)
            if not (err <= tol * mag) then
                failwithf "%s: C[%d,%d] = %g, expected %g (err %g, scale %g) for %A" what i j got.[idx] sum err mag c
        for j in c.N .. ldc - 1 do
            let idx = offC + i * ldc + j
            if idx < got.Length && got.[idx] <> c0.[idx] then
                failwithf "%s: padding C[%d,%d] was overwritten for %A" what i j c

let private multiplyAgrees (c: GemmCase) =
    let rng = Random c.Seed
    let a = randomArray c rng (lenA c)
    let b = randomArray c rng (lenB c)
    let c0 = randomArray c rng (lenC c)
    let got = Array.copy c0
    Sgemm.Multiply(c.TransA, c.TransB, c.M, c.N, c.K, ReadOnlySpan a, lda c, ReadOnlySpan b, ldb c, Span got, ldc c,
                   c.Accumulate, c.Threads)
    check c a 0 b 0 c0 got 0 "Multiply"

let private batchedAgrees (c: GemmCase) (batch: int) (shareA: bool) (gap: int) =
    let rng = Random(c.Seed + 1)
    let sA = if shareA then 0L else int64 (lenA c + gap)
    let sB = int64 (lenB c + gap)
    let sC = int64 (lenC c + gap)
    let total (s: int64) len = if batch = 0 then 0 else int (s * int64 (batch - 1)) + len
    let a = randomArray c rng (total sA (lenA c))
    let b = randomArray c rng (total sB (lenB c))
    let c0 = randomArray c rng (total sC (lenC c))
    let got = Array.copy c0
    Sgemm.MultiplyBatched(c.TransA, c.TransB, c.M, c.N, c.K, batch, ReadOnlySpan a, lda c, sA, ReadOnlySpan b, ldb c, sB,
                          Span got, ldc c, sC, c.Accumulate, c.Threads)
    for i in 0 .. batch - 1 do
        check c a (int sA * i) b (int sB * i) c0 got (int sC * i) (sprintf "MultiplyBatched[%d/%d]" i batch)
    // the gaps between the output matrices are untouched
    for i in 0 .. batch - 2 do
        for idx in int sC * i + lenC c .. int sC * (i + 1) - 1 do
            if got.[idx] <> c0.[idx] then failwithf "MultiplyBatched wrote into the gap after matrix %d for %A" i c

let private config = { FsCheckConfig.defaultConfig with maxTest = 150 }

/// Runs f and expects an ArgumentException whose ParamName is `param`.
let private throwsArg (param: string) (f: unit -> unit) =
    let ex = Expect.throwsC f id
    match ex with
    | :? ArgumentException as ae -> Expect.equal ae.ParamName param (sprintf "ParamName of %s" (ae.GetType().Name))
    | e -> failtestf "expected ArgumentException for %s, got %s" param (e.GetType().Name)

let private mul ta tb m n k (a: float32[]) lda (b: float32[]) ldb (c: float32[]) ldc threads () =
    Sgemm.Multiply(ta, tb, m, n, k, ReadOnlySpan a, lda, ReadOnlySpan b, ldb, Span c, ldc, false, threads)

let private badArguments =
    let z (n: int) = Array.zeroCreate<float32> n
    testList "bad arguments" [
        test "negative m" { throwsArg "m" (mul false false -1 2 2 (z 4) 2 (z 4) 2 (z 4) 2 0) }
        test "negative n" { throwsArg "n" (mul false false 2 -1 2 (z 4) 2 (z 4) 2 (z 4) 2 0) }
        test "negative k" { throwsArg "k" (mul false false 2 2 -1 (z 4) 2 (z 4) 2 (z 4) 2 0) }
        test "negative maxThreads" { throwsArg "maxThreads" (mul false false 2 2 2 (z 4) 2 (z 4) 2 (z 4) 2 -1) }
        test "lda smaller than k" { throwsArg "lda" (mul false false 2 3 3 (z 9) 2 (z 9) 3 (z 9) 3 0) }
        test "lda smaller than m when transposed" { throwsArg "lda" (mul true false 3 2 2 (z 9) 2 (z 9) 2 (z 9) 2 0) }
        test "ldb smaller than n" { throwsArg "ldb" (mul false false 3 3 2 (z 9) 2 (z 9) 2 (z 9) 3 0) }
        test "ldb smaller than k when transposed" { throwsArg "ldb" (mul false true 2 2 3 (z 9) 3 (z 9) 2 (z 9) 2 0) }
        test "ldc smaller than n" { throwsArg "ldc" (mul false false 2 3 2 (z 9) 2 (z 9) 3 (z 9) 2 0) }
        test "a too short" { throwsArg "a" (mul false false 3 3 3 (z 8) 3 (z 9) 3 (z 9) 3 0) }
        test "a too short with padding" { throwsArg "a" (mul false false 3 3 3 (z 10) 4 (z 9) 3 (z 9) 3 0) }
        test "a too short transposed" { throwsArg "a" (mul true false 4 3 2 (z 7) 4 (z 9) 3 (z 12) 3 0) }
        test "b too short" { throwsArg "b" (mul false false 3 3 3 (z 9) 3 (z 8) 3 (z 9) 3 0) }
        test "b too short transposed" { throwsArg "b" (mul false true 2 4 3 (z 6) 3 (z 11) 3 (z 8) 4 0) }
        test "c too short" { throwsArg "c" (mul false false 3 3 3 (z 9) 3 (z 9) 3 (z 8) 3 0) }
        test "c too short with padding" { throwsArg "c" (mul false false 3 3 3 (z 9) 3 (z 9) 3 (z 12) 5 0) }
        test "empty product accepts empty spans" {
            mul false false 0 5 3 (z 0) 3 (z 15) 5 (z 0) 5 0 ()
            mul false false 4 0 3 (z 12) 3 (z 0) 1 (z 0) 1 0 ()
        }
        test "k = 0 clears C unless accumulating" {
            let c = Array.create 6 7.0f
            Sgemm.Multiply(false, false, 2, 3, 0, ReadOnlySpan(z 0), 1, ReadOnlySpan(z 0), 3, Span c, 3)
            Expect.equal c (Array.zeroCreate 6) "C = 0"
            let c2 = Array.create 6 7.0f
            Sgemm.Multiply(false, false, 2, 3, 0, ReadOnlySpan(z 0), 1, ReadOnlySpan(z 0), 3, Span c2, 3, true)
            Expect.equal c2 (Array.create 6 7.0f) "C unchanged"
        }
        let bat batch sA sB sC (a: float32[]) (b: float32[]) (c: float32[]) () =
            Sgemm.MultiplyBatched(false, false, 2, 2, 2, batch, ReadOnlySpan a, 2, sA, ReadOnlySpan b, 2, sB, Span c, 2, sC)
        test "batched: negative batch" { throwsArg "batch" (bat -1 4L 4L 4L (z 8) (z 8) (z 8)) }
        test "batched: a too short for strideA" { throwsArg "a" (bat 3 4L 4L 4L (z 11) (z 12) (z 12)) }
        test "batched: b too short for strideB" { throwsArg "b" (bat 3 4L 5L 4L (z 12) (z 13) (z 12)) }
        test "batched: c too short for strideC" { throwsArg "c" (bat 3 4L 4L 6L (z 12) (z 12) (z 15)) }
        test "batched: negative strideA" { throwsArg "strideA" (bat 2 -4L 4L 4L (z 12) (z 12) (z 12)) }
        test "batched: overlapping outputs" { throwsArg "strideC" (bat 2 4L 4L 3L (z 12) (z 12) (z 12)) }
        test "batched: zero strideB broadcasts B" {
            let a = [| 1.0f; 0.0f; 0.0f; 1.0f; 2.0f; 0.0f; 0.0f; 2.0f |]
            let b = [| 1.0f; 2.0f; 3.0f; 4.0f |]
            let c = z 8
            Sgemm.MultiplyBatched(false, false, 2, 2, 2, 2, ReadOnlySpan a, 2, 4L, ReadOnlySpan b, 2, 0L, Span c, 2, 4L)
            Expect.equal c [| 1.0f; 2.0f; 3.0f; 4.0f; 2.0f; 4.0f; 6.0f; 8.0f |] "I·B, 2I·B"
        }
    ]

let tests =
    testList "sgemm" [
        testPropertyWithConfig config "Multiply agrees with a double-precision triple loop"
            (Prop.forAll caseArb multiplyAgrees)
        testPropertyWithConfig config "MultiplyBatched agrees with a double-precision triple loop"
            (Prop.forAll (Arb.fromGen (Gen.zip3 caseGen (Gen.choose (0, 5)) (Gen.zip (Gen.elements [ false; true ]) (Gen.choose (0, 7)))))
                (fun (c, batch, (shareA, gap)) -> batchedAgrees c batch shareA gap))
        testPropertyWithConfig { config with maxTest = 40 } "MultiplyBatched with many small products (parallel over the batch)"
            (Prop.forAll (Arb.fromGen (Gen.zip caseGen (Gen.choose (6, 24))))
                (fun (c, batch) ->
                    let small = { c with M = 1 + c.M % 40; N = 1 + c.N % 40; K = 1 + c.K % 40; Threads = 2 }
                    batchedAgrees small batch false 3))
        testList "fixed sizes" [
            for (m, n, k) in [ (512, 512, 512); (300, 700, 513); (1, 1000, 1); (1000, 1, 3); (129, 33, 1025) ] do
                for ta in [ false; true ] do
                    for tb in [ false; true ] do
                        test (sprintf "%dx%dx%d transA=%b transB=%b" m n k ta tb) {
                            multiplyAgrees
                                { TransA = ta; TransB = tb; M = m; N = n; K = k; PadA = 3; PadB = 0; PadC = 5
                                  Accumulate = ta; Threads = 0; Exact = tb; Seed = m + n + k }
                        }
        ]
        badArguments
    ]
