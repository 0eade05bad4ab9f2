// Plans: a graph compiled to an execution order with liveness, then run on a backend with pooled, reused buffers.
namespace Lxt.Graph

open System
open System.Collections.Generic

/// A compiled graph: leaves to bind, non-leaf nodes in execution order, and the step after which each value dies.
type Plan =
    { Outputs: Node[]
      Leaves: Node[]
      Steps: Node[]
      /// index of the last step that reads each node (Steps.Length for outputs)
      LastUse: IReadOnlyDictionary<Node, int> }

module Plan =
    let private isLeaf (n: Node) = match n.Op with Input _ | Parameter _ | Constant _ -> true | _ -> false

    /// Ops whose forward value is their operand's: they share its buffer instead of copying it.
    let isView (n: Node) = match n.Op with Reshape _ | StopGradient _ | GradientScale _ -> true | _ -> false

    let compile (outputs: Node list) : Plan =
        let order = Traverse.topo outputs
        let steps = order |> Array.filter (isLeaf >> not)
        let last = Dictionary<Node, int>(HashIdentity.Reference)
        steps |> Array.iteri (fun i n -> for c in n.Children do last.[c] <- i)
        for o in outputs do last.[o] <- steps.Length
        { Outputs = Array.ofList outputs; Leaves = order |> Array.filter isLeaf; Steps = steps; LastUse = last }

    /// Names of the inputs a plan needs fed on every run, with their nodes.
    let inputs (p: Plan) = p.Leaves |> Array.filter (fun n -> match n.Op with Input _ -> true | _ -> false)
    let parameters (p: Plan) = p.Leaves |> Array.filter (fun n -> match n.Op with Parameter _ -> true | _ -> false)

/// A plan bound to a backend: parameters are bound once, inputs per run; intermediate buffers are freed at their
/// last use into a pool and reused by later steps and later runs.
type Executable(plan: Plan, backend: IBackend) =
    let persistent = Dictionary<Node, IBuffer>(HashIdentity.Reference)
    let borrowed = HashSet<IBuffer>(HashIdentity.Reference)
    let pool = Dictionary<int, Stack<IBuffer>>()
    let mutable peakBytes = 0L
    let mutable liveBytes = 0L
    let elementBytes = if backend.IsDoublePrecision then 8L else 4L
    let leafName (n: Node) = match n.Op with Input s | Parameter s -> s | _ -> Node.Describe n

    do
        // constants are uploaded once
        for n in plan.Leaves do
            match n.Op with
            | Constant c ->
                let b = backend.Allocate(c.Values.Length)
                backend.UploadDouble(ReadOnlySpan c.Values, b)
                persistent.[n] <- b
            | _ -> ()

    let take (length: int) =
        match pool.TryGetValue length with
        | true, s when s.Count > 0 -> s.Pop()
        | _ ->
            liveBytes <- liveBytes + int64 length * elementBytes
            peakBytes <- max peakBytes liveBytes
            backend.Allocate length

    let give (b: IBuffer) =
        match pool.TryGetValue b.Length with
        | true, s -> s.Push b
        | _ -> let s = Stack() in s.Push b; pool.[b.Length] <- s

    let checkLength (n: Node) (b: IBuffer) =
        if b.Length <> Shape.numel n.Shape then
            raise (BindingException(sprintf "value for %s has %d elements, its shape %s needs %d"
                                        (leafName n) b.Length (Shape.show n.Shape) (Shape.numel n.Shape)))

    member _.Plan = plan
    member _.Backend = backend
    /// Largest number of bytes held by intermediate buffers at once (a measure of the plan's peak memory).
    member _.PeakIntermediateBytes = peakBytes

    /// Binds a parameter's value. An owned buffer is disposed with the executable; a borrowed one (owned = false,
    /// e.g. weights shared by several plans) is left to its owner. Parameters not in the plan are ignored.
    member _.BindParameter(name: string, value: IBuffer, owned: bool) =
        match plan.Leaves |> Array.tryFind (fun n -> n.Op = Parameter name) with
        | Some n ->
            checkLength n value
            match persistent.TryGetValue n with
            | true, old when not (obj.ReferenceEquals(old, value)) && not (borrowed.Remove old) -> old.Dispose()
            | _ -> ()
            persistent.[n] <- value
            if not owned then borrowed.Add value |> ignore
        | None -> if owned then value.Dispose()

    member this.BindParameter(name: string, value: IBuffer) = this.BindParameter(name, value, true)

    member _.IsBound(name: string) =
        plan.Leaves |> Array.exists (fun n -> n.Op = Parameter name && persistent.ContainsKey n)

    /// Runs the plan. `inputs` maps input names to buffers owned by the caller. Returns one fresh buffer per output;
    /// give them back with Recycle (or Dispose them).
    member _.Run(inputs: IReadOnlyDictionary<string, IBuffer>) : IBuffer[] =
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
        plan.Steps |> Array.iteri (fun i n ->
            if Plan.isView n then
                let b = value.[n.Children.Head]
                value.[n] <- b
                if owned.ContainsKey b then owned.[b] <- owned.[b] + 1
            else
                let out = take (Shape.numel n.Shape)
                let args = n.Children |> List.map (fun c -> value.[c]) |> Array.ofList
                backend.Execute(n, args, out)
                value.[n] <- out
                owned.[out] <- 1
            for c in List.distinct n.Children do
                if plan.LastUse.[c] = i then release c)
        let results =
            plan.Outputs |> Array.map (fun o ->
                let b = value.[o]
                let fresh = take b.Length
                backend.Copy(b, fresh)
                fresh)
        for o in Array.distinct plan.Outputs do release o
        results

    /// Returns output buffers of Run to the pool.
    member _.Recycle(buffers: IBuffer seq) = for b in buffers do give b

    interface IDisposable with
        member _.Dispose() =
            for b in persistent.Values do if not (borrowed.Contains b) then b.Dispose()
            persistent.Clear()
            for s in pool.Values do for b in s do b.Dispose()
            pool.Clear()
