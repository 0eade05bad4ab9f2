// Each value computed only at the rows that are read: a pure rewrite of a model graph. An explanation reads the logits
// at one position (a decoder's last token, an encoder's class token), so the last layer's rows at every other position
// reach no output and get gradient 0, yet the graph computes its attention, norms and MLP at every position, forward
// and backward. The Slice picking the position is pushed towards the inputs through every op that computes a range of
// rows of its value from the same range of its operands (pointwise ops, norms and other reductions, products along
// their rows, softmax along another axis, layout ops, gathers): the last layer then computes one query row of attention
// and one row of everything after it. What every row reads (keys and values, the layer's input) stays whole, and a
// value read whole anywhere is computed once, whole. The rows computed are the same ops on the same values.
module Lxt.Graph.SlicePushdown

open System.Collections.Generic
open Lxt.Graph.Ops

/// What a node's readers use of its value.
type private Need =
    | Whole
    /// rows start … stop − 1 of one axis
    | Rows of axis: int * start: int * stop: int

/// What a node reads of its operands to compute its value (or part of it), and how it is built from their versions.
type private Plan = { Part: (int * int * int) option; Reads: (Node * Need) list; Build: Node list -> Node }

let private combine (a: Need) (b: Need) = if a = b then a else Whole

let private rowsOf (n: Node) (a, s, e) = if s = 0 && e = n.Shape.[a] then Whole else Rows(a, s, e)

/// Rows of axis `a` of node `n`, as the same rows of the axis of `operand` aligned with it from the right
/// (broadcasting): Whole where the operand has no such axis or one of size 1.
let private aligned (n: Node) (a, s, e) (operand: Node) =
    let b = a - (n.Shape.Length - operand.Shape.Length)
    if b >= 0 && operand.Shape.[b] = n.Shape.[a] then Rows(b, s, e) else Whole

/// The axis of a reshape's operand `ins` that holds axis `a` of its value `outs` row for row: the one of the same size
/// after the same product of sizes, if there is one.
let private reshapedAxis (ins: Shape) (outs: Shape) (a: int) =
    let before = Array.fold (*) 1 outs.[.. a - 1]
    let mutable product, found = 1, None
    for b in 0 .. ins.Length - 1 do
        if found.IsNone && product = before && ins.[b] = outs.[a] then found <- Some b
        product <- product * ins.[b]
    found

/// Rows s … e − 1 of axis `a` of constant values of `shape`.
let private sliceValues (values: float[]) (shape: Shape) (a, s, e) =
    let inner = Array.fold (*) 1 shape.[a + 1 ..]
    [| for o in 0 .. Array.fold (*) 1 shape.[.. a - 1] - 1 do
         yield! values.[(o * shape.[a] + s) * inner .. (o * shape.[a] + e) * inner - 1] |]

/// Grouped-query sharing: O = reshape [h, T, n] (reshape [kv, g·T, k] X · Y) with X [h, T, k], h = kv·g, computes rows
/// s … e − 1 of its axis 1 from the same rows of X (each group's rows are consecutive in X' but not in the product).
let private (|GroupedProduct|_|) (n: Node) =
    match n.Op with
    | Reshape({ Op = MatMul({ Op = Reshape x } as xg, y) } as product) when n.Shape.Length = 3 && x.Shape.Length = 3 && product.Shape.Length = 3 ->
        let h, t = x.Shape.[0], x.Shape.[1]
        let kv = xg.Shape.[0]
        if n.Shape.[0] = h && n.Shape.[1] = t && kv > 0 && h % kv = 0 && xg.Shape.[1] = h / kv * t then Some(x, y, kv) else None
    | _ -> None

/// How `n` computes rows s … e − 1 of axis `a` of its value, if it can from parts of its operands.
let private partPlan (n: Node) ((a, s, e) as part) : Plan option =
    let rows = Rows(a, s, e)
    let shape = n.Shape |> Array.mapi (fun i d -> if i = a then e - s else d)
    let each (needs: Need list) = Some { Part = Some part; Reads = List.zip n.Children needs; Build = withChildren n }
    let shaped (op: Node -> Op) = fun (kids: Node list) -> make (op kids.Head) shape n.DType n.Name
    match n.Op with
    | Constant c ->
        Some { Part = Some part; Reads = []; Build = fun _ -> make (Constant(ConstData.Of(sliceValues c.Values n.Shape part))) shape n.DType n.Name }
    | Fill v -> Some { Part = Some part; Reads = []; Build = fun _ -> make (Fill v) shape n.DType n.Name }
    | Unary _ | StopGradient _ | GradientScale _ | Recompute _ -> each [ rows ]
    | Softmax(ax, _) when ax <> a -> each [ rows ]
    | TopKMask _ when a <> n.Shape.Length - 1 -> each [ rows ]
    | Binary _ | Where _ -> each (n.Children |> List.map (aligned n part))
    | Broadcast x -> Some { Part = Some part; Reads = [ x, aligned n part x ]; Build = shaped Broadcast }
    | Reduce(_, axes, keep, x) ->
        let kept = [| for i in 0 .. x.Shape.Length - 1 do if keep || not (Array.contains i axes) then yield i |]
        if Array.contains kept.[a] axes then None else each [ Rows(kept.[a], s, e) ]
    | Permute(perm, _) -> each [ Rows(perm.[a], s, e) ]
    | Reshape x ->
        match n with
        | GroupedProduct(q, y, kv) when a = 1 ->
            let h, k = q.Shape.[0], q.Shape.[2]
            Some { Part = Some part
                   Reads = [ q, rows; y, Whole ]
                   Build = fun kids -> reshape shape (matmul (reshape [| kv; h / kv * (e - s); k |] kids.[0]) kids.[1]) |> namedAs n }
        | _ -> reshapedAxis x.Shape n.Shape a |> Option.map (fun b -> { Part = Some part; Reads = [ x, Rows(b, s, e) ]; Build = shaped Reshape })
    | Slice(sa, s0, _, x) when sa = a -> Some { Part = Some part; Reads = [ x, Rows(a, s0 + s, s0 + e) ]; Build = fun kids -> namedAs n kids.Head }
    | Slice _ -> each [ rows ]
    | Concat(ca, xs) when ca <> a -> each [ for _ in xs -> rows ]
    | MatMul(x, y) ->
        let r = n.Shape.Length
        if a = r - 2 then each [ Rows(x.Shape.Length - 2, s, e); Whole ]
        elif a = r - 1 then each [ Whole; Rows(y.Shape.Length - 1, s, e) ]
        else each [ aligned n part x; aligned n part y ]
    | Gather(_, indices) when a < indices.Shape.Length -> each [ Whole; rows ]
    | _ -> None

/// How `n` computes its whole value: from its operands whole, but for a Slice, which reads the rows it keeps.
let private wholePlan (n: Node) : Plan =
    match n.Op with
    | Slice(a, s, e, x) -> { Part = None; Reads = [ x, Rows(a, s, e) ]; Build = fun kids -> namedAs n kids.Head }
    | _ -> { Part = None; Reads = n.Children |> List.map (fun c -> c, Whole); Build = withChildren n }

/// The graphs under `roots` with each value computed only at the rows read of it (see the module's comment); the roots
/// and the nodes in `whole` (nodes asked for by name) keep their whole values. Returns the map from each node kept
/// whole to its image (with nothing to prune every node maps to itself); nodes computed in part have no image.
let rewrite (whole: IReadOnlySet<Node>) (roots: Node list) : IReadOnlyDictionary<Node, Node> =
    let order = Traverse.topo roots
    let need = Dictionary<Node, Need>(HashIdentity.Reference)
    for n in order do
        if whole.Contains n then need.[n] <- Whole
    for r in roots do need.[r] <- Whole
    // readers before operands: each node's plan from what its readers use of it; a node no plan reads is not computed
    let plans = Dictionary<Node, Plan>(HashIdentity.Reference)
    for i in order.Length - 1 .. -1 .. 0 do
        let n = order.[i]
        match need.TryGetValue n with
        | true, needed ->
            let plan =
                match needed with
                | Rows(a, s, e) -> partPlan n (a, s, e) |> Option.defaultWith (fun () -> wholePlan n)
                | Whole -> wholePlan n
            plans.[n] <- plan
            for c, d in plan.Reads do
                let d = match d with Rows(a, s, e) -> rowsOf c (a, s, e) | Whole -> Whole
                need.[c] <- match need.TryGetValue c with | true, prev -> combine prev d | _ -> d
        | _ -> ()
    // operands before readers: each node's version, read whole or in the part its reader needs
    let version = Dictionary<Node, Node>(HashIdentity.Reference)
    let read (c: Node, d: Need) =
        match d, plans.[c].Part with
        | Rows(a, s, e), Some p when p = (a, s, e) -> version.[c]
        | Rows(a, s, e), _ -> match rowsOf c (a, s, e) with Whole -> version.[c] | _ -> slice a s e version.[c]
        | Whole, _ -> version.[c]
    let map = Dictionary<Node, Node>(HashIdentity.Reference)
    for n in order do
        match plans.TryGetValue n with
        | true, plan ->
            let v = plan.Build(plan.Reads |> List.map read)
            version.[n] <- v
            if plan.Part.IsNone then map.[n] <- v
        | _ -> ()
    map :> _
