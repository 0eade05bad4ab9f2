// The graph IR: ops as a discriminated union, hash-consed immutable nodes, shape inference at construction.
namespace Lxt.Graph

open System
open System.Collections.Generic
open System.Threading

[<AutoOpen>]
module internal Identity =
    /// Reference identity: interned nodes are equal exactly when they are the same object.
    let inline (===) (a: 'T) (b: 'T) = obj.ReferenceEquals(a, b)

/// Cached `string` of field-less union values (op kinds), per type.
type internal OpNames<'T> private () =
    static let cache = System.Collections.Concurrent.ConcurrentDictionary<'T, string>()
    static member Of(o: 'T) = cache.GetOrAdd(o, fun v -> string v)

/// Element type of a node. Integer tensors (token ids) are stored exactly in floating-point buffers.
type DType =
    | Float
    | Int

/// Pointwise functions of one argument.
type UnaryOp =
    | Neg | Exp | Log | Sqrt | Rsqrt | Tanh | Sigmoid | Erf
    | GeluErf | GeluTanh | Silu | Relu | Abs | Sign | Reciprocal | Sin | Cos | Square

/// Pointwise functions of two broadcast arguments. Comparisons give 1.0 or 0.0.
type BinaryOp =
    | Add | Sub | Mul | Div | Pow | Maximum | Minimum | Greater | Equal

type ReduceOp =
    | Sum | Mean | Max

/// Values of a constant node, compared by content so equal constants intern to one node.
[<CustomEquality; NoComparison>]
type ConstData =
    { Values: float[]; Hash: int }
    static member Of(values: float[]) =
        let mutable h = values.Length
        for v in values do h <- h * 31 + v.GetHashCode()
        { Values = values; Hash = h }
    override this.GetHashCode() = this.Hash
    override this.Equals(o) =
        match o with
        | :? ConstData as c ->
            obj.ReferenceEquals(this.Values, c.Values)
            || (c.Hash = this.Hash && c.Values.Length = this.Values.Length
                && Array.forall2 (fun (a: float) b -> a.Equals b) c.Values this.Values)
        | _ -> false
    /// The first and last index of a non-zero value in row `row` of the values read as rows of `run` values (a mask's
    /// kept range), or None for a row of zeros.
    member this.NonZeroRange(run: int, row: int) =
        let v, at = this.Values, row * run
        let mutable first = 0
        while first < run && v.[at + first] = 0.0 do first <- first + 1
        if first = run then None
        else
            let mutable last = run - 1
            while v.[at + last] = 0.0 do last <- last - 1
            Some(first, last)

/// Which keys a query of a fused attention keeps: query row i (at position Offset + i) keeps key j when j ≤ Offset + i
/// (if Causal) and Offset + i − j < Window (if set). A mask that is neither keeps every key.
type AttentionMask =
    { Causal: bool; Offset: int; Window: int option }
    static member None = { Causal = false; Offset = 0; Window = None }
    member m.Keeps(row: int, key: int) =
        let at = m.Offset + row
        (not m.Causal || key <= at) && (match m.Window with Some w -> at - key < w | None -> true)
    /// The keys query row `row` keeps among `keys`: first … stop − 1 (empty when first ≥ stop).
    member m.Kept(row: int, keys: int) : struct (int * int) =
        let at = m.Offset + row
        struct ((match m.Window with Some w -> max 0 (at - w + 1) | None -> 0), (if m.Causal then min keys (at + 1) else keys))

/// The values an attention op computes from Q [heads, T, d], K [kvHeads, keys, d] and V [kvHeads, keys, dv], where
/// query head h reads key/value head h / (heads / kvHeads), P = softmax(scale · Q·Kᵀ kept by the mask, −∞ elsewhere):
type AttentionPart =
    /// Y [heads, T, dv + 1]: each row's O = P·V and after it the log of its softmax denominator L (with its maximum),
    /// from Q, K, V
    | Output
    /// ∂⟨Y, G⟩/∂Q, ∂/∂K and ∂/∂V one after the other, flat [heads·T·d + kvHeads·keys·d + kvHeads·keys·dv], from Q, K,
    /// V, G [heads, T, dv + 1], Y and Δ = Σ G ⊙ O − G_L along the last axis [heads, T] (the softmax's Σ dP ⊙ P less
    /// what reaches L): the probabilities are recomputed once for all three
    | Gradient
    /// ∂⟨Y, G⟩/∂V alone [kvHeads, keys, dv], from Q, K, V, G and Y: what a rule that stops the gradient at Q and K
    /// (CP-LRP) needs, without dP or dS
    | ValueGradient

/// The sizes of an attention op's operands: Q [Heads, T, D], K [KvHeads, Keys, D] and V [KvHeads, Keys, Dv].
[<Struct>]
type AttentionDims =
    { Heads: int; T: int; D: int; KvHeads: int; Keys: int; Dv: int }
    /// Query heads that read one key/value head.
    member m.Group = m.Heads / m.KvHeads
    /// A row of Y and of its gradient G: O (or dO), then L.
    member m.Row = m.Dv + 1
    /// The sizes of queries, keys and values of these shapes (each of rank 3).
    static member Of(q: int[], k: int[], v: int[]) =
        { Heads = q.[0]; T = q.[1]; D = q.[2]; KvHeads = k.[0]; Keys = k.[1]; Dv = v.[2] }

/// One operation of a graph. Children are nodes; the output shape lives on the node.
[<CustomEquality; NoComparison>]
type Op =
    | Input of name: string
    | Parameter of name: string
    | Constant of data: ConstData
    | Fill of value: float
    | Unary of op: UnaryOp * x: Node
    | Binary of op: BinaryOp * a: Node * b: Node
    | Where of cond: Node * whenTrue: Node * whenFalse: Node
    | MatMul of a: Node * b: Node
    | Softmax of axis: int * x: Node
    | Reduce of op: ReduceOp * axes: int[] * keepDims: bool * x: Node
    | Broadcast of x: Node
    | Reshape of x: Node
    | Permute of perm: int[] * x: Node
    | Slice of axis: int * start: int * stop: int * x: Node
    | Concat of axis: int * xs: Node list
    | Gather of table: Node * indices: Node
    | ScatterAdd of indices: Node * updates: Node
    | Conv2d of stride: (int * int) * padding: (int * int) * x: Node * w: Node
    | Conv2dGradInput of stride: (int * int) * padding: (int * int) * grad: Node * w: Node
    | Conv2dGradWeight of stride: (int * int) * padding: (int * int) * x: Node * grad: Node
    | StopGradient of x: Node
    | GradientScale of factor: float * x: Node
    /// 1.0 at the k largest entries of each row (last axis), else 0.0; ties go to the lower index. No gradient.
    | TopKMask of k: int * x: Node
    /// Identity: checkpoint `x` read again by the backward pass. Nodes rebuilt over it do not intern to the forward
    /// pass's nodes, so a plan computes them a second time, late (gradient checkpointing, see Checkpoint.fs).
    | Recompute of x: Node
    /// Scaled dot-product attention computed as one op, its softmax never stored (see AttentionPart); the fused form
    /// of softmax(where(mask, scale · Q·Kᵀ, −∞))·V that FusedAttention rewrites graphs into.
    | Attention of part: AttentionPart * mask: AttentionMask * scale: float * operands: Node list
    // Structural equality whose node comparisons are identity: interned children make this shallow.
    override this.Equals(o) =
        match o with
        | :? Op as p ->
            match this, p with
            | Input a, Input b | Parameter a, Parameter b -> a = b
            | Constant a, Constant b -> a.Equals b
            | Fill a, Fill b -> a.Equals b
            | Unary(o1, x1), Unary(o2, x2) -> o1 = o2 && x1 === x2
            | Binary(o1, a1, b1), Binary(o2, a2, b2) -> o1 = o2 && a1 === a2 && b1 === b2
            | Where(c1, a1, b1), Where(c2, a2, b2) -> c1 === c2 && a1 === a2 && b1 === b2
            | MatMul(a1, b1), MatMul(a2, b2) -> a1 === a2 && b1 === b2
            | Softmax(a1, x1), Softmax(a2, x2) -> a1 = a2 && x1 === x2
            | Reduce(o1, ax1, k1, x1), Reduce(o2, ax2, k2, x2) -> o1 = o2 && ax1 = ax2 && k1 = k2 && x1 === x2
            | Broadcast x1, Broadcast x2 | Reshape x1, Reshape x2 | StopGradient x1, StopGradient x2
            | Recompute x1, Recompute x2 -> x1 === x2
            | Permute(p1, x1), Permute(p2, x2) -> p1 = p2 && x1 === x2
            | Slice(a1, s1, e1, x1), Slice(a2, s2, e2, x2) -> a1 = a2 && s1 = s2 && e1 = e2 && x1 === x2
            | Concat(a1, xs1), Concat(a2, xs2) -> a1 = a2 && xs1.Length = xs2.Length && List.forall2 (===) xs1 xs2
            | Gather(t1, i1), Gather(t2, i2) -> t1 === t2 && i1 === i2
            | ScatterAdd(i1, u1), ScatterAdd(i2, u2) -> i1 === i2 && u1 === u2
            | Conv2d(s1, p1, x1, w1), Conv2d(s2, p2, x2, w2)
            | Conv2dGradInput(s1, p1, x1, w1), Conv2dGradInput(s2, p2, x2, w2)
            | Conv2dGradWeight(s1, p1, x1, w1), Conv2dGradWeight(s2, p2, x2, w2) ->
                s1 = s2 && p1 = p2 && x1 === x2 && w1 === w2
            | GradientScale(f1, x1), GradientScale(f2, x2) -> f1.Equals f2 && x1 === x2
            | TopKMask(k1, x1), TopKMask(k2, x2) -> k1 = k2 && x1 === x2
            | Attention(p1, m1, s1, xs1), Attention(p2, m2, s2, xs2) ->
                p1 = p2 && m1 = m2 && s1.Equals s2 && xs1.Length = xs2.Length && List.forall2 (===) xs1 xs2
            | _ -> false
        | _ -> false
    override this.GetHashCode() =
        let tag = this.GetType().Name.GetHashCode()
        let kids = Op.Children this |> List.fold (fun h (n: Node) -> h * 31 + n.Id) tag
        match this with
        | Input n | Parameter n -> kids * 17 + n.GetHashCode()
        | Constant d -> kids * 17 + d.Hash
        | Fill v | GradientScale(v, _) -> kids * 17 + v.GetHashCode()
        | Unary(o, _) -> kids * 17 + o.GetHashCode()
        | Binary(o, _, _) -> kids * 17 + o.GetHashCode()
        | Softmax(a, _) | TopKMask(a, _) -> kids * 17 + a
        | Reduce(o, ax, k, _) -> kids * 17 + hash (o, List.ofArray ax, k)
        | Permute(p, _) -> kids * 17 + hash (List.ofArray p)
        | Slice(a, s, e, _) -> kids * 17 + hash (a, s, e)
        | Concat(a, _) -> kids * 17 + a
        | Conv2d(s, p, _, _) | Conv2dGradInput(s, p, _, _) | Conv2dGradWeight(s, p, _, _) -> kids * 17 + hash (s, p)
        | Attention(p, m, s, _) -> kids * 17 + hash (p, m, s)
        | _ -> kids

    /// The op's operands, in order.
    static member Children(op: Op) : Node list =
        match op with
        | Input _ | Parameter _ | Constant _ | Fill _ -> []
        | Unary(_, x) | Softmax(_, x) | Reduce(_, _, _, x) | Broadcast x | Reshape x | Permute(_, x)
        | Slice(_, _, _, x) | StopGradient x | GradientScale(_, x) | TopKMask(_, x) | Recompute x -> [ x ]
        | Binary(_, a, b) | MatMul(a, b) | Gather(a, b) | ScatterAdd(a, b)
        | Conv2d(_, _, a, b) | Conv2dGradInput(_, _, a, b) | Conv2dGradWeight(_, _, a, b) -> [ a; b ]
        | Where(c, a, b) -> [ c; a; b ]
        | Concat(_, xs) | Attention(_, _, _, xs) -> xs

/// A node of an immutable, hash-consed graph: equal ops over equal children with equal names are one node.
and [<CustomEquality; CustomComparison>] Node =
    { Id: int
      Op: Op
      Shape: Shape
      DType: DType
      Name: string option }
    override this.Equals(o) = obj.ReferenceEquals(this, o)
    override this.GetHashCode() = this.Id
    interface IComparable with
        member this.CompareTo(o) = compare this.Id (o :?> Node).Id
    member this.Children = Op.Children this.Op
    override this.ToString() = Node.Describe this
    /// How errors name a node: its name if it has one, else its op and id.
    /// The case name of a field-less union value (an op kind such as Mul), cached: `string` on a union formats it
    /// by reflection, far too slow for per-step use.
    static member CaseName(o: 'T) : string = OpNames<'T>.Of o
    static member Describe(n: Node) =
        let kind =
            match n.Op with
            | Unary(o, _) -> Node.CaseName o
            | Binary(o, _, _) -> Node.CaseName o
            | Reduce(o, _, _, _) -> "Reduce" + Node.CaseName o
            | Attention(p, _, _, _) -> "Attention" + (match p with Output -> "" | p -> Node.CaseName p)
            | Input name -> "Input '" + name + "'"
            | Parameter name -> "Parameter '" + name + "'"
            | op -> op.GetType().Name // the case name; printing the op would print its whole subgraph
        match n.Name with
        | Some name -> sprintf "'%s' (%s %s)" name kind (Shape.show n.Shape)
        | None -> sprintf "%s#%d %s" kind n.Id (Shape.show n.Shape)

type AttentionDims with
    /// The sizes of an attention op's queries, keys and values, its first three operands.
    static member Of(operands: Node list) = AttentionDims.Of(operands.[0].Shape, operands.[1].Shape, operands.[2].Shape)

/// The intern table behind hash-consing. Values are weak so unused graphs can be collected.
module internal Intern =
    [<Struct; CustomEquality; NoComparison>]
    type Key =
        { Op: Op; Shape: Shape; DType: DType; Name: string option }
        override k.GetHashCode() =
            let mutable h = k.Op.GetHashCode()
            for d in k.Shape do h <- h * 31 + d
            h * 7 + hash k.DType + (match k.Name with Some n -> n.GetHashCode() | None -> 0)
        override k.Equals(o) =
            match o with
            | :? Key as j -> j.Shape = k.Shape && j.DType = k.DType && j.Name = k.Name && j.Op.Equals k.Op
            | _ -> false

    let private table = Dictionary<Key, WeakReference<Node>>()
    let private gate = obj ()
    let mutable private nextId = 0
    let mutable private sweepAt = 4096

    let node (op: Op) (shape: Shape) (dtype: DType) (name: string option) : Node =
        let key = { Op = op; Shape = shape; DType = dtype; Name = name }
        lock gate (fun () ->
            // the live node, held at once: a second look could find it collected in between
            let live = match table.TryGetValue key with | true, w -> (match w.TryGetTarget() with | true, n -> Some n | _ -> None) | _ -> None
            match live with
            | Some n -> n
            | None ->
                if table.Count >= sweepAt then
                    let dead = [ for kv in table do match kv.Value.TryGetTarget() with | true, _ -> () | _ -> yield kv.Key ]
                    for k in dead do table.Remove k |> ignore
                    sweepAt <- max 4096 (2 * table.Count)
                let n = { Id = Interlocked.Increment(&nextId); Op = op; Shape = shape; DType = dtype; Name = name }
                table.[key] <- WeakReference<Node>(n)
                n)
