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

/// The scale of a chain of products with (and divisions by) scalars, None for any other chain.
let private scaleOf (chain: Node list) =
    chain |> List.fold (fun scale n ->
        match scale, n.Op with
        | Some s, Binary(Mul, _, ({ Op = Fill c } as f)) | Some s, Binary(Mul, ({ Op = Fill c } as f), _) when AttentionPattern.isScalar f -> Some(s * c)
        | Some s, Binary(Div, _, ({ Op = Fill c } as f)) when AttentionPattern.isScalar f -> Some(s / c)
        | _ -> None) (Some 1.0)

/// The attention found at `o` (AttentionPattern) that one op computes: its mask, causal, windowed or none, read off a
/// constant [t, keys] or the rows of one that SlicePushdown read; its scale, a chain of scalar products; and grouped
/// queries, if any, read as the op reads them (a group's heads consecutive).
let private attentionAt readOnlyBy keep (masks: ConstData -> int -> int -> int -> AttentionMask option) (o: Node) =
    AttentionPattern.at readOnlyBy keep o
    |> Option.bind (fun a ->
        let heads, t, keys, dv = a.Queries.Shape.[0], a.Queries.Shape.[1], a.Values.Shape.[1], a.Values.Shape.[2]
        let mask =
            match a.Mask with
            | None -> Some AttentionMask.None
            | Some(c, _) when c.Shape = [| t; keys |] ->
                match c.Op with
                | Constant values -> masks values 0 t keys
                | Slice(0, r0, _, ({ Op = Constant values } as whole)) when whole.Shape.Length = 2 -> masks values r0 t keys
                | _ -> None
            | Some _ -> None
        let grouping = a.Scores.Children.Head.Shape.[0]
        match mask, scaleOf a.Chain with
        | Some mask, Some scale when Double.IsFinite scale && Shape.numel a.Product.Shape = heads * t * dv
                                      && (grouping = a.Values.Shape.[0] || grouping = heads) ->
            Some(a, mask, scale)
        | _ -> None)

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
    let found = Dictionary<Node, AttentionPattern.Attention * AttentionMask * float>(HashIdentity.Reference)
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
            | true, (a, mask, scale) ->
                let keys = AttentionPattern.keysFrom a mapped.[a.Keys]
                let o = attention mask scale (marked a.QueryKeyFactor mapped.[a.Queries]) (marked a.QueryKeyFactor keys)
                                  (marked (Some a.ValueFactor) mapped.[a.Values])
                reshape n.Shape o |> namedAs n
            | _ -> withChildren n (n.Children |> List.map (fun c -> mapped.[c]))
    mapped :> _
