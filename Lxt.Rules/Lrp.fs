// Applying a rule set and reading relevance off the rewritten graph: rewrite, seeds, relevance at any node.
namespace Lxt.Rules

open System.Collections.Generic
open Lxt.Graph
open Lxt.Graph.Ops

/// Backward seeds: the vector the target output is contracted with (R_out = output ⊙ seed).
module Seeds =
    let private flatIndex (shape: Shape) (index: int list) =
        if index.Length <> shape.Length then
            raise (GraphShapeException(sprintf "seed: index %A has %d axes, the output %s has %d" index index.Length (Shape.show shape) shape.Length))
        List.zip (List.ofArray shape) index
        |> List.fold (fun acc (n, i) ->
            if i < 0 || i >= n then raise (GraphShapeException(sprintf "seed: index %A is outside the output %s" index (Shape.show shape)))
            acc * n + i) 0

    /// A seed of the given values for `output`.
    let ofValues (output: Node) (values: float[]) = constant output.Shape values

    /// 1 at `index` (one entry per axis, e.g. [position; class]) and 0 elsewhere: explains that one logit.
    let at (output: Node) (index: int list) =
        let v = Array.zeroCreate (Shape.numel output.Shape)
        v.[flatIndex output.Shape index] <- 1.0
        ofValues output v

    /// Contrastive seed: +1 at `target` and −1/N at each of the N `others`.
    let contrastive (output: Node) (target: int list) (others: int list list) =
        let v = Array.zeroCreate (Shape.numel output.Shape)
        for o in others do v.[flatIndex output.Shape o] <- v.[flatIndex output.Shape o] - 1.0 / float others.Length
        v.[flatIndex output.Shape target] <- v.[flatIndex output.Shape target] + 1.0
        ofValues output v

module Lrp =
    /// The model graph under `roots` with every marker an LRP rule set left removed (a graph without markers is
    /// returned unchanged, node for node).
    let strip (roots: Node list) : Node list =
        let map = Rewrite.applyOnce Markers.strip roots
        roots |> List.map (fun r -> map.[r])

    /// Scopes of the nodes under `roots`: a node's own name, else the scope of its last user in topological order.
    let private scopesOf (roots: Node list) =
        let scope = Dictionary<Node, string>(HashIdentity.Reference)
        let order = Traverse.topo roots
        for i in order.Length - 1 .. -1 .. 0 do
            let n = order.[i]
            match n.Name with
            | Some name when not (Markers.isReserved name) -> scope.[n] <- name
            | _ -> ()
            match scope.TryGetValue n with
            | true, s -> for c in n.Children do if c.Name.IsNone && not (scope.ContainsKey c) then scope.[c] <- s
            | _ -> ()
        scope

    /// One bottom-up pass applying the first matching rule to each rebuilt node, once (as Rewrite.applyOnce), keeping
    /// track of which model node each rebuilt node stands for so rules can ask for its scope.
    let private rewritePass (ruleSet: RuleSet) (roots: Node list) : IReadOnlyDictionary<Node, Node> =
        let scopes = scopesOf roots
        let original = Dictionary<Node, Node>(HashIdentity.Reference)
        let scopeOf (n: Node) =
            match scopes.TryGetValue (match original.TryGetValue n with | true, o -> o | _ -> n) with
            | true, s -> Some s
            | _ -> n.Name
        let rules = RuleSet.instantiate (Context.create scopeOf) ruleSet
        let mapped = Dictionary<Node, Node>(HashIdentity.Reference)
        for n in Traverse.topo roots do
            let rebuilt = withChildren n (n.Children |> List.map (fun c -> mapped.[c]))
            original.TryAdd(rebuilt, n) |> ignore
            mapped.[n] <-
                match rules |> List.tryPick (fun r -> r.Apply rebuilt |> Option.map (fun m -> r, m)) with
                | Some(r, m) when m.Shape <> rebuilt.Shape ->
                    raise (GraphShapeException(sprintf "rule '%s' changed the shape of %s to %s" r.Name (Node.Describe rebuilt) (Shape.show m.Shape)))
                | Some(_, m) -> m
                | None -> rebuilt
        mapped :> _

    /// Rewrites the graphs under `roots` with `ruleSet`, after stripping any other set's markers. Returns the image
    /// of every node under `roots` that survives (nodes that only existed inside another set's markers do not).
    let rewriteMap (ruleSet: RuleSet) (roots: Node list) : IReadOnlyDictionary<Node, Node> =
        let stripped = Rewrite.applyOnce Markers.strip roots
        let rewritten = rewritePass ruleSet (roots |> List.map (fun r -> stripped.[r]))
        let map = Dictionary<Node, Node>(HashIdentity.Reference)
        for kv in stripped do
            match rewritten.TryGetValue kv.Value with
            | true, image -> map.[kv.Key] <- image
            | _ -> ()
        map :> _

    /// Rewrites the graphs under `roots` with `ruleSet`. Pure: rewrite B (rewrite A g) is rewrite B g, node for node.
    let rewrite (ruleSet: RuleSet) (roots: Node list) : Node list =
        let map = rewriteMap ruleSet roots
        roots |> List.map (fun r -> map.[r])

    /// x ⊙ g, with 0 wherever g is 0: masked attention scores (x = −∞, g = 0) get relevance 0, not NaN.
    let internal timesInput (x: Node) (g: Node) = where (equal g (scalar 0.0)) (scalar 0.0) (mul x g)

    /// The exact rewrite that changes nothing (see relevanceThrough): an empty map, every node its own image.
    let unchanged : IReadOnlySet<Node> -> Node list -> IReadOnlyDictionary<Node, Node> =
        fun _ _ -> Dictionary<Node, Node>(HashIdentity.Reference) :> _

    /// The rewritten `target`, the seed `seedOf` makes of it and the relevance at each node of `at` (inputs, or any
    /// inner node: latent relevance) for explaining `target` contracted with that seed, all from one backward pass
    /// through the rewritten graph, after `exact` rewrote that graph (given the images of `at`, which it must keep, and
    /// the image of `target`; a node it leaves out of its map is unchanged) without changing any value or gradient
    /// (FusedAttention.rewrite, or `unchanged`). A node that `target` does not depend on gets zeros.
    let relevanceThrough (exact: IReadOnlySet<Node> -> Node list -> IReadOnlyDictionary<Node, Node>) (ruleSet: RuleSet)
                         (target: Node) (seedOf: Node -> Node) (at: Node list) : Node * Node * Node list =
        let map = rewriteMap ruleSet [ target ]
        let rewritten = at |> List.choose (fun n -> match map.TryGetValue n with | true, m -> Some m | _ -> None)
        let moved = exact (HashSet<Node>(rewritten, HashIdentity.Reference)) [ map.[target] ]
        let after (m: Node) = match moved.TryGetValue m with | true, m2 -> m2 | _ -> m
        let image (n: Node) = match map.TryGetValue n with | true, m -> Some(after m) | _ -> None
        let reached = at |> List.choose image
        let output = after map.[target]
        let seed = seedOf output
        let grads = Dictionary<Node, Node>(HashIdentity.Reference)
        List.zip reached (Autodiff.vjp [ output, seed ] reached) |> List.iter (fun (x, g) -> grads.[x] <- g)
        output, seed,
        at |> List.map (fun n ->
            match image n with
            | Some x ->
                match ruleSet.Form with
                | GradientOnly -> grads.[x]
                | GradientTimesInput -> timesInput x grads.[x]
            | None -> fill n.Shape 0.0)

    /// Relevance at each node of `at` (inputs, or any inner node: latent relevance) for explaining `target`
    /// contracted with `seed`, all from one backward pass through the rewritten graph. A node that `target` does
    /// not depend on gets zeros.
    let relevance (ruleSet: RuleSet) (target: Node) (seed: Node) (at: Node list) : Node list =
        let _, _, r = relevanceThrough unchanged ruleSet target (fun _ -> seed) at
        r
