// Fusion of pointwise chains: Unary, Binary and Where nodes (and the Fill constants they read) grouped so that a
// backend computes each group with one call, as a small register program, without materialising its inner values.
namespace Lxt.Graph

open System.Collections.Generic

/// One instruction of a fused pointwise program. Instruction i writes register i and reads earlier registers only.
type FusedInstr =
    /// The group's operand `operand` at the output element (broadcast to the root's shape).
    | Load of operand: int
    /// A constant: an inlined Fill.
    | Const of value: float
    /// A unary op applied to register `x`.
    | Apply1 of op: UnaryOp * x: int
    /// A binary op applied to registers `a` and `b`.
    | Apply2 of op: BinaryOp * a: int * b: int
    /// Where: register `whenTrue` where register `cond` is not 0, else register `whenFalse`.
    | Select of cond: int * whenTrue: int * whenFalse: int

/// Pointwise nodes computed as one: only `Root` is materialised. Every other member has a shape that broadcasts to the
/// root's (the program computes it at each element of the root) and is read by members only; `Operands` are the values the members read from outside the group, each broadcast to the root's
/// shape; `Constants` are Fill nodes read by fused nodes only, computed inside the program instead of as steps.
/// Members are pointwise nodes, and inside the group also StopGradient and GradientScale, whose value is their
/// operand's. The program loads the operands (in order), then the constants, then computes the pointwise members
/// in `Members` order (the views take their operand's register); its last register is the root's value.
[<ReferenceEquality>]
type FusedGroup =
    { Root: Node
      /// the members in execution order, the root last
      Members: Node[]
      Constants: Node[]
      Operands: Node[]
      Program: FusedInstr[] }

/// A Reduce or Softmax step that reads its one operand through a fused pointwise program instead of a buffer:
/// `Group.Root` is `Consumer`'s operand, read by `Consumer` only and no output, and no member of the group (the root
/// included) is materialised. The consumer evaluates the program at each element of its operand as it reads it.
[<ReferenceEquality>]
type Prologue =
    { Consumer: Node
      Group: FusedGroup }

module Fusion =
    /// Most operands one group reads (each is one index walk in the fused kernel).
    [<Literal>]
    let MaxOperands = 8

    /// Most instructions (loads, constants, members) of one group's program: the registers of the fused kernel.
    [<Literal>]
    let MaxInstructions = 32

    /// Nodes fusion may compute inside a program.
    let isPointwise (n: Node) = match n.Op with Unary _ | Binary _ | Where _ -> true | _ -> false

    /// Views whose value is their operand's (gradient markers): a group computes through them without an instruction.
    let isIdentityView (n: Node) = match n.Op with StopGradient _ | GradientScale _ -> true | _ -> false

    let private isFill (n: Node) = match n.Op with Fill _ -> true | _ -> false

    // A group while it grows, from the root down: members are added in reverse execution order.
    type private Growing(root: Node) =
        let members = ResizeArray<Node>([ root ])
        let operands = HashSet<Node>(root.Children, HashIdentity.Reference)
        let constants = ResizeArray<Node>()
        member _.Root = root
        member _.Members = members
        member _.Operands = operands
        member _.Constants = constants
        /// Operands and instructions after adding `n`, one of the operands.
        member _.CostWith(n: Node) =
            let fresh = n.Children |> List.distinct |> List.filter (fun c -> not (operands.Contains c)) |> List.length
            let k = operands.Count - 1 + fresh
            let views = members |> Seq.filter isIdentityView |> Seq.length
            k, k + constants.Count + members.Count - views + 1
        member _.Add(n: Node) =
            operands.Remove n |> ignore
            for c in n.Children do operands.Add c |> ignore
            members.Add n
        member _.Inline(fill: Node) =
            if operands.Remove fill then constants.Add fill

    let private program (g: Growing) (position: Node -> int) : FusedGroup =
        let members = g.Members.ToArray() |> Array.sortBy position
        let constants = g.Constants.ToArray() |> Array.sortBy (fun n -> n.Id)
        // operands in the order the members first read them: deterministic for a given plan
        let operands =
            [| for m in members do
                 for c in m.Children do
                     if g.Operands.Contains c then yield c |] |> Array.distinct
        let register = Dictionary<Node, int>(HashIdentity.Reference)
        let code = ResizeArray<FusedInstr>()
        let emit (n: Node) (i: FusedInstr) =
            register.[n] <- code.Count
            code.Add i
        operands |> Array.iteri (fun k o -> emit o (Load k))
        for c in constants do
            match c.Op with
            | Fill v -> emit c (Const v)
            | _ -> ()
        for m in members do
            match m.Op with
            | Unary(o, x) -> emit m (Apply1(o, register.[x]))
            | Binary(o, a, b) -> emit m (Apply2(o, register.[a], register.[b]))
            | Where(c, a, b) -> emit m (Select(register.[c], register.[a], register.[b]))
            | StopGradient x | GradientScale(_, x) -> register.[m] <- register.[x]
            | _ -> ()
        { Root = g.Root; Members = members; Constants = constants; Operands = operands; Program = code.ToArray() }

    /// Ops that may read their operand through a prologue (a backend decides which of them it runs so).
    let isPrologueConsumer (n: Node) = match n.Op with Reduce _ | Softmax _ -> true | _ -> false

    /// The fused groups and prologues of a plan's steps (in execution order) with its outputs. Walking the steps from
    /// the last, a pointwise node (or a StopGradient or GradientScale) joins the group of its readers when they all
    /// belong to one group, its shape broadcasts to that group's root's shape (a smaller value, such as a norm's
    /// per-token scale, is then computed at each element of the root, which costs less than a kernel and a buffer of its
    /// own), it is no output, and the group stays within MaxOperands and MaxInstructions. A node computed from one value
    /// through pointwise nodes and constants (a unary op, a product with a scalar, a gradient scale, an activation and
    /// its identity-rule ratio) whose readers belong to several groups joins each of them on the same terms: they read
    /// that value in its place, as many values as before, and it is never written. Otherwise it roots a group of its
    /// own (a view stays a view). Checkpoints are read by Recompute nodes, never pointwise, so they always stay
    /// materialised. A Fill read by fused nodes only becomes a
    /// constant of their groups. A group whose root is no output and is read by one step only, a Reduce or Softmax
    /// that `takesPrologue` accepts, becomes that step's prologue. Every other group is a fused step, one of a single
    /// member too: a backend then computes all pointwise steps by one kernel family, which reads and writes any of
    /// its value types (narrow values among them). Nodes `fusible` rejects join no group and root none.
    let groupsAndProloguesWhere (fusible: Node -> bool) (steps: Node[]) (outputs: Node seq) (takesPrologue: Node -> bool) : FusedGroup[] * Prologue[] =
        let position = Dictionary<Node, int>(HashIdentity.Reference)
        steps |> Array.iteri (fun i n -> position.[n] <- i)
        let readers = Traverse.readers steps
        let isOutput = HashSet<Node>(outputs, HashIdentity.Reference)
        // the groups computing each fused node: one, or several for a node each of its readers' groups recomputes
        let groupsOf = Dictionary<Node, Growing list>(HashIdentity.Reference)
        let all = ResizeArray<Growing>()
        let readersOf (n: Node) = match readers.TryGetValue n with | true, r -> r :> seq<Node> | _ -> Seq.empty
        // the groups n's readers belong to, when every reader belongs to one or more
        let readerGroups (n: Node) =
            let rs = readersOf n |> Array.ofSeq
            if rs.Length = 0 || isOutput.Contains n || not (rs |> Array.forall groupsOf.ContainsKey) then []
            else rs |> Seq.collect (fun r -> groupsOf.[r]) |> Seq.distinct |> List.ofSeq // Growing compares by reference
        // whether n may join g: its shape broadcasts to the root's, and the group stays within its limits
        let fits (n: Node) (g: Growing) =
            (n.Shape = g.Root.Shape || Shape.tryBroadcast n.Shape g.Root.Shape = Some g.Root.Shape)
            && (let k, instructions = g.CostWith n
                // a view costs no instruction
                let instructions = if isIdentityView n then instructions - 1 else instructions
                k <= MaxOperands && instructions <= MaxInstructions)
        // the values (up to two) a fusible node is computed from through fusible nodes, constants aside: a node of one
        // such source, recomputed by each group reading it, has each group read that source in its place, as many
        // values as before
        let sources = Dictionary<Node, Node list>(HashIdentity.Reference)
        for n in steps do
            if (isPointwise n || isIdentityView n) && fusible n then
                sources.[n] <-
                    n.Children
                    |> List.collect (fun c -> if isFill c then [] else match sources.TryGetValue c with | true, s -> s | _ -> [ c ])
                    |> List.distinct |> List.truncate 2
        let recomputable (n: Node) = sources.[n].Length = 1
        for i in steps.Length - 1 .. -1 .. 0 do
            let n = steps.[i]
            if (isPointwise n || isIdentityView n) && fusible n then
                let joins =
                    match readerGroups n with
                    | [ g ] when fits n g -> [ g ]
                    | gs when gs.Length > 1 && recomputable n && gs |> List.forall (fits n) -> gs
                    | _ -> []
                match joins with
                | _ :: _ ->
                    for g in joins do g.Add n
                    groupsOf.[n] <- joins
                | [] when isPointwise n ->
                    let g = Growing n
                    groupsOf.[n] <- [ g ]
                    all.Add g
                | [] -> () // a view read outside one group stays a view of its operand's buffer
            elif isFill n && not (isOutput.Contains n) then
                let rs = readersOf n |> Array.ofSeq
                if rs.Length > 0 && rs |> Array.forall groupsOf.ContainsKey then
                    for r in rs do
                        for g in groupsOf.[r] do g.Inline n
        let consumerOf (g: Growing) =
            match readersOf g.Root |> List.ofSeq with
            | [ r ] when not (isOutput.Contains g.Root) && isPrologueConsumer r && takesPrologue r -> Some r
            | _ -> None
        let fused, prologues = ResizeArray<FusedGroup>(), ResizeArray<Prologue>()
        for g in all do
            match consumerOf g with
            | Some r -> prologues.Add { Consumer = r; Group = program g (fun n -> position.[n]) }
            | None -> fused.Add(program g (fun n -> position.[n]))
        fused.ToArray() |> Array.sortBy (fun g -> position.[g.Root]),
        prologues.ToArray() |> Array.sortBy (fun p -> position.[p.Consumer])

    /// As groupsAndProloguesWhere with every pointwise node fusible.
    let groupsAndPrologues (steps: Node[]) (outputs: Node seq) (takesPrologue: Node -> bool) : FusedGroup[] * Prologue[] =
        groupsAndProloguesWhere (fun _ -> true) steps outputs takesPrologue

    /// The fused groups of a plan's steps without prologues (see groupsAndPrologues).
    let groups (steps: Node[]) (outputs: Node seq) : FusedGroup[] =
        fst (groupsAndPrologues steps outputs (fun _ -> false))
