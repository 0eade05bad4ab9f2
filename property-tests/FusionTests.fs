// Specifications of pointwise fusion: Plan.fuse only hides values nobody else reads, computes every node once, and
// the GPU backend's fused kernel (on ILGPU's CPU accelerator) computes what the float64 reference computes, on random
// pointwise graphs, with checkpointing, in place, and on the llama fixture's relevance graph. Prologues: a softmax or
// trailing reduction reads a pointwise value read by it alone through the value's program, and agrees likewise.
module Lxt.Tests.FusionTests

open System
open System.Collections.Generic
open Expecto
open Lxt
open Lxt.Graph
open Lxt.Graph.Ops
open Lxt.Rules
open Lxt.Backend.Gpu

let private shared = lazy (GpuBackend.Create GpuKind.CpuAccelerator)
let private gpu () = shared.Force() :> IBackend
let private config = BackendConformance.config

/// Everything wrong with `fused` as the fusion of `plan` (empty when it is a valid fusion).
let violations (plan: Plan) (fused: Plan) : string list =
    let problems = ResizeArray<string>()
    let bad fmt = Printf.kprintf problems.Add fmt
    let readers = Dictionary<Node, HashSet<Node>>(HashIdentity.Reference)
    for n in plan.Steps do
        for c in n.Children do
            match readers.TryGetValue c with
            | true, r -> r.Add n |> ignore
            | _ -> readers.[c] <- HashSet<Node>([ n ], HashIdentity.Reference)
    let readersOf (n: Node) = match readers.TryGetValue n with | true, r -> Seq.toList r | _ -> []
    let outputs = HashSet<Node>(plan.Outputs, HashIdentity.Reference)
    // the groups computing each interior node: one, or several for a node computed from one value through pointwise
    // nodes, views and constants
    let interiorOf = Dictionary<Node, ResizeArray<FusedGroup>>(HashIdentity.Reference)
    let sources = Dictionary<Node, Set<int>>(HashIdentity.Reference)
    for n in plan.Steps do
        if Fusion.isPointwise n || Fusion.isIdentityView n then
            sources.[n] <- n.Children |> List.map (fun c ->
                match c.Op with
                | Fill _ -> Set.empty
                | _ -> match sources.TryGetValue c with | true, s -> s | _ -> Set.singleton c.Id) |> Set.unionMany
    let recomputable (n: Node) = sources.[n].Count = 1
    let constants = HashSet<Node>(HashIdentity.Reference)
    let fusedMember = HashSet<Node>(HashIdentity.Reference)
    // a group's members, with its root hidden too (and read by `consumer` only) when it is a prologue's group
    let checkGroup (g: FusedGroup) (consumer: Node option) =
        let root = g.Root
        if not (obj.ReferenceEquals(Array.last g.Members, root)) then bad "the root of %s is not its last member" (Node.Describe root)
        for m in g.Members do
            fusedMember.Add m |> ignore
            if not (Fusion.isPointwise m || (Fusion.isIdentityView m && not (obj.ReferenceEquals(m, root)))) then
                bad "%s is fused but neither pointwise nor an interior identity view" (Node.Describe m)
            if consumer.IsSome || not (obj.ReferenceEquals(m, root)) then
                match interiorOf.TryGetValue m with
                | true, gs ->
                    if not (recomputable m) then bad "%s is interior to two groups but reads more than one operand" (Node.Describe m)
                    gs.Add g
                | _ -> interiorOf.[m] <- ResizeArray [ g ]
                if m.Shape <> root.Shape && Shape.tryBroadcast m.Shape root.Shape <> Some root.Shape then
                    bad "interior %s does not broadcast to the root's shape" (Node.Describe m)
                if outputs.Contains m then bad "interior %s is a plan output" (Node.Describe m)
        for c in g.Constants do
            constants.Add c |> ignore
            if outputs.Contains c then bad "inlined constant %s is a plan output" (Node.Describe c)
        if g.Operands.Length > Fusion.MaxOperands then bad "%s reads %d operands" (Node.Describe root) g.Operands.Length
        if g.Program.Length > Fusion.MaxInstructions then bad "%s has %d instructions" (Node.Describe root) g.Program.Length
        let views = g.Members |> Array.filter Fusion.isIdentityView |> Array.length
        if g.Program.Length <> g.Operands.Length + g.Constants.Length + g.Members.Length - views then
            bad "%s: the program does not have one instruction per operand, constant and member" (Node.Describe root)
        for o in g.Operands do
            if Array.exists (fun m -> obj.ReferenceEquals(m, o)) g.Members then bad "%s is both operand and member" (Node.Describe o)
            if Shape.tryBroadcast o.Shape root.Shape <> Some root.Shape then bad "operand %s does not broadcast to %s" (Node.Describe o) (Node.Describe root)
    let checkReaders (g: FusedGroup) (consumer: Node option) =
        for m in g.Members do
            if consumer.IsSome || not (obj.ReferenceEquals(m, g.Root)) then
                for r in readersOf m do
                    let inside = interiorOf.[m] |> Seq.exists (fun h -> Array.exists (fun x -> obj.ReferenceEquals(x, r)) h.Members)
                    let byConsumer = obj.ReferenceEquals(m, g.Root) && consumer |> Option.exists (fun c -> obj.ReferenceEquals(c, r))
                    if not (inside || byConsumer) then
                        bad "interior %s is read by %s outside its groups" (Node.Describe m) (Node.Describe r)
    for KeyValue(root, g) in fused.Fusion do
        if not (obj.ReferenceEquals(g.Root, root)) then bad "group under %s has root %s" (Node.Describe root) (Node.Describe g.Root)
        checkGroup g None
    for KeyValue(consumer, p) in fused.Prologues do
        let root = p.Group.Root
        if not (obj.ReferenceEquals(p.Consumer, consumer)) then bad "prologue under %s has consumer %s" (Node.Describe consumer) (Node.Describe p.Consumer)
        if not (Fusion.isPrologueConsumer consumer) then bad "%s takes a prologue but is neither a reduction nor a softmax" (Node.Describe consumer)
        match consumer.Children with
        | [ c ] when obj.ReferenceEquals(c, root) -> ()
        | _ -> bad "the prologue of %s computes %s, which is not its operand" (Node.Describe consumer) (Node.Describe root)
        if fused.Fusion.ContainsKey root then bad "prologue root %s is also a fused group's root" (Node.Describe root)
        if not (Array.exists (fun n -> obj.ReferenceEquals(n, consumer)) fused.Steps) then bad "prologue consumer %s is no step" (Node.Describe consumer)
        checkGroup p.Group (Some consumer)
    for g in fused.Fusion.Values do checkReaders g None
    for p in fused.Prologues.Values do checkReaders p.Group (Some p.Consumer)
    for c in constants do
        for r in readersOf c do
            if not (fusedMember.Contains r) then bad "inlined constant %s is read by unfused %s" (Node.Describe c) (Node.Describe r)
    // every step of the plan is computed as a step of the fused plan once, or inside groups (several only where the
    // groups recompute a value of one operand in place of reading it)
    let stepCount = Dictionary<Node, int>(HashIdentity.Reference)
    for n in fused.Steps do stepCount.[n] <- (match stepCount.TryGetValue n with | true, k -> k + 1 | _ -> 1)
    for n in plan.Steps do
        let asStep = match stepCount.TryGetValue n with | true, k -> k | _ -> 0
        let hidden = (if interiorOf.ContainsKey n then 1 else 0) + (if constants.Contains n then 1 else 0)
        if asStep + hidden <> 1 then bad "%s is computed %d times" (Node.Describe n) (asStep + hidden)
    if fused.Steps.Length + interiorOf.Count + constants.Count <> plan.Steps.Length then bad "the fused plan has steps the plan has not"
    // what a step reads is a leaf or an earlier step, alive until that step
    let position = Dictionary<Node, int>(HashIdentity.Reference)
    fused.Steps |> Array.iteri (fun i n -> position.[n] <- i)
    let leaves = HashSet<Node>(fused.Leaves, HashIdentity.Reference)
    fused.Steps |> Array.iteri (fun i n ->
        for c in Plan.reads fused n do
            match position.TryGetValue c with
            | true, j when j < i -> ()
            | _ -> if not (leaves.Contains c) then bad "%s reads %s before it is computed" (Node.Describe n) (Node.Describe c)
            if fused.LastUse.[c] < i then bad "%s dies before %s reads it" (Node.Describe c) (Node.Describe n))
    List.ofSeq problems

/// A random pointwise DAG over operands of several broadcast shapes and Fill constants, with gradient-marker views
/// (StopGradient, GradientScale) between pointwise ops: shared subexpressions,
/// values read inside and outside a chain (by a reduction), plan outputs in the middle of chains.
let private pointwiseGraph (seed: int) =
    let rng = Random seed
    let leaves = Evaluate.LeafValues rng
    let d0, d1, d2 = 1 + rng.Next 3, 1 + rng.Next 5, 1 + rng.Next 6
    let shapes = [| [| d0; d1; d2 |]; [| d0; d1; d2 |]; [| d2 |]; [| d1; 1 |]; [| d0; 1; d2 |]; [||]; [| 1; d1; d2 |] |]
    let mutable count = 0
    let leaf () =
        count <- count + 1
        let s = shapes.[rng.Next shapes.Length]
        if rng.Next 6 = 0 then fill s (float (rng.Next 7) * 0.5 - 1.5) else leaves.Input(sprintf "x%d" count, s)
    let pool = ResizeArray<Node>([ leaf (); leaf () ])
    let pick () = if rng.Next 5 = 0 then leaf () else pool.[pool.Count - 1 - rng.Next(min 5 pool.Count)]
    let positive x = addScalar 0.5 (square x)
    let unaries : (Node -> Node)[] =
        [| neg; tanh; sigmoid; sin; cos; abs; relu; silu; geluErf; geluTanh; erf; sign; (fun x -> square (tanh x))
           (fun x -> exp (tanh x)); (fun x -> log (positive x)); (fun x -> rsqrt (positive x)); (fun x -> sqrt (positive x))
           (fun x -> reciprocal (positive x)) |]
    let binaries : (Node -> Node -> Node)[] =
        [| add; sub; mul; maximum; minimum; (fun a b -> div a (positive b)); (fun a b -> pow (positive a) (tanh b)) |]
    let bounded x = if rng.Next 3 = 0 then tanh x else x
    for _ in 1 .. 4 + rng.Next 24 do
        let next =
            match rng.Next 10 with
            | 0 | 1 -> unaries.[rng.Next unaries.Length] (pick ())
            | 2 -> (if rng.Next 2 = 0 then stopGradient else gradientScale 0.5) (unaries.[rng.Next unaries.Length] (pick ()))
            | 3 | 4 | 5 | 6 -> bounded (binaries.[rng.Next binaries.Length] (pick ()) (pick ()))
            | 7 | 8 ->
                let c = leaves.Input(sprintf "c%d" pool.Count, shapes.[rng.Next shapes.Length])
                where (greater c (scalar 0.0)) (pick ()) (pick ())
            | _ ->
                // read by a reduction outside any chain and by the chain that goes on
                let x = pick ()
                if x.Shape.Length = 0 then neg x else add x (reduceSum [ x.Shape.Length - 1 ] true x)
        pool.Add next
    let last = pool.[pool.Count - 1]
    let middles = pool |> Seq.filter (fun n -> Fusion.isPointwise n && rng.Next 6 = 0) |> List.ofSeq
    last :: middles, leaves.Map

/// What the GPU backend takes prologues for (softmax along the last axis, reductions over trailing axes).
let private takesPrologue (n: Node) = (gpu () :?> IFusedPrologue).TakesPrologue n

/// A pointwise chain (scaled scores, broadcast operands, a mask filled with a large negative value or −∞) read by a
/// softmax or a reduction: sum, mean or max over the trailing axes with or without kept axes, or over a leading
/// axis, which the row kernels do not run. Sometimes the chain's value is also an output or read by another op, and
/// then it must stay materialised. Returns the outputs, the leaf values, the consumer and whether it takes a prologue.
let private prologueGraph (seed: int) =
    let rng = Random seed
    let leaves = Evaluate.LeafValues rng
    let shape = if rng.Next 2 = 0 then [| 1 + rng.Next 4; 1 + rng.Next 70 |] else [| 1 + rng.Next 3; 1 + rng.Next 4; 1 + rng.Next 70 |]
    let r = shape.Length
    let shapes = [| shape; [| shape.[r - 1] |]; Array.append shape.[.. r - 2] [| 1 |]; [||] |]
    let leaf (i: int) = leaves.Input(sprintf "x%d" i, shapes.[rng.Next shapes.Length])
    let kind = rng.Next 9
    let mutable x = mul (leaves.Input("scores", shape)) (scalar 0.125)
    for i in 1 .. rng.Next 4 do
        x <-
            match rng.Next 6 with
            | 0 -> tanh x
            | 1 -> add x (leaf i)
            | 2 -> mul x (leaf i)
            | 3 -> exp (tanh x)
            | 4 -> stopGradient (sub (square x) (leaf i))
            | _ -> sub (square x) (leaf i)
    if Fusion.isIdentityView x then x <- tanh x
    // large negative fills only where the consumer keeps them finite in float32 (softmax, max)
    let masks = kind = 0 || kind = 3 || kind = 6
    if masks && rng.Next 4 > 0 then
        let m = leaves.Input("mask", [| shape.[r - 1] |] |> fun s -> if rng.Next 2 = 0 then s else shape)
        let negative = [| Double.NegativeInfinity; -3.4028234663852886e38; -1e9 |].[rng.Next 3]
        x <- where (greater m (scalar 0.5)) (fill shape negative) x
    let consumer, trailing =
        match kind with
        | 0 -> softmax (r - 1) x, true
        | 1 -> reduceSum [ r - 1 ] true x, true
        | 2 -> reduceMean [ r - 1 ] false x, true
        | 3 -> reduceMax [ r - 1 ] (rng.Next 2 = 0) x, true
        | 4 -> reduceSum [ r - 2; r - 1 ] (rng.Next 2 = 0) x, true
        | 5 -> reduceMean [ 0 .. r - 1 ] false x, true
        | 6 -> softmax 0 x, false
        | 7 -> reduceSum [ 0 ] true x, false
        | _ -> reduceMax [ r - 2 ] false x, false
    let shared = rng.Next 4
    let outputs =
        match shared with
        | 0 -> [ consumer; x ]
        | 1 -> [ consumer; neg x ]
        | _ -> [ consumer ]
    outputs, leaves.Map, consumer, trailing && shared > 1

/// Kernel launches of a plan on the GPU backend: every step but those sharing their operand's buffer (views, lazy
/// transposes and slices).
let private launches (plan: Plan) = plan.Steps |> Array.filter (Plan.sharesBuffer plan >> not) |> Array.length

/// The llama fixture's AttnLRP graph as Explainer builds it: the rewritten logits and the input relevance.
let llamaRelevanceOutputs () =
    let f = FixtureTests.load "llama"
    let model, graph, _ = FixtureTests.prepare f
    use model = model
    use explainer = new Explainer(graph.Model, graph.InputName, model.WeightsFor graph, Device.Reference)
    let output = explainer.OutputExpr.Node
    let ruleSet = Method.AttnLrp.RuleSet
    let relevance = Lrp.relevance ruleSet output (input "seed" output.Shape Float) [ explainer.InputNode ]
    Lrp.rewrite ruleSet [ output ] @ relevance

let tests =
    Paths.onIlgpuCpu <| testList "pointwise fusion" [
        testPropertyWithConfig (config 60) "random pointwise graphs with broadcasts, shared values and outputs inside chains fuse validly and agree with the reference on the GPU backend" (fun (seed: int) ->
            let outputs, values = pointwiseGraph seed
            let plan = Plan.compile outputs
            let fused = Plan.fuse plan
            match violations plan fused with
            | [] -> BackendConformance.agreesOn (gpu ()) (sprintf "seed %d, %d groups" seed fused.Fusion.Count) values outputs
            | problems -> failtestf "seed %d: %s" seed (String.Join("; ", problems)))
        testPropertyWithConfig (config 15) "random graphs of every op, forward and gradients, fuse validly, with and without prologues" (fun (seed: int) ->
            let sample = RandomGraphs.build (seed &&& 0x7fffffff) 6 None
            let plan = Plan.compile (RandomGraphs.forwardAndGradients seed sample.Output)
            let problems = violations plan (Plan.fuse plan) @ violations plan (Plan.fuseWith takesPrologue plan)
            if not problems.IsEmpty then printfn "%s: %s" sample.Description (String.Join("; ", problems))
            problems.IsEmpty)
        testPropertyWithConfig (config 60) "pointwise chains read only by a softmax along the last axis or a trailing reduction become its prologue and agree with the reference on the GPU backend" (fun (seed: int) ->
            let outputs, values, consumer, expected = prologueGraph seed
            let plan = Plan.compile outputs
            let fused = Plan.fuseWith takesPrologue plan
            match violations plan fused with
            | [] ->
                let description = sprintf "seed %d: %s, prologue %b" seed (Node.Describe consumer) expected
                if fused.Prologues.ContainsKey consumer <> expected then
                    failtestf "%s: the plan has %d prologues" description fused.Prologues.Count
                use exe = new Executable(plan, gpu ())
                Expect.equal (exe.Plan.Prologues.ContainsKey consumer) expected "the executable fuses as Plan.fuseWith does"
                BackendConformance.agreesOn (gpu ()) description values outputs
            | problems -> failtestf "seed %d: %s" seed (String.Join("; ", problems)))
        test "a masked softmax read through a prologue gives bit for bit what the materialised mask gives" {
            let rng = Random 11
            let leaves = Evaluate.LeafValues rng
            let scores = leaves.Input("scores", [| 3; 5; 67 |])
            let mask = leaves.Input("mask", [| 5; 67 |])
            let y = softmax -1 (where (greater mask (scalar 0.0)) (mul scores (scalar 0.125)) (fill scores.Shape -3.4028234663852886e38))
            let plan = Plan.compile [ y ]
            let backend = gpu () :?> GpuBackend
            let run () = fst (HostEvaluation.run backend leaves.Map plan)
            let fused = run ()
            backend.FusePrologues <- false
            let materialised = try run () finally backend.FusePrologues <- true
            Expect.equal fused.[0] materialised.[0] "same values"
            use exe = new Executable(plan, backend)
            Expect.equal exe.Plan.Prologues.Count 1 "the mask is the softmax's prologue"
            Expect.equal (launches exe.Plan) 1 "one kernel: the softmax, whose prologue compares the smaller mask at each element"
        }
        test "softmax rows within and beyond the kernel's shared-memory cache agree with the reference, plain and through a prologue" {
            let rng = Random 13
            for len in [ 100; FusedKernels.CachedRowLimit; FusedKernels.CachedRowLimit + 7 ] do
                let leaves = Evaluate.LeafValues rng
                let x = leaves.Input("x", [| 3; len |])
                for y in [ softmax -1 x; softmax -1 (addScalar 1.0 (mul x (scalar 4.0))) ] do
                    let plan = Plan.compile [ y ]
                    let actual, _ = HostEvaluation.run (gpu ()) leaves.Map plan
                    Expect.isLessThan (BackendConformance.relativeError actual.[0] (Evaluate.reference1 leaves.Map y)) 1e-5 (sprintf "rows of %d" len)
        }
        test "plans for backends without fused groups are step for step the compiled plan" {
            let x = input "x" [| 4; 5 |] Float
            let plan = Plan.compile [ exp (mul (tanh x) (scalar 2.0)) ]
            Expect.equal plan.Fusion.Count 0 "compiled plans are not fused"
            for backend in [ new Lxt.Backend.Cpu.CpuBackend() :> IBackend; new ReferenceBackend() ] do
                use exe = new Executable(plan, backend)
                Expect.isTrue (obj.ReferenceEquals(exe.Plan, plan)) (sprintf "%s runs the plan as compiled" backend.Name)
            let fused = Plan.fuse plan
            Expect.equal fused.Fusion.Count 1 "one group"
            Expect.equal fused.Steps.Length 1 "one step: the scalar is a constant of the program"
            Expect.throwsT<NotSupportedException> (fun () -> new Executable(fused, new ReferenceBackend()) |> ignore) "a fused plan needs a fusing backend"
            Expect.equal (Plan.fuse plan).Prologues.Count 0 "Plan.fuse gives no prologues"
            let softmaxPlan = Plan.compile [ softmax -1 (exp (mul (tanh x) (scalar 2.0))) ]
            for backend in [ new Lxt.Backend.Cpu.CpuBackend() :> IBackend; new ReferenceBackend() ] do
                use exe = new Executable(softmaxPlan, backend)
                Expect.isTrue (obj.ReferenceEquals(exe.Plan, softmaxPlan)) (sprintf "%s runs the softmax plan as compiled" backend.Name)
            let withPrologue = Plan.fuseWith takesPrologue softmaxPlan
            Expect.equal withPrologue.Prologues.Count 1 "the softmax takes its operand's program"
            Expect.equal withPrologue.Steps.Length 1 "one step: the softmax"
            Expect.throwsT<NotSupportedException> (fun () -> new Executable(withPrologue, new ReferenceBackend()) |> ignore) "a plan with prologues needs a backend running them"
            (gpu () :?> GpuBackend).FusePrologues <- false
            try
                use noPrologues = new Executable(softmaxPlan, gpu ())
                Expect.equal noPrologues.Plan.Prologues.Count 0 "prologues can be turned off"
                Expect.equal noPrologues.Plan.Fusion.Count 1 "the chain is still fused"
            finally (gpu () :?> GpuBackend).FusePrologues <- true
            use exe = new Executable(plan, gpu ())
            Expect.equal exe.Plan.Fusion.Count 1 "the GPU backend fuses"
            (gpu () :?> GpuBackend).FusePointwise <- false
            try
                use unfused = new Executable(plan, gpu ())
                Expect.isTrue (obj.ReferenceEquals(unfused.Plan, plan)) "fusion can be turned off"
            finally (gpu () :?> GpuBackend).FusePointwise <- true
        }
        test "a scalar op on the only reshape of a pointwise value joins the value's group: one kernel each, the same values, the name kept" {
            let leaves = Evaluate.LeafValues(Random 3)
            let a, b = leaves.Input("a", [| 4; 6; 5 |]), leaves.Input("b", [| 4; 1; 5 |])
            let scaled = mul (reshape [| 2; 12; 5 |] (mul a b)) (scalar 0.5)
            let negated = named "negated" (neg (reshape [| 24; 5 |] (add a (scalar 1.0))))
            // a pointwise value read twice stays materialised: the scalar op is not lifted
            let shared = sub a b
            let kept = mul (reshape [| 24; 5 |] shared) (scalar 2.0)
            let outputs = [ scaled; negated; kept; shared ]
            let plan = Plan.compile outputs
            let liftedOver (n: Node) = match n.Op with Reshape x -> Fusion.isPointwise x | _ -> false
            Expect.equal (plan.Outputs |> Array.map liftedOver) [| true; true; false; false |] "the first two are lifted"
            Expect.equal plan.Outputs.[1].Name (Some "negated") "the lifted node keeps its name"
            use exe = new Executable(plan, gpu ())
            Expect.equal (launches exe.Plan) 4 "one kernel per lifted pair, two for the shared value and its reader"
            Expect.isTrue (BackendConformance.agreesOn (gpu ()) "lifted scalar ops" leaves.Map outputs) "the same values"
        }
        test "a value computed from one value that several groups read is computed in each of them, never written; one of two values stays a group of its own" {
            let leaves = Evaluate.LeafValues(Random 5)
            let g, a, b = leaves.Input("g", [| 6; 7 |]), leaves.Input("a", [| 6; 7 |]), leaves.Input("b", [| 6; 7 |])
            // the ½ rule's gradient scale as AttnLRP's gated MLP reads it: g·0.5 feeds two products of its own
            let half = gradientScale 0.5 (mul g (scalar 0.5))
            let twice = [ exp (mul half a); sub (mul half b) a ]
            // a · b read by two groups: recomputing it would read two values in place of one
            let ab = mul a b
            let shared = [ tanh ab; add ab (scalar 1.0) ]
            let outputs = twice @ shared
            let plan = Plan.compile outputs
            let fused = Plan.fuse plan
            Expect.isEmpty (violations plan fused) "a valid fusion"
            let membersOf (n: Node) = fused.Fusion.Values |> Seq.filter (fun grp -> grp.Members |> Array.contains n) |> Seq.length
            Expect.equal (membersOf half.Children.Head) 2 "g·0.5 is computed by both of its readers' groups"
            Expect.isFalse (fused.Steps |> Array.contains half.Children.Head) "and is no step"
            Expect.isTrue (fused.Fusion.ContainsKey ab) "a·b roots a group of its own"
            Expect.equal (launches fused) 5 "four outputs and a·b"
            use exe = new Executable(plan, gpu ())
            Expect.equal (launches exe.Plan) 5 "the GPU backend fuses alike"
            Expect.isTrue (BackendConformance.agreesOn (gpu ()) "recomputed in two groups" leaves.Map outputs) "the same values"
        }
        test "the softmax backward's row sums of dP ∘ P are taken as dO ∘ O once the tokens outnumber the head size: no pass over [heads, tokens, tokens] for them, the same values" {
            let attention (tokens: int) =
                let leaves = Evaluate.LeafValues(Random tokens)
                let q, k, v = leaves.Input("q", [| 2; tokens; 4 |]), leaves.Input("k", [| 2; tokens; 4 |]), leaves.Input("v", [| 2; tokens; 4 |])
                let p = softmax -1 (mul (matmul q (transpose -2 -1 k)) (scalar 0.5))
                let outputs = RandomGraphs.forwardAndGradients tokens (matmul p v)
                let plan = Plan.compile outputs
                // the row sums the plan takes, by the size of the value they sum
                let sums = plan.Steps |> Array.choose (fun n -> match n.Op with Reduce(Sum, [| 2 |], _, x) when x.Shape.Length = 3 -> Some x.Shape | _ -> None)
                Expect.isTrue (BackendConformance.agreesOn (gpu ()) (sprintf "%d tokens" tokens) leaves.Map outputs) "the same values"
                sums
            Expect.equal (attention 12) [| [| 2; 12; 4 |] |] "12 tokens, heads of 4: the sum over dO ∘ O"
            Expect.equal (attention 3) [| [| 2; 3; 3 |] |] "3 tokens, heads of 4: the sum over dP ∘ P"
        }
        test "slices read only by concats are read in place: rotating halves is one copy, the same values; a slice read otherwise is computed" {
            let leaves = Evaluate.LeafValues(Random 8)
            let x = leaves.Input("x", [| 3; 5; 8 |])
            let rotated = concat -1 [ slice -1 4 8 x; slice -1 0 4 x ]
            let kept = slice 1 1 3 x
            let outputs = [ rotated; concat 1 [ kept; x ]; neg kept ]
            let plan = Plan.compile outputs
            Expect.equal plan.LazySlices.Count 2 "the rotation's two halves; the slice read by neg is computed"
            use exe = new Executable(plan, gpu ())
            Expect.equal (launches exe.Plan) 4 "two concats, the computed slice and the negation"
            Expect.isTrue (BackendConformance.agreesOn (gpu ()) "lazy slices" leaves.Map outputs) "the same values"
            use cpu = new Lxt.Backend.Cpu.CpuBackend()
            Expect.isTrue (BackendConformance.agreesOn cpu "slices computed" leaves.Map outputs) "a backend without ISlicedConcat computes them"
        }
        test "a fused chain of pointwise ops overwrites its dying operand: one working buffer" {
            let x = input "x" [| 1000 |] Float
            let ops = List.fold (fun acc i -> if i % 2 = 0 then tanh acc else mul (sin acc) (scalar 0.5)) x [ 1 .. 50 ]
            let values = Map [ "x", Array.init 1000 (fun i -> float i / 1000.0) ]
            let plan = Plan.compile [ ops ]
            let actual, peak = HostEvaluation.run (gpu ()) values plan
            Expect.isLessThan (BackendConformance.relativeError actual.[0] (Evaluate.reference1 values ops)) 1e-5 "same values as the reference"
            Expect.isLessThanOrEqual peak (2L * 4000L) "one working buffer and the fresh copy Run returns"
            Expect.isLessThanOrEqual (launches (Plan.fuse plan)) 5 "75 ops in at most five kernels"
        }
        testPropertyWithConfig (config 8) "checkpointed plans with recomputed segments fuse, with prologues, and agree with the reference" (fun (seed: int) ->
            let rng = Random seed
            let leaves = Evaluate.LeafValues rng
            let t, hidden = 2 + rng.Next 5, 2 + rng.Next 6
            let x = leaves.Input("x", [| t; hidden |])
            let norm (h: Node) = mul h (rsqrt (addScalar 1e-5 (reduceMean [ -1 ] true (square h))))
            let mutable h = x
            let layers = ResizeArray<Node>()
            for i in 1 .. 2 + rng.Next 3 do
                let w = leaves.Parameter(sprintf "w%d" i, [| hidden; hidden |], 0.5)
                let g = leaves.Parameter(sprintf "g%d" i, [| hidden; hidden |], 0.5)
                let a = norm h
                h <- add h (mul (silu (matmul a w)) (matmul a g))
                layers.Add h
            let loss = reduceSum [ 0; 1 ] false (mul h (leaves.Seed h))
            let outputs = [ h; mul x (Autodiff.vjp [ loss, scalar 1.0 ] [ x ] |> List.head) ]
            let plan = Plan.compileWith { Checkpoints = x :: List.ofSeq layers } outputs
            let fused = Plan.fuseWith takesPrologue plan
            let recomputes = fused.Steps |> Array.filter (fun n -> match n.Op with Recompute _ -> true | _ -> false)
            let problems = violations plan fused @ violations plan (Plan.fuse plan)
            if not problems.IsEmpty then failtestf "seed %d: %s" seed (String.Join("; ", problems))
            let expected = Evaluate.reference leaves.Map outputs
            let actual, _ = HostEvaluation.run (gpu ()) leaves.Map plan
            recomputes.Length > 0 && fused.Fusion.Count > 0 && fused.Prologues.Count > 0
            && Array.forall2 (fun a e -> BackendConformance.relativeError a e < 1e-5) actual expected)
        test "the llama fixture's AttnLRP relevance graph fuses validly into fewer kernels" {
            let plan = Plan.compile (llamaRelevanceOutputs ())
            let fused = Plan.fuse plan
            let problems = violations plan fused
            Expect.isEmpty problems "valid fusion"
            let withPrologues = Plan.fuseWith takesPrologue plan
            Expect.isEmpty (violations plan withPrologues) "valid fusion with prologues"
            let before, after, prologue = launches plan, launches fused, launches withPrologues
            printfn "llama AttnLRP relevance graph: %d kernels unfused, %d fused (%d groups), %d with prologues (%d groups, %d prologues)"
                before after fused.Fusion.Count prologue withPrologues.Fusion.Count withPrologues.Prologues.Count
            Expect.isLessThan after before "fusion removes kernels"
            Expect.isLessThan prologue after "prologues remove kernels"
            // groups computing alike share one compiled kernel
            let programs =
                [ for KeyValue(_, g) in withPrologues.Fusion -> "Fused", FusedProgramType.Of(GpuBackend.EncodeFused g)
                  for KeyValue(c, p) in withPrologues.Prologues ->
                      (match c.Op with Softmax _ -> "SoftmaxRows" | _ -> "ReduceRows"), FusedProgramType.Of(GpuBackend.EncodeFused p.Group) ]
            let distinct = programs |> List.distinct |> List.length
            printfn "llama AttnLRP relevance graph: %d groups and prologues compile to %d distinct kernels" programs.Length distinct
            Expect.isLessThan distinct programs.Length "programs of the same shape share a kernel"
        }
        test "a dry run of the llama fixture's relevance plan launches one op per step the fused plan computes" {
            let plan = Plan.compile (llamaRelevanceOutputs ())
            let dry = new DryRunBackend(gpu ())
            use exe = new Executable(plan, dry)
            for p in Plan.parameters plan do
                exe.BindParameter((match p.Op with Parameter name -> name | _ -> ""), (dry :> IBackend).Allocate(Shape.numel p.Shape))
            let feeds = Dictionary<string, IBuffer>()
            for i in Plan.inputs plan do
                feeds.[(match i.Op with Input name -> name | _ -> "")] <- (dry :> IBackend).Allocate(Shape.numel i.Shape)
            exe.Recycle(exe.Run feeds)
            let computed = exe.Plan.Steps |> Array.filter (Plan.sharesBuffer exe.Plan >> not)
            Expect.isGreaterThan exe.Plan.LazySlices.Count 0 "the rotations' halves are read in place"
            Expect.equal dry.Launches (int64 computed.Length) "every computed step, no view, lazy transpose or lazy slice"
            Expect.isLessThan (int computed.Length) (launches plan) "fewer than the unfused plan's kernels"
        }
        test "the ILGPU CPU accelerator device fuses by default, so the llama fixture parity runs fused" {
            use backend = Backends.Create Device.IlgpuCpu
            match backend with
            | :? IFusedPointwise as f -> Expect.isTrue f.SupportsFusedPointwise "fusion on by default"
            | _ -> failtest "the GPU backend runs fused groups"
        }
        test "values above the GPU backend's element limits stay out of groups and prologues, and agree" {
            use backend = GpuBackend.Create GpuKind.CpuAccelerator
            backend.FusedElementLimit <- 12
            Expect.equal backend.PrologueElementLimit Int32.MaxValue "softmaxes and reductions of any size read prologues by default"
            let values (n: int) = Map [ "x", Array.init n (fun i -> float i / float n - 0.5) ]
            let chain (shape: int[]) =
                let x = input "x" shape Float
                softmax 1 (mul (exp (neg x)) (addScalar 1.0 x))
            for shape, fusedExpected in [ [| 2; 5 |], true; [| 4; 4 |], false ] do
                let y = chain shape
                let plan = Plan.compile [ y ]
                use exe = new Executable(plan, backend)
                Expect.equal (Plan.isFused exe.Plan) fusedExpected (sprintf "%s fused: %b" (Shape.show shape) fusedExpected)
                let v = values (Shape.numel shape)
                let actual, _ = HostEvaluation.run backend v plan
                Expect.isLessThan (BackendConformance.relativeError actual.[0] (Evaluate.reference1 v y)) 1e-5 "same values as the reference"
            // a softmax of more elements than the prologue limit reads a fused group's materialised value
            backend.FusedElementLimit <- Int32.MaxValue
            backend.PrologueElementLimit <- 12
            let y = chain [| 4; 4 |]
            use exe = new Executable(Plan.compile [ y ], backend)
            Expect.equal exe.Plan.Prologues.Count 0 "no prologue above the limit"
            Expect.equal exe.Plan.Fusion.Count 1 "the pointwise chain is still one group"
        }
        test "fused kernels compile to straight-line code: no local memory, each operand loaded once, no integer division, no program decoded, and assemble for SM 9.0 where ptxas is" {
            // a masked, scaled attention score (a [4, 6] mask broadcast over [3, 4, 6] scores) read by a softmax, a masked
            // row sum and a long chain on the same scores: the groups a relevance graph has, compiled to PTX here
            let scores = input "scores" [| 3; 4; 6 |] Float
            let mask = input "mask" [| 4; 6 |] Float
            let masked = where (greater mask (scalar 0.0)) (mul scores (scalar 0.125)) (fill scores.Shape -1e30)
            let chain = List.fold (fun acc i -> if i % 3 = 0 then tanh acc else mul (add acc scores) (scalar (float i))) (exp scores) [ 1 .. 9 ]
            let plan = Plan.compile [ softmax -1 masked; reduceSum [ -1 ] false (mul (neg scores) mask); chain ]
            let fused = Plan.fuseWith takesPrologue plan
            Expect.equal fused.Prologues.Count 2 "the softmax and the sum read their operands through programs"
            let groups =
                [ for KeyValue(_, p) in fused.Prologues do
                    match p.Consumer.Op with
                    | Softmax _ -> yield "SoftmaxRows", p.Group; yield "SoftmaxWarpRows", p.Group; yield "SoftmaxRegisterRows", p.Group
                    | _ -> yield "ReduceRows", p.Group ]
                @ [ for KeyValue(_, g) in fused.Fusion do yield "Fused", g; yield "FusedPairs", g ]
            Expect.isGreaterThanOrEqual (List.length groups) 4 "two prologues and the chain's group, one value a thread and two"
            // each as a program reading its table from device memory and as an inline one, reading the kernel parameter
            for (kernel, group), parameters in List.allPairs groups [ false; true ] do
                let ptx = GpuBackend.FusedPtx(group, kernel, parameters)
                let count (s: string) = Text.RegularExpressions.Regex.Matches(ptx, Text.RegularExpressions.Regex.Escape s).Count
                let what = sprintf "%s of %s (%d instructions%s)" kernel (Node.Describe group.Root) group.Program.Length (if parameters then ", table as parameters" else "")
                Expect.equal (count ".local") 0 (sprintf "%s keeps its registers in registers" what)
                // the multi-index of a strided operand is found by multiply-high and shift, once per element: a row
                // kernel reading a program divides only where the plain row kernel does (once per row), in each of its
                // two bodies (values one at a time or in pairs; the plain kernel takes them one at a time)
                // (by a register: a division by a constant, as of a thread's index by the warp size, is shifts)
                let divisions (code: string) = Text.RegularExpressions.Regex.Matches(code, @"\b(div|rem)\.[su]32\s+%r\d+,\s*%r\d+,\s*%r\d+;").Count
                let plain =
                    match kernel with
                    | "Fused" | "FusedPairs" -> 0
                    | "SoftmaxWarpRows" | "SoftmaxRegisterRows" -> 0
                    | _ -> 2 * divisions (GpuBackend.KernelPtx(typeof<GpuBackend>.Assembly.GetType("Lxt.Backend.Gpu.Kernels").GetMethod kernel))
                Expect.equal (divisions ptx) plain (sprintf "%s divides no integers per element" what)
                let loads = group.Program |> Array.filter (fun i -> match i with Load _ -> true | _ -> false) |> Array.length
                // the program is inlined where a kernel evaluates it: a softmax's three passes over the row, a
                // reduction's maximum and its sum (the op is a kernel argument), each for rows of even length (two
                // values at a time) and of odd length (one), a pointwise kernel's element or pair of elements, and a
                // register row's cells, read once in each body (FusedPtx compiles rows of 4 cells, two values each)
                let evaluations = match kernel with "SoftmaxRows" -> 3 * 3 | "SoftmaxWarpRows" | "ReduceRows" -> 2 * 3 | "SoftmaxRegisterRows" -> 2 * 4 * 2 | "FusedPairs" -> 2 | _ -> 1
                let floatLoads = Text.RegularExpressions.Regex.Matches(ptx, @"\bld(\.global)?(\.nc)?\.f32\b").Count
                Expect.equal floatLoads (loads * evaluations) (sprintf "%s loads each operand once where it evaluates the program" what)
                // an inline program reads its table from the kernel parameter (the constant bank): no table entry is
                // loaded from memory, where the default program loads the walk, strides and constants it needs
                let tableReads = Text.RegularExpressions.Regex.Matches(ptx, @"\bld(\.global)?(\.nc)?\.[bsu]32\b").Count
                // (every group here has a constant or a strided operand)
                if parameters then Expect.equal tableReads 0 (sprintf "%s loads no table entry from memory" what)
                else Expect.isGreaterThan tableReads 0 (sprintf "%s reads its table from memory" what)
                // where ptxas is (LXT_PTXAS; .ci/run fetches one): the driver accepts it, with no stack frame or spill
                Ptxas.find () |> Option.iter (fun ptxas -> Ptxas.expectRegistersOnly ptxas what ptx)
        }
        test "a malformed fused group is rejected before any kernel runs" {
            let x = input "x" [| 3 |] Float
            let y = neg (exp x)
            let group = { Root = y; Members = [| y |]; Constants = [||]; Operands = [| x |]; Program = [| Load 0; Apply1(Neg, 3) |] }
            let backend = gpu ()
            let xs = backend.Allocate 3
            let out = backend.Allocate 3
            let e = Expect.throwsC (fun () -> (backend :?> IFusedPointwise).ExecuteFused(group, [| xs |], out)) id
            Expect.isTrue (e :? ArgumentException) "an argument error"
            Expect.stringContains e.Message "register 3" "names the register"
            xs.Dispose()
            out.Dispose()
        }
        test "a prologue whose group is not its consumer's operand is rejected before any kernel runs" {
            let x = input "x" [| 2; 3 |] Float
            let y = exp x
            let other = neg x
            let group = { Root = y; Members = [| y |]; Constants = [||]; Operands = [| x |]; Program = [| Load 0; Apply1(Exp, 0) |] }
            let backend = gpu ()
            let xs = backend.Allocate 6
            let out = backend.Allocate 2
            let e = Expect.throwsC (fun () -> (backend :?> IFusedPrologue).ExecuteWithPrologue({ Consumer = reduceSum [ 1 ] false other; Group = group }, [| xs |], out)) id
            Expect.isTrue (e :? ArgumentException) "an argument error"
            Expect.stringContains e.Message "not its operand" "says what is wrong"
            xs.Dispose()
            out.Dispose()
        }
    ]
