// Attention as graphs write it, found by the one matcher of the rewrites that change how it is computed (QueryBlocks,
// FusedAttention): O = P'·V with P' = P reshaped (or P), P = softmax(where(keep, chain(S), −∞)) or softmax(chain(S))
// along the last axis, S = Q'·Kᵀ reshaped (or Q'·Kᵀ), Q' = Q reshaped (or Q), Kᵀ = K with its last two axes swapped;
// a rule set's marks (gradient scales, stop-gradients) may wrap O's product, P and S.
module Lxt.Graph.AttentionPattern

open System

/// One attention found in a graph.
type Attention =
    { /// the node it was found at: the product P'·V, or the outermost mark around it
      Output: Node
      /// the product P'·V
      Product: Node
      /// the product Q'·Kᵀ
      Scores: Node
      Queries: Node
      /// K [kvHeads, keys, d] is this node, permuted by KeysPermutation where that is not the identity
      Keys: Node
      KeysPermutation: int list
      Values: Node
      /// Q'·Kᵀ's shape differs from Q's (grouped-query sharing: Q [heads, T, d] read as [kvHeads, g·T, d])
      GroupedQueries: bool
      /// S is Q'·Kᵀ reshaped to [heads, T, keys]
      ReshapedScores: bool
      /// the pointwise ops between S and the softmax (or its mask), each with one non-scalar operand, first to last
      Chain: Node list
      /// the mask's condition and its −∞, where the scores are masked
      Mask: (Node * Node) option
      /// whether a rule set's mark was found on the way
      Marked: bool
      /// the factor the marks put on the gradient reaching V (the mark around P'·V), and on Q and K (every mark on
      /// the way), None where a stop-gradient cuts it
      ValueFactor: float
      QueryKeyFactor: float option }

/// K [kvHeads, keys, d] from `image`, the rewritten node of `a.Keys`, permuted as the attention reads its keys.
let keysFrom (a: Attention) (image: Node) = if a.KeysPermutation = [ 0; 1; 2 ] then image else Ops.permute a.KeysPermutation image

/// A one-element fill: a scalar operand.
let isScalar (n: Node) = match n.Op with Fill _ -> Shape.numel n.Shape = 1 | _ -> false

/// The attention found at `o`, if every node inside it is read only by the next (`readOnlyBy reader n`) and none is
/// to be kept whole (`keep`: nodes asked for by name keep their values and gradients).
let at (readOnlyBy: Node -> Node -> bool) (keep: Node -> bool) (o: Node) : Attention option =
    let inner (n: Node) (reader: Node) = readOnlyBy reader n && not (keep n)
    // the node under gradient scales and stop-gradients, the product of the scales, whether one cuts, whether any
    let rec peel (n: Node) : Node * float * bool * bool =
        match n.Op with
        | GradientScale(c, x) when inner x n -> let y, f, cut, _ = peel x in y, c * f, cut, true
        | StopGradient x when inner x n -> let y, f, _, _ = peel x in y, f, true, true
        | _ -> n, 1.0, false, false
    let peelReshape (n: Node) = match n.Op with Reshape x when inner x n -> x, true | _ -> n, false
    let product, valueFactor, valueCut, m0 = peel o
    match product.Op with
    | MatMul(pg, v) when not valueCut && product.Shape.Length = 3 && v.Shape.Length = 3 && inner pg product ->
        let p, f1, cut1, m1 = peel pg
        let p, _ = peelReshape p
        let p, f2, cut2, m2 = peel p
        match p.Op with
        | Softmax(axis, w) when p.Shape.Length = 3 && axis = 2 && inner w p ->
            let heads, t, keys = p.Shape.[0], p.Shape.[1], p.Shape.[2]
            // the top of the chain and the node reading it: under the mask, or the softmax's operand itself
            let top, reader, mask =
                match w.Op with
                | Where(c, masked, ({ Op = Fill f } as negInf)) when Double.IsNegativeInfinity f && isScalar negInf -> masked, w, Some(c, negInf)
                | _ -> w, p, None
            // the pointwise chain down to the scores
            let rec down (n: Node) (reader: Node) (chain: Node list) =
                if not (inner n reader) then None
                else
                    match n.Op with
                    | Unary(_, x) -> down x n (n :: chain)
                    | Binary(_, x, s) when isScalar s && x.Shape = n.Shape -> down x n (n :: chain)
                    | Binary(_, s, x) when isScalar s && x.Shape = n.Shape -> down x n (n :: chain)
                    | _ -> Some(n, chain)
            match down top reader [] with
            | Some(s, chain) ->
                let s, f3, cut3, m3 = peel s
                let s, reshapedScores = peelReshape s
                let scores, f4, cut4, m4 = peel s
                match scores.Op with
                | MatMul(qg, ({ Op = Permute(perm, x) } as kt)) when perm.Length = 3 && inner kt scores ->
                    // K itself: Kᵀ swapped back, one permutation composed with another (without rotary embedding the
                    // keys' own layout permutation and the transpose are one Permute)
                    let back = [ for i in [ 0; 2; 1 ] -> perm.[i] ]
                    let kShape = [| for i in back -> x.Shape.[i] |]
                    let q, grouped = match qg.Op with Reshape q -> q, true | _ -> qg, false
                    let fits =
                        q.Shape.Length = 3 && q.Shape.[0] = heads && q.Shape.[1] = t
                        && kShape.[1] = keys && v.Shape.[1] = keys && kShape.[0] = v.Shape.[0] && heads % kShape.[0] = 0
                        && kShape.[2] = q.Shape.[2] && product.Shape.[2] = v.Shape.[2]
                    if not fits || (grouped && not (inner qg scores)) then None
                    else
                        Some { Output = o; Product = product; Scores = scores; Queries = q; Keys = x; KeysPermutation = back; Values = v
                               GroupedQueries = grouped; ReshapedScores = reshapedScores; Chain = chain; Mask = mask
                               Marked = m0 || m1 || m2 || m3 || m4; ValueFactor = valueFactor
                               QueryKeyFactor = if cut1 || cut2 || cut3 || cut4 then None else Some(valueFactor * f1 * f2 * f3 * f4) }
                | _ -> None
            | None -> None
        | _ -> None
    | _ -> None
