// Generic graph walks, written once: topological order and bottom-up rebuilding with a node-local function.
module Lxt.Graph.Traverse

open System.Collections.Generic

/// All nodes reachable from `roots`, operands before users, depth first: the operands of each node are visited in the
/// order `operands` lists them, the roots last to first (iterative: deep graphs do not overflow the stack).
let topoWith (operands: Node -> Node list) (roots: Node seq) : Node[] =
    let seen = HashSet<Node>(HashIdentity.Reference)
    let order = ResizeArray<Node>()
    let stack = Stack<struct (Node * bool)>()
    for r in roots do stack.Push(struct (r, false))
    while stack.Count > 0 do
        let struct (n, expanded) = stack.Pop()
        if expanded then order.Add n
        elif seen.Add n then
            stack.Push(struct (n, true))
            for c in List.rev (operands n) do
                if not (seen.Contains c) then stack.Push(struct (c, false))
    order.ToArray()

/// All nodes reachable from `roots`, operands before users (iterative: deep graphs do not overflow the stack).
let topo (roots: Node seq) : Node[] = topoWith (fun n -> n.Children) roots

/// The steps reading each node through `operands`, in the steps' order (a node read twice by one step is listed once).
let readersBy (operands: Node -> Node list) (steps: Node seq) : Dictionary<Node, ResizeArray<Node>> =
    let readers = Dictionary<Node, ResizeArray<Node>>(HashIdentity.Reference)
    for n in steps do
        for c in List.distinct (operands n) do
            match readers.TryGetValue c with
            | true, r -> r.Add n
            | _ -> readers.[c] <- ResizeArray [ n ]
    readers

/// The steps reading each node as an operand (see readersBy).
let readers (steps: Node seq) = readersBy (fun n -> n.Children) steps

/// Under `roots`: whether `reader` is the only node reading node n and n is no root, so that a rewrite of `reader`
/// may absorb n (the graphs are walked once, when the function is made).
let readOnlyBy (roots: Node list) : Node -> Node -> bool =
    let readersOf = readers (topo roots)
    let rootSet = HashSet<Node>(roots, HashIdentity.Reference)
    fun (reader: Node) (n: Node) ->
        not (rootSet.Contains n)
        && (match readersOf.TryGetValue n with
            | true, r -> r.Count = 1 && obj.ReferenceEquals(r.[0], reader)
            | _ -> false)

/// Rebuilds the graphs under `roots` bottom-up: each node is first rebuilt over its mapped operands, then passed
/// to `f`. Shared subgraphs are visited once. Returns the map from old to new nodes.
let mapBottomUp (f: Node -> Node) (roots: Node seq) : IReadOnlyDictionary<Node, Node> =
    let mapped = Dictionary<Node, Node>(HashIdentity.Reference)
    for n in topo roots do
        let kids = n.Children |> List.map (fun c -> mapped.[c])
        mapped.[n] <- f (Ops.withChildren n kids)
    mapped :> _

/// The first node under `roots` carrying `name`, if any.
let tryFindNamed (name: string) (roots: Node seq) =
    topo roots |> Array.tryFind (fun n -> n.Name = Some name)
