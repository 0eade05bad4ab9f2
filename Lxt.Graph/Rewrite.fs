// Pattern → replacement rewriting: a rule is a named partial function on nodes; rule sets are lists applied to a fixpoint.
module Lxt.Graph.Rewrite

open System.Collections.Generic
open Lxt.Graph.Ops

/// One rewrite: `Apply` returns the replacement of a node, or None when the pattern does not match.
type Rule = { Name: string; Apply: Node -> Node option }

/// An ordered list of rules; the first that matches a node wins. Rule sets compose by concatenation.
type RuleSet = Rule list

let rule name apply : Rule = { Name = name; Apply = apply }

/// Rewrites every node under `roots` bottom-up until no rule matches anywhere. A replacement is itself
/// normalised; `maxRewrites` bounds the total number of rewrites and turns a rule loop into an exception.
let applyWithGuard (maxRewrites: int) (rules: RuleSet) (roots: Node list) : Node list =
    let memo = Dictionary<Node, Node>(HashIdentity.Reference)
    let mutable count = 0
    let rec norm (depth: int) (n: Node) : Node =
        match memo.TryGetValue n with
        | true, m -> m
        | _ ->
            let rebuilt = withChildren n (n.Children |> List.map (norm depth))
            let result =
                match rules |> List.tryPick (fun r -> r.Apply rebuilt |> Option.map (fun m -> r, m)) with
                | Some(r, m) when not (m === rebuilt) ->
                    count <- count + 1
                    if count > maxRewrites || depth > 200 then
                        raise (RewriteLoopException(sprintf "rewrite did not reach a fixpoint: rule '%s' keeps firing at %s" r.Name (Node.Describe n)))
                    if m.Shape <> rebuilt.Shape then
                        raise (GraphShapeException(sprintf "rule '%s' changed the shape of %s to %s" r.Name (Node.Describe rebuilt) (Shape.show m.Shape)))
                    let m = match rebuilt.Name, m.Name with | Some name, None -> named name m | _ -> m
                    norm (depth + 1) m
                | _ -> rebuilt
            memo.[n] <- result
            memo.[result] <- result
            result
    // operands first, iteratively, so recursion only ever walks freshly built replacements
    for n in Traverse.topo roots do norm 0 n |> ignore
    roots |> List.map (norm 0)

let apply rules roots = applyWithGuard 1_000_000 rules roots

/// One bottom-up pass: each node is rebuilt over its rewritten operands, then the first matching rule is applied
/// to it once and its replacement is not rewritten again. Unlike `apply`, a rule may wrap the very node it matched
/// (a marker around it) without looping. The rule decides the replacement's name. Returns the map from every node
/// under `roots` to its image, so callers can find where an inner node went (latent relevance needs that).
let applyOnce (rules: RuleSet) (roots: Node seq) : IReadOnlyDictionary<Node, Node> =
    roots |> Traverse.mapBottomUp (fun rebuilt ->
        match rules |> List.tryPick (fun r -> r.Apply rebuilt |> Option.map (fun m -> r, m)) with
        | Some(r, m) ->
            if m.Shape <> rebuilt.Shape then
                raise (GraphShapeException(sprintf "rule '%s' changed the shape of %s to %s" r.Name (Node.Describe rebuilt) (Shape.show m.Shape)))
            m
        | None -> rebuilt)
let applyOne rules root = apply rules [ root ] |> List.head

let private (|FillOf|_|) (n: Node) = match n.Op with Fill v -> Some v | _ -> None

/// Algebraic identities that never change a value (x + 0, x · 1, double negation, nested views and scales).
let simplifier : RuleSet =
    let sameShape (a: Node) (b: Node) = a.Shape = b.Shape
    [ rule "x + 0 = x" (fun n ->
        match n.Op with
        | Binary(Add, x, FillOf 0.0) | Binary(Add, FillOf 0.0, x) | Binary(Sub, x, FillOf 0.0) when sameShape x n -> Some x
        | _ -> None)
      rule "x · 1 = x" (fun n ->
        match n.Op with
        | Binary(Mul, x, FillOf 1.0) | Binary(Mul, FillOf 1.0, x) | Binary(Div, x, FillOf 1.0) | Binary(Pow, x, FillOf 1.0) when sameShape x n -> Some x
        | _ -> None)
      rule "−(−x) = x" (fun n -> match n.Op with Unary(Neg, { Op = Unary(Neg, x) }) -> Some x | _ -> None)
      rule "reshape ∘ reshape = reshape" (fun n ->
        match n.Op with
        | Reshape { Op = Reshape x } -> Some(reshape n.Shape x)
        | Reshape x when x.Shape = n.Shape -> Some x
        | _ -> None)
      rule "permute ∘ permute = permute" (fun n ->
        match n.Op with
        | Permute(p, _) when p = Array.init p.Length id -> Some n.Children.Head
        | Permute(p2, { Op = Permute(p1, x) }) -> Some(permute [ for i in p2 -> p1.[i] ] x)
        | _ -> None)
      rule "broadcast to own shape = x" (fun n -> match n.Op with Broadcast x when x.Shape = n.Shape -> Some x | _ -> None)
      rule "full slice = x" (fun n -> match n.Op with Slice(a, 0, e, x) when e = x.Shape.[a] -> Some x | _ -> None)
      rule "gradient scale composes" (fun n ->
        match n.Op with
        | GradientScale(1.0, x) -> Some x
        | GradientScale(a, { Op = GradientScale(b, x) }) -> Some(gradientScale (a * b) x)
        | StopGradient { Op = StopGradient _ | GradientScale _ as inner } -> Some(stopGradient (List.head (Op.Children inner)))
        | _ -> None) ]

/// Replaces any op whose operands are all constants by its value (computed by the reference semantics).
let constantFolding (maxElements: int) : RuleSet =
    let valueOf (n: Node) =
        match n.Op with
        | Constant c -> Some c.Values
        | Fill v -> Some(Array.create (Shape.numel n.Shape) v)
        | _ -> None
    [ rule "fold constants" (fun n ->
        match n.Op with
        | Input _ | Parameter _ | Constant _ | Fill _ -> None
        | _ when Shape.numel n.Shape > maxElements -> None
        | _ ->
            let args = n.Children |> List.map valueOf
            if args |> List.forall Option.isSome then
                let v = Reference.evaluate n (args |> List.map Option.get |> Array.ofList)
                let folded =
                    if v.Length > 0 && v |> Array.forall (fun x -> x.Equals v.[0]) then fill n.Shape v.[0]
                    else make (Constant(ConstData.Of v)) n.Shape n.DType None
                Some folded
            else None) ]

/// The default clean-up: simplification and folding of constants up to 65 536 elements.
let simplify (roots: Node list) = apply (simplifier @ constantFolding 65536) roots
