// Specifications of the graph core: hash-consing, shape errors, autodiff against finite differences, rewrites, plans.
module Lxt.Tests.GraphTests

open System
open System.Collections.Generic
open Expecto
open FsCheck
open FsCheck.FSharp
open Lxt.Graph
open Lxt.Graph.Ops

let private config n = { FsCheckConfig.defaultConfig with maxTest = n }

let private leafName (n: Node) = match n.Op with Input s | Parameter s -> s | _ -> failwith "not a leaf"

/// Checks the VJP builder's gradients against central differences of the reference evaluator.
let private gradientMatchesFiniteDifferences (sample: RandomGraphs.Sample) (seed: int) =
    let loss = RandomGraphs.lossOf seed sample.Output
    let leaves = RandomGraphs.floatLeaves loss
    let grads = Evaluate.reference sample.Values (Autodiff.vjp [ loss, scalar 1.0 ] leaves)
    let h = 1e-5
    List.zip leaves (List.ofArray grads)
    |> List.forall (fun (leaf, g) ->
        let name = leafName leaf
        let x = sample.Values.[name]
        Array.indexed x |> Array.forall (fun (i, xi) ->
            let at v = (Evaluate.reference1 (sample.Values.Add(name, Array.updateAt i v x)) loss).[0]
            let fd = (at (xi + h) - at (xi - h)) / (2.0 * h)
            let ok = Math.Abs(fd - g.[i]) <= 1e-6 * (1.0 + Math.Abs fd)
            if not ok then printfn "%s: d/d%s[%d] vjp %g vs finite difference %g" sample.Description name i g.[i] fd
            ok))

let private sampleOf op seed = RandomGraphs.build (seed &&& 0x7fffffff) 3 (Some op)

/// Wraps nodes of a graph in identities the simplifier should remove, plus foldable constant subtrees.
let private decorate (seed: int) (root: Node) =
    let rng = Random seed
    let mapped =
        Traverse.mapBottomUp (fun n ->
            match (if n.DType = Int then 6 else rng.Next 7) with
            | 0 -> mul n (fill n.Shape 1.0)
            | 1 -> add (fill n.Shape 0.0) n
            | 2 -> neg (neg n)
            | 3 -> reshape n.Shape (reshape [| -1 |] n)
            | 4 -> gradientScale 1.0 (gradientScale 2.0 n)
            | 5 when n.Shape.Length > 0 -> add n (mul (constant [| n.Shape.[n.Shape.Length - 1] |] (Array.init n.Shape.[n.Shape.Length - 1] float)) (scalar 0.0))
            | _ -> n) [ root ]
    mapped.[root]

let private throwsWith<'e when 'e :> exn> (fragments: string list) (f: unit -> unit) =
    let e = Expect.throwsC f id
    Expect.isTrue (e :? 'e) (sprintf "expected %s, got %s: %s" typeof<'e>.Name (e.GetType().Name) e.Message)
    for fragment in fragments do Expect.stringContains e.Message fragment "the message names what was wrong"

let tests =
    testList "graph" [
        testList "hash-consing" [
            test "equal subgraphs are one node" {
                let x = input "x" [| 2; 3 |] Float
                let a = tanh (add x (scalar 1.0))
                let b = tanh (add x (scalar 1.0))
                Expect.isTrue (obj.ReferenceEquals(a, b)) "the same expression built twice is the same node"
                Expect.isFalse (obj.ReferenceEquals(named "h" a, a)) "a name makes a distinct node"
                Expect.isTrue (obj.ReferenceEquals(named "h" a, named "h" b)) "and the same name the same node"
            }
            test "constants intern by content" {
                Expect.isTrue (obj.ReferenceEquals(constant [| 2 |] [| 1.0; 2.0 |], constant [| 2 |] [| 1.0; 2.0 |])) "same values"
                Expect.isFalse (obj.ReferenceEquals(constant [| 2 |] [| 1.0; 2.0 |], constant [| 2 |] [| 1.0; 3.0 |])) "other values"
            }
            test "a constant keeps its values when the caller's array changes" {
                let values = [| 4.0; 5.0; 6.0 |]
                let c = constant [| 3 |] values
                values.[1] <- -1.0
                Expect.sequenceEqual (Evaluate.reference1 Map.empty c) [| 4.0; 5.0; 6.0 |] "the graph's values"
                Expect.isFalse (obj.ReferenceEquals(c, constant [| 3 |] values)) "the changed array is another constant"
            }
        ]
        testList "shape errors are typed and name the nodes" [
            test "matmul with mismatched inner dimensions" {
                let a = named "model.q_proj" (input "a" [| 4; 32 |] Float)
                throwsWith<GraphShapeException> [ "model.q_proj"; "[16, 8]"; "32" ] (fun () -> matmul a (input "b" [| 16; 8 |] Float) |> ignore)
            }
            test "elementwise shapes that do not broadcast" {
                throwsWith<GraphShapeException> [ "[2, 3]"; "[4]" ] (fun () -> add (input "a" [| 2; 3 |] Float) (input "b" [| 4 |] Float) |> ignore)
            }
            test "unknown axis" {
                throwsWith<GraphShapeException> [ "axis 5" ] (fun () -> softmax 5 (input "a" [| 2; 3 |] Float) |> ignore)
                throwsWith<GraphShapeException> [ "axis 3" ] (fun () -> reduceSum [ 3 ] false (input "a" [| 2; 3 |] Float) |> ignore)
            }
            test "reshape that changes the element count" {
                throwsWith<GraphShapeException> [ "[2, 3]"; "[4, 2]" ] (fun () -> reshape [| 4; 2 |] (input "a" [| 2; 3 |] Float) |> ignore)
            }
            test "gather with float indices, concat with mismatched parts, bad permutation, bad slice" {
                throwsWith<GraphShapeException> [ "integers" ] (fun () -> gather (input "t" [| 5; 2 |] Float) (input "i" [| 3 |] Float) |> ignore)
                throwsWith<GraphShapeException> [ "concat" ] (fun () -> concat 0 [ input "a" [| 2; 3 |] Float; input "b" [| 2; 4 |] Float ] |> ignore)
                throwsWith<GraphShapeException> [ "permutation" ] (fun () -> permute [ 0; 0 ] (input "a" [| 2; 3 |] Float) |> ignore)
                throwsWith<GraphShapeException> [ "range 1..5" ] (fun () -> slice 1 1 5 (input "a" [| 2; 3 |] Float) |> ignore)
            }
            test "a bad binding names the input" {
                let x = input "tokens" [| 3 |] Int
                let e = gather (input "table" [| 4; 2 |] Float) x
                throwsWith<BindingException> [ "index 9"; "table" ] (fun () ->
                    Evaluate.reference1 (Map [ "tokens", [| 0.0; 9.0; 1.0 |]; "table", Array.zeroCreate 8 ]) e |> ignore)
                throwsWith<BindingException> [ "tokens" ] (fun () ->
                    use exe = new Executable(Plan.compile [ e ], new ReferenceBackend())
                    exe.Run(Collections.Generic.Dictionary()) |> ignore)
                throwsWith<BindingException> [ "table"; "8" ] (fun () ->
                    Evaluate.reference1 (Map [ "tokens", [| 0.0; 1.0; 1.0 |]; "table", Array.zeroCreate 7 ]) e |> ignore)
            }
            test "a missing derivative names the op" {
                let x = input "x" [| 1; 1; 3; 3 |] Float
                let w = input "w" [| 1; 1; 2; 2 |] Float
                let g = Autodiff.vjp [ conv2d (1, 1) (0, 0) x w, fill [| 1; 1; 2; 2 |] 1.0 ] [ x ] |> List.head
                throwsWith<MissingDerivativeException> [ "Conv2dGradInput" ] (fun () -> Autodiff.vjp [ g, fill g.Shape 1.0 ] [ w ] |> ignore)
            }
        ]
        testList "autodiff agrees with central finite differences (float64)" [
            for op in RandomGraphs.opNames do
                yield testPropertyWithConfig (config 8) op (fun (seed: int) -> gradientMatchesFiniteDifferences (sampleOf op seed) seed)
            yield testPropertyWithConfig (config 30) "random graphs of depth 5" (fun (seed: int) ->
                gradientMatchesFiniteDifferences (RandomGraphs.build (seed &&& 0x7fffffff) 5 None) seed)
        ]
        testList "autodiff's adjoints" [
            test "the two zero-padded halves a rotary rotation sends back are one concat, with the same gradient" {
                // y = x·c + rotate(x)·s, rotate(x) = concat(−x₂, x₁) over the last axis: the rotary embedding's shape
                let x = input "x" [| 3; 2; 8 |] Float
                let c, s = input "c" [| 2; 8 |] Float, input "s" [| 2; 8 |] Float
                let rotate (v: Node) = concat -1 [ neg (slice -1 4 8 v); slice -1 0 4 v ]
                let y = add (mul x c) (mul (rotate x) s)
                let seed = input "seed" y.Shape Float
                let g = Autodiff.vjp [ y, seed ] [ x ] |> List.head
                let rng = Random 7
                let values = Map [ for n in [ x; c; s; seed ] -> (match n.Op with Input name -> name | _ -> ""), Array.init (Shape.numel n.Shape) (fun _ -> rng.NextDouble() - 0.5) ]
                // the adjoint by hand: g = seed·c + rotateᵀ(seed·s), rotateᵀ(h) = concat(h₂, −h₁)
                let h = mul seed s
                let expected = add (mul seed c) (concat -1 [ slice -1 4 8 h; neg (slice -1 0 4 h) ])
                Expect.equal (Evaluate.reference1 values g) (Evaluate.reference1 values expected) "the same gradient, bit for bit"
                let nodes = Traverse.topo [ g ]
                let concats = nodes |> Array.filter (fun n -> match n.Op with Concat _ -> true | _ -> false)
                Expect.equal concats.Length 1 "one concat"
                Expect.isFalse (concats.[0].Children |> List.exists (fun n -> match n.Op with Fill _ -> true | _ -> false)) "of the two halves, no zeros"
            }
            test "the pullback of a masked softmax does not mask again where every row keeps a value; with a row masked throughout it does" {
                // scores [2 heads, 4, 4] under a causal mask: the softmax is exactly 0 where the mask is 0, so its
                // gradient P ⊙ (g − Σ g·P) needs no where(mask, ·, 0) before reaching the scores
                let scores = input "scores" [| 2; 4; 4 |] Float
                let seed = input "seed" scores.Shape Float
                let gradientOf (keep: float[]) =
                    let mask = make (Constant(ConstData.Of keep)) [| 4; 4 |] Float None
                    let y = softmax -1 (where mask (mul scores (scalar 0.5)) (scalar Double.NegativeInfinity))
                    let g = Autodiff.vjp [ y, seed ] [ scores ] |> List.head
                    let readsMask = Traverse.topo [ g ] |> Array.exists (fun n -> match n.Op with Where(c, _, { Op = Fill 0.0 }) -> obj.ReferenceEquals(c, mask) | _ -> false)
                    // the same gradient with the second mask written out
                    let p = y
                    let expected = mul (where mask (mul p (sub seed (reduceSum [ 2 ] true (mul seed p)))) (scalar 0.0)) (scalar 0.5)
                    g, expected, readsMask
                let rng = Random 11
                let values = Map [ "scores", Array.init 32 (fun _ -> rng.NextDouble() * 4.0 - 2.0); "seed", Array.init 32 (fun _ -> rng.NextDouble() - 0.5) ]
                let causal = Array.init 16 (fun k -> if k % 4 <= k / 4 then 1.0 else 0.0)
                let g, expected, readsMask = gradientOf causal
                Expect.isFalse readsMask "the causal mask is read by the forward softmax only"
                Expect.equal (Evaluate.reference1 values g) (Evaluate.reference1 values expected) "the same gradient, bit for bit"
                // row 0 masked throughout: the softmax is 0/0 there, and the mask keeps that row's gradient at 0
                let g, expected, readsMask = gradientOf (Array.init 16 (fun k -> if k < 4 then 0.0 else causal.[k]))
                Expect.isTrue readsMask "a row without a kept value is masked again"
                Expect.equal (Evaluate.reference1 values g |> Array.map (fun v -> if Double.IsNaN v then 99.0 else v))
                             (Evaluate.reference1 values expected |> Array.map (fun v -> if Double.IsNaN v then 99.0 else v)) "the masked gradient"
            }
            test "the zero-padded adjoints of disjoint slices (blocks of query rows) are one concat of the pieces, with the same gradient" {
                let x = input "x" [| 10; 3 |] Float
                let w = input "w" [| 3; 2 |] Float
                // four blocks of rows, one not read (rows 7 and 8), each through a product of its own
                let blocks = [ 0, 3; 3, 5; 5, 7; 9, 10 ]
                let y = concat 0 [ for r0, r1 in blocks -> tanh (matmul (slice 0 r0 r1 x) w) ]
                let seed = input "seed" y.Shape Float
                let g = Autodiff.vjp [ y, seed ] [ x ] |> List.head
                let rng = Random 4
                let values = Map [ for n in [ x; w; seed ] -> (match n.Op with Input name -> name | _ -> ""), Array.init (Shape.numel n.Shape) (fun _ -> rng.NextDouble() - 0.5) ]
                let nodes = Traverse.topo [ g ]
                Expect.isFalse (nodes |> Array.exists (fun n -> match n.Op with Binary(Add, _, _) -> n.Shape = x.Shape | _ -> false)) "no sum of padded adjoints"
                match g.Op with
                | Concat(0, parts) ->
                    Expect.equal (parts |> List.map (fun p -> match p.Op with Fill _ -> -p.Shape.[0] | _ -> p.Shape.[0])) [ 3; 2; 2; -2; 1 ] "the four pieces, zeros where no block reads"
                | _ -> failtestf "one concat, not %s" (Node.Describe g)
                // the gradient row by row: the block's product's adjoint, 0 where no block reads
                let expected =
                    let perRow = Evaluate.reference1 values (matmul (mul seed (sub (scalar 1.0) (square y))) (transpose -1 -2 w))
                    let rowOf = [| 0; 1; 2; 3; 4; 5; 6; -1; -1; 7 |]
                    Array.init 30 (fun k -> match rowOf.[k / 3] with -1 -> 0.0 | r -> perRow.[r * 3 + k % 3])
                let actual = Evaluate.reference1 values g
                Expect.isTrue (Array.forall2 (fun (a: float) b -> Math.Abs(a - b) <= 1e-12) actual expected) "the same gradient"
            }
            test "zero-padded adjoints that overlap stay a sum" {
                let x = input "x" [| 6 |] Float
                let y = add (slice 0 0 4 x) (slice 0 2 6 x)
                let g = Autodiff.vjp [ y, fill [| 4 |] 1.0 ] [ x ] |> List.head
                Expect.equal (Evaluate.reference1 (Map [ "x", Array.zeroCreate 6 ]) g) [| 1.0; 1.0; 2.0; 2.0; 1.0; 1.0 |] "overlapping slices add up"
            }
        ]
        testList "the ops LRP needs" [
            test "stop-gradient blocks and gradient-scale multiplies the gradient, both identity forward" {
                let x = input "x" [| 3 |] Float
                let y = add (mul (stopGradient (tanh x)) x) (gradientScale 0.25 (square x))
                let values = Map [ "x", [| 0.5; -1.0; 2.0 |] ]
                let v = Evaluate.reference1 values y
                let g = (Evaluate.reference values (Autodiff.vjp [ y, fill [| 3 |] 1.0 ] [ x ])).[0]
                for i in 0 .. 2 do
                    let xi = values.["x"].[i]
                    Expect.floatClose Accuracy.veryHigh v.[i] (Math.Tanh xi * xi + xi * xi) "forward is unchanged"
                    Expect.floatClose Accuracy.veryHigh g.[i] (Math.Tanh xi + 0.25 * 2.0 * xi) "backward: tanh(x) treated as constant, square's gradient × 0.25"
            }
        ]
        testList "rewrites" [
            testPropertyWithConfig (config 60) "the simplifier never changes a graph's value" (fun (seed: int) ->
                let s = RandomGraphs.build (seed &&& 0x7fffffff) 4 None
                let decorated = decorate seed s.Output
                let simplified = Rewrite.simplify [ decorated ] |> List.head
                let a, b = Evaluate.reference1 s.Values decorated, Evaluate.reference1 s.Values simplified
                Array.forall2 (fun (x: float) y -> Math.Abs(x - y) <= 1e-12 * (1.0 + Math.Abs x)) a b)
            testPropertyWithConfig (config 60) "rewriting to a fixpoint is idempotent" (fun (seed: int) ->
                let decorated = decorate seed (RandomGraphs.build (seed &&& 0x7fffffff) 4 None).Output
                let once = Rewrite.simplify [ decorated ] |> List.head
                obj.ReferenceEquals(once, Rewrite.simplify [ once ] |> List.head))
            test "the simplifier removes what it should" {
                let x = input "x" [| 2; 3 |] Float
                let messy = gradientScale 1.0 (neg (neg (mul (reshape [| 2; 3 |] (reshape [| 6 |] x)) (fill [| 2; 3 |] 1.0))))
                Expect.isTrue (obj.ReferenceEquals(Rewrite.simplify [ messy ] |> List.head, x)) "all identities are gone"
                let folded = Rewrite.simplify [ add x (mul (constant [| 3 |] [| 1.0; 2.0; 3.0 |]) (scalar 2.0)) ] |> List.head
                match folded.Op with
                | Binary(Add, a, { Op = Constant c }) when obj.ReferenceEquals(a, x) -> Expect.equal c.Values [| 2.0; 4.0; 6.0 |] "folded"
                | _ -> failtestf "constant subtree not folded: %O" folded
            }
            test "a rule that loops is stopped with a typed error" {
                let flip = Rewrite.rule "flip" (fun n -> match n.Op with Unary(Tanh, x) -> Some(neg (neg (tanh (add x (scalar 0.0))))) | _ -> None)
                throwsWith<RewriteLoopException> [ "flip" ] (fun () -> Rewrite.applyWithGuard 1000 [ flip ] [ tanh (input "x" [| 2 |] Float) ] |> ignore)
            }
            test "masked attention in blocks of query rows gives the same values and gradients, and stays whole where it must" {
                // attention as the builder writes it: grouped-query sharing (4 heads, 2 key/value heads), scale, a
                // soft cap, a constant mask and the weights named
                let h, kv, t, d = 4, 2, 12, 3
                let q, k, v = input "q" [| h; t; d |] Float, input "k" [| kv; t; d |] Float, input "v" [| kv; t; d |] Float
                let attention (keep: int -> int -> bool) =
                    let scores = mul (reshape [| h; t; t |] (matmul (reshape [| kv; h / kv * t; d |] q) (transpose -1 -2 k))) (scalar 0.5)
                    let capped = mul (tanh (mul scores (scalar 0.2))) (scalar 5.0)
                    let mask = constant [| t; t |] (Array.init (t * t) (fun c -> if keep (c / t) (c % t) then 1.0 else 0.0))
                    let p = named "attn_weights" (softmax -1 (where mask capped (scalar Double.NegativeInfinity)))
                    let o = reshape [| h; t; d |] (matmul (reshape [| kv; h / kv * t; t |] p) v)
                    p, reduceSum [ 0; 1; 2 ] false (mul o (input "w" o.Shape Float))
                let rng = Random 5
                let values = Map [ for n, shape in [ "q", [| h; t; d |]; "k", [| kv; t; d |]; "v", [| kv; t; d |]; "w", [| h; t; d |] ] ->
                                       n, Array.init (Shape.numel shape) (fun _ -> rng.NextDouble() * 2.0 - 1.0) ]
                let softmaxes (roots: Node list) = Traverse.topo roots |> Array.filter (fun n -> match n.Op with Softmax _ -> true | _ -> false) |> Array.length
                let check what keep rows expectedBlocks =
                    let _, y = attention keep
                    let blocked = (QueryBlocks.rewrite rows (HashSet<Node>()) [ y ]).[y]
                    Expect.equal (softmaxes [ blocked ]) expectedBlocks (sprintf "%s: %d blocks" what expectedBlocks)
                    let close (a: float[]) (b: float[]) = Array.forall2 (fun (x: float) y -> (Double.IsNaN x && Double.IsNaN y) || Math.Abs(x - y) <= 1e-12 * (1.0 + Math.Abs x)) a b
                    Expect.isTrue (close (Evaluate.reference1 values y) (Evaluate.reference1 values blocked)) (sprintf "%s: the same value" what)
                    let grads (root: Node) = Evaluate.reference values (Autodiff.vjp [ root, scalar 1.0 ] [ q; k; v ])
                    Array.iter2 (fun a b -> Expect.isTrue (close a b) (sprintf "%s: the same gradients" what)) (grads y) (grads blocked)
                check "causal, blocks of 4 rows" (fun i j -> j <= i) 4 3
                check "causal, blocks of 7 rows (the last shorter)" (fun i j -> j <= i) 7 2
                check "causal, blocks of 5 rows (the last 2 rows join the block before)" (fun i j -> j <= i) 5 2
                check "a sliding window of 3 keys" (fun i j -> j <= i && i - j < 3) 4 3
                // no rewrite: attention over no more rows than a block, a mask that keeps every key, a row masked
                // throughout, or the weights asked for by name
                // keys given as [T, kvHeads, d], their layout permutation and the transpose one Permute (as after the
                // simplifier): the blocks permute the keys back before slicing them
                let kt = input "kt" [| t; kv; d |] Float
                let scores = reshape [| h; t; t |] (matmul (reshape [| kv; h / kv * t; d |] q) (permute [ 1; 2; 0 ] kt))
                let mask = constant [| t; t |] (Array.init (t * t) (fun c -> if c % t <= c / t then 1.0 else 0.0))
                let p = softmax -1 (where mask scores (scalar Double.NegativeInfinity))
                let y = reduceSum [ 0; 1; 2 ] false (mul (reshape [| h; t; d |] (matmul (reshape [| kv; h / kv * t; t |] p) v)) (input "w" [| h; t; d |] Float))
                let blocked = (QueryBlocks.rewrite 4 (HashSet<Node>()) [ y ]).[y]
                Expect.equal (softmaxes [ blocked ]) 3 "one permutation of the keys: 3 blocks"
                let values = values.Add("kt", Array.init (t * kv * d) (fun _ -> rng.NextDouble() - 0.5))
                let grads (root: Node) = Evaluate.reference values (Autodiff.vjp [ root, scalar 1.0 ] [ q; kt; v ])
                Array.iter2 (fun (a: float[]) (b: float[]) -> Expect.isTrue (Array.forall2 (fun (x: float) y -> Math.Abs(x - y) <= 1e-12 * (1.0 + Math.Abs x)) a b) "the same gradients")
                    (grads y) (grads blocked)
                check "twelve rows in a block of 12" (fun i j -> j <= i) 12 1
                check "every key kept" (fun _ _ -> true) 4 1
                check "row 0 masked throughout" (fun i j -> i > 0 && j <= i) 4 1
                let p, y = attention (fun i j -> j <= i)
                let map = QueryBlocks.rewrite 4 (HashSet<Node>([ p ], HashIdentity.Reference)) [ y ]
                Expect.isTrue (obj.ReferenceEquals(map.[y], y)) "attention with its weights asked for stays whole"
            }
            testPropertyWithConfig (config 80) "a slice of a random graph pushed towards its inputs keeps the value, every leaf's gradient and an asked node's value" (fun (seed: int) ->
                let s = RandomGraphs.build (seed &&& 0x7fffffff) 5 None
                let rng = Random seed
                let x = s.Output
                let a = rng.Next x.Shape.Length
                let start = rng.Next x.Shape.[a]
                let y = slice a start (start + 1 + rng.Next(x.Shape.[a] - start)) x
                let loss (root: Node) = reduceSum [ 0 .. root.Shape.Length - 1 ] false (mul root (constant root.Shape (Array.init (Shape.numel root.Shape) (fun i -> 1.0 + 0.25 * float (i % 5)))))
                let l = loss y
                // one inner node asked for by name: it keeps its whole value
                let inner = Traverse.topo [ l ]
                let asked = inner.[rng.Next inner.Length]
                let map = SlicePushdown.rewrite (HashSet<Node>([ asked ], HashIdentity.Reference)) [ l ]
                let pruned = map.[l]
                let leaves = inner |> Array.filter (fun n -> match n.Op with Input _ | Parameter _ -> n.DType = Float | _ -> false) |> List.ofArray
                let close (p: float[]) (q: float[]) =
                    Array.forall2 (fun (u: float) v -> (Double.IsNaN u && Double.IsNaN v) || u = v || Math.Abs(u - v) <= 1e-12 * (1.0 + Math.Abs u)) p q
                let grads (root: Node) = Evaluate.reference s.Values (Autodiff.vjp [ root, scalar 1.0 ] leaves)
                close (Evaluate.reference1 s.Values l) (Evaluate.reference1 s.Values pruned)
                && Array.forall2 close (grads l) (grads pruned)
                && map.ContainsKey asked && map.[asked].Shape = asked.Shape
                && close (Evaluate.reference1 s.Values asked) (Evaluate.reference1 s.Values map.[asked]))
            test "a slice pushed towards the inputs computes the last layer at the rows read: the same values and gradients" {
                // a decoder layer as the builder writes it (embedding gather, RMS norm, projections, heads by reshape and
                // permute, a rotary-style concat of halves, grouped-query attention under a causal mask, residuals, a
                // gated MLP, a broadcast bias), read at its last row
                let t, dm, h, kv, d, f = 6, 4, 4, 2, 2, 5
                let rng = Random 11
                let param (name: string) (shape: Shape) = input name shape Float
                let ids, x, table = input "ids" [| t |] Int, param "x" [| t; dm |], param "table" [| 7; dm |]
                let w (name: string) rows cols = param name [| rows; cols |]
                let stream = add (gather table ids) x
                let norm (v: Node) = mul (mul v (rsqrt (addScalar 1e-5 (reduceMean [ 1 ] true (square v))))) (param "g" [| dm |])
                let heads n (v: Node) = permute [ 1; 0; 2 ] (reshape [| t; n; d |] v)
                let rotated (v: Node) = add (mul v (constant [| t; d |] (Array.init (t * d) float))) (mul (concat -1 [ slice 2 1 2 v; slice 2 0 1 v ]) (constant [| t; d |] (Array.init (t * d) (fun i -> 0.1 * float i))))
                let n1 = norm stream
                let q = rotated (heads h (matmul n1 (w "wq" dm (h * d))))
                let k = rotated (heads kv (matmul n1 (w "wk" dm (kv * d))))
                let v = heads kv (matmul n1 (w "wv" dm (kv * d)))
                let scores = mul (reshape [| h; t; t |] (matmul (reshape [| kv; h / kv * t; d |] q) (transpose -1 -2 k))) (scalar 0.7)
                let mask = constant [| t; t |] (Array.init (t * t) (fun c -> if c % t <= c / t then 1.0 else 0.0))
                let p = named "attn_weights" (softmax -1 (where mask scores (scalar Double.NegativeInfinity)))
                let o = reshape [| t; h * d |] (permute [ 1; 0; 2 ] (reshape [| h; t; d |] (matmul (reshape [| kv; h / kv * t; t |] p) v)))
                let r = add stream (add (matmul o (w "wo" (h * d) dm)) (broadcastTo [| t; dm |] (param "bias" [| 1; dm |])))
                let n2 = norm r
                let act = named "act" (silu (matmul n2 (w "wg" dm f)))
                let out = add r (matmul (mul act (matmul n2 (w "wu" dm f))) (w "wd" f dm))
                let logits = reshape [| 3 |] (matmul (reshape [| 1; dm |] (reshape [| dm |] (slice 0 (t - 1) t (norm out)))) (w "head" dm 3))
                let y = reduceSum [ 0 ] false (mul logits (constant [| 3 |] [| 1.0; -2.0; 0.5 |]))
                let values =
                    Map [ yield "ids", Array.init t (fun i -> float ((3 * i + 1) % 7))
                          for n in Traverse.topo [ y ] do
                              match n.Op with
                              | Input name when name <> "ids" -> yield name, Array.init (Shape.numel n.Shape) (fun _ -> rng.NextDouble() - 0.5)
                              | _ -> () ]
                let close (a: float[]) (b: float[]) = a.Length = b.Length && Array.forall2 (fun (x: float) y -> Math.Abs(x - y) <= 1e-12 * (1.0 + Math.Abs x)) a b
                let check what (whole: Node list) =
                    let map = SlicePushdown.rewrite (HashSet<Node>(whole, HashIdentity.Reference)) [ y ]
                    let pruned = map.[y]
                    Expect.isTrue (close (Evaluate.reference1 values y) (Evaluate.reference1 values pruned)) (sprintf "%s: the same value" what)
                    let grads (root: Node) = Evaluate.reference values (Autodiff.vjp [ root, scalar 1.0 ] [ x; table ])
                    Array.iter2 (fun a b -> Expect.isTrue (close a b) (sprintf "%s: the same gradients" what)) (grads y) (grads pruned)
                    map, Traverse.topo [ pruned ]
                let map, nodes = check "nothing asked for" []
                let shapeOf name = nodes |> Array.filter (fun n -> n.Name = Some name) |> Array.map (fun n -> List.ofArray n.Shape) |> List.ofArray
                Expect.equal (shapeOf "act") [ [ 1; f ] ] "the MLP at the row read"
                Expect.equal (shapeOf "attn_weights") [ [ h; 1; t ] ] "one query row of attention, over every key"
                Expect.isFalse (map.ContainsKey act) "a value computed in part has no whole image"
                let products = nodes |> Array.filter (fun n -> match n.Op with MatMul _ -> true | _ -> false) |> Array.map (fun n -> List.ofArray n.Shape)
                Expect.containsAll products [ [ t; kv * d ]; [ 1; h * d ] ] "keys and values whole, queries at the row read"
                let map, nodes = check "the MLP's activation asked for" [ act ]
                Expect.equal (map.[act].Shape) [| t; f |] "a node asked for keeps its whole value"
                Expect.isTrue (nodes |> Array.exists (fun n -> n.Name = Some "attn_weights" && n.Shape = [| h; t; t |])) "and so does what it reads"
                // two readers of different rows: the value is computed whole and sliced twice
                let tx = tanh x
                let both = reduceSum [ 0; 1 ] false (mul (concat 0 [ slice 0 0 2 tx; slice 0 4 6 tx ]) (constant [| 4; dm |] (Array.init (4 * dm) float)))
                let pruned = (SlicePushdown.rewrite (HashSet<Node>()) [ both ]).[both]
                Expect.isTrue (close (Evaluate.reference1 values both) (Evaluate.reference1 values pruned)) "two ranges read: the same value"
                Expect.isTrue (Traverse.topo [ pruned ] |> Array.contains tx) "two ranges read: computed whole"
                // a slice of a slice along the same axis reads the rows of both
                let nested = reduceSum [ 0; 1 ] false (slice 0 (t - 3) (t - 1) (tanh (slice 0 1 t x)))
                let pruned = (SlicePushdown.rewrite (HashSet<Node>()) [ nested ]).[nested]
                Expect.isTrue (close (Evaluate.reference1 values nested) (Evaluate.reference1 values pruned)) "nested slices: the same value"
                Expect.isTrue (Traverse.topo [ pruned ] |> Array.exists (fun n -> match n.Op with Unary(Tanh, _) -> n.Shape = [| 2; dm |] | _ -> false)) "nested slices: tanh at the 2 rows read"
            }
            test "names survive rewriting" {
                let x = input "x" [| 2 |] Float
                let h = named "layer.act" (mul (tanh x) (fill [| 2 |] 1.0))
                let r = Rewrite.simplify [ h ] |> List.head
                Expect.equal r.Name (Some "layer.act") "the replacement carries the name"
            }
        ]
        testList "plans" [
            test "the transpose of a product nothing else reads is the product of the transposed operands, read in place: no copy, the same values" {
                let a, b = input "a" [| 2; 3; 4 |] Float, input "b" [| 4; 5 |] Float
                let alone = transpose -1 -2 (matmul a b)
                let shared = add (transpose -1 -2 (matmul (slice 1 0 2 a) b)) (scalar 1.0)
                let alsoRead = [ transpose -1 -2 (matmul (transpose -1 -2 b) b); matmul (transpose -1 -2 b) b ]
                let rng = Random 2
                let values = Map [ "a", Array.init 24 (fun _ -> rng.NextDouble() - 0.5); "b", Array.init 20 (fun _ -> rng.NextDouble() - 0.5) ]
                for what, outputs, copies in [ "read alone", [ alone ], 0; "read by a sum", [ shared ], 0; "a product also read itself", alsoRead, 1 ] do
                    let plan = Plan.compile outputs
                    let permutes = plan.Steps |> Array.filter (fun n -> match n.Op with Permute _ -> not (plan.LazyTransposes.Contains n) | _ -> false)
                    Expect.equal permutes.Length copies (sprintf "%s: transposes copied" what)
                    let host, _ = HostEvaluation.run (new ReferenceBackend()) values plan
                    let close (p: float[]) (q: float[]) = Array.forall2 (fun (u: float) v -> Math.Abs(u - v) <= 1e-12 * (1.0 + Math.Abs u)) p q
                    for o, h in Seq.zip outputs host do
                        Expect.isTrue (close (Evaluate.reference1 values o) h) (sprintf "%s: the same values" what)
            }
            test "buffers are freed at last use and reused" {
                let x = input "x" [| 1000 |] Float
                let chain = List.fold (fun acc i -> if i % 2 = 0 then tanh acc else sin acc) x [ 1 .. 50 ]
                let plan = Plan.compile [ chain ]
                use exe = new Executable(plan, new ReferenceBackend())
                let b = (exe.Backend).Allocate 1000
                let outs = exe.Run(dict [ "x", b ] |> Collections.Generic.Dictionary)
                exe.Recycle outs
                Expect.isLessThanOrEqual exe.PeakIntermediateBytes (3L * 8000L) "a chain needs at most three live buffers"
            }
        ]
    ]
