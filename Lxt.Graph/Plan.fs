// Plans: a graph compiled to an execution order with liveness, then run on a backend with pooled, reused buffers.
namespace Lxt.Graph

open System
open System.Collections.Generic
open System.Diagnostics

/// A compiled graph: leaves to bind, non-leaf nodes in execution order, and the step after which each value dies.
type Plan =
    { Outputs: Node[]
      Leaves: Node[]
      Steps: Node[]
      /// index of the last step that reads each node (Steps.Length for outputs)
      LastUse: IReadOnlyDictionary<Node, int>
      /// Permutes that swap the last two axes and are read only by MatMuls: a backend implementing
      /// ITransposedMatMul reads their operand transposed instead of computing them.
      LazyTransposes: IReadOnlySet<Node>
      /// Slices read only by Concats: a backend implementing ISlicedConcat reads their operand through the slice
      /// instead of computing them.
      LazySlices: IReadOnlySet<Node>
      /// Fused pointwise groups by root (see Plan.fuse): a root's step computes its whole group from the group's
      /// operands; the other members and inlined constants are no steps. Empty for plans that are not fused.
      Fusion: IReadOnlyDictionary<Node, FusedGroup>
      /// Prologues by consumer (see Plan.fuseWith): the consumer's step reads its prologue group's operands and
      /// computes the group's value per element; no member of the group is a step. Empty unless a backend takes them.
      Prologues: IReadOnlyDictionary<Node, Prologue>
      /// Steps whose value is stored narrow (see Plan.narrowWhere), and the steps sharing their buffers (views, lazy
      /// transposes and slices). Empty unless a backend implementing INarrowValues narrows them.
      Narrow: IReadOnlySet<Node> }

/// How a plan is compiled.
type PlanOptions =
    { /// Gradient checkpointing: nodes of the forward pass (layer outputs, the input) between which the backward pass
      /// recomputes activations instead of keeping them (see Checkpoint.apply). Empty: every activation is kept.
      Checkpoints: Node list }

module PlanOptions =
    /// No checkpointing.
    let none = { Checkpoints = [] }

/// Time and traffic of one op kind over the runs of an executable (see Executable.Profiling).
type OpProfile =
    { Kind: string
      Count: int
      Seconds: float
      /// bytes of operands read plus bytes written
      Bytes: int64 }

module Plan =
    let private isLeaf (n: Node) = match n.Op with Input _ | Parameter _ | Constant _ -> true | _ -> false

    /// Ops whose forward value is their operand's: they share its buffer instead of copying it.
    let isView (n: Node) = match n.Op with Reshape _ | StopGradient _ | GradientScale _ | Recompute _ -> true | _ -> false

    /// True for a Permute that swaps the last two axes and keeps the others in place.
    let isLastTwoSwap (n: Node) =
        match n.Op with
        | Permute(p, _) ->
            let r = p.Length
            r >= 2 && p.[r - 1] = r - 2 && p.[r - 2] = r - 1 && Seq.forall (fun i -> p.[i] = i) (seq { 0 .. r - 3 })
        | _ -> false

    // Permute ∘ Permute is one Permute (or nothing): autodiff transposes transposed weights back, and this keeps the
    // plan from materialising either. Names are kept off composed nodes so no named copy of a node is computed twice.
    let private composePermutes (outputs: Node list) : Node list =
        let identity (p: int[]) = p |> Array.mapi (fun i q -> i = q) |> Array.forall id
        let map =
            outputs |> Traverse.mapBottomUp (fun n ->
                match n.Op with
                | Permute(p2, { Op = Permute(p1, x) }) ->
                    let p = Array.map (fun i -> p1.[i]) p2
                    if identity p then x else Ops.permute (List.ofArray p) x
                | _ -> n)
        outputs |> List.map (fun o -> map.[o])

    // (A·B)ᵀ = Bᵀ·Aᵀ: the transpose of a product that nothing else reads is the product of the swapped, transposed
    // operands, which products read in place (ITransposedMatMul): autodiff's gradient of a transposed operand (the
    // keys in q·kᵀ, through Qᵀ·dS) is then computed in its own layout instead of being computed, transposed and copied.
    // Values are unchanged up to the order of the products' sums; names stay on the node.
    let private transposeProducts (outputs: Node list) : Node list =
        let readOnlyBy = Traverse.readOnlyBy outputs
        let mapped = Dictionary<Node, Node>(HashIdentity.Reference)
        for n in Traverse.topo outputs do
            let m (c: Node) = mapped.[c]
            mapped.[n] <-
                match n.Op with
                | Permute(_, ({ Op = MatMul(a, b) } as product)) when isLastTwoSwap n && product.Name.IsNone && readOnlyBy n product ->
                    Ops.matmul (Ops.transpose -1 -2 (m b)) (Ops.transpose -1 -2 (m a)) |> Ops.namedAs n
                | _ -> Ops.withChildren n (n.Children |> List.map m)
        outputs |> List.map (fun o -> mapped.[o])

    // A unary op, or a binary op with a scalar, that reads the only Reshape of a pointwise value read by nothing else
    // is the same op on the value, reshaped: it then joins the value's fused group instead of costing a pass over
    // memory of its own (autodiff scales the softmax's relevance after reshaping it to the grouped-query layout of the
    // attention scores, one pass over [heads, tokens, tokens] per layer). Values are unchanged; names stay on the node.
    let private liftThroughReshapes (outputs: Node list) : Node list =
        let order = Traverse.topo outputs
        let readOnlyBy = Traverse.readOnlyBy outputs
        let liftable (n: Node) (v: Node) =
            match v.Op with
            | Reshape x -> Fusion.isPointwise x && readOnlyBy v x && readOnlyBy n v && v.Shape = n.Shape
            | _ -> false
        let scalar (s: Node) = Shape.numel s.Shape = 1
        let mapped = Dictionary<Node, Node>(HashIdentity.Reference)
        for n in order do
            let m (c: Node) = mapped.[c]
            let under (v: Node) = m v.Children.Head
            let lifted op = Ops.reshape n.Shape (Ops.make op [||] Float None) |> Ops.namedAs n
            mapped.[n] <-
                match n.Op with
                | Unary(o, v) when liftable n v -> lifted (Unary(o, under v))
                | Binary(o, v, s) when scalar s && liftable n v -> lifted (Binary(o, under v, Ops.reshape [||] (m s)))
                | Binary(o, s, v) when scalar s && liftable n v -> lifted (Binary(o, Ops.reshape [||] (m s), under v))
                | _ -> Ops.withChildren n (n.Children |> List.map m)
        outputs |> List.map (fun o -> mapped.[o])

    // Σⱼ (G·W)ᵢⱼ Pᵢⱼ = Σₖ Gᵢₖ (P·Wᵀ)ᵢₖ: the row sum of a product's result times a value P is the row sum of the
    // product's left operand times P·Wᵀ. Where P·Wᵀ is in the graph already, the sum reads two values of the product's
    // inner size instead of two of its result's: the softmax's backward pass sums dP ∘ P over rows of [heads, tokens,
    // tokens], where dP = dO·Vᵀ, and P·V is the attention's output, so it sums dO ∘ O over [heads, tokens, head size]
    // once the tokens outnumber the head size. Reshapes that keep the last axis are seen through. No product is added;
    // values are equal up to rounding.
    let private sumRowsThroughProducts (outputs: Node list) : Node list =
        // the graph's products by operands and reshapes by operand and shape, whatever their names
        let products = Dictionary<struct (int * int), Node>()
        let reshapes = Dictionary<struct (int * string), Node>()
        for n in Traverse.topo outputs do
            match n.Op with
            | MatMul(a, b) -> products.TryAdd(struct (a.Id, b.Id), n) |> ignore
            | Reshape x -> reshapes.TryAdd(struct (x.Id, Shape.show n.Shape), n) |> ignore
            | _ -> ()
        let reshaped (shape: Shape) (x: Node) =
            if x.Shape = shape then Some x
            else match reshapes.TryGetValue(struct (x.Id, Shape.show shape)) with | true, r -> Some r | _ -> None
        let last (n: Node) = if n.Shape.Length = 0 then -1 else n.Shape.[n.Shape.Length - 1]
        let rec peel (n: Node) = match n.Op with Reshape x when last x = last n -> peel x | _ -> n
        // the row sums of `side` ∘ `p` through the product under `side`, when its counterpart P·Wᵀ is in the graph
        let through (side: Node) (p: Node) =
            let m = peel side
            match m.Op with
            | MatMul(g, ({ Op = Permute(_, v) } as w)) when isLastTwoSwap w ->
                reshaped m.Shape p
                |> Option.bind (fun p -> match products.TryGetValue(struct (p.Id, v.Id)) with | true, o -> Some o | _ -> None)
                |> Option.filter (fun o -> Shape.numel o.Shape < Shape.numel p.Shape) // fewer values to read
                |> Option.map (fun counterpart -> Ops.reduceSum [ m.Shape.Length - 1 ] true (Ops.mul g counterpart))
            | _ -> None
        let map =
            outputs |> Traverse.mapBottomUp (fun n ->
                match n.Op with
                | Reduce(Sum, [| axis |], _, ({ Op = Binary(Mul, u, v) } as x))
                    when axis = x.Shape.Length - 1 && u.Shape = x.Shape && v.Shape = x.Shape ->
                    match through u v |> Option.orElse (through v u) with
                    | Some sums -> Ops.reshape n.Shape sums |> Ops.namedAs n
                    | None -> n
                | _ -> n)
        outputs |> List.map (fun o -> map.[o])

    // Without recomputation, depth-first order from the outputs. With it, each node's operands are visited in order of
    // the latest checkpoint they are recomputed from, latest first: the backward of every segment above runs before a
    // segment is recomputed, so only one segment's recomputed activations are alive at a time.
    let private schedule (outputs: Node list) : Node[] =
        let plain = Traverse.topo outputs
        if not (plain |> Array.exists (fun n -> match n.Op with Recompute _ -> true | _ -> false)) then plain
        else
            let rank = Dictionary<Node, int>(HashIdentity.Reference)
            plain |> Array.iteri (fun i n -> rank.[n] <- i)
            let segment = Dictionary<Node, int>(HashIdentity.Reference) // the latest checkpoint every path reaches: min rank
            for n in plain do
                segment.[n] <-
                    match n.Op with
                    | Recompute c -> rank.[c]
                    | _ -> n.Children |> List.fold (fun s c -> min s segment.[c]) Int32.MaxValue
            let latestFirst (nodes: Node list) = nodes |> List.sortBy (fun c -> -segment.[c])
            Traverse.topoWith (fun n -> latestFirst n.Children) (List.rev (latestFirst outputs))

    /// Compiles `outputs` with options (see PlanOptions).
    let compileWith (options: PlanOptions) (outputs: Node list) : Plan =
        let outputs =
            outputs |> sumRowsThroughProducts |> Checkpoint.apply options.Checkpoints |> transposeProducts |> composePermutes |> liftThroughReshapes
        let order = schedule outputs
        let steps = order |> Array.filter (isLeaf >> not)
        let last = Dictionary<Node, int>(HashIdentity.Reference)
        steps |> Array.iteri (fun i n -> for c in n.Children do last.[c] <- i)
        for o in outputs do last.[o] <- steps.Length
        // a transpose stays lazy only when every reader is a MatMul and it is no output
        let readers = Traverse.readers steps
        let outputSet = HashSet<Node>(outputs, HashIdentity.Reference)
        let lazyT = HashSet<Node>(HashIdentity.Reference)
        for n in steps do
            if isLastTwoSwap n && not (outputSet.Contains n) then
                match readers.TryGetValue n with
                | true, r when r |> Seq.forall (fun u -> match u.Op with MatMul _ -> true | _ -> false) -> lazyT.Add n |> ignore
                | _ -> ()
        let lazySlices = HashSet<Node>(HashIdentity.Reference)
        for n in steps do
            match n.Op, readers.TryGetValue n with
            | Slice _, (true, r) when not (outputSet.Contains n) && r |> Seq.forall (fun u -> match u.Op with Concat _ -> true | _ -> false) ->
                lazySlices.Add n |> ignore
            | _ -> ()
        { Outputs = Array.ofList outputs; Leaves = order |> Array.filter isLeaf; Steps = steps; LastUse = last
          LazyTransposes = lazyT; LazySlices = lazySlices; Fusion = Dictionary<Node, FusedGroup>(HashIdentity.Reference)
          Prologues = Dictionary<Node, Prologue>(HashIdentity.Reference)
          Narrow = HashSet<Node>(HashIdentity.Reference) }

    let compile (outputs: Node list) : Plan = compileWith PlanOptions.none outputs

    /// What a step reads: a fused root its group's operands, a prologue's consumer its group's operands, any other
    /// step its children.
    let reads (plan: Plan) (n: Node) : Node list =
        match plan.Fusion.TryGetValue n with
        | true, g -> List.ofArray g.Operands
        | _ ->
            match plan.Prologues.TryGetValue n with
            | true, p -> List.ofArray p.Group.Operands
            | _ -> n.Children

    /// True when a plan has fused groups or prologues.
    let isFused (plan: Plan) = plan.Fusion.Count > 0 || plan.Prologues.Count > 0

    /// The plan with its pointwise chains fused (see Fusion.groupsAndPrologues): members other than the roots and the
    /// inlined constants leave the steps, and an operand of a group lives until its root's step. A Reduce or Softmax
    /// that `takesPrologue` accepts and whose operand is a group root read by it alone computes that group itself:
    /// the whole group leaves the steps and its operands live until the consumer's step. Values are unchanged; a
    /// backend implementing IFusedPointwise (and IFusedPrologue for prologues) runs it. A plan already fused is
    /// returned as it is.
    let fuseWhere (fusible: Node -> bool) (takesPrologue: Node -> bool) (plan: Plan) : Plan =
        if isFused plan then plan
        else
            let groups, prologues = Fusion.groupsAndProloguesWhere fusible plan.Steps plan.Outputs takesPrologue
            if groups.Length = 0 && prologues.Length = 0 then plan
            else
                let byRoot = Dictionary<Node, FusedGroup>(HashIdentity.Reference)
                let byConsumer = Dictionary<Node, Prologue>(HashIdentity.Reference)
                let hidden = HashSet<Node>(HashIdentity.Reference)
                for g in groups do
                    byRoot.[g.Root] <- g
                    for m in g.Members do if not (obj.ReferenceEquals(m, g.Root)) then hidden.Add m |> ignore
                    for c in g.Constants do hidden.Add c |> ignore
                for p in prologues do
                    byConsumer.[p.Consumer] <- p
                    for m in p.Group.Members do hidden.Add m |> ignore
                    for c in p.Group.Constants do hidden.Add c |> ignore
                let steps = plan.Steps |> Array.filter (hidden.Contains >> not)
                let fused = { plan with Steps = steps; Fusion = byRoot; Prologues = byConsumer }
                let last = Dictionary<Node, int>(HashIdentity.Reference)
                steps |> Array.iteri (fun i n -> for c in reads fused n do last.[c] <- i)
                for o in plan.Outputs do last.[o] <- steps.Length
                { fused with LastUse = last }

    /// As fuseWhere with every pointwise node fusible.
    let fuseWith (takesPrologue: Node -> bool) (plan: Plan) : Plan = fuseWhere (fun _ -> true) takesPrologue plan

    /// The plan with its pointwise chains fused and no prologues (see fuseWith).
    let fuse (plan: Plan) : Plan = fuseWith (fun _ -> false) plan

    /// Names of the inputs a plan needs fed on every run, with their nodes.
    let inputs (p: Plan) = p.Leaves |> Array.filter (fun n -> match n.Op with Input _ -> true | _ -> false)
    let parameters (p: Plan) = p.Leaves |> Array.filter (fun n -> match n.Op with Parameter _ -> true | _ -> false)

    /// Names of the parameters read only as matrix-product operands: every reader is a MatMul, a view sharing the
    /// parameter's buffer (Reshape, StopGradient, ...) read only so in turn, or, when `lazyTransposes` (the backend
    /// implements ITransposedMatMul), one of the plan's lazy transposes. Neither the parameter nor such a view is an
    /// output. A backend implementing ILowPrecisionWeights may store these parameters narrower.
    let matMulOnlyParameters (lazyTransposes: bool) (p: Plan) : Set<string> =
        // in a fused plan a parameter may be read by a fused group's or prologue's program: its step reads it
        let readers = Traverse.readersBy (reads p) p.Steps
        let outputs = HashSet<Node>(p.Outputs, HashIdentity.Reference)
        let rec onlyMatMuls (n: Node) =
            not (outputs.Contains n)
            && (match readers.TryGetValue n with
                | true, r ->
                    r |> Seq.forall (fun u ->
                        match u.Op with
                        | MatMul _ -> true
                        | _ when isView u -> onlyMatMuls u
                        | _ when lazyTransposes && p.LazyTransposes.Contains u -> onlyMatMuls u
                        | _ -> false)
                | _ -> false)
        parameters p
        |> Array.choose (fun n -> match n.Op with Parameter name when onlyMatMuls n -> Some name | _ -> None)
        |> Set.ofArray

    /// True when a step shares its operand's buffer on a backend reading lazy transposes and slices in place
    /// (ITransposedMatMul, ISlicedConcat): a view, a lazy transpose or a lazy slice. Such steps launch nothing.
    let sharesBuffer (plan: Plan) (n: Node) = isView n || plan.LazyTransposes.Contains n || plan.LazySlices.Contains n

    /// True when a step is computed as a fused group's root or a prologue's consumer.
    let isFusedStep (plan: Plan) (n: Node) = plan.Fusion.ContainsKey n || plan.Prologues.ContainsKey n

    /// The plan with the values a backend stores narrow marked: a step `writes` accepts (given whether it is fused,
    /// which of the values it reads are narrow, and whether every reader rounds the value anyway) whose every reader
    /// `readsNarrow` accepts for it, where a reader that shares the value's buffer (see sharesBuffer) passes the
    /// question on to its own readers. A value is read rounded when each reader `rounds` it, or only moves values
    /// (layout ops, buffer sharers) into a value read rounded. No output, input or parameter is narrow, nor anything sharing the
    /// buffer of one. Steps decide in order, so the operands a step is told about are decided; `narrowWeights` says
    /// parameters read only by products are stored narrow (ILowPrecisionWeights). Values are unchanged up to the
    /// backend's rounding; steps are the same. Call it on the plan as it runs (fused, when the backend fuses); a plan
    /// whose narrow values stay the same is returned as it is.
    let narrowWhere (writes: Node -> bool -> bool[] -> bool -> bool) (readsNarrow: Node -> bool -> Node -> bool) (rounds: Node -> Node -> bool)
                    (narrowWeights: bool) (plan: Plan) : Plan =
        let readers = Traverse.readersBy (reads plan) plan.Steps
        let outputs = HashSet<Node>(plan.Outputs, HashIdentity.Reference)
        let shares (n: Node) = sharesBuffer plan n
        let matrixWeights = if narrowWeights then matMulOnlyParameters true plan else Set.empty
        let rec isMatrixWeight (n: Node) =
            match n.Op with
            | Parameter name -> matrixWeights.Contains name
            | _ -> shares n && isMatrixWeight n.Children.Head
        // every step reading n's buffer reads narrow; the steps sharing it are collected
        let rec readNarrow (sharing: ResizeArray<Node>) (n: Node) =
            not (outputs.Contains n)
            && (match readers.TryGetValue n with
                | true, r ->
                    r |> Seq.forall (fun u ->
                        if shares u then sharing.Add u; readNarrow sharing u
                        else readsNarrow u (isFusedStep plan u) n)
                | _ -> true)
        // readers before the values they read: which values every reader rounds anyway
        let rounded = HashSet<Node>(HashIdentity.Reference)
        let movesValues (u: Node) =
            shares u || (not (isFusedStep plan u) && match u.Op with Permute _ | Slice _ | Concat _ | Broadcast _ -> true | _ -> false)
        for i in plan.Steps.Length - 1 .. -1 .. 0 do
            let n = plan.Steps.[i]
            match readers.TryGetValue n with
            | true, r when not (outputs.Contains n) && r |> Seq.forall (fun u -> rounds u n || (movesValues u && rounded.Contains u)) ->
                rounded.Add n |> ignore
            | _ -> ()
        let narrow = HashSet<Node>(HashIdentity.Reference)
        for n in plan.Steps do
            let narrowOperands = reads plan n |> List.map (fun c -> narrow.Contains c || isMatrixWeight c) |> Array.ofList
            if not (shares n) && writes n (isFusedStep plan n) narrowOperands (rounded.Contains n) then
                let sharing = ResizeArray<Node>()
                if readNarrow sharing n then
                    narrow.Add n |> ignore
                    for v in sharing do narrow.Add v |> ignore
        if narrow.SetEquals plan.Narrow then plan else { plan with Narrow = narrow }

    /// Pointwise ops whose output may overwrite an operand of the same shape (see IInPlaceElementwise).
    let isPointwise (n: Node) = Fusion.isPointwise n

    /// The op kind profiles group by: the case name, with the function for unary and binary ops.
    let kindOf (n: Node) =
        match n.Op with
        | Unary(o, _) -> "Unary " + Node.CaseName o
        | Binary(o, _, _) -> "Binary " + Node.CaseName o
        | Reduce(o, _, _, _) -> "Reduce " + Node.CaseName o
        | op -> op.GetType().Name

/// A plan bound to a backend: parameters are bound once, inputs per run; intermediate buffers are freed at their
/// last use into a pool and reused by later steps and later runs. On backends that allow it, lazy transposes are
/// read by the MatMul itself, pointwise results overwrite an operand that dies at that step, and pointwise chains run
/// fused, with reductions and softmaxes reading their operand through a fused prologue where the backend implements
/// IFusedPrologue (the executable's Plan is then Plan.fuseWith of the plan it was given).
type Executable(compiled: Plan, backend: IBackend) =
    let fusing = match backend with :? IFusedPointwise as f when f.SupportsFusedPointwise -> Some f | _ -> None
    let prologues = match backend with :? IFusedPrologue as p when fusing.IsSome -> Some p | _ -> None
    let plan =
        if compiled.Prologues.Count > 0 && prologues.IsNone then
            raise (NotSupportedException(sprintf "the plan gives %d reductions or softmaxes a fused prologue but backend %s does not run them (IFusedPrologue); run it unfused (Plan.compile without Plan.fuseWith)"
                                             compiled.Prologues.Count backend.Name))
        elif fusing.IsSome then
            let takesPrologue = match prologues with Some p -> p.TakesPrologue | None -> (fun _ -> false)
            Plan.fuseWhere fusing.Value.Fuses takesPrologue compiled
        elif compiled.Fusion.Count > 0 then
            raise (NotSupportedException(sprintf "the plan fuses %d pointwise groups but backend %s does not run fused groups (IFusedPointwise); run it unfused (Plan.compile without Plan.fuse)"
                                             compiled.Fusion.Count backend.Name))
        else compiled
    // narrow values need lazy transposes and slices read as the plan marks them (INarrowValues backends implement all)
    let narrowing =
        match backend with
        | :? INarrowValues as v when (backend :? ITransposedMatMul) && (match backend with :? ISlicedConcat as c -> c.ReadsSlicesInPlace | _ -> false) -> Some v
        | _ -> None
    let plan =
        match narrowing with
        | Some v ->
            let narrowWeights = match backend with :? ILowPrecisionWeights as w -> w.NarrowsMatrixWeights | _ -> false
            Plan.narrowWhere (fun n fused operands rounded -> v.WritesNarrow(n, fused, operands, rounded)) (fun n fused operand -> v.ReadsNarrow(n, fused, operand)) (fun n operand -> v.RoundsOperand(n, operand)) narrowWeights plan
        | None when plan.Narrow.Count > 0 ->
            raise (NotSupportedException(sprintf "the plan stores %d values narrow but backend %s has no narrow buffers (INarrowValues); compile it without Plan.narrowWhere"
                                             plan.Narrow.Count backend.Name))
        | None -> plan
    let persistent = Dictionary<Node, IBuffer>(HashIdentity.Reference)
    let borrowed = HashSet<IBuffer>(HashIdentity.Reference)
    // free buffers by length and width (narrow or not)
    let pool = Dictionary<struct (int * bool), Stack<IBuffer>>()
    let narrowBuffers = HashSet<IBuffer>(HashIdentity.Reference)
    let mutable peakBytes = 0L
    let mutable liveBytes = 0L
    let elementBytes = if backend.IsDoublePrecision then 8L else 4L
    let leafName (n: Node) = match n.Op with Input s | Parameter s -> s | _ -> Node.Describe n
    let transposed = match backend with :? ITransposedMatMul as t -> Some t | _ -> None
    let inPlace = match backend with :? IInPlaceElementwise as b -> b.SupportsInPlaceElementwise | _ -> false
    let sliced = match backend with :? ISlicedConcat as c when c.ReadsSlicesInPlace -> Some c | _ -> None
    let isLazy (n: Node) =
        transposed.IsSome && plan.LazyTransposes.Contains n || sliced.IsSome && plan.LazySlices.Contains n
    let profile = Dictionary<string, OpProfile>()
    let mutable profiling = false
    // recording and replay (IRunCapture): the first run warms up, the second is recorded, later runs replay it
    let capture = match backend with :? IRunCapture as c -> Some c | _ -> None
    let mutable runs = 0
    let mutable recording : IRecordedRun option = None
    let mutable captureFailed = false
    let stableInputs = Dictionary<string, IBuffer>()
    let mutable stableOutputs : IBuffer[] = [||]
    let pinned = ResizeArray<IBuffer>()

    do
        // constants are uploaded once
        for n in plan.Leaves do
            match n.Op with
            | Constant c ->
                let b = backend.Allocate(c.Values.Length)
                backend.UploadDouble(ReadOnlySpan c.Values, b)
                persistent.[n] <- b
            | _ -> ()

    // a new buffer, counted in the executable's peak
    let allocateAs (narrow: bool) (length: int) =
        let bytes = if narrow then int64 narrowing.Value.NarrowElementBytes else elementBytes
        liveBytes <- liveBytes + int64 length * bytes
        peakBytes <- max peakBytes liveBytes
        if narrow then
            let b = narrowing.Value.AllocateNarrow length
            narrowBuffers.Add b |> ignore
            b
        else backend.Allocate length

    let allocate (length: int) = allocateAs false length

    let takeAs (narrow: bool) (length: int) =
        match pool.TryGetValue(struct (length, narrow)) with
        | true, s when s.Count > 0 -> s.Pop()
        | _ -> allocateAs narrow length

    let take (length: int) = takeAs false length

    let give (b: IBuffer) =
        let key = struct (b.Length, narrowBuffers.Contains b)
        match pool.TryGetValue key with
        | true, s -> s.Push b
        | _ -> let s = Stack() in s.Push b; pool.[key] <- s

    let checkLength (n: Node) (b: IBuffer) =
        if b.Length <> Shape.numel n.Shape then
            raise (BindingException(sprintf "value for %s has %d elements, its shape %s needs %d"
                                        (leafName n) b.Length (Shape.show n.Shape) (Shape.numel n.Shape)))

    let record (n: Node) (seconds: float) (args: IBuffer[]) =
        let kind =
            match n.Op with
            | MatMul(a, b) ->
                let t (x: Node) = if isLazy x then "ᵀ" else ""
                sprintf "MatMul %s%s·%s%s" (Shape.show a.Shape) (t a) (Shape.show b.Shape) (t b)
            | _ ->
                match plan.Fusion.TryGetValue n with
                | true, g -> sprintf "Fused %d ops to %s" g.Members.Length (Plan.kindOf n)
                | _ ->
                    match plan.Prologues.TryGetValue n with
                    | true, p -> sprintf "%s after %d fused ops" (Plan.kindOf n) p.Group.Members.Length
                    | _ -> Plan.kindOf n
        // a narrow result, or narrow operands (narrow values, narrow weights bound as parameters), show in the kind:
        // their bytes per value differ
        let isNarrow (b: IBuffer) = narrowing |> Option.exists (fun v -> v.IsNarrow b)
        let kind =
            let narrowIn = args |> Array.exists isNarrow
            match plan.Narrow.Contains n, narrowIn with
            | true, _ -> kind + " (narrow)"
            | false, true -> kind + " (narrow in)"
            | _ -> kind
        let width narrow = if narrow then int64 narrowing.Value.NarrowElementBytes else elementBytes
        let bytes =
            (args |> Array.sumBy (fun b -> int64 b.Length * width (isNarrow b)))
            + int64 (Shape.numel n.Shape) * width (plan.Narrow.Contains n)
        match profile.TryGetValue kind with
        | true, p -> profile.[kind] <- { p with Count = p.Count + 1; Seconds = p.Seconds + seconds; Bytes = p.Bytes + bytes }
        | _ -> profile.[kind] <- { Kind = kind; Count = 1; Seconds = seconds; Bytes = bytes }

    /// The plan this executable runs: the one it was given, fused when the backend runs fused groups.
    member _.Plan = plan
    member _.Backend = backend
    /// Largest number of bytes held by intermediate buffers at once (a measure of the plan's peak memory).
    member _.PeakIntermediateBytes = peakBytes

    /// When true, runs time every step and add it to Profile, grouped by op kind.
    member _.Profiling with get () = profiling and set v = profiling <- v
    /// Time and traffic per op kind over the profiled runs, slowest first.
    member _.Profile : OpProfile[] = profile.Values |> Seq.sortByDescending (fun p -> p.Seconds) |> Array.ofSeq
    member _.ResetProfile() = profile.Clear()

    /// Binds a parameter's value. An owned buffer is disposed with the executable; a borrowed one (owned = false,
    /// e.g. weights shared by several plans) is left to its owner. Parameters not in the plan are ignored.
    member this.BindParameter(name: string, value: IBuffer, owned: bool) =
        match plan.Leaves |> Array.tryFind (fun n -> n.Op = Parameter name) with
        | Some n ->
            checkLength n value
            match persistent.TryGetValue n with
            | true, old when not (obj.ReferenceEquals(old, value)) ->
                this.DropRecording() // it reads the old buffer
                if not (borrowed.Remove old) then old.Dispose()
            | _ -> ()
            persistent.[n] <- value
            if not owned then borrowed.Add value |> ignore
        | None -> if owned then value.Dispose()

    member this.BindParameter(name: string, value: IBuffer) = this.BindParameter(name, value, true)

    member _.IsBound(name: string) =
        plan.Leaves |> Array.exists (fun n -> n.Op = Parameter name && persistent.ContainsKey n)

    // Runs the steps. Outputs are copied into `into` when given (the recorded run), else into fresh pooled buffers.
    member private _.RunSteps(inputs: IReadOnlyDictionary<string, IBuffer>, into: IBuffer[]) : IBuffer[] =
        let value = Dictionary<Node, IBuffer>(HashIdentity.Reference)
        let owned = Dictionary<IBuffer, int>(HashIdentity.Reference) // live nodes sharing a pooled buffer
        let missing =
            [ for n in Plan.inputs plan do
                match n.Op with
                | Input name when not (inputs.ContainsKey name) -> yield sprintf "'%s' %s" name (Shape.show n.Shape)
                | _ -> () ]
        if not missing.IsEmpty then
            raise (BindingException("no value was given for input " + String.Join(", ", missing)))
        for n in plan.Leaves do
            match n.Op with
            | Input name ->
                let b = inputs.[name]
                checkLength n b
                value.[n] <- b
            | Parameter name ->
                match persistent.TryGetValue n with
                | true, b -> value.[n] <- b
                | _ -> raise (BindingException(sprintf "parameter '%s' %s is not bound" name (Shape.show n.Shape)))
            | _ -> value.[n] <- persistent.[n]
        let release (n: Node) =
            match value.TryGetValue n with
            | true, b when owned.ContainsKey b ->
                owned.[b] <- owned.[b] - 1
                if owned.[b] = 0 then owned.Remove b |> ignore; give b
            | _ -> ()
        let share (n: Node) (b: IBuffer) =
            value.[n] <- b
            if owned.ContainsKey b then owned.[b] <- owned.[b] + 1
        // a pooled operand of the output's shape, read by no other live node and dying here, takes the result
        let reusable (i: int) (n: Node) (reads: Node list) =
            if not (inPlace && (Plan.isPointwise n || plan.Fusion.ContainsKey n)) then None
            else
                reads |> List.tryPick (fun c ->
                    if c.Shape = n.Shape && plan.LastUse.[c] = i && plan.Narrow.Contains c = plan.Narrow.Contains n then
                        let b = value.[c]
                        match owned.TryGetValue b with
                        | true, 1 -> Some b
                        | _ -> None
                    else None)
        let clock = Stopwatch()
        plan.Steps |> Array.iteri (fun i n ->
            let reads = Plan.reads plan n
            if Plan.isView n || isLazy n then share n value.[n.Children.Head]
            else
                if profiling then clock.Restart()
                let args = reads |> List.map (fun c -> value.[c]) |> Array.ofList
                let out =
                    match reusable i n reads with
                    | Some b -> owned.[b] <- owned.[b] + 1; b // the operand's release below leaves it to n
                    | None -> let b = takeAs (plan.Narrow.Contains n) (Shape.numel n.Shape) in owned.[b] <- 1; b
                match n.Op, transposed with
                | MatMul(a, b), Some t when isLazy a || isLazy b ->
                    t.ExecuteMatMul(n, args.[0], isLazy a, args.[1], isLazy b, out)
                | Concat(_, xs), _ when xs |> List.exists isLazy ->
                    sliced.Value.ExecuteConcat(n, args, xs |> List.map isLazy |> Array.ofList, out)
                | _ ->
                    match plan.Fusion.TryGetValue n, fusing with
                    | (true, g), Some f -> f.ExecuteFused(g, args, out)
                    | _ ->
                        match plan.Prologues.TryGetValue n, prologues with
                        | (true, p), Some f -> f.ExecuteWithPrologue(p, args, out)
                        | _ -> backend.Execute(n, args, out)
                value.[n] <- out
                if profiling then record n clock.Elapsed.TotalSeconds args
            for c in List.distinct reads do
                if plan.LastUse.[c] = i then release c)
        let results =
            plan.Outputs |> Array.mapi (fun i o ->
                let b = value.[o]
                let target = if isNull into then take b.Length else into.[i]
                backend.Copy(b, target)
                target)
        for o in Array.distinct plan.Outputs do release o
        results

    // The caller's inputs copied into the executable's own buffers, which a recording reads, each stored as the
    // caller's is (narrow or not); None when an input is missing, of the wrong length, or stored otherwise than at the
    // first staging (the plain run then reports it, or runs it as given).
    member private this.Stage(inputs: IReadOnlyDictionary<string, IBuffer>) : IReadOnlyDictionary<string, IBuffer> option =
        let nodes = Plan.inputs plan
        let narrow (b: IBuffer) = match backend with :? INarrowValues as v -> v.IsNarrow b | _ -> false
        let fits (n: Node) =
            match n.Op with
            | Input name ->
                match inputs.TryGetValue name with
                | true, b ->
                    b.Length = Shape.numel n.Shape
                    && (match stableInputs.TryGetValue name with | true, s -> narrow s = narrow b | _ -> true)
                | _ -> false
            | _ -> false
        if not (nodes |> Array.forall fits) then None
        else
            for n in nodes do
                match n.Op with
                | Input name ->
                    let given = inputs.[name]
                    let stable =
                        match stableInputs.TryGetValue name with
                        | true, b -> b
                        | _ ->
                            let length = Shape.numel n.Shape
                            let b =
                                match backend with
                                | :? INarrowValues as v when narrow given -> v.AllocateNarrow length
                                | _ -> allocate length
                            stableInputs.[name] <- b
                            b
                    backend.Copy(given, stable)
                | _ -> ()
            Some(stableInputs :> IReadOnlyDictionary<string, IBuffer>)

    member private _.Fresh() =
        stableOutputs |> Array.map (fun s -> let f = take s.Length in backend.Copy(s, f); f)

    member private _.DropRecording() =
        match recording with
        | Some r ->
            r.Dispose()
            recording <- None
            for b in pinned do give b
            pinned.Clear()
            runs <- 1
        | None -> ()

    /// True once runs replay a recording of the plan's device work (on backends implementing IRunCapture).
    member _.IsReplaying = recording.IsSome

    /// Runs the plan. `inputs` maps input names to buffers owned by the caller. Returns one fresh buffer per output;
    /// give them back with Recycle (or Dispose them). On a backend implementing IRunCapture, the second run is recorded
    /// and later runs replay the recording with the new inputs (not while profiling).
    member this.Run(inputs: IReadOnlyDictionary<string, IBuffer>) : IBuffer[] =
        match recording with
        | Some r when not profiling && capture.Value.CanCapture ->
            match this.Stage inputs with
            | Some _ ->
                r.Replay()
                this.Fresh()
            | None -> this.RunSteps(inputs, null)
        | _ ->
            // a plain run while a recording exists (profiling, or capture turned off) gets the recording's buffers
            // back instead of allocating a second set; the next run that may capture records again
            this.DropRecording()
            let wanted =
                recording.IsNone && runs >= 1 && not captureFailed && not profiling
                && (match capture with Some c -> c.CanCapture | None -> false)
            runs <- runs + 1
            match (if wanted then this.Stage inputs else None) with
            | None -> this.RunSteps(inputs, null)
            | Some staged ->
                if stableOutputs.Length = 0 then
                    stableOutputs <- plan.Outputs |> Array.map (fun o -> allocate (Shape.numel o.Shape))
                let c = capture.Value
                c.BeginCapture()
                let recorded =
                    try
                        this.RunSteps(staged, stableOutputs) |> ignore
                        Ok(c.EndCapture())
                    with e ->
                        (try (c.EndCapture()).Dispose() with _ -> ())
                        Error e
                match recorded with
                | Ok r ->
                    // the recording may read or write any pooled buffer: none is handed out again while it lives
                    for s in pool.Values do
                        pinned.AddRange s
                        s.Clear()
                    recording <- Some r
                    r.Replay()
                    this.Fresh()
                | Error _ ->
                    captureFailed <- true
                    this.RunSteps(inputs, null)

    /// Returns output buffers of Run to the pool.
    member _.Recycle(buffers: IBuffer seq) = for b in buffers do give b

    interface IDisposable with
        member this.Dispose() =
            this.DropRecording()
            for b in stableInputs.Values do b.Dispose()
            stableInputs.Clear()
            for b in stableOutputs do b.Dispose()
            stableOutputs <- [||]
            for b in persistent.Values do if not (borrowed.Contains b) then b.Dispose()
            persistent.Clear()
            for s in pool.Values do for b in s do b.Dispose()
            pool.Clear()
