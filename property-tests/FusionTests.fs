// Specifications of pointwise fusion: Plan.fuse only hides values nobody else reads, computes every node once, and
// the GPU backend's fused kernel (on ILGPU's CPU accelerator) computes what the float64 reference computes, on random
// pointwise graphs, with checkpointing, in place, and on the llama fixture's relevance graph.
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
    let interiorOf = Dictionary<Node, FusedGroup>(HashIdentity.Reference)
    let constants = HashSet<Node>(HashIdentity.Reference)
    let fusedMember = HashSet<Node>(HashIdentity.Reference)
    for KeyValue(root, g) in fused.Fusion do
        if not (obj.ReferenceEquals(g.Root, root)) then bad "group under %s has root %s" (Node.Describe root) (Node.Describe g.Root)
        if not (obj.ReferenceEquals(Array.last g.Members, root)) then bad "the root of %s is not its last member" (Node.Describe root)
        for m in g.Members do
            fusedMember.Add m |> ignore
            if not (Fusion.isPointwise m || (Fusion.isIdentityView m && not (obj.ReferenceEquals(m, root)))) then
                bad "%s is fused but neither pointwise nor an interior identity view" (Node.Describe m)
            if not (obj.ReferenceEquals(m, root)) then
                if interiorOf.ContainsKey m then bad "%s is interior to two groups" (Node.Describe m)
                interiorOf.[m] <- g
                if m.Shape <> root.Shape then bad "interior %s does not have the root's shape" (Node.Describe m)
                if outputs.Contains m then bad "interior %s is a plan output" (Node.Describe m)
                for r in readersOf m do
                    if not (Array.exists (fun x -> obj.ReferenceEquals(x, r)) g.Members) then
                        bad "interior %s is read by %s outside its group" (Node.Describe m) (Node.Describe r)
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
    for c in constants do
        for r in readersOf c do
            if not (fusedMember.Contains r) then bad "inlined constant %s is read by unfused %s" (Node.Describe c) (Node.Describe r)
    // every step of the plan is computed exactly once: as a step of the fused plan, or inside exactly one group
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

/// Kernel launches of a plan: every step but the views, which share their operand's buffer.
let private launches (plan: Plan) = plan.Steps |> Array.filter (Plan.isView >> not) |> Array.length

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
    testSequenced <| testList "pointwise fusion" [
        testPropertyWithConfig (config 60) "random pointwise graphs with broadcasts, shared values and outputs inside chains fuse validly and agree with the reference on the GPU backend" (fun (seed: int) ->
            let outputs, values = pointwiseGraph seed
            let plan = Plan.compile outputs
            let fused = Plan.fuse plan
            match violations plan fused with
            | [] -> BackendConformance.agreesOn (gpu ()) (sprintf "seed %d, %d groups" seed fused.Fusion.Count) values outputs
            | problems -> failtestf "seed %d: %s" seed (String.Join("; ", problems)))
        testPropertyWithConfig (config 15) "random graphs of every op, forward and gradients, fuse validly" (fun (seed: int) ->
            let sample = RandomGraphs.build (seed &&& 0x7fffffff) 6 None
            let plan = Plan.compile (RandomGraphs.forwardAndGradients seed sample.Output)
            let problems = violations plan (Plan.fuse plan)
            if not problems.IsEmpty then printfn "%s: %s" sample.Description (String.Join("; ", problems))
            problems.IsEmpty)
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
            use exe = new Executable(plan, gpu ())
            Expect.equal exe.Plan.Fusion.Count 1 "the GPU backend fuses"
            (gpu () :?> GpuBackend).FusePointwise <- false
            try
                use unfused = new Executable(plan, gpu ())
                Expect.isTrue (obj.ReferenceEquals(unfused.Plan, plan)) "fusion can be turned off"
            finally (gpu () :?> GpuBackend).FusePointwise <- true
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
        testPropertyWithConfig (config 8) "checkpointed plans with recomputed segments fuse and agree with the reference" (fun (seed: int) ->
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
            let fused = Plan.fuse plan
            let recomputes = fused.Steps |> Array.filter (fun n -> match n.Op with Recompute _ -> true | _ -> false)
            let problems = violations plan fused
            if not problems.IsEmpty then failtestf "seed %d: %s" seed (String.Join("; ", problems))
            let expected = Evaluate.reference leaves.Map outputs
            let actual, _ = HostEvaluation.run (gpu ()) leaves.Map plan
            recomputes.Length > 0 && fused.Fusion.Count > 0
            && Array.forall2 (fun a e -> BackendConformance.relativeError a e < 1e-5) actual expected)
        test "the llama fixture's AttnLRP relevance graph fuses validly into fewer kernels" {
            let plan = Plan.compile (llamaRelevanceOutputs ())
            let fused = Plan.fuse plan
            let problems = violations plan fused
            Expect.isEmpty problems "valid fusion"
            let before, after = launches plan, launches fused
            printfn "llama AttnLRP relevance graph: %d kernels unfused, %d fused (%d groups)" before after fused.Fusion.Count
            Expect.isLessThan after before "fusion removes kernels"
        }
        test "the ILGPU CPU accelerator device fuses by default, so the llama fixture parity runs fused" {
            use backend = Backends.Create Device.IlgpuCpu
            match backend with
            | :? IFusedPointwise as f -> Expect.isTrue f.SupportsFusedPointwise "fusion on by default"
            | _ -> failtest "the GPU backend runs fused groups"
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
    ]
