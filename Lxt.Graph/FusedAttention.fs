// Attention as one op: a pure rewrite of a (rule-rewritten) graph. softmax(where(keep, scale · Q·Kᵀ, −∞))·V becomes
// Attention(Q, K, V) (Ops.attention), whose backward pass recomputes the probabilities from Q, K and one log-sum-exp
// per row instead of storing the [heads, T, keys] scores and probabilities, forward and backward. The rules' marks on
// the way (a gradient scale around a product, a stop-gradient around the softmax) move onto the operands, where they
// have the same effect: the gradient is linear from the output back to Q, K and V, so a factor anywhere on the way is
// a factor on the operands it reaches. The values are the same sums over the same kept keys, in another order.
module Lxt.Graph.FusedAttention

open System
open System.Collections.Generic
open Lxt.Graph.Ops

/// One attention found in a graph, and how the gradient reaches each operand.
type private Found =
    { Queries: Node
      /// K [kvHeads, keys, d] is this node permuted by KeysPermutation where that is not the identity
      Keys: Node
      KeysPermutation: int list
      Values: Node
      Mask: AttentionMask
      Scale: float
      /// the factor of the gradient reaching V (the product P·V's mark), and Q and K (all marks on the way), None
      /// where a stop-gradient cuts it
      ValueFactor: float
      QueryKeyFactor: float option }

let private isScalar (n: Node) = match n.Op with Fill _ -> Shape.numel n.Shape = 1 | _ -> false

/// The node under gradient scales and stop-gradients, the product of the scales, and whether a stop-gradient is among
/// them; each wrapper must be the only reader of what it wraps (`inner`).
let rec private peel (inner: Node -> Node -> bool) (n: Node) : Node * float * bool =
    match n.Op with
    | GradientScale(c, x) when inner x n -> let y, f, cut = peel inner x in y, c * f, cut
    | StopGradient x when inner x n -> let y, f, _ = peel inner x in y, f, true
    | _ -> n, 1.0, false

/// The attention mask whose kept keys are exactly the non-zero values of rows r0 … r0 + t − 1 of `keep` [_, keys]: a
/// causal mask at some offset, with or without a window, or no mask where every value is non-zero. None for any other
/// pattern.
let maskOfRows (keep: ConstData) (r0: int) (t: int) (keys: int) : AttentionMask option =
    let v = keep.Values
    let kept i = keep.NonZeroRange(keys, r0 + i)
    if Seq.forall (fun i -> v.[i] <> 0.0) (seq { r0 * keys .. (r0 + t) * keys - 1 }) then Some AttentionMask.None
    else
        match kept 0 with
        | None -> None
        | Some(_, offset) ->
            let window =
                seq { 0 .. t - 1 } |> Seq.tryPick (fun i -> match kept i with Some(first, _) when first > 0 -> Some(offset + i - first + 1) | _ -> None)
            let mask = { Causal = true; Offset = offset; Window = window }
            let mutable same = window |> Option.forall (fun w -> w >= 1)
            let mutable i = 0
            while same && i < t do
                let mutable j = 0
                while same && j < keys do
                    same <- (v.[(r0 + i) * keys + j] <> 0.0) = mask.Keeps(i, j)
                    j <- j + 1
                i <- i + 1
            if same then Some mask else None

/// maskOfRows over all of `keep` [t, keys].
let maskOf (keep: ConstData) (t: int) (keys: int) = maskOfRows keep 0 t keys

/// The attention whose P·V product (or the rules' mark around it) is `o`, if every node inside it is read only by the
/// next and none is in `whole`.
let private attentionAt (readOnlyBy: Node -> Node -> bool) (whole: Node -> bool) (masks: ConstData -> int -> int -> int -> AttentionMask option)
                        (o: Node) : Found option =
    let inner (n: Node) (reader: Node) = readOnlyBy reader n && not (whole n)
    let peel = peel inner
    // a reshape the next node alone reads, peeled
    let peelReshape (n: Node) = match n.Op with Reshape x when inner x n -> x | _ -> n
    let product, valueFactor, valueCut = peel o
    match product.Op with
    | MatMul(pg, v) when not valueCut && product.Shape.Length = 3 && v.Shape.Length = 3 && inner pg product ->
        let p, f1, cut1 = peel pg
        let p = peelReshape p
        let p, f2, cut2 = peel p
        match p.Op with
        | Softmax(2, w) when p.Shape.Length = 3 && inner w p && not (whole p) ->
            let heads, t, keys = p.Shape.[0], p.Shape.[1], p.Shape.[2]
            // the mask: a constant [t, keys], or rows of one (the rows read, SlicePushdown)
            let rowsOf (c: Node) =
                match c.Op with
                | Constant keep when c.Shape = [| t; keys |] -> Some(keep, 0)
                | Slice(0, r0, _, ({ Op = Constant keep } as whole)) when c.Shape = [| t; keys |] && whole.Shape.Length = 2 -> Some(keep, r0)
                | _ -> None
            let masked, mask =
                match w.Op with
                | Where(c, masked, ({ Op = Fill f } as negInf)) when Double.IsNegativeInfinity f && isScalar negInf && inner masked w ->
                    masked, (rowsOf c |> Option.bind (fun (keep, r0) -> masks keep r0 t keys))
                | _ -> w, Some AttentionMask.None
            // the scale: products with (and divisions by) scalars down to the scores
            let rec down (n: Node) (scale: float) =
                match n.Op with
                | Binary(Mul, x, ({ Op = Fill s } as c)) | Binary(Mul, ({ Op = Fill s } as c), x) when isScalar c && x.Shape = n.Shape && inner x n -> down x (scale * s)
                | Binary(Div, x, ({ Op = Fill s } as c)) when isScalar c && x.Shape = n.Shape && inner x n -> down x (scale / s)
                | _ -> n, scale
            let scores, scale = down masked 1.0
            let scores, f3, cut3 = peel scores
            let scores = peelReshape scores
            let scores, f4, cut4 = peel scores
            match mask, scores.Op with
            | Some mask, MatMul(qg, ({ Op = Permute(perm, x) } as kt)) when perm.Length = 3 && inner kt scores && Double.IsFinite scale ->
                let back = [ for i in [ 0; 2; 1 ] -> perm.[i] ]
                let kShape = [| for i in back -> x.Shape.[i] |]
                let q = peelReshape qg
                let fits =
                    q.Shape.Length = 3 && q.Shape.[0] = heads && q.Shape.[1] = t && (obj.ReferenceEquals(q, qg) || inner qg scores)
                    && kShape.[1] = keys && v.Shape.[1] = keys && kShape.[0] = v.Shape.[0] && heads % kShape.[0] = 0
                    && kShape.[2] = q.Shape.[2] && product.Shape.[2] = v.Shape.[2]
                    && Shape.numel product.Shape = heads * t * v.Shape.[2]
                    // the grouped product reads the heads of a group as consecutive rows, as Attention does
                    && (qg.Shape.[0] = kShape.[0] || qg.Shape.[0] = heads)
                if not fits then None
                else
                    Some { Queries = q; Keys = x; KeysPermutation = back; Values = v; Mask = mask; Scale = scale
                           ValueFactor = valueFactor
                           QueryKeyFactor = if cut1 || cut2 || cut3 || cut4 then None else Some(valueFactor * f1 * f2 * f3 * f4) }
            | _ -> None
        | _ -> None
    | _ -> None

/// The graphs under `roots` with every attention softmax(where(keep, scale · Q·Kᵀ, −∞))·V whose mask is causal (with
/// or without a window) or absent, and whose inner nodes nothing else reads and none of which is in `whole`, computed
/// by one Attention op (see the module's comment). Returns the map from old to new nodes; with no such attention every
/// node maps to itself.
let rewrite (whole: IReadOnlySet<Node>) (roots: Node list) : IReadOnlyDictionary<Node, Node> =
    let order = Traverse.topo roots
    let readOnlyBy = Traverse.readOnlyBy roots
    // a mask found once per constant (every layer reads the same one)
    let masks = Dictionary<struct (ConstData * int * int), AttentionMask option>(HashIdentity.Structural)
    let maskFor keep r0 t keys =
        match masks.TryGetValue(struct (keep, r0, t)) with
        | true, m -> m
        | _ -> let m = maskOfRows keep r0 t keys in masks.[struct (keep, r0, t)] <- m; m
    // the nodes a rules' mark wraps: an attention is found at its outermost mark
    let wrapped = HashSet<Node>(HashIdentity.Reference)
    for n in order do
        match n.Op with
        | GradientScale(_, x) | StopGradient x -> wrapped.Add x |> ignore
        | _ -> ()
    let found = Dictionary<Node, Found>(HashIdentity.Reference)
    for n in order do
        if not (wrapped.Contains n) then
            match attentionAt readOnlyBy whole.Contains maskFor n with
            | Some a -> found.[n] <- a
            | None -> ()
    let mapped = Dictionary<Node, Node>(HashIdentity.Reference)
    let marked (factor: float option) (x: Node) =
        match factor with
        | None -> stopGradient x
        | Some 1.0 -> x
        | Some f -> gradientScale f x
    for n in order do
        mapped.[n] <-
            match found.TryGetValue n with
            | true, a ->
                let keys = mapped.[a.Keys]
                let keys = if a.KeysPermutation = [ 0; 1; 2 ] then keys else permute a.KeysPermutation keys
                let o = attention a.Mask a.Scale (marked a.QueryKeyFactor mapped.[a.Queries]) (marked a.QueryKeyFactor keys)
                                  (marked (Some a.ValueFactor) mapped.[a.Values])
                reshape n.Shape o |> namedAs n
            | _ -> withChildren n (n.Children |> List.map (fun c -> mapped.[c]))
    mapped :> _
