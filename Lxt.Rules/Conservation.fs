// Layer-by-layer conservation checks: Σ relevance at consecutive boundaries from one backward pass, the first leak
// and the first NaN/∞, by name.
namespace Lxt.Rules

open System
open System.Collections.Generic
open System.Text
open Lxt.Graph
open Lxt.Graph.Ops

/// Where relevance is summed.
type Boundaries =
    /// Every named, input-dependent node (inputs included). Right for chains; parallel branches (q, k, v) each
    /// carry a share of the relevance and show up as leaks, so pick boundaries that cut the graph for real models.
    | AllNamed
    /// Named, input-dependent nodes whose name matches a glob ("model.layers.*.output"), plus the inputs.
    | NamesMatching of string
    /// These nodes, in topological order.
    | Nodes of Node list

/// One boundary: Σ relevance arriving from the boundary above (In) and found here (Out); the layer between the two
/// is named after this boundary. NonFinite counts NaN/∞ entries of this boundary's relevance.
type BoundaryRow = { Name: string; In: float; Out: float; NonFinite: int }

/// The result of a check. Rows run from the inputs to the target (the last row is the target's Σ output ⊙ seed).
type ConservationReport =
    { RuleSet: string
      Target: float
      Rows: BoundaryRow list
      Tolerance: float
      /// The first row, walking from the target towards the inputs as relevance travels, where |Out − In| exceeds
      /// Tolerance · max(1, |Target|): the layer that leaks (a bias, a non-conservative rule).
      FirstLeak: BoundaryRow option
      /// The first row in forward (topological) order with a NaN/∞ relevance: where a NaN entered the forward pass.
      FirstNonFinite: BoundaryRow option }

module Conservation =
    let private total (n: Node) = if n.Shape.Length = 0 then n else reduceSum [ 0 .. n.Shape.Length - 1 ] false n

    let private boundariesOf (boundaries: Boundaries) (output: Node) : Node list =
        let ctx = Context.create (fun n -> n.Name)
        let order = Traverse.topo [ output ]
        let isInput (n: Node) = match n.Op with Input _ -> n.DType = Float | _ -> false
        let candidate (n: Node) =
            not (obj.ReferenceEquals(n, output)) && ctx.IsInputDependent n
            && (match n.Name with Some name -> not (Markers.isReserved name) | None -> false)
        match boundaries with
        | AllNamed -> order |> Array.filter candidate |> List.ofArray
        | NamesMatching glob ->
            let matches = Selector.compile (NameGlob glob) ctx
            order |> Array.filter (fun n -> candidate n && (isInput n || matches n)) |> List.ofArray
        | Nodes nodes ->
            let wanted = HashSet<Node>(nodes, HashIdentity.Reference)
            order |> Array.filter wanted.Contains |> List.ofArray

    /// Relevance at every boundary under `output` for the seed, from one forward and one backward pass computed by
    /// `evaluate` (which runs a list of nodes and returns their values, e.g. on a session that holds the weights).
    let checkWith (evaluate: Node list -> float[] list) (ruleSet: RuleSet) (output: Node) (seed: Node)
                  (boundaries: Boundaries) (tolerance: float) : ConservationReport =
        let nodes = boundariesOf boundaries output
        let relevances = Lrp.relevance ruleSet output seed nodes
        let all = total (mul output seed) :: relevances
        let results = evaluate all
        let target = results.Head.[0]
        let sums = results.Tail |> List.map Array.sum
        let nonFinite = results.Tail |> List.map (Array.filter (Double.IsFinite >> not) >> Array.length)
        let names = nodes |> List.map (fun n -> defaultArg n.Name (Node.Describe n))
        let outs = sums @ [ target ]
        let ins = match sums with [] -> [ target ] | first :: _ -> first :: sums
        let targetNonFinite = if Double.IsFinite target then 0 else 1
        let rows =
            List.zip3 (names @ [ defaultArg output.Name "target" ]) (List.zip ins outs) (nonFinite @ [ targetNonFinite ])
            |> List.map (fun (name, (i, o), bad) -> { Name = name; In = i; Out = o; NonFinite = bad })
        let allowed = tolerance * max 1.0 (Math.Abs target)
        let leaks (r: BoundaryRow) = Double.IsFinite r.In && Double.IsFinite r.Out && Math.Abs(r.Out - r.In) > allowed
        { RuleSet = ruleSet.Name
          Target = target
          Rows = rows
          Tolerance = tolerance
          FirstLeak = rows |> List.rev |> List.tryFind leaks
          FirstNonFinite = rows |> List.tryFind (fun r -> r.NonFinite > 0) }

    /// `checkWith` on `backend`, with `values` binding inputs and parameters by name.
    let check (backend: IBackend) (ruleSet: RuleSet) (output: Node) (seed: Node) (values: Map<string, float[]>)
              (boundaries: Boundaries) (tolerance: float) : ConservationReport =
        checkWith (fun nodes -> HostEvaluation.evaluate backend values nodes |> List.ofArray) ruleSet output seed boundaries tolerance

    /// The report as a plain-text table.
    let toString (report: ConservationReport) : string =
        let sb = StringBuilder()
        let line (s: string) = sb.AppendLine s |> ignore
        line (sprintf "conservation under %s: target Σ output ⊙ seed = %.10g (tolerance %g)" report.RuleSet report.Target report.Tolerance)
        let width = report.Rows |> List.fold (fun w r -> max w r.Name.Length) 8
        line (sprintf "%-*s %18s %18s %14s %9s" width "boundary" "Σ R in" "Σ R out" "out − in" "NaN/∞")
        for r in report.Rows do
            line (sprintf "%-*s %18.10g %18.10g %14.4g %9d" width r.Name r.In r.Out (r.Out - r.In) r.NonFinite)
        match report.FirstLeak with
        | Some r -> line (sprintf "first leak: '%s' (Σ R %.10g in, %.10g out)" r.Name r.In r.Out)
        | None -> line "no leak beyond the tolerance"
        match report.FirstNonFinite with
        | Some r -> line (sprintf "first NaN/∞: '%s' (%d entries)" r.Name r.NonFinite)
        | None -> ()
        sb.ToString()
