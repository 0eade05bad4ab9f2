// Gradient checkpointing as a graph transformation: the backward pass reads copies of the activations between
// checkpoints, rebuilt over the checkpoints, so the forward pass's own activations die when the forward is done.
module Lxt.Graph.Checkpoint

open System.Collections.Generic
open Lxt.Graph.Ops

/// Rewrites the forward + backward graphs under `outputs` to recompute activations instead of keeping them.
///
/// The forward pass is everything the checkpoints depend on. Its interior nodes are those that depend on a checkpoint,
/// are no checkpoint themselves and are depended on by one: the activations of the segments between checkpoints. Every
/// read of an interior node from outside the forward pass (the backward pass, relevance read at an inner node) is
/// redirected to its copy: the same op rebuilt over the copies of its operands, where a checkpoint `c` becomes
/// `Recompute c` and what depends on no checkpoint (weights, their transposes, masks) stays shared. Copies carry no
/// names, so a name keeps addressing one node. Values are unchanged: each copy is the same op on the same values.
/// Checkpoints not under `outputs` are ignored; an input may be one (the first segment is then recomputed too).
/// Plan.compileWith schedules each recomputed segment right before its backward.
let apply (checkpoints: Node list) (outputs: Node list) : Node list =
    let order = Traverse.topo outputs
    let reached = HashSet<Node>(order, HashIdentity.Reference)
    let cuts = HashSet<Node>(checkpoints |> Seq.filter reached.Contains, HashIdentity.Reference)
    if cuts.Count = 0 then outputs
    else
        let forward = HashSet<Node>(Traverse.topo cuts, HashIdentity.Reference)
        let afterCut = HashSet<Node>(HashIdentity.Reference)
        for n in order do
            if cuts.Contains n || n.Children |> List.exists afterCut.Contains then afterCut.Add n |> ignore
        let interior (n: Node) = forward.Contains n && afterCut.Contains n && not (cuts.Contains n)
        let copies = Dictionary<Node, Node>(HashIdentity.Reference)
        let copyOf (c: Node) = if cuts.Contains c then recompute c elif interior c then copies.[c] else c
        for n in order do
            if interior n then
                let copy = withChildren n (n.Children |> List.map copyOf)
                copies.[n] <- if copy.Name.IsSome then make copy.Op copy.Shape copy.DType None else copy
        let rebuilt = Dictionary<Node, Node>(HashIdentity.Reference)
        let image (c: Node) =
            if interior c then copies.[c] elif forward.Contains c then c else rebuilt.[c]
        for n in order do
            if not (forward.Contains n) then rebuilt.[n] <- withChildren n (n.Children |> List.map image)
        outputs |> List.map (fun o -> if forward.Contains o then o else rebuilt.[o])
