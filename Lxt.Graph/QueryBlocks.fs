// Masked attention in blocks of query rows: a pure rewrite of a model graph. Attention under a constant mask computes
// softmax(where(keep, f(Q·Kᵀ), −∞))·V over every query and key, though under a causal mask the keys after a query are
// never kept: their probabilities are exactly 0 and their products contribute nothing. Split into blocks of query
// rows, each block multiplies only the keys its rows keep (the first r₁ under a causal mask, for rows r₀ … r₁ − 1),
// so a causal attention over T tokens in blocks of T/4 rows computes and stores 5/8 of the [heads, T, T] scores and
// probabilities, forward and backward. Each block's values are the same products, softmaxes and sums over the same
// kept keys; the columns left out are those whose probability is exactly 0.
module Lxt.Graph.QueryBlocks

open System.Collections.Generic
open Lxt.Graph.Ops

/// One attention found in a graph (AttentionPattern) under a constant mask [t, keys] and no rule set's mark, whose
/// chain has no named node (each block rebuilds it), with the mask's values.
type private Attention = { Found: AttentionPattern.Attention; Keep: ConstData; NegativeInfinity: Node }

/// The attention whose output is `o`, if it may be split (see Attention; `keep` is true for nodes asked for by name).
let private attentionAt (readOnlyBy: Node -> Node -> bool) (keep: Node -> bool) (o: Node) : Attention option =
    match AttentionPattern.at readOnlyBy keep o with
    | Some({ Mask = Some({ Op = Constant values } as c, negInf) } as a)
        when not a.Marked && c.Shape = [| a.Queries.Shape.[1]; a.Values.Shape.[1] |] && a.Chain |> List.forall (fun n -> n.Name.IsNone) ->
        Some { Found = a; Keep = values; NegativeInfinity = negInf }
    | _ -> None

/// The blocks of `rows` query rows of a mask [t, keys] (the last possibly up to half again as long) and the kept keys
/// of each, c₀ … c₁ − 1: None when a row keeps no key (its softmax is 0/0, which the blocks would not reproduce), when
/// there would be one block, or when the blocks would not leave out a tenth of the scores.
let private blocksOf (rows: int) (t: int) (keys: int) (keep: ConstData) =
    // each row's first and last kept key
    let kept = Array.init t (fun i -> keep.NonZeroRange(keys, i))
    if t <= rows || Array.contains None kept then None
    else
        let first, last = kept |> Array.map (fun r -> fst r.Value), kept |> Array.map (fun r -> snd r.Value)
        // blocks of `rows` rows; a last block of fewer than half as many joins the one before (a block costs launches)
        let starts = [ 0 .. rows .. t - 1 ] |> List.filter (fun r0 -> r0 = 0 || 2 * (t - r0) >= rows)
        let blocks =
            starts |> List.mapi (fun b r0 ->
                let r1 = if b + 1 < starts.Length then starts.[b + 1] else t
                r0, r1, Array.min first.[r0 .. r1 - 1], Array.max last.[r0 .. r1 - 1] + 1)
        let computed = blocks |> List.sumBy (fun (r0, r1, c0, c1) -> int64 (r1 - r0) * int64 (c1 - c0))
        if blocks.Length > 1 && computed * 10L <= int64 t * int64 keys * 9L then Some blocks else None

/// The attention computed block by block over `queries`, `keys` and `values` (the attention's own, rebuilt), its
/// output of the same shape as the original's.
let private split (maskOf: ConstData -> int -> int * int * int * int -> Node) (found: Attention) (queries: Node) (keyNode: Node) (values: Node)
                  (blocks: (int * int * int * int) list) : Node =
    let a = found.Found
    let heads, d = queries.Shape.[0], queries.Shape.[2]
    let kvHeads = keyNode.Shape.[0]
    let keys = keyNode.Shape.[1]
    let block (r0, r1, c0, c1) =
        let rows, cols = r1 - r0, c1 - c0
        let q = slice 1 r0 r1 queries
        let q = if a.GroupedQueries then reshape [| kvHeads; heads / kvHeads * rows; d |] q else q
        let k = if c0 = 0 && c1 = keys then keyNode else slice 1 c0 c1 keyNode
        let product = matmul q (transpose -1 -2 k)
        let scores = if a.ReshapedScores then reshape [| heads; rows; cols |] product else product
        // each op of the chain over the block's scores in place of its one non-scalar operand
        let chained = a.Chain |> List.fold (fun prev n -> withChildren n (n.Children |> List.map (fun c -> if AttentionPattern.isScalar c then c else prev))) scores
        let p = softmax -1 (where (maskOf found.Keep keys (r0, r1, c0, c1)) chained found.NegativeInfinity)
        let p = if a.GroupedQueries then reshape [| kvHeads; heads / kvHeads * rows; cols |] p else p
        let v = if c0 = 0 && c1 = keys then values else slice 1 c0 c1 values
        reshape [| heads; rows; d |] (matmul p v)
    reshape a.Output.Shape (concat 1 (List.map block blocks)) |> namedAs a.Output

/// The graphs under `roots` with every masked attention that reads a constant mask computed in blocks of `rows` query
/// rows (see the module's comment), where that leaves out at least a tenth of its scores, no row of its mask is masked
/// throughout and no node inside it is in `whole` (nodes asked for by name keep their values and gradients). Returns
/// the map from old to new nodes (the roots' and every other node's); with no such attention every node maps to itself.
let rewrite (rows: int) (whole: IReadOnlySet<Node>) (roots: Node list) : IReadOnlyDictionary<Node, Node> =
    if rows < 1 then invalidArg "rows" (sprintf "blocks of %d query rows" rows)
    let order = Traverse.topo roots
    let readOnlyBy = Traverse.readOnlyBy roots
    // a mask's blocks and each block's mask, once per mask (every layer reads the same one)
    let blocksByMask = Dictionary<ConstData, (int * int * int * int) list option>(HashIdentity.Reference)
    let masks = Dictionary<ConstData, Dictionary<int * int * int * int, Node>>(HashIdentity.Reference)
    let maskOf (keep: ConstData) (keys: int) ((r0, r1, c0, c1) as block) =
        let ofMask = match masks.TryGetValue keep with | true, d -> d | _ -> let d = Dictionary() in masks.[keep] <- d; d
        match ofMask.TryGetValue block with
        | true, m -> m
        | _ ->
            let rows, cols = r1 - r0, c1 - c0
            let m = constant [| rows; cols |] (Array.init (rows * cols) (fun k -> keep.Values.[(r0 + k / cols) * keys + c0 + k % cols]))
            ofMask.[block] <- m
            m
    // found on the graph as given; rebuilt over the rewritten queries, keys and values (earlier layers' attention)
    let found = Dictionary<Node, Attention * (int * int * int * int) list>(HashIdentity.Reference)
    for n in order do
        match attentionAt readOnlyBy whole.Contains n with
        | Some a ->
            let blocks =
                match blocksByMask.TryGetValue a.Keep with
                | true, b -> b
                | _ -> let b = blocksOf rows a.Found.Queries.Shape.[1] a.Found.Values.Shape.[1] a.Keep in blocksByMask.[a.Keep] <- b; b
            match blocks with
            | Some blocks -> found.[n] <- (a, blocks)
            | None -> ()
        | None -> ()
    let mapped = Dictionary<Node, Node>(HashIdentity.Reference)
    for n in order do
        mapped.[n] <-
            match found.TryGetValue n with
            | true, (a, blocks) ->
                let keys = AttentionPattern.keysFrom a.Found mapped.[a.Found.Keys]
                split maskOf a mapped.[a.Found.Queries] keys mapped.[a.Found.Values] blocks
            | _ -> withChildren n (n.Children |> List.map (fun c -> mapped.[c]))
    mapped :> _
