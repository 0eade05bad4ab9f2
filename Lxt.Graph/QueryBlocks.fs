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

/// One attention found in a graph: O = P'·V with P' = P reshaped (or P), P = softmax(where(keep, chain(S), −∞)) along
/// the last axis, S = Q'·Kᵀ reshaped (or Q'·Kᵀ), Q' = Q reshaped (or Q), Kᵀ = K with its last two axes swapped.
type private Attention =
    { Output: Node
      Queries: Node
      /// K [kvHeads, keys, d] is this node, permuted by KeysPermutation where that is not the identity
      Keys: Node
      KeysPermutation: int list
      Values: Node
      /// Q'·Kᵀ's shape differs from Q's (grouped-query sharing: Q [heads, T, d] read as [kvHeads, g·T, d])
      GroupedQueries: bool
      /// S is Q'·Kᵀ reshaped to [heads, T, keys]
      ReshapedScores: bool
      /// the pointwise ops between S and the masked scores, each with one non-scalar operand, first to last
      Chain: Node list
      Keep: ConstData
      NegativeInfinity: Node }

let private isScalar (n: Node) = match n.Op with Fill _ -> Shape.numel n.Shape = 1 | _ -> false

/// The attention whose output is `o`, if `o` is one whose inner nodes nothing else reads (`readOnlyBy`) and that may
/// be split (`whole` is false for every inner node: none is asked for by name).
let private attentionAt (readOnlyBy: Node -> Node -> bool) (whole: Node -> bool) (o: Node) : Attention option =
    let inner (n: Node) (reader: Node) = readOnlyBy reader n && whole n
    let peelReshape (n: Node) = match n.Op with Reshape x -> x, true | _ -> n, false
    match o.Op with
    | MatMul(pg, v) when o.Shape.Length = 3 && v.Shape.Length = 3 ->
        let p, reshapedProbabilities = peelReshape pg
        if reshapedProbabilities && not (inner pg o) then None else
        match p.Op with
        | Softmax(axis, ({ Op = Where({ Op = Constant keep } as c, masked, ({ Op = Fill f } as negInf)) } as w))
            when axis = p.Shape.Length - 1 && p.Shape.Length = 3 && System.Double.IsNegativeInfinity f && isScalar negInf
                 && c.Shape.Length = 2 && c.Shape = p.Shape.[1..] && inner p (if reshapedProbabilities then pg else o) && inner w p ->
            // the pointwise chain down to the scores
            let rec down (n: Node) (reader: Node) (chain: Node list) =
                if not (inner n reader) then None
                else
                    match n.Op with
                    | Unary(_, x) when n.Name.IsNone -> down x n (n :: chain)
                    | Binary(_, x, s) when n.Name.IsNone && isScalar s && x.Shape = n.Shape -> down x n (n :: chain)
                    | Binary(_, s, x) when n.Name.IsNone && isScalar s && x.Shape = n.Shape -> down x n (n :: chain)
                    | _ -> Some(n, chain)
            match down masked w [] with
            | Some(s, chain) ->
                let product, reshapedScores = peelReshape s
                if not (obj.ReferenceEquals(product, s) || inner product s) then None else
                match product.Op with
                | MatMul(qg, ({ Op = Permute(perm, x) } as kt)) when perm.Length = 3 && inner kt product ->
                    // K itself: Kᵀ swapped back, one permutation composed with another (without rotary embedding the
                    // keys' own layout permutation and the transpose are one Permute)
                    let back = [ for i in [ 0; 2; 1 ] -> perm.[i] ]
                    let kShape = [| for i in back -> x.Shape.[i] |]
                    let q, grouped = peelReshape qg
                    let heads, t, keys = p.Shape.[0], p.Shape.[1], p.Shape.[2]
                    let fits =
                        q.Shape.Length = 3 && q.Shape.[0] = heads && q.Shape.[1] = t
                        && kShape.[1] = keys && v.Shape.[1] = keys && kShape.[0] = v.Shape.[0] && heads % kShape.[0] = 0
                        && kShape.[2] = q.Shape.[2] && o.Shape.[2] = v.Shape.[2]
                    if not fits || (grouped && not (inner qg product)) then None
                    else
                        Some { Output = o; Queries = q; Keys = x; KeysPermutation = back; Values = v; GroupedQueries = grouped
                               ReshapedScores = reshapedScores; Chain = chain; Keep = keep; NegativeInfinity = negInf }
                | _ -> None
            | None -> None
        | _ -> None
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
let private split (maskOf: ConstData -> int -> int * int * int * int -> Node) (a: Attention) (queries: Node) (keyNode: Node) (values: Node)
                  (blocks: (int * int * int * int) list) : Node =
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
        let chained = a.Chain |> List.fold (fun prev n -> withChildren n (n.Children |> List.map (fun c -> if isScalar c then c else prev))) scores
        let p = softmax -1 (where (maskOf a.Keep keys (r0, r1, c0, c1)) chained a.NegativeInfinity)
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
    let isWhole (n: Node) = not (whole.Contains n)
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
        match attentionAt readOnlyBy isWhole n with
        | Some a ->
            let blocks =
                match blocksByMask.TryGetValue a.Keep with
                | true, b -> b
                | _ -> let b = blocksOf rows a.Queries.Shape.[1] a.Values.Shape.[1] a.Keep in blocksByMask.[a.Keep] <- b; b
            match blocks with
            | Some blocks -> found.[n] <- (a, blocks)
            | None -> ()
        | None -> ()
    let mapped = Dictionary<Node, Node>(HashIdentity.Reference)
    for n in order do
        mapped.[n] <-
            match found.TryGetValue n with
            | true, (a, blocks) ->
                let keys = mapped.[a.Keys]
                let keys = if a.KeysPermutation = [ 0; 1; 2 ] then keys else permute a.KeysPermutation keys
                split maskOf a mapped.[a.Queries] keys mapped.[a.Values] blocks
            | _ -> withChildren n (n.Children |> List.map (fun c -> mapped.[c]))
    mapped :> _
