// What every LRP rule shares: the context a rule sees, sign-aware stabilisers, and the markers rules leave in a
// graph so that another rule set can strip them exactly.
namespace Lxt.Rules

open System.Collections.Generic
open Lxt.Graph
open Lxt.Graph.Ops

/// What a rule may ask about the graph it is rewriting. One context lives for one rewrite.
type Context =
    { /// True when the node's value reaches a floating-point `Input` along a path that no StopGradient cuts.
      /// Parameters, constants, fills and integer inputs (token ids) are not input-dependent.
      IsInputDependent: Node -> bool
      /// The module a node belongs to: its own name, or for an unnamed node the name of its nearest named user in
      /// the model graph (the facade names module outputs, so the inside of a module inherits the module's name).
      Scope: Node -> string option }

/// One LRP rule: a named partial function on nodes. `Apply` sees a node already rebuilt over rewritten operands
/// and returns its replacement (same forward value, modified gradient), or None when it does not apply.
type LrpRule = { Name: string; Apply: Context -> Node -> Node option }

module Context =
    /// Ops through which no gradient flows: stop-gradient, and ops whose value is piecewise constant in their
    /// operands (comparisons, sign, top-k masks). Their outputs act as constants for the rules.
    let private isCut (n: Node) =
        match n.Op with
        | StopGradient _ | TopKMask _ | Binary((Greater | Equal), _, _) | Unary(Sign, _) -> true
        | _ -> false

    /// A fresh context with the given scope lookup. Dependence is memoised per node for the life of the context, so
    /// each node is examined once per rewrite however many rules ask; the walk is iterative (deep graphs are fine).
    let create (scope: Node -> string option) : Context =
        let memo = Dictionary<Node, bool>(HashIdentity.Reference)
        let dependent (root: Node) =
            let stack = Stack<Node>()
            stack.Push root
            while stack.Count > 0 do
                let n = stack.Peek()
                if memo.ContainsKey n then stack.Pop() |> ignore
                else
                    let pending = if isCut n then [] else n.Children |> List.filter (memo.ContainsKey >> not)
                    if pending.IsEmpty then
                        stack.Pop() |> ignore
                        memo.[n] <-
                            match n.Op with
                            | Input _ -> n.DType = Float
                            | _ when isCut n -> false
                            | _ -> n.Children |> List.exists (fun c -> memo.[c])
                    else for c in pending do stack.Push c
            memo.[root]
        { IsInputDependent = dependent; Scope = scope }

/// Stabilisers for the divisions rules make. They are only ever used under a stop-gradient.
module Stabilizer =
    /// z + ε·sign(z) with sign(0) = 1 (Zennit's choice): never zero and never flips the sign of z, so z/stab(z)
    /// stays in (0, 1] — unlike z + ε, which explodes for z in (−2ε, 0).
    let signAware (eps: float) (z: Node) = add z (where (greater (scalar 0.0) z) (scalar -eps) (scalar eps))

    /// z + ε, the reference implementation's stabiliser; kept only to compare against.
    let additive (eps: float) (z: Node) = addScalar eps z

/// The shapes rules leave in a graph. Every node a rule introduces that must be recognised later carries a name
/// starting with "lrp." — names with that prefix are reserved. A model's own StopGradient/GradientScale nodes carry
/// no such name and are never touched.
module Markers =
    /// The stop-gradient inside the identity rule's x · sg(f(x)/stab(x)).
    [<Literal>]
    let Identity = "lrp.identity"
    /// The stop-gradient around z₀ in a modified backward z₀ + (B − sg(B)) (ε and Gamma on linear layers).
    [<Literal>]
    let Backward = "lrp.backward"
    /// A stop-gradient a rule put around an operand (CP-LRP's gate branch).
    [<Literal>]
    let Wrap = "lrp.wrap"
    /// A rewritten node whose own name moved to the stop-gradient/gradient-scale wrapped around it.
    [<Literal>]
    let Inner = "lrp.node"

    let isReserved (name: string) = name.StartsWith("lrp.", System.StringComparison.Ordinal)

    /// The same node under another name (or none).
    let withName (name: string option) (n: Node) = if n.Name = name then n else make n.Op n.Shape n.DType name

    let private tagged (tag: string) (op: Op) (like: Node) = make op like.Shape like.DType (Some tag)

    /// sg(n), keeping n's name on the outside so relevance at that name is taken at the wrapper.
    let stopGradientAround (n: Node) = make (StopGradient(withName (Some Inner) n)) [||] n.DType n.Name

    /// n with its gradient multiplied by `factor`, keeping n's name on the outside.
    let gradientScaleAround (factor: float) (n: Node) = make (GradientScale(factor, withName (Some Inner) n)) [||] n.DType n.Name

    /// sg(operand), marked so that stripping removes it.
    let stopGradientOperand (x: Node) = tagged Wrap (StopGradient x) x

    /// y = f(x) rewritten as x · sg(f(x)/stab(x)) under y's name.
    let identityProduct (stab: Node -> Node) (y: Node) (x: Node) =
        let ratio = tagged Identity (StopGradient(div (withName None y) (stab x))) y
        make (Binary(Mul, x, ratio)) [||] Float y.Name

    /// z₀ + (B − sg(B)) under z₀'s name: the forward value is exactly z₀, the gradient flows through B only.
    let modifiedBackward (z0: Node) (b: Node) =
        let frozen = tagged Backward (StopGradient(withName None z0)) z0
        make (Binary(Add, frozen, sub b (stopGradient b))) [||] Float z0.Name

    /// The plain z₀ inside a modified backward, if `n` is one.
    let (|ModifiedBackward|_|) (n: Node) =
        match n.Op with
        | Binary(Add, { Op = StopGradient z0; Name = Some Backward }, _) -> Some z0
        | _ -> None

    /// The output of an identity-rule rewrite, if `n` is one.
    let (|IdentityProduct|_|) (n: Node) =
        match n.Op with
        | Binary(Mul, x, { Op = StopGradient { Op = Binary(Div, ({ Op = Unary(_, x') } as y), _) }; Name = Some Identity })
            when obj.ReferenceEquals(x, x') -> Some y
        | _ -> None

    /// Rules undoing every marker above. Applied with Rewrite.applyOnce they give back the model graph exactly
    /// (hash-consing makes "exactly" mean "the same node").
    let strip : Rewrite.RuleSet =
        [ Rewrite.rule "undo the identity rule" (fun n ->
            match n with
            | IdentityProduct y -> Some(withName n.Name y)
            | _ -> None)
          Rewrite.rule "undo a modified backward" (fun n ->
            match n with
            | ModifiedBackward z0 -> Some(withName n.Name z0)
            | _ -> None)
          Rewrite.rule "undo a wrapper" (fun n ->
            match n.Op with
            | StopGradient x | GradientScale(_, x) when n.Name = Some Wrap -> Some x
            | StopGradient x | GradientScale(_, x) when x.Name = Some Inner -> Some(withName n.Name x)
            | _ -> None) ]
