// Node constructors: each infers its output shape and dtype and rejects operands that do not fit, naming them.
module Lxt.Graph.Ops

open System

let private fail fmt = Printf.kprintf (fun s -> raise (GraphShapeException s)) fmt
let private d (n: Node) = Node.Describe n

let private axisOf what (x: Node) axis =
    match Shape.tryAxis x.Shape.Length axis with
    | Some a -> a
    | None -> fail "%s: axis %d is out of range for %s of rank %d" what axis (d x) x.Shape.Length


/// The shape of an attention op's value, after checking its operands (see AttentionPart) and mask.
let private attentionShape (part: AttentionPart) (mask: AttentionMask) (scale: float) (xs: Node list) : Shape =
    let expected = match part with Output -> 3 | Gradient -> 6 | ValueGradient -> 5
    if xs.Length <> expected then fail "attention (%A): takes %d operands, got %d" part expected xs.Length
    let q, k, v = xs.[0], xs.[1], xs.[2]
    for x in [ q; k; v ] do
        if x.Shape.Length <> 3 then fail "attention: queries, keys and values must be [heads, tokens, dim], got %s" (d x)
    let { Heads = heads; T = t; D = dk; KvHeads = kvHeads; Keys = keys; Dv = dv } = AttentionDims.Of xs
    if k.Shape.[2] <> dk then fail "attention: queries %s and keys %s differ in their last axis" (d q) (d k)
    if v.Shape.[0] <> kvHeads || v.Shape.[1] <> keys then fail "attention: keys %s and values %s differ in heads or tokens" (d k) (d v)
    if kvHeads < 1 || heads % kvHeads <> 0 then fail "attention: %d query heads are not a multiple of the %d key/value heads of %s" heads kvHeads (d k)
    if not (Double.IsFinite scale) then fail "attention: scale %g is not finite" scale
    if mask.Offset < 0 || (match mask.Window with Some w -> w < 1 | None -> false) then
        fail "attention: mask offset %d and window %A are not a mask" mask.Offset mask.Window
    // every row keeps a key: its softmax is then a distribution (a row kept nowhere would be 0/0)
    for i in 0 .. t - 1 do
        let struct (first, stop) = mask.Kept(i, keys)
        if first >= stop then fail "attention: query row %d of %s keeps no key of %s under mask %A" i (d q) (d k) mask
    if xs.Length > 3 then
        for x in [ xs.[3]; xs.[4] ] do
            if x.Shape <> [| heads; t; dv + 1 |] then fail "attention gradient: %s does not match the output [%d, %d, %d]" (d x) heads t (dv + 1)
    if xs.Length = 6 && xs.[5].Shape <> [| heads; t |] then fail "attention gradient: row statistic %s is not [%d, %d]" (d xs.[5]) heads t
    match part with
    | Output -> [| heads; t; dv + 1 |]
    | Gradient -> [| heads * t * dk + kvHeads * keys * (dk + dv) |]
    | ValueGradient -> [| kvHeads; keys; dv |]

/// Builds (or finds) the node for `op`; `given` is the shape of ops whose shape is not implied by their operands.
let rec make (op: Op) (given: Shape) (dtype: DType) (name: string option) : Node =
    let shape, dt =
        match op with
        | Input _ | Parameter _ | Fill _ -> given, dtype
        | Constant c ->
            if Shape.numel given <> c.Values.Length then
                fail "constant: %d values do not fill shape %s" c.Values.Length (Shape.show given)
            given, dtype
        | Unary(_, x) -> x.Shape, Float
        | Binary(o, a, b) ->
            match Shape.tryBroadcast a.Shape b.Shape with
            | Some s -> s, Float
            | None -> fail "%A: shapes of %s and %s do not broadcast" o (d a) (d b)
        | Where(c, a, b) ->
            match Shape.tryBroadcast a.Shape b.Shape |> Option.bind (Shape.tryBroadcast c.Shape) with
            | Some s -> s, a.DType
            | None -> fail "where: shapes of condition %s, %s and %s do not broadcast" (d c) (d a) (d b)
        | MatMul(a, b) ->
            let ra, rb = a.Shape.Length, b.Shape.Length
            if ra < 2 || rb < 2 then fail "matmul: operands need rank >= 2, got %s and %s" (d a) (d b)
            let m, k1 = a.Shape.[ra - 2], a.Shape.[ra - 1]
            let k2, n = b.Shape.[rb - 2], b.Shape.[rb - 1]
            if k1 <> k2 then fail "matmul: inner dimensions differ (%d vs %d) between %s and %s" k1 k2 (d a) (d b)
            match Shape.tryBroadcast a.Shape.[.. ra - 3] b.Shape.[.. rb - 3] with
            | Some batch -> Array.append batch [| m; n |], Float
            | None -> fail "matmul: batch dimensions of %s and %s do not broadcast" (d a) (d b)
        | Softmax(axis, x) ->
            if axis < 0 || axis >= x.Shape.Length then fail "softmax: axis %d is out of range for %s" axis (d x)
            x.Shape, Float
        | Reduce(_, axes, keep, x) ->
            for a in axes do
                if a < 0 || a >= x.Shape.Length then fail "reduce: axis %d is out of range for %s" a (d x)
            if (Array.distinct axes).Length <> axes.Length then fail "reduce: repeated axis in %A for %s" axes (d x)
            let s =
                if keep then x.Shape |> Array.mapi (fun i n -> if Array.contains i axes then 1 else n)
                else x.Shape |> Array.indexed |> Array.filter (fun (i, _) -> not (Array.contains i axes)) |> Array.map snd
            s, (match op with Reduce(Max, _, _, _) -> x.DType | _ -> Float)
        | Broadcast x ->
            match Shape.tryBroadcast x.Shape given with
            | Some s when s = given -> given, x.DType
            | _ -> fail "broadcast: %s cannot be broadcast to %s" (d x) (Shape.show given)
        | Reshape x ->
            if Array.exists (fun n -> n < 0) given || Shape.numel given <> Shape.numel x.Shape then
                fail "reshape: %s cannot be reshaped to %s" (d x) (Shape.show given)
            given, x.DType
        | Permute(perm, x) ->
            if perm.Length <> x.Shape.Length || (Array.sort perm) <> Array.init perm.Length id then
                fail "permute: %A is not a permutation of the axes of %s" perm (d x)
            Array.map (fun p -> x.Shape.[p]) perm, x.DType
        | Slice(axis, start, stop, x) ->
            if axis < 0 || axis >= x.Shape.Length then fail "slice: axis %d is out of range for %s" axis (d x)
            if start < 0 || stop > x.Shape.[axis] || start > stop then
                fail "slice: range %d..%d is outside axis %d of %s" start stop axis (d x)
            x.Shape |> Array.mapi (fun i n -> if i = axis then stop - start else n), x.DType
        | Concat(axis, xs) ->
            match xs with
            | [] -> fail "concat: no operands"
            | first :: _ ->
                if axis < 0 || axis >= first.Shape.Length then fail "concat: axis %d is out of range for %s" axis (d first)
                for x in xs do
                    let same = x.Shape.Length = first.Shape.Length && Array.forall2 (=) (Array.removeAt axis x.Shape) (Array.removeAt axis first.Shape)
                    if not same then fail "concat: %s does not match %s outside axis %d" (d x) (d first) axis
                first.Shape |> Array.mapi (fun i n -> if i = axis then xs |> List.sumBy (fun x -> x.Shape.[axis]) else n), first.DType
        | Gather(table, idx) ->
            if table.Shape.Length < 1 then fail "gather: table %s needs rank >= 1" (d table)
            if idx.DType <> Int then fail "gather: indices %s must be integers" (d idx)
            Array.append idx.Shape table.Shape.[1..], table.DType
        | ScatterAdd(idx, upd) ->
            if idx.DType <> Int then fail "scatter-add: indices %s must be integers" (d idx)
            if given.Length < 1 || upd.Shape <> Array.append idx.Shape given.[1..] then
                fail "scatter-add: updates %s do not fit indices %s and output %s" (d upd) (d idx) (Shape.show given)
            given, Float
        | Conv2d((sh, sw), (ph, pw), x, w) ->
            if x.Shape.Length <> 4 || w.Shape.Length <> 4 then fail "conv2d: input %s and weight %s must be 4-D" (d x) (d w)
            if x.Shape.[1] <> w.Shape.[1] then fail "conv2d: channels of %s and weight %s differ" (d x) (d w)
            if sh < 1 || sw < 1 || ph < 0 || pw < 0 then fail "conv2d: stride must be >= 1 and padding >= 0"
            let oh = (x.Shape.[2] + 2 * ph - w.Shape.[2]) / sh + 1
            let ow = (x.Shape.[3] + 2 * pw - w.Shape.[3]) / sw + 1
            if oh < 1 || ow < 1 then fail "conv2d: kernel of %s is larger than padded input %s" (d w) (d x)
            [| x.Shape.[0]; w.Shape.[0]; oh; ow |], Float
        | Conv2dGradInput(_, _, g, w) ->
            if given.Length <> 4 || g.Shape.[1] <> w.Shape.[0] then fail "conv2d-grad-input: %s does not fit weight %s" (d g) (d w)
            given, Float
        | Conv2dGradWeight(_, _, x, g) ->
            if given.Length <> 4 || g.Shape.[1] <> given.[0] || x.Shape.[1] <> given.[1] then
                fail "conv2d-grad-weight: %s and %s do not fit weight shape %s" (d x) (d g) (Shape.show given)
            given, Float
        | StopGradient x | GradientScale(_, x) | Recompute x -> x.Shape, x.DType
        | TopKMask(k, x) ->
            if x.Shape.Length < 1 || k < 1 || k > x.Shape.[x.Shape.Length - 1] then
                fail "top-k: k = %d does not fit the last axis of %s" k (d x)
            x.Shape, Float
        | Attention(part, mask, scale, xs) -> attentionShape part mask scale xs, Float
    Intern.node op (Array.copy shape) dt name

/// The same node under a (new) name; names address nodes for latent relevance and errors.
let named (name: string) (n: Node) = make n.Op n.Shape n.DType (Some name)

/// `replacement` under the name of the node it replaces, if that has one (rewrites keep the names relevance is asked by).
let namedAs (replaced: Node) (replacement: Node) =
    match replaced.Name with Some name -> named name replacement | None -> replacement

/// Rebuilds `n` over new operands (same op, same name); shapes are re-inferred and checked.
let withChildren (n: Node) (kids: Node list) : Node =
    let op =
        match n.Op, kids with
        | (Input _ | Parameter _ | Constant _ | Fill _), [] -> n.Op
        | Unary(o, _), [ x ] -> Unary(o, x)
        | Binary(o, _, _), [ a; b ] -> Binary(o, a, b)
        | Where _, [ c; a; b ] -> Where(c, a, b)
        | MatMul _, [ a; b ] -> MatMul(a, b)
        | Softmax(ax, _), [ x ] -> Softmax(ax, x)
        | Reduce(o, ax, k, _), [ x ] -> Reduce(o, ax, k, x)
        | Broadcast _, [ x ] -> Broadcast x
        | Reshape _, [ x ] -> Reshape x
        | Permute(p, _), [ x ] -> Permute(p, x)
        | Slice(a, s, e, _), [ x ] -> Slice(a, s, e, x)
        | Concat(a, _), xs -> Concat(a, xs)
        | Gather _, [ t; i ] -> Gather(t, i)
        | ScatterAdd _, [ i; u ] -> ScatterAdd(i, u)
        | Conv2d(s, p, _, _), [ x; w ] -> Conv2d(s, p, x, w)
        | Conv2dGradInput(s, p, _, _), [ g; w ] -> Conv2dGradInput(s, p, g, w)
        | Conv2dGradWeight(s, p, _, _), [ x; g ] -> Conv2dGradWeight(s, p, x, g)
        | StopGradient _, [ x ] -> StopGradient x
        | GradientScale(f, _), [ x ] -> GradientScale(f, x)
        | TopKMask(k, _), [ x ] -> TopKMask(k, x)
        | Recompute _, [ x ] -> Recompute x
        | Attention(p, m, s, xs), ys when ys.Length = xs.Length -> Attention(p, m, s, ys)
        | _ -> fail "rebuild: %s takes %d operands, got %d" (d n) n.Children.Length kids.Length
    if List.forall2 (===) kids n.Children then n else make op n.Shape n.DType n.Name

let private un o x = make (Unary(o, x)) [||] Float None
let private bin o a b = make (Binary(o, a, b)) [||] Float None

let input (name: string) (shape: Shape) (dtype: DType) = make (Input name) shape dtype (Some name)
let parameter (name: string) (shape: Shape) = make (Parameter name) shape Float (Some name)
/// A constant of these values, copied: a graph never changes when the caller's array does.
let constant (shape: Shape) (values: float[]) = make (Constant(ConstData.Of(Array.copy values))) shape Float None
let fill (shape: Shape) (value: float) = make (Fill value) shape Float None
let scalar (value: float) = fill [||] value

let neg x = un Neg x
let exp x = un Exp x
let log x = un Log x
let sqrt x = un Sqrt x
let rsqrt x = un Rsqrt x
let tanh x = un Tanh x
let sigmoid x = un Sigmoid x
let erf x = un Erf x
let geluErf x = un GeluErf x
let geluTanh x = un GeluTanh x
let silu x = un Silu x
let relu x = un Relu x
let abs x = un Abs x
let sign x = un Sign x
let reciprocal x = un Reciprocal x
let sin x = un Sin x
let cos x = un Cos x
let square x = un Square x

let add a b = bin Add a b
let sub a b = bin Sub a b
let mul a b = bin Mul a b
let div a b = bin Div a b
let pow a b = bin Pow a b
let maximum a b = bin Maximum a b
let minimum a b = bin Minimum a b
let greater a b = bin Greater a b
let equal a b = bin Equal a b
let scale (c: float) x = mul x (scalar c)
let addScalar (c: float) x = add x (scalar c)

/// Elementwise choice: `whenTrue` where `cond` is non-zero, else `whenFalse` (all broadcast).
let where cond whenTrue whenFalse = make (Where(cond, whenTrue, whenFalse)) [||] Float None
/// Batched matrix product over the last two axes; leading axes broadcast.
let matmul a b = make (MatMul(a, b)) [||] Float None
let softmax axis (x: Node) = make (Softmax((match Shape.tryAxis x.Shape.Length axis with Some a -> a | None -> axis), x)) [||] Float None

let private reduce o (axes: int list) keep (x: Node) =
    let axes = axes |> List.map (axisOf (sprintf "reduce %A" o) x) |> List.sort |> Array.ofList
    make (Reduce(o, axes, keep, x)) [||] Float None
let reduceSum axes keep x = reduce Sum axes keep x
let reduceMean axes keep x = reduce Mean axes keep x
let reduceMax axes keep x = reduce Max axes keep x

let broadcastTo (shape: Shape) (x: Node) = if x.Shape = shape then x else make (Broadcast x) shape x.DType None
let reshape (shape: Shape) (x: Node) =
    // one dimension may be -1: inferred from the element count
    let shape =
        match Array.filter ((=) -1) shape |> Array.length with
        | 0 -> shape
        | 1 ->
            let known = shape |> Array.filter ((<>) -1) |> Array.fold (*) 1
            if known = 0 || Shape.numel x.Shape % known <> 0 then fail "reshape: %s cannot be reshaped to %s" (d x) (Shape.show shape)
            shape |> Array.map (fun n -> if n = -1 then Shape.numel x.Shape / known else n)
        | _ -> fail "reshape: more than one -1 in %s for %s" (Shape.show shape) (d x)
    if shape = x.Shape then x else make (Reshape x) shape x.DType None
let permute (perm: int list) (x: Node) = make (Permute(Array.ofList perm, x)) [||] Float None
/// Swaps two axes (negative axes count from the end).
let transpose a b (x: Node) =
    let r = x.Shape.Length
    let a, b = axisOf "transpose" x a, axisOf "transpose" x b
    permute [ for i in 0 .. r - 1 -> if i = a then b elif i = b then a else i ] x
let slice axis start stop (x: Node) = make (Slice(axisOf "slice" x axis, start, stop, x)) [||] Float None
let concat axis (xs: Node list) =
    match xs with
    | [ x ] -> x
    | first :: _ -> make (Concat(axisOf "concat" first axis, xs)) [||] Float None
    | [] -> fail "concat: no operands"
/// Rows of `table` picked by integer `indices`: shape indices.Shape @ table.Shape[1..].
let gather table indices = make (Gather(table, indices)) [||] Float None
/// Sums `updates` into the rows of a zero tensor of `shape` picked by `indices` (the adjoint of gather).
let scatterAdd (shape: Shape) indices updates = make (ScatterAdd(indices, updates)) shape Float None
/// 2-D cross-correlation, NCHW input, OIHW weight.
let conv2d stride padding x w = make (Conv2d(stride, padding, x, w)) [||] Float None
let stopGradient (x: Node) = match x.Op with StopGradient _ | Constant _ | Fill _ -> x | _ -> make (StopGradient x) [||] Float None
/// Identity forward; the gradient flowing back through it is multiplied by `factor`.
let gradientScale (factor: float) x = make (GradientScale(factor, x)) [||] Float None
/// 1.0 at the k largest entries of each row (last axis), else 0.0 (mixture-of-experts routing). No gradient flows through it.
let topKMask (k: int) x = make (TopKMask(k, x)) [||] Float None
/// Identity: `x` read again by a checkpointed backward pass (see Checkpoint.recompute).
let recompute (x: Node) = make (Recompute x) [||] x.DType None
/// One part of an attention under `mask`: `operands` are Q [heads, T, d], K [kvHeads, keys, d] and the further operands
/// the part takes (see AttentionPart).
let attentionPart (part: AttentionPart) (mask: AttentionMask) (scale: float) (operands: Node list) =
    make (Attention(part, mask, scale, operands)) [||] Float None
/// softmax(where(mask, scale · Q·Kᵀ, −∞))·V [heads, T, dv] as one op (grouped-query heads share keys and values),
/// read off the op's output, which keeps each row's log-sum-exp beside it for the backward pass.
let attention (mask: AttentionMask) (scale: float) (q: Node) (k: Node) (v: Node) =
    let y = attentionPart Output mask scale [ q; k; v ]
    slice 2 0 (y.Shape.[2] - 1) y
