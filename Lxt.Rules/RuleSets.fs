// Rule sets as values: AttnLRP, CP-LRP, ε, Gamma, the gradient baselines, and Zennit-style composites.
namespace Lxt.Rules

open System.Text.RegularExpressions
open Lxt.Graph

/// How relevance is read off the rewritten graph's gradient.
type RelevanceForm =
    /// R_x = x ⊙ ∂target/∂x (every LRP rule set, and Input × Gradient).
    | GradientTimesInput
    /// R_x = ∂target/∂x (the Gradient baseline).
    | GradientOnly

/// A rule set: rules tried in order on every node (the first that applies wins), and the relevance form.
/// Swapping rule sets never touches the model graph: every rewrite starts by stripping other sets' markers.
type RuleSet = { Name: string; Rules: LrpRule list; Form: RelevanceForm }

/// Which nodes a composite entry applies to.
type Selector =
    /// The op's kind: a union case ("MatMul", "Conv2d", "Softmax"), or a unary/binary op ("Silu", "Mul", "Add").
    | OpKind of string
    /// The node's scope (its name, or its nearest named user's: see Context.Scope) against a glob: `*` any run of
    /// characters, `?` one character ("*.mlp.*" selects everything inside modules whose names contain ".mlp.").
    | NameGlob of string
    | Matching of (Node -> bool)

module RuleSet =
    /// The rules of `ruleSet` as graph rewrites for one rewrite's context.
    let instantiate (ctx: Context) (ruleSet: RuleSet) : Rewrite.RuleSet =
        ruleSet.Rules |> List.map (fun r -> Rewrite.rule r.Name (r.Apply ctx))

module Selector =
    /// The op kind name `OpKind` compares with.
    let opKind (n: Node) =
        match n.Op with
        | Unary(o, _) -> string o
        | Binary(o, _, _) -> string o
        // every Op case carries fields, so it is its own nested class named after the case
        | op -> op.GetType().Name

    let private globRegex (glob: string) =
        Regex("^" + Regex.Escape(glob).Replace(@"\*", ".*").Replace(@"\?", ".") + "$", RegexOptions.CultureInvariant)

    /// A predicate for the selector (globs are compiled once).
    let compile (selector: Selector) : Context -> Node -> bool =
        match selector with
        | OpKind kind -> fun _ n -> opKind n = kind
        | NameGlob glob ->
            let r = globRegex glob
            fun ctx n -> match ctx.Scope n with Some name -> r.IsMatch name | None -> false
        | Matching f -> fun _ n -> f n

module RuleSets =
    /// AttnLRP (Achtibat et al., ICML 2024) as the reference's efficient mode computes it: identity rule on
    /// activations, identity on normalisation scales, ½ rule on products of two input-dependent factors (QKᵀ,
    /// attention·V, gated MLPs); linear layers, additions, softmax and means keep their plain gradient (ε-LRP,
    /// and for softmax the Deep-Taylor rule R_x = x ⊙ (R − s·ΣR)). Not exactly conservative: softmax absorbs.
    let attnLrp =
        { Name = "AttnLRP"; Rules = [ Rules.identity; Rules.normalisationScale; Rules.uniformProduct ]; Form = GradientTimesInput }

    /// CP-LRP: AttnLRP with the softmax output and the gated MLP's gate branch as constants (no ÷2 on the gated
    /// product). Relevance flows through V only; exactly conservative on bias-free models.
    let cpLrp =
        { Name = "CP-LRP"
          Rules = [ Rules.identity; Rules.normalisationScale; Rules.constantAttention; Rules.constantGate; Rules.uniformProduct ]
          Form = GradientTimesInput }

    /// LRP-ε with no special treatment of attention: ε-rule on linear layers (plain gradient when ε = 0), identity
    /// on activations and normalisation scales, products of two input-dependent factors keep their plain gradient
    /// (Gradient × Input on them, which double-counts: Σ R_a + Σ R_b = 2 Σ R for a ⊙ b).
    let epsilon (eps: float) =
        { Name = sprintf "ε-LRP (ε=%g)" eps
          Rules = [ Rules.identity; Rules.normalisationScale ] @ (if eps > 0.0 then Rules.epsilonLinear eps else [])
          Form = GradientTimesInput }

    /// Zennit's Gamma rule on Conv2d (γ = `conv`) and dense (γ = `linear`) layers, otherwise as `epsilon`.
    let gamma (conv: float, linear: float) =
        { Name = sprintf "Gamma (conv γ=%g, linear γ=%g)" conv linear
          Rules = [ Rules.identity; Rules.normalisationScale ] @ Rules.gammaLinear conv linear
          Form = GradientTimesInput }

    /// The reference's ViT recipe: CP-LRP on attention and Gamma on Conv2d and dense layers.
    let cpLrpGamma (conv: float, linear: float) =
        { Name = sprintf "CP-LRP + Gamma (conv γ=%g, linear γ=%g)" conv linear
          Rules = Rules.gammaLinear conv linear @ cpLrp.Rules
          Form = GradientTimesInput }

    /// The Gradient baseline: no rewrite, relevance is the gradient itself.
    let gradient = { Name = "Gradient"; Rules = []; Form = GradientOnly }

    /// The Input × Gradient baseline: no rewrite, relevance is x ⊙ gradient.
    let inputXGradient = { Name = "Input × Gradient"; Rules = []; Form = GradientTimesInput }

    /// A Zennit-style composite: each node gets the rules of the first entry whose selector matches it, or the
    /// fallback's rules when none does. The relevance form is the fallback's.
    let composite (entries: (Selector * RuleSet) list) (fallback: RuleSet) : RuleSet =
        let compiled = entries |> List.map (fun (s, rs) -> Selector.compile s, rs)
        let pick (ctx: Context) (rules: LrpRule list) (n: Node) = rules |> List.tryPick (fun r -> r.Apply ctx n)
        let dispatch =
            { Name = "composite"
              Apply = fun ctx n ->
                match compiled |> List.tryFind (fun (matches, _) -> matches ctx n) with
                | Some(_, rs) -> pick ctx rs.Rules n
                | None -> pick ctx fallback.Rules n }
        let names = entries |> List.map (fun (s, rs) -> sprintf "%A → %s" s rs.Name)
        { Name = sprintf "composite [%s] else %s" (System.String.Join("; ", names)) fallback.Name
          Rules = [ dispatch ]
          Form = fallback.Form }
