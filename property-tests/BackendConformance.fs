// The conformance suite every backend runs: on every op, on gradient graphs, masked softmax, top-k, erf accuracy,
// convolutions, gather errors and foreign buffers, a backend computes what the float64 reference backend computes.
module Lxt.Tests.BackendConformance

open System
open Expecto
open Lxt.Graph
open Lxt.Graph.Ops

let config n = { FsCheckConfig.defaultConfig with maxTest = n }

/// max |actual − ref| / (1 + max |ref|); NaN and infinities must sit at the same places in both.
let relativeError (actual: float[]) (ref: float[]) =
    if actual.Length <> ref.Length then infinity
    else
        let mutable err, scale = 0.0, 0.0
        for i in 0 .. ref.Length - 1 do
            let r, c = ref.[i], actual.[i]
            if Double.IsNaN r || Double.IsInfinity r then
                if not (r.Equals c) then err <- infinity
            elif Double.IsNaN c || Double.IsInfinity c then err <- infinity
            else
                err <- max err (Math.Abs(c - r))
                scale <- max scale (Math.Abs r)
        err / (1.0 + scale)

/// Evaluates `outputs` on `backend` and on the reference backend and reports the outputs that differ by 1e-5 or more.
let agreesOn (backend: IBackend) (description: string) (values: Map<string, float[]>) (outputs: Node list) =
    let expected = Evaluate.reference values outputs
    let actual = Evaluate.onBackend backend values outputs
    Array.zip3 (Array.ofList outputs) expected actual
    |> Array.forall (fun (node, r, c) ->
        let e = relativeError c r
        let ok = e < 1e-5
        if not ok then printfn "%s: %s differs on %s, relative error %g" description (Node.Describe node) backend.Name e
        ok)

let random (rng: Random) (n: int) = Array.init n (fun _ -> rng.NextDouble() * 2.0 - 1.0)

/// How hard a backend's conformance run pushes (slow backends run fewer cases).
type Effort = { CasesPerOp: int; RandomGraphs: int; ErfStep: float; ErfExtremes: bool }

/// The shared tests for a backend made by `backend ()`.
let tests (backend: unit -> IBackend) (effort: Effort) =
    let agrees description values outputs = agreesOn (backend ()) description values outputs
    let sampleAgrees (sample: RandomGraphs.Sample) (seed: int) =
        agrees sample.Description sample.Values (RandomGraphs.forwardAndGradients seed sample.Output)
    [ testList "agrees with the reference on one op, forward and gradients" [
        for op in RandomGraphs.opNames ->
            testPropertyWithConfig (config effort.CasesPerOp) op (fun (seed: int) ->
                sampleAgrees (RandomGraphs.build (seed &&& 0x7fffffff) 3 (Some op)) seed) ]
      testPropertyWithConfig (config effort.RandomGraphs) "agrees with the reference on random graphs of depth 5, forward and gradients" (fun (seed: int) ->
        sampleAgrees (RandomGraphs.build (seed &&& 0x7fffffff) 5 None) seed)
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
      test "top-k masks keep the k largest per row, ties to the lower index" {
        let x = input "x" [| 3; 6 |] Float
        let values = Map [ "x", [| 0.5; 0.1; 0.5; 0.9; -1.0; 0.5
                                   1.0; 1.0; 1.0; 1.0; 1.0; 1.0
                                   -3.0; 2.0; -1.0; 0.0; 2.0; 7.0 |] ]
        Expect.isTrue (agrees "top-k" values [ topKMask 1 x; topKMask 3 x; topKMask 6 x ]) "k = 1, 3, 6"
        let got = (Evaluate.onBackend (backend ()) values [ topKMask 3 x ]).[0]
        Expect.sequenceEqual got.[0 .. 5] [| 1.0; 0.0; 1.0; 1.0; 0.0; 0.0 |] "ties go to the lower index"
      }
      test "float erf and erf-GELU keep relative accuracy 1e-6 and 5e-6 from tiny to large arguments" {
        let steps = int (12.0 / effort.ErfStep)
        let extremes = if effort.ErfExtremes then [| -1e-20; 1e30; -1e30 |] else [||]
        let grid = Array.concat [ Array.init (steps + 1) (fun i -> -6.0 + float i * effort.ErfStep); [| for e in -30 .. -1 -> 10.0 ** float e |]; extremes ]
        let xs = grid |> Array.map (fun v -> float (float32 v))
        let x = input "x" [| xs.Length |] Float
        let values = Map [ "x", xs ]
        for node, relative in [ erf x, 1e-6; geluErf x, 5e-6 ] do
            let r = Evaluate.reference1 values node
            let c = (Evaluate.onBackend (backend ()) values [ node ]).[0]
            for i in 0 .. xs.Length - 1 do
                if Math.Abs(c.[i] - r.[i]) > relative * Math.Abs r.[i] + 1e-30 then
                    failtestf "%s at %g: %.9g, reference %.9g" (Node.Describe node) xs.[i] c.[i] r.[i]
      }
      test "a vision-transformer patch embedding, a padded strided convolution and their gradients agree" {
        let rng = Random 5
        let patches = conv2d (8, 8) (0, 0) (input "image" [| 2; 3; 32; 32 |] Float) (parameter "patch" [| 24; 3; 8; 8 |])
        let strided = conv2d (2, 2) (1, 1) (input "small" [| 2; 3; 9; 9 |] Float) (parameter "kernel" [| 4; 3; 3; 3 |])
        let values = Map [ "image", random rng (2 * 3 * 32 * 32); "patch", random rng (24 * 3 * 8 * 8)
                           "small", random rng (2 * 3 * 9 * 9); "kernel", random rng (4 * 3 * 3 * 3) ]
        Expect.isTrue (agrees "patch embedding" values (RandomGraphs.forwardAndGradients 5 patches)) "patch embedding, forward and both gradients"
        Expect.isTrue (agrees "strided convolution" values (RandomGraphs.forwardAndGradients 5 strided)) "padded strided convolution, forward and both gradients"
      }
      test "an out-of-range gather index is a binding error naming the index and the table" {
        let e = gather (named "embed.tokens" (parameter "table" [| 4; 2 |])) (input "tokens" [| 3 |] Int)
        let ex = Expect.throwsC (fun () -> Evaluate.onBackend (backend ()) (Map [ "tokens", [| 0.0; 9.0; 1.0 |]; "table", Array.zeroCreate 8 ]) [ e ] |> ignore) id
        Expect.isTrue (ex :? BindingException) (sprintf "expected BindingException, got %s" (ex.GetType().Name))
        Expect.stringContains ex.Message "index 9" "names the index"
        Expect.stringContains ex.Message "embed.tokens" "names the table"
      }
      test "attention as one op agrees with the reference: output, log-sum-exp and gradients (of V alone where Q and K stop them), grouped heads, masks at an offset" {
        let rng = Random 9
        for (h, kv, t, past, d, dv, mask) in
            [ 4, 2, 5, 3, 3, 2, { Causal = true; Offset = 3; Window = None }
              2, 1, 7, 0, 4, 5, { Causal = true; Offset = 0; Window = Some 3 }
              3, 3, 4, 2, 2, 3, AttentionMask.None
              2, 2, 150, 7, 8, 8, { Causal = true; Offset = 7; Window = Some 90 } ] do
            let q, k, v = input "q" [| h; t; d |] Float, input "k" [| kv; past + t; d |] Float, input "v" [| kv; past + t; dv |] Float
            let o = attention mask 0.7 q k v
            let values = Map [ "q", random rng (h * t * d); "k", random rng (kv * (past + t) * d); "v", random rng (kv * (past + t) * dv) ]
            Expect.isTrue (agrees (sprintf "attention %A" mask) values (RandomGraphs.forwardAndGradients 3 o)) (sprintf "%d heads over %d, %d tokens after %d, %A" h kv t past mask)
            let cut = attention mask 0.7 (stopGradient q) (stopGradient k) v
            Expect.isTrue (agrees (sprintf "attention %A, Q and K cut" mask) values (RandomGraphs.forwardAndGradients 3 cut)) (sprintf "%d heads over %d, %A: dV alone" h kv mask)
      }
      test "buffers of another backend are rejected" {
        let foreign = (new ReferenceBackend() :> IBackend).Allocate 4
        Expect.throwsT<ArgumentException> (fun () -> (backend ()).Upload(ReadOnlySpan(Array.zeroCreate<float32> 4), foreign)) "foreign buffer"
      } ]
