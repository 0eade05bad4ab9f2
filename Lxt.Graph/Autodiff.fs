// Reverse-mode autodiff as a graph transformation: one pullback entry per op, turning (graph, seed) into gradient nodes.
module Lxt.Graph.Autodiff

open System
open System.Collections.Generic
open Lxt.Graph.Ops

/// Sums a gradient of a broadcast shape back down to `shape` (the adjoint of broadcasting).
let sumTo (shape: Shape) (g: Node) : Node =
    if g.Shape = shape then g
    else
        let lead = g.Shape.Length - shape.Length
        let g = if lead > 0 then reduceSum [ 0 .. lead - 1 ] false g else g
        let ones = [ for i in 0 .. shape.Length - 1 do if shape.[i] = 1 && g.Shape.[i] <> 1 then yield i ]
        let g = if ones.IsEmpty then g else reduceSum ones true g
        reshape shape g

let private oneMinus x = sub (scalar 1.0) x
let private zerosLike (n: Node) = fill n.Shape 0.0

/// Whether `p` is softmax(y) along the last axis of y = where(c, a, −∞) with a constant condition c that keeps a
/// value in every row (every run of c along its last axis, broadcast or not, has a non-zero). Then p is exactly 0
/// wherever c is 0 (exp(−∞ − m) with the row's maximum m finite), so a gradient p ⊙ X arriving at y is already 0
/// there and needs no second mask: the pullback of a causal attention mask skips where(c, g, 0), whose kernel would
/// read the mask again at every score.
let private isMaskedSoftmaxOf (y: Node) (p: Node) =
    match p.Op, y.Op with
    | Softmax(axis, x), Where({ Op = Constant keep } as c, _, { Op = Fill v }) when x === y && axis = y.Shape.Length - 1 && Double.IsNegativeInfinity v ->
        let run = if c.Shape.Length = 0 then 1 else c.Shape.[c.Shape.Length - 1]
        run > 0 && Seq.forall (fun r -> (keep.NonZeroRange(run, r)).IsSome) (seq { 0 .. keep.Values.Length / run - 1 })
    | _ -> false

/// The adjoint of an op that only moves values (broadcast, reshape, permute, slice, concat, gather, recompute): `g`
/// moved back onto the operands. Gradients and explicit LRP relevance both flow through such ops this way.
let layoutAdjoint (y: Node) (g: Node) : (Node * (unit -> Node)) list =
    match y.Op with
    | Broadcast x -> [ x, (fun () -> sumTo x.Shape g) ]
    | Reshape x -> [ x, (fun () -> reshape x.Shape g) ]
    | Recompute x -> [ x, (fun () -> g) ]
    | Permute(perm, x) ->
        let inv = Array.zeroCreate perm.Length
        perm |> Array.iteri (fun i p -> inv.[p] <- i)
        [ x, (fun () -> permute (List.ofArray inv) g) ]
    | Slice(axis, start, stop, x) ->
        let zeros len = fill (x.Shape |> Array.mapi (fun i n -> if i = axis then len else n)) 0.0
        [ x, (fun () ->
            concat axis [ if start > 0 then zeros start
                          g
                          if stop < x.Shape.[axis] then zeros (x.Shape.[axis] - stop) ]) ]
    | Concat(axis, xs) ->
        let starts = xs |> List.scan (fun acc (x: Node) -> acc + x.Shape.[axis]) 0
        List.zip xs (List.take xs.Length starts)
        |> List.map (fun (x, s) -> x, (fun () -> slice axis s (s + x.Shape.[axis]) g))
    | Gather(table, indices) -> [ table, (fun () -> scatterAdd table.Shape indices g) ]
    | _ -> invalidArg "y" (sprintf "%s is not a layout op" (Node.Describe y))

/// The pullback of one op: for each operand, a thunk giving the contribution of adjoint `g` to its gradient.
/// Thunks let the builder skip operands that need no gradient; `needs` tells which do.
let private pullback (needs: Node -> bool) (y: Node) (g: Node) : (Node * (unit -> Node)) list =
    let grad (x: Node) f = x, (fun () -> sumTo x.Shape (f ()))
    match y.Op with
    | Input _ | Parameter _ | Constant _ | Fill _ | StopGradient _ | TopKMask _ -> []
    | GradientScale(c, x) -> [ grad x (fun () -> scale c g) ]
    | Recompute _ -> layoutAdjoint y g
    | Unary(o, x) ->
        let d () =
            match o with
            | Neg -> neg g
            | Exp -> mul g y
            | Log -> div g x
            | Sqrt -> div g (scale 2.0 y)
            | Rsqrt -> mul g (scale -0.5 (mul y (square y)))
            | Tanh -> mul g (oneMinus (square y))
            | Sigmoid -> mul g (mul y (oneMinus y))
            | Erf -> mul g (scale (2.0 / Math.Sqrt Math.PI) (exp (neg (square x))))
            | GeluErf ->
                let cdf = scale 0.5 (addScalar 1.0 (erf (scale (1.0 / Math.Sqrt 2.0) x)))
                let pdf = scale (1.0 / Math.Sqrt(2.0 * Math.PI)) (exp (scale -0.5 (square x)))
                mul g (add cdf (mul x pdf))
            | GeluTanh ->
                let c = Math.Sqrt(2.0 / Math.PI)
                let t = tanh (scale c (add x (scale 0.044715 (mul x (square x)))))
                let du = scale c (addScalar 1.0 (scale (3.0 * 0.044715) (square x)))
                mul g (add (scale 0.5 (addScalar 1.0 t)) (mul (scale 0.5 x) (mul (oneMinus (square t)) du)))
            | Silu -> let s = sigmoid x in mul g (mul s (addScalar 1.0 (mul x (oneMinus s))))
            | Relu -> mul g (greater x (scalar 0.0))
            | Abs -> mul g (sign x)
            | Sign -> zerosLike x
            | Reciprocal -> neg (mul g (square y))
            | Sin -> mul g (cos x)
            | Cos -> neg (mul g (sin x))
            | Square -> mul g (scale 2.0 x)
        [ x, d ]
    | Binary(o, a, b) ->
        match o with
        | Add -> [ grad a (fun () -> g); grad b (fun () -> g) ]
        | Sub -> [ grad a (fun () -> g); grad b (fun () -> neg g) ]
        | Mul -> [ grad a (fun () -> mul g b); grad b (fun () -> mul g a) ]
        | Div -> [ grad a (fun () -> div g b); grad b (fun () -> neg (mul g (div y b))) ]
        | Pow -> [ grad a (fun () -> mul g (mul b (pow a (sub b (scalar 1.0))))); grad b (fun () -> mul g (mul y (log a))) ]
        | Maximum -> let bWins () = greater b a in [ grad a (fun () -> mul g (oneMinus (bWins ()))); grad b (fun () -> mul g (bWins ())) ]
        | Minimum -> let aWins () = greater a b in [ grad a (fun () -> mul g (oneMinus (aWins ()))); grad b (fun () -> mul g (aWins ())) ]
        | Greater | Equal -> []
    | Where(c, a, b) ->
        let maskedAlready = match g.Op with Binary(Mul, p, q) -> isMaskedSoftmaxOf y p || isMaskedSoftmaxOf y q | _ -> false
        [ grad a (fun () -> if maskedAlready then g else where c g (scalar 0.0)); grad b (fun () -> where c (scalar 0.0) g) ]
    | MatMul(a, b) ->
        [ grad a (fun () -> matmul g (transpose -1 -2 b)); grad b (fun () -> matmul (transpose -1 -2 a) g) ]
    | Softmax(axis, x) -> [ x, (fun () -> mul y (sub g (reduceSum [ axis ] true (mul g y)))) ]
    | Reduce(o, axes, keep, x) ->
        let kept () = reshape (x.Shape |> Array.mapi (fun i n -> if Array.contains i axes then 1 else n)) g
        let count = axes |> Array.fold (fun acc a -> acc * x.Shape.[a]) 1
        match o with
        | Sum -> [ x, (fun () -> broadcastTo x.Shape (kept ())) ]
        | Mean -> [ x, (fun () -> broadcastTo x.Shape (scale (1.0 / float count) (kept ()))) ]
        | Max ->
            [ x, (fun () ->
                let yk = reshape (x.Shape |> Array.mapi (fun i n -> if Array.contains i axes then 1 else n)) y
                let hits = equal x yk
                mul (div hits (reduceSum (List.ofArray axes) true hits)) (kept ())) ]
    | Broadcast _ | Reshape _ | Permute _ | Slice _ | Concat _ | Gather _ -> layoutAdjoint y g
    | ScatterAdd(indices, updates) -> [ updates, (fun () -> gather g indices) ]
    | Conv2d(s, p, x, w) ->
        [ x, (fun () -> make (Conv2dGradInput(s, p, g, w)) x.Shape Float None)
          w, (fun () -> make (Conv2dGradWeight(s, p, x, g)) w.Shape Float None) ]
    | Attention(Output, mask, scale, ([ q; k; v ] as xs)) ->
        // the backward pass of attention without its probabilities: one op recomputes them from Q, K and the rows'
        // log-sum-exp L (Y's last column) for the gradients of Q, K and V together. The softmax's Σ dP ⊙ P is
        // Σ dO ⊙ O (dP = dO·Vᵀ, so Σⱼ Pᵢⱼ dPᵢⱼ = dOᵢ · Oᵢ), and L passes its gradient on as P does (∂Lᵢ/∂Sᵢⱼ = Pᵢⱼ):
        // Δ = Σ G ⊙ (Y ⊙ [1 … 1 0] − [0 … 0 1]) along the last axis
        let width = y.Shape.[2]
        let column (f: int -> bool) = constant [| width |] (Array.init width (fun c -> if f c then 1.0 else 0.0))
        let delta () = reduceSum [ 2 ] false (mul g (sub (mul y (column (fun c -> c < width - 1))) (column (fun c -> c = width - 1))))
        if not (needs q || needs k) then [ v, (fun () -> attentionPart ValueGradient mask scale (xs @ [ g; y ])) ]
        else
            let grads = lazy (attentionPart Gradient mask scale (xs @ [ g; y; delta () ]))
            let part (at: int) (x: Node) = reshape x.Shape (slice 0 at (at + Shape.numel x.Shape) grads.Value)
            let nq, nk = Shape.numel q.Shape, Shape.numel k.Shape
            [ q, (fun () -> part 0 q); k, (fun () -> part nq k); v, (fun () -> part (nq + nk) v) ]
    | Conv2dGradInput _ | Conv2dGradWeight _ | Attention _ ->
        let name = match y.Op with Attention(part, _, _, _) -> "Attention " + Node.CaseName part | op -> op.GetType().Name
        raise (MissingDerivativeException(name, sprintf "no derivative rule for op %s (at %s)" name (Node.Describe y)))

let private isZeroFill (n: Node) = match n.Op with Fill v -> v = 0.0 | _ -> false

/// a + b when both are zero-padded along one axis (the adjoints of slices: Concat of pieces, some of them zero fills)
/// and no two non-zero pieces overlap, as one Concat of the non-zero pieces with zero fills between them. The rotation
/// of rotary embeddings, concat(−x₂, x₁), sends back two such halves, and attention in blocks of query rows one such
/// piece per block: merged they cost one copy instead of one each and an add. Each element is the one non-zero
/// piece's value, as the add gives it.
let private mergePadded (a: Node) (b: Node) : Node option =
    // the non-zero pieces of a zero-padded concat along `axis`, with their ranges
    let pieces (axis: int) (xs: Node list) =
        let starts = xs |> List.scan (fun at (x: Node) -> at + x.Shape.[axis]) 0
        List.zip xs (List.take xs.Length starts) |> List.filter (fst >> isZeroFill >> not) |> List.map (fun (x, at) -> at, at + x.Shape.[axis], x)
    match a.Op, b.Op with
    | Concat(ax, xs), Concat(bx, ys) when ax = bx && a.Shape = b.Shape && (List.exists isZeroFill xs || List.exists isZeroFill ys) ->
        let all = pieces ax xs @ pieces ax ys |> List.sortBy (fun (s, _, _) -> s)
        let disjoint = all |> List.pairwise |> List.forall (fun ((_, e, _), (s, _, _)) -> e <= s)
        if not disjoint then None
        else
            let zeros len = fill (a.Shape |> Array.mapi (fun i n -> if i = ax then len else n)) 0.0
            let parts, last =
                all |> List.fold (fun (acc, at) (s, e, x) -> (if s > at then x :: zeros (s - at) :: acc else x :: acc), e) ([], 0)
            let parts = if last < a.Shape.[ax] then zeros (a.Shape.[ax] - last) :: parts else parts
            Some(concat ax (List.rev parts))
    | _ -> None

/// The sum of an accumulated contribution (an adjoint, or explicit relevance) and a new one, merging zero-padded
/// contributions (see mergePadded) with the last one added. Both backward sweeps accumulate through it.
let sumContributions (acc: Node) (g: Node) : Node =
    match mergePadded acc g with
    | Some m -> m
    | None ->
        match acc.Op with
        | Binary(Add, u, v) -> (match mergePadded v g with Some m -> add u m | None -> add acc g)
        | _ -> add acc g

/// Gradients of Σᵢ ⟨outputᵢ, seedᵢ⟩ with respect to each node of `wrt` (a zero tensor where it does not depend on them).
/// Gradients stop at StopGradient and are scaled at GradientScale: that is all an LRP rule needs.
let vjp (outputs: (Node * Node) list) (wrt: Node list) : Node list =
    for (o, s) in outputs do
        if o.Shape <> s.Shape then
            raise (GraphShapeException(sprintf "vjp: seed %s does not match output %s" (Node.Describe s) (Node.Describe o)))
    let order = Traverse.topo (List.map fst outputs)
    let targets = HashSet<Node>(wrt, HashIdentity.Reference)
    // nodes with a path to some wrt node that no StopGradient cuts
    let needs = HashSet<Node>(HashIdentity.Reference)
    for n in order do
        let cut = match n.Op with StopGradient _ -> true | _ -> false
        if targets.Contains n || (not cut && n.Children |> List.exists needs.Contains) then needs.Add n |> ignore
    let adjoint = Dictionary<Node, Node>(HashIdentity.Reference)
    let accumulate (n: Node) (g: Node) =
        match adjoint.TryGetValue n with
        | true, acc -> adjoint.[n] <- sumContributions acc g
        | _ -> adjoint.[n] <- g
    for (o, s) in outputs do if needs.Contains o then accumulate o s
    for i in order.Length - 1 .. -1 .. 0 do
        let n = order.[i]
        match adjoint.TryGetValue n with
        | true, g when not (n.Children.IsEmpty) ->
            for (x, contribution) in pullback needs.Contains n g do
                if needs.Contains x && x.DType = Float then accumulate x (contribution ())
        | _ -> ()
    wrt |> List.map (fun w -> match adjoint.TryGetValue w with | true, g -> g | _ -> zerosLike w)
