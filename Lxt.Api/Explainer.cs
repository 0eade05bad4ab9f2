// Explainer: relevance of a prediction under a rule set — one forward pass to pick the target, one rewritten
// forward + backward pass for relevance at the input and at any named node.
using System.Diagnostics;
using Lxt.Graph;
using Lxt.Rules;
using Microsoft.FSharp.Collections;
using Microsoft.FSharp.Core;

namespace Lxt;

/// <summary>An attribution method: an LRP rule set or a gradient baseline, identified as on the command line.</summary>
public sealed class Method
{
    private Method(string id, Lxt.Rules.RuleSet ruleSet)
    {
        Id = id;
        RuleSet = ruleSet;
    }

    /// <summary>The command-line id (<c>attnlrp</c>, <c>cp-lrp</c>, ...).</summary>
    public string Id { get; }
    public string Name => RuleSet.Name;
    internal Lxt.Rules.RuleSet RuleSet { get; }

    /// <summary>AttnLRP (Achtibat et al., 2024), the default.</summary>
    public static Method AttnLrp { get; } = new("attnlrp", RuleSets.attnLrp);
    /// <summary>CP-LRP: attention weights and gates treated as constants.</summary>
    public static Method CpLrp { get; } = new("cp-lrp", RuleSets.cpLrp);
    public static Method Gradient { get; } = new("gradient", RuleSets.gradient);
    public static Method InputXGradient { get; } = new("input-x-gradient", RuleSets.inputXGradient);
    /// <summary>LRP-ε on linear layers, no special attention handling.</summary>
    public static Method Epsilon(double epsilon = 1e-6) => new("epsilon", RuleSets.epsilon(epsilon));
    /// <summary>CP-LRP with Zennit's Gamma rule on Conv2d and Linear layers (the reference's ViT recipe). Fused attention
    /// input projections (<c>*in_proj*</c>, torchvision's MultiheadAttention) are no Linear modules there and keep CP-LRP.</summary>
    public static Method CpLrpGamma(double convGamma = 0.25, double linearGamma = 0.05) =>
        new("cp-lrp", RuleSets.composite(
            ListModule.OfArray(new[] { Tuple.Create(Selector.NewNameGlob("*in_proj*"), RuleSets.cpLrp), Tuple.Create(Selector.NewNameGlob("*self_attention.out_proj*"), RuleSets.cpLrp) }),
            RuleSets.cpLrpGamma(convGamma, linearGamma)));

    /// <summary>The ids <see cref="Parse"/> accepts.</summary>
    public static IReadOnlyList<string> Ids { get; } = ["attnlrp", "cp-lrp", "epsilon", "gradient", "input-x-gradient"];

    /// <summary>A method from its id; Gamma values (for CP-LRP) add the Gamma rule on Conv2d / Linear layers.</summary>
    public static Method Parse(string id, double? convGamma = null, double? linearGamma = null) => id switch
    {
        "attnlrp" when convGamma is null && linearGamma is null => AttnLrp,
        "cp-lrp" when convGamma is null && linearGamma is null => CpLrp,
        "cp-lrp" => CpLrpGamma(convGamma ?? 0.0, linearGamma ?? 0.0),
        "epsilon" => Epsilon(),
        "gradient" => Gradient,
        "input-x-gradient" => InputXGradient,
        "attnlrp" => throw new ArgumentException("the Gamma rule combines with cp-lrp (the reference's ViT recipe), not with attnlrp"),
        _ => throw new ArgumentException($"unknown method '{id}' (known: {string.Join(", ", Ids)})"),
    };

    public override string ToString() => Id;
}

/// <summary>What to explain and where to read relevance.</summary>
public sealed record ExplainOptions
{
    public Method Method { get; init; } = Method.AttnLrp;
    /// <summary>The output index to explain; null = the arg-max.</summary>
    public int? Target { get; init; }
    /// <summary>Contrast the target against these indices (seed +1 at the target, −1/N at each of them).</summary>
    public IReadOnlyList<int>? ContrastWith { get; init; }
    /// <summary>Named nodes whose relevance to compute in the same backward pass (latent relevance).</summary>
    public IReadOnlyList<string> Nodes { get; init; } = [];
    /// <summary>Gradient checkpointing: trades a second forward pass through each segment for memory. Relevance is
    /// the same as without it.</summary>
    public Checkpointing Checkpointing { get; init; } = Checkpointing.None;

    /// <summary>Masked attention over more queries than this is computed in blocks of this many query rows (a last
    /// block of fewer than half as many joins the one before), each block over only the keys its rows keep (<see cref="QueryBlocks"/>): under a causal mask over T tokens in blocks of T/4
    /// rows, 5/8 of the [heads, T, T] scores and probabilities are computed and kept. Relevance is the same up to
    /// rounding; attention with a node asked for (<see cref="Nodes"/>) inside it is computed whole. 0 computes every
    /// attention whole. Default <see cref="DefaultAttentionBlockRows"/>.</summary>
    public int AttentionBlockRows
    {
        get => _attentionBlockRows;
        init => _attentionBlockRows = value >= 0 ? value : throw new ArgumentOutOfRangeException(nameof(value), $"attention blocks of {value} query rows");
    }
    private readonly int _attentionBlockRows = DefaultAttentionBlockRows;

    /// <summary>The default of <see cref="AttentionBlockRows"/>: attention over up to 512 tokens is computed whole.</summary>
    public const int DefaultAttentionBlockRows = 512;

    /// <summary>False (the default) computes each value only at the positions the explained output and the asked
    /// <see cref="Nodes"/> read (<see cref="SlicePushdown"/>): the logits of one position read one row of the last
    /// layer's attention, norms and MLP, so that layer computes that row alone, forward and backward, while its keys
    /// and values stay whole. Relevance is the same up to rounding. True computes every position, as the model graph
    /// does.</summary>
    public bool AllPositions { get; init; }

    /// <summary>True computes each attention softmax(mask(scale·Q·Kᵀ))·V that the rule set leaves in gradient form as
    /// one op (<see cref="FusedAttention"/>): the backward pass recomputes the probabilities from Q, K and one
    /// log-sum-exp per row, so no [heads, T, keys] scores or probabilities are stored, forward or backward, and
    /// <see cref="AttentionBlockRows"/> does not apply. Relevance is the same up to rounding; attention with a node asked
    /// for (<see cref="Nodes"/>) inside it, or with a mask other than causal (with or without a window) or none, is
    /// computed as products and a softmax. Null (the default) leaves it to the backend
    /// (<see cref="IAttentionChoice"/>): one op on the CPU, products and a softmax on the GPU's CUDA cores and on the
    /// float64 reference.</summary>
    public bool? FusedAttention { get; init; }

    /// <summary>Whether an explanation on <paramref name="backend"/> computes attention as one op: as
    /// <see cref="FusedAttention"/> says, or as the backend chooses.</summary>
    public bool FusesAttentionOn(IBackend backend) => FusedAttention ?? (backend is IAttentionChoice c && c.FusesAttention);
}

/// <summary>
/// Gradient checkpointing for the relevance pass. The backward pass recomputes the activations between checkpoints
/// (nodes of the forward pass, such as layer outputs) from the checkpoint below instead of keeping them from the
/// forward pass: the peak memory holds the checkpoints and one segment's activations. The explained input is always a
/// checkpoint, so the first segment is recomputed too.
/// </summary>
public sealed class Checkpointing
{
    private readonly Func<IReadOnlyList<string>, IReadOnlyList<string>> _select;

    private Checkpointing(string description, Func<IReadOnlyList<string>, IReadOnlyList<string>> select, bool atProducts = false, string? id = null,
        long? intermediateBudget = null)
    {
        Id = id;
        Description = description;
        _select = select;
        AtProducts = atProducts;
        IntermediateBudget = intermediateBudget;
    }

    /// <summary>The name command lines give the choice (none, layers, sqrt, products, products:GiB); null for
    /// <see cref="At"/>.</summary>
    public string? Id { get; }

    /// <summary>For <see cref="ProductsWithin"/>: the bytes of intermediate values the explanation may hold.</summary>
    public long? IntermediateBudget { get; }

    /// <summary>What is checkpointed, in words.</summary>
    public string Description { get; }
    /// <summary>False for <see cref="None"/>, true for every other choice.</summary>
    public bool IsEnabled => !ReferenceEquals(this, None);
    /// <summary>True for <see cref="Products"/>: the checkpoints are chosen by op (the matrix products of the
    /// explained graph), not by name.</summary>
    public bool AtProducts { get; }

    /// <summary>No checkpointing, the default: every activation the backward pass reads is kept from the forward pass.</summary>
    public static Checkpointing None { get; } = new("none", _ => [], id: "none");

    /// <summary>Every layer output (<see cref="Explainer.LayerOutputs"/>): the peak holds one hidden state per layer
    /// and one layer's activations.</summary>
    public static Checkpointing EveryLayer { get; } = new("every layer", layers => layers, id: "layers");

    /// <summary>Every ⌈√L⌉-th of the L layer outputs: the peak grows with √L (checkpoints and one segment of ⌈√L⌉
    /// layers) rather than with L.</summary>
    public static Checkpointing SqrtLayers { get; } = new("every ⌈√L⌉-th layer", layers =>
    {
        int every = (int)Math.Ceiling(Math.Sqrt(layers.Count));
        return layers.Where((_, i) => (i + 1) % every == 0).ToArray();
    }, id: "sqrt");

    /// <summary>Every matrix product (MatMul) and reduction of the forward pass, and the input: the backward pass
    /// recomputes the pointwise, normalisation and layout ops between them (norms, rotary embeddings, activations,
    /// gates, masks, the rules' helper values). It keeps the products' outputs instead of everything derived from them,
    /// for a small share of the forward pass's time; it needs no <see cref="Explainer.LayerOutputs"/>. A product with
    /// more elements than either operand (the attention scores q·kᵀ of an input longer than a head's dimensions) is no
    /// checkpoint: it is recomputed, with its softmax, from the kept queries and keys, so no value of [heads, tokens,
    /// tokens] outlives its layer. The kept reductions (a norm's mean square) let a norm be recomputed without the
    /// residual stream, which is then not kept either.</summary>
    public static Checkpointing Products { get; } = new("every matrix product and reduction", _ => [], atProducts: true, id: "products");

    /// <summary>As <see cref="Products"/>, and the attention probabilities (softmax outputs) of as many layers as fit,
    /// with every other intermediate value of the explanation, in <paramref name="bytes"/> (weights, inputs and outputs
    /// not counted). A layer whose probabilities are kept skips recomputing q·kᵀ and its softmax in the backward pass;
    /// the last layers are kept first. Dry runs of the explanation on the explainer's backend (<see cref="DryRunBackend"/>)
    /// find the most layers that fit, once per explained graph; with too small a budget for any, this is
    /// <see cref="Products"/>.</summary>
    public static Checkpointing ProductsWithin(long bytes)
    {
        if (bytes <= 0) throw new ArgumentOutOfRangeException(nameof(bytes), bytes, "a memory budget must be positive");
        string gib = (bytes / (double)(1L << 30)).ToString("G4", System.Globalization.CultureInfo.InvariantCulture);
        return new($"every matrix product and reduction, and attention probabilities within {gib} GiB of intermediates", _ => [],
            atProducts: true, id: $"products:{gib}", intermediateBudget: bytes);
    }

    /// <summary>The choices with a name, in the order command lines list them (and <c>products:GiB</c>,
    /// <see cref="ProductsWithin"/>).</summary>
    public static IReadOnlyList<Checkpointing> Named { get; } = [None, EveryLayer, SqrtLayers, Products];

    /// <summary>The choice named <paramref name="id"/> (<see cref="Id"/>; <c>products:2.5</c> is
    /// <see cref="ProductsWithin"/> 2.5 GiB), or false.</summary>
    public static bool TryParse(string? id, out Checkpointing checkpointing)
    {
        string? name = id?.Trim();
        checkpointing = Named.FirstOrDefault(c => c.Id == name)!;
        if (checkpointing is null && name is not null && name.StartsWith("products:", StringComparison.Ordinal)
            && double.TryParse(name["products:".Length..], System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out double gib)
            && gib > 0 && gib * (1L << 30) < long.MaxValue)
            checkpointing = ProductsWithin((long)(gib * (1L << 30)));
        return checkpointing is not null;
    }

    /// <summary>The names, for messages: "none, layers, sqrt, products or products:GiB".</summary>
    public static string NamesInWords => string.Join(", ", Named.Select(c => c.Id)) + " or products:GiB";

    /// <summary>The named nodes of the model graph as checkpoints.</summary>
    public static Checkpointing At(params string[] nodes)
    {
        ArgumentNullException.ThrowIfNull(nodes);
        var copy = nodes.ToArray();
        return new($"at {string.Join(", ", copy)}", _ => copy);
    }

    /// <summary>The checkpoint names for a model with these layer outputs.</summary>
    public IReadOnlyList<string> Select(IReadOnlyList<string> layerOutputs) => _select(layerOutputs);

    public override string ToString() => Description;
}

/// <summary>The relevance of one prediction.</summary>
public sealed class Explanation
{
    internal Explanation() { }

    public required Method Method { get; init; }
    public required int Target { get; init; }
    public required double TargetLogit { get; init; }
    /// <summary>The output vector (logits) of the unmodified model.</summary>
    public required double[] Logits { get; init; }
    /// <summary>Relevance of every input element, in the input's shape.</summary>
    public required TensorValue InputRelevance { get; init; }
    /// <summary>Relevance per position: per token (summed over the embedding) for [tokens, hidden] inputs, per pixel
    /// (summed over channels, row-major [height·width]) for [channels, height, width] inputs.</summary>
    public required double[] PerPosition { get; init; }
    /// <summary>Relevance at the requested named nodes, in their shapes.</summary>
    public required IReadOnlyDictionary<string, TensorValue> Nodes { get; init; }
    public double RelevanceSum => PerPosition.Sum();
    /// <summary>Time of a forward pass run before the relevance pass; zero, since the target is picked inside it.</summary>
    public required TimeSpan ForwardTime { get; init; }
    public required TimeSpan RelevanceTime { get; init; }

    /// <summary>Sums a node's relevance over its last axis (per token for [tokens, hidden] nodes).</summary>
    public double[] PerToken(string node) => SumLastAxis(Nodes[node]);

    internal static double[] SumLastAxis(TensorValue v)
    {
        int width = v.Shape[^1], rows = v.Values.Length / width;
        var r = new double[rows];
        // each row summed by one thread, in order: the same sums however the rows are shared out
        if (v.Values.Length >= ParallelSumsFrom) Parallel.For(0, rows, i => r[i] = v.Sum(i * width, width));
        else for (int i = 0; i < rows; i++) r[i] = v.Sum(i * width, width);
        return r;
    }

    /// <summary>Values from which <see cref="SumLastAxis"/> sums rows on several threads (an 8B-shaped input of 2048
    /// tokens holds 8M).</summary>
    internal const int ParallelSumsFrom = 1 << 20;

    internal static double[] SumFirstAxis(TensorValue v)
    {
        int rows = v.Shape[0], width = v.Values.Length / rows;
        var r = new double[width];
        for (int i = 0; i < rows; i++) v.AddTo(i * width, r);
        return r;
    }
}

/// <summary>
/// Explains predictions of one model (its output vector <c>logits</c>) with respect to one float input, on one
/// backend. Rule sets are applied as graph rewrites per call; compiled plans and uploaded weights are reused.
/// </summary>
public sealed class Explainer : IDisposable
{
    private readonly Session _session;
    private readonly Expr _input;
    private readonly Expr _output;
    // the rewritten forward + relevance outputs per (rule set, requested nodes): hash-consing makes a rebuilt graph
    // the same nodes anyway, but the rewrite and the VJP construction themselves cost a pass over the whole graph,
    // which repeated explanations of one input size (Integrated Gradients, SmoothGrad) need not pay
    // (keyed weakly by rule-set instance: parameterised methods such as Method.Epsilon() build a new one per call)
    private readonly System.Runtime.CompilerServices.ConditionalWeakTable<Lxt.Rules.RuleSet, Dictionary<string, Expr[]>> _relevanceGraphs = new();

    public Explainer(Model model, string inputName, IWeightSource weights, Device device = Device.Cpu, int threads = 0, string output = "logits",
                     Lxt.Backend.Gpu.GemmPrecision precision = Lxt.Backend.Gpu.GemmPrecision.Float32)
        : this(model, inputName, new Session(model, weights, device, threads, precision), output) { }

    public Explainer(Model model, string inputName, Session session, string output = "logits")
    {
        _session = session;
        _output = model[output];
        if (_output.Rank != 1) throw new GraphShapeException($"the explained output '{output}' must be a vector, it is {_output}");
        _input = model.Inputs.FirstOrDefault(i => i.Name == inputName)
                 ?? throw new BindingException($"the model has no input '{inputName}' (inputs: {string.Join(", ", model.Inputs)})");
        if (_input.IsInteger) throw new BindingException($"relevance is taken at a float input; '{inputName}' holds integers");
        Model = model;
    }

    public Model Model { get; }
    public Session Session => _session;
    /// <summary>Names of the nodes that are each layer's output, in order: the checkpoints of
    /// <see cref="Checkpointing.EveryLayer"/> and <see cref="Checkpointing.SqrtLayers"/>.</summary>
    public IReadOnlyList<string> LayerOutputs { get; init; } = [];
    /// <summary>The name of the float input relevance is taken at.</summary>
    public string InputName => _input.Name!;
    /// <summary>The shape of that input ([tokens, hidden] for text, [channels, height, width] for images).</summary>
    public IReadOnlyList<int> InputShape => _input.Shape;
    /// <summary>The length of the explained output vector.</summary>
    public int OutputSize => _output.Shape[0];
    internal Expr OutputExpr => _output;
    internal Lxt.Graph.Node InputNode => _input.Node;

    /// <summary>Runs the model and returns its output vector, computed as explanations compute it by default: each value
    /// only at the positions the output reads (<see cref="ExplainOptions.AllPositions"/>), attention as one op where the
    /// backend chooses it (<see cref="ExplainOptions.FusedAttention"/>), else long masked attention in blocks
    /// (<see cref="ExplainOptions.AttentionBlockRows"/>).</summary>
    public double[] Forward(float[] input, CancellationToken cancellation = default)
    {
        _forwardOutput ??= new Expr(ForwardGraph(_output.Node, new ExplainOptions().FusesAttentionOn(_session.Backend)));
        return _session.Evaluate([_forwardOutput], Feeds(input), cancellation)[0].ToDoubleArray();
    }
    private Expr? _forwardOutput;

    /// <summary>Explains one prediction. Without <see cref="ExplainOptions.Target"/> the target is the arg-max of the
    /// outputs, picked inside the relevance pass (its seed is the one-hot of the arg-max, ties to the lower index), so
    /// one forward pass serves both.</summary>
    public Explanation Explain(float[] input, ExplainOptions? options = null, CancellationToken cancellation = default)
    {
        options ??= new ExplainOptions();
        int classes = _output.Shape[0];
        var clock = Stopwatch.StartNew();
        bool pick = options.Target is null;
        // the seed is this offset plus, for a picked target, the one-hot of the arg-max computed in the graph
        var offset = new float[classes];
        if (options.Target is int t)
        {
            if (t < 0 || t >= classes) throw new ArgumentOutOfRangeException(nameof(options), $"target {t} is outside the {classes} outputs");
            offset[t] = 1;
        }
        if (options.ContrastWith is { Count: > 0 } others)
            foreach (var o in others)
            {
                if (o < 0 || o >= classes) throw new ArgumentOutOfRangeException(nameof(options), $"contrast index {o} is outside the {classes} outputs");
                offset[o] -= 1f / others.Count;
            }
        var nodes = options.Nodes.Select(n => Model.FindNode(n) ?? throw new KeyNotFoundException(
            $"the model has no node named '{n}' (named nodes include: {string.Join(", ", Model.NodeNames().Take(12))}, ...)")).ToArray();
        var ruleSet = options.Method.RuleSet;
        var byNodes = _relevanceGraphs.GetOrCreateValue(ruleSet);
        bool fused = options.FusesAttentionOn(_session.Backend);
        var key = (pick ? "arg-max\n" : "") + (options.AllPositions ? "all positions\n" : "") + (fused ? "fused attention\n" : "")
                  + $"blocks {options.AttentionBlockRows}\n" + string.Join("\n", options.Nodes);
        if (!byNodes.TryGetValue(key, out var outputs))
        {
            outputs = RelevanceGraph(_output.Node, _input.Node, ruleSet, options.AttentionBlockRows, nodes.Select(n => n.Node).ToArray(), pick, options.AllPositions,
                    fused)
                .Select(n => new Expr(n)).ToArray();
            byNodes[key] = outputs;
        }
        var feeds = Feeds(input);
        feeds[SeedName] = offset;
        var values = _session.Evaluate(outputs, feeds, null, Checkpoints(options.Checkpointing, outputs), cancellation);
        var logits = values[0].ToDoubleArray();
        int target = options.Target ?? ArgMax(logits);
        if (pick && Math.Abs(values[^1][target] - offset[target] - 1) > 1e-6)
        {
            // the graph's arg-max is not the host's (NaN logits): explain the host's pick explicitly
            return Explain(input, options with { Target = target }, cancellation);
        }
        var inputRelevance = values[1];
        return new Explanation
        {
            Method = options.Method,
            Target = target,
            TargetLogit = logits[target],
            Logits = logits,
            InputRelevance = inputRelevance,
            PerPosition = _input.Rank == 3 ? Explanation.SumFirstAxis(inputRelevance) : Explanation.SumLastAxis(inputRelevance),
            Nodes = options.Nodes.Select((n, i) => (n, values[2 + i])).ToDictionary(p => p.n, p => p.Item2),
            ForwardTime = TimeSpan.Zero,
            RelevanceTime = clock.Elapsed,
        };
    }

    /// <summary>The graph <see cref="Forward"/> evaluates for <paramref name="output"/>: at the rows it reads, with
    /// attention as one op when <paramref name="fusedAttention"/>, else masked attention in blocks.</summary>
    internal static Lxt.Graph.Node ForwardGraph(Lxt.Graph.Node output, bool fusedAttention)
    {
        var computed = ComputedGraph(output, [], fusedAttention ? 0 : ExplainOptions.DefaultAttentionBlockRows, allPositions: false).Output;
        return fusedAttention ? FusedAttention.rewrite(new HashSet<Lxt.Graph.Node>(), ListModule.OfSeq(new[] { computed }))[computed] : computed;
    }

    /// <summary>The graph an explanation of <paramref name="output"/> evaluates: the rule-rewritten output, the relevance
    /// at <paramref name="input"/> and at each node <paramref name="asked"/> for, and, when <paramref name="pick"/>, the
    /// seed (the input named <c>lxt.seed</c>) with the one-hot of the output's arg-max added. Unless
    /// <paramref name="allPositions"/>, each value is computed only at the rows the output and the asked nodes read
    /// (<see cref="ExplainOptions.AllPositions"/>). Masked attention runs in
    /// blocks of <paramref name="attentionBlockRows"/> query rows (<see cref="ExplainOptions.AttentionBlockRows"/>), but
    /// for attention with an asked-for node inside. Profiles of an explanation build their plans from it too.</summary>
    internal static Lxt.Graph.Node[] RelevanceGraph(Lxt.Graph.Node output, Lxt.Graph.Node input, Lxt.Rules.RuleSet ruleSet,
        int attentionBlockRows, Lxt.Graph.Node[] asked, bool pick, bool allPositions = false, bool fusedAttention = false)
    {
        (output, asked) = ComputedGraph(output, asked, fusedAttention ? 0 : attentionBlockRows, allPositions);
        var seedInput = Ops.input(SeedName, output.Shape, DType.Float);
        var exact = FuncConvert.FromFunc<IReadOnlySet<Lxt.Graph.Node>, FSharpList<Lxt.Graph.Node>, IReadOnlyDictionary<Lxt.Graph.Node, Lxt.Graph.Node>>(
            fusedAttention ? FusedAttention.rewrite : Lrp.unchanged);
        var (rewrittenOutput, seedNode, relevance) = Lrp.relevanceThrough(exact, ruleSet, output,
            FuncConvert.FromFunc<Lxt.Graph.Node, Lxt.Graph.Node>(o => pick ? Ops.add(Ops.topKMask(1, o), seedInput) : seedInput),
            ListModule.OfSeq(new[] { input }.Concat(asked)));
        return new[] { rewrittenOutput }.Concat(relevance).Concat(pick ? [seedNode] : []).ToArray();
    }

    /// <summary>The model graph under <paramref name="output"/> as explanations compute it, and the images of the
    /// <paramref name="asked"/> nodes in it, which keep their values: unless <paramref name="allPositions"/>, each value
    /// only at the rows read (<see cref="SlicePushdown"/>); masked attention in blocks of <paramref name="attentionBlockRows"/>
    /// query rows where that is not 0 (<see cref="QueryBlocks"/>).</summary>
    internal static (Lxt.Graph.Node Output, Lxt.Graph.Node[] Asked) ComputedGraph(Lxt.Graph.Node output, Lxt.Graph.Node[] asked,
        int attentionBlockRows, bool allPositions)
    {
        void Apply(Func<HashSet<Lxt.Graph.Node>, FSharpList<Lxt.Graph.Node>, IReadOnlyDictionary<Lxt.Graph.Node, Lxt.Graph.Node>> rewrite)
        {
            var map = rewrite(new HashSet<Lxt.Graph.Node>(asked, ReferenceEqualityComparer.Instance), ListModule.OfArray(new[] { output }));
            (output, asked) = (map[output], asked.Select(n => map.TryGetValue(n, out var m) ? m : n).ToArray());
        }
        if (!allPositions) Apply(SlicePushdown.rewrite);
        if (attentionBlockRows > 0) Apply((whole, roots) => QueryBlocks.rewrite(attentionBlockRows, whole, roots));
        return (output, asked);
    }

    /// <summary>The input holding an explanation's seed (see <see cref="RelevanceGraph"/>).</summary>
    internal const string SeedName = "lxt.seed";

    // the checkpoints found for each checkpointing choice and each explained graph (its cached outputs array), so
    // repeated explanations do not walk the graph again
    private readonly System.Runtime.CompilerServices.ConditionalWeakTable<Checkpointing, Dictionary<Expr[], IReadOnlyList<Expr>>> _checkpoints = new();

    // the checkpoints as nodes of the rewritten graph (rules keep names on the nodes that hold a layer's value)
    private IReadOnlyList<Expr> Checkpoints(Checkpointing checkpointing, Expr[] outputs)
    {
        if (!checkpointing.IsEnabled) return [];
        var byGraph = _checkpoints.GetValue(checkpointing, _ => new Dictionary<Expr[], IReadOnlyList<Expr>>(ReferenceEqualityComparer.Instance));
        if (!byGraph.TryGetValue(outputs, out var found)) byGraph[outputs] = found = FindCheckpoints(checkpointing, outputs);
        return found;
    }

    private IReadOnlyList<Expr> FindCheckpoints(Checkpointing checkpointing, Expr[] outputs)
    {
        if (checkpointing.AtProducts)
        {
            var products = ProductCheckpoints(_input.Node, outputs[0]);
            return checkpointing.IntermediateBudget is long budget ? WithProbabilities(products, outputs, budget) : products;
        }
        var names = checkpointing.Select(LayerOutputs);
        if (names.Count == 0)
            throw new InvalidOperationException($"checkpointing {checkpointing} needs the layer outputs: set Explainer.LayerOutputs or use Checkpointing.At");
        var named = new Dictionary<string, Lxt.Graph.Node>();
        foreach (var n in Traverse.topo(outputs.Select(o => o.Node)))
            if (n.Name is { } name) named.TryAdd(name.Value, n);
        return names.Select(n => named.TryGetValue(n, out var node) ? new Expr(node) : throw new KeyNotFoundException(
                $"checkpoint '{n}' is no named node of the explained graph"))
            .Prepend(new Expr(_input.Node)).ToArray();
    }

    // the matrix products of the rewritten forward graph (under the rewritten output, so markers the rules put around
    // them are looked through), its reductions and the input. Products with more elements than either operand
    // (attention scores q·kᵀ once the tokens outnumber a head's dimensions) are left out: they are recomputed from
    // their operands with the softmax over them, one product per layer, so no [heads, tokens, tokens] value is kept
    // from the forward pass. Reductions (the mean square of a norm) are kept because they are small and a segment's
    // norm can then be recomputed without the residual stream, which no product's backward reads. Softmax outputs are
    // left out: keeping them as well gave the same peak on a 1B-shaped Llama at 512 tokens. An attention op's output
    // is kept as the products are, so the backward pass never computes an attention twice.
    internal static IReadOnlyList<Expr> ProductCheckpoints(Lxt.Graph.Node input, Expr rewrittenOutput)
    {
        var checkpoints = new List<Expr> { new(input) };
        foreach (var n in Traverse.topo(new[] { rewrittenOutput.Node }))
        {
            bool keep = n.Op switch
            {
                Op.MatMul m => ShapeModule.numel(n.Shape) <= Math.Max(ShapeModule.numel(m.a.Shape), ShapeModule.numel(m.b.Shape)),
                Op.Reduce => true,
                Op.Attention a => a.part.IsOutput, // attention as one op: its output, O and L, the size of a product's
                _ => false,
            };
            if (keep) checkpoints.Add(new Expr(n));
        }
        return checkpoints;
    }

    // the product checkpoints and the softmax outputs of the rewritten forward graph's last k layers, for the largest k
    // whose planned intermediate peak is within the budget (the peak grows with k: each kept layer holds its
    // probabilities from the forward pass to the backward)
    private IReadOnlyList<Expr> WithProbabilities(IReadOnlyList<Expr> products, Expr[] outputs, long budget)
    {
        var probabilities = Traverse.topo(new[] { outputs[0].Node }).Where(n => n.Op.IsSoftmax).Reverse().ToArray();
        IReadOnlyList<Expr> Keeping(int k) => products.Concat(probabilities.Take(k).Select(n => new Expr(n))).ToArray();
        bool Fits(int k) => PlannedIntermediates(outputs, Keeping(k)) <= budget;
        int lo = 0, hi = probabilities.Length;
        if (Fits(hi)) return Keeping(hi);
        while (hi - lo > 1)
        {
            int mid = (lo + hi) / 2;
            if (Fits(mid)) lo = mid; else hi = mid;
        }
        return Keeping(lo);
    }

    // the most intermediate bytes an explanation with these checkpoints holds, from a dry run that plans as this
    // explainer's backend does and computes nothing
    private long PlannedIntermediates(Expr[] outputs, IReadOnlyList<Expr> checkpoints)
    {
        var plan = PlanModule.compileWith(new PlanOptions(ListModule.OfSeq(checkpoints.Select(c => c.Node))),
            ListModule.OfSeq(outputs.Select(o => o.Node)));
        DryRunBackend dry;
        try { dry = new DryRunBackend(_session.Backend); }
        catch (ArgumentException e)
        {
            throw new NotSupportedException($"checkpointing within a memory budget plans with dry runs as the explainer's backend does, and backend {_session.Backend.Name} cannot be planned so ({e.Message}); use Checkpointing.Products on it", e);
        }
        IBackend backend = dry;
        using var exe = new Executable(plan, dry);
        foreach (var p in PlanModule.parameters(plan))
            exe.BindParameter(((Op.Parameter)p.Op).name, backend.Allocate(ShapeModule.numel(p.Shape)), true);
        var feeds = PlanModule.inputs(plan).ToDictionary(i => ((Op.Input)i.Op).name, i => backend.Allocate(ShapeModule.numel(i.Shape)));
        exe.Recycle(exe.Run(feeds));
        foreach (var f in feeds.Values) f.Dispose();
        return exe.PeakIntermediateBytes;
    }

    private Dictionary<string, float[]> Feeds(float[] input) => new() { [_input.Name!] = input };

    private static int ArgMax(double[] v)
    {
        int best = 0;
        for (int i = 1; i < v.Length; i++) if (v[i] > v[best]) best = i;
        return best;
    }

    public void Dispose() => _session.Dispose();
}

/// <summary>One boundary of a conservation check: Σ relevance arriving from the boundary above and found here.</summary>
public sealed record ConservationRow(string Name, double In, double Out, int NonFinite)
{
    public double Leak => Out - In;
}

/// <summary>Layer-by-layer conservation of relevance for one prediction: the first leaking layer and the first NaN, by name.</summary>
public sealed record ConservationResult(
    string RuleSet, double Target, double Tolerance, IReadOnlyList<ConservationRow> Rows,
    ConservationRow? FirstLeak, ConservationRow? FirstNonFinite, string Report);

public static class ConservationExtensions
{
    /// <summary>
    /// Sums relevance at the named <paramref name="boundaries"/> (nodes that cut the whole graph, such as the layer
    /// outputs) in one backward pass, and reports where relevance leaks beyond <paramref name="tolerance"/>·max(1,
    /// |target|) and where a NaN/∞ first appears. The input is always the first boundary.
    /// </summary>
    public static ConservationResult CheckConservation(this Explainer explainer, float[] input, Method method,
        IReadOnlyList<string> boundaries, int? target = null, double tolerance = 1e-6)
    {
        var nodes = boundaries.Select(b => explainer.Model.FindNode(b)?.Node
            ?? throw new KeyNotFoundException($"the model has no node named '{b}'")).Prepend(explainer.InputNode);
        return Check(explainer, input, method, Boundaries.NewNodes(ListModule.OfSeq(nodes)), target, tolerance);
    }

    /// <summary>As <see cref="CheckConservation(Explainer, float[], Method, IReadOnlyList{string}, int?, double)"/> with
    /// every named node matching a glob (<c>*</c>, <c>?</c>) as a boundary.</summary>
    public static ConservationResult CheckConservation(this Explainer explainer, float[] input, Method method,
        string boundaryGlob, int? target = null, double tolerance = 1e-6) =>
        Check(explainer, input, method, Boundaries.NewNamesMatching(boundaryGlob), target, tolerance);

    private static ConservationResult Check(Explainer explainer, float[] input, Method method, Boundaries boundaries, int? target, double tolerance)
    {
        var logits = explainer.Forward(input);
        int t = target ?? Array.IndexOf(logits, logits.Max());
        var output = explainer.OutputExpr.Node;
        var seed = Seeds.at(output, ListModule.OfArray(new[] { t }));
        var feeds = new Dictionary<string, float[]> { [explainer.InputName] = input };
        var evaluate = Microsoft.FSharp.Core.FuncConvert.FromFunc((FSharpList<Lxt.Graph.Node> nodes) =>
            ListModule.OfSeq(explainer.Session.Evaluate(nodes.Select(n => new Expr(n)).ToArray(), feeds).Select(v => v.ToDoubleArray())));
        var report = Conservation.checkWith(evaluate, method.RuleSet, output, seed, boundaries, tolerance);
        ConservationRow Row(BoundaryRow r) => new(r.Name, r.In, r.Out, r.NonFinite);
        return new ConservationResult(report.RuleSet, report.Target, report.Tolerance, report.Rows.Select(Row).ToArray(),
            report.FirstLeak is { } leak ? Row(leak.Value) : null,
            report.FirstNonFinite is { } nan ? Row(nan.Value) : null,
            Conservation.toString(report));
    }
}
