// Neuron relevance for language models: the top-k neurons (or attention heads) of a named node for one prediction,
// and the mean relevance per neuron over a corpus (one backward pass per example).
namespace Lxt.Generation;

/// <summary>How neuron relevance is computed over a corpus.</summary>
public sealed record NeuronAnalysisOptions
{
    public Method Method { get; init; } = Method.AttnLrp;
    /// <summary>Examples longer than this are cut to their first MaxTokens tokens.</summary>
    public int MaxTokens { get; init; } = 128;
    public IReadOnlyList<Steer> Steering { get; init; } = [];
}

/// <summary>Relevance per neuron of one node, averaged over a corpus (each example: the sum over its tokens).</summary>
public sealed class NeuronStatistics
{
    public required string Node { get; init; }
    public required int Examples { get; init; }
    /// <summary>Mean over examples of the relevance per neuron.</summary>
    public required double[] MeanRelevance { get; init; }
    /// <summary>Mean over examples of |relevance| per neuron.</summary>
    public required double[] MeanAbsoluteRelevance { get; init; }

    /// <summary>The k neurons of largest mean relevance (or of largest mean |relevance|), best first.</summary>
    public IReadOnlyList<NeuronScore> TopK(int k, NeuronRanking ranking = NeuronRanking.Positive) =>
        Neurons.TopK(Node, ranking == NeuronRanking.Absolute ? MeanAbsoluteRelevance : MeanRelevance, k, NeuronRanking.Positive);
}

public static class NeuronAnalysis
{
    /// <summary>
    /// The <paramref name="k"/> most relevant neurons of <paramref name="node"/> (e.g. <c>model.layers.0.mlp.act_fn</c>,
    /// <c>model.layers.0.self_attn.attn_weights</c> for heads, <c>model.layers.0</c> for the residual stream) for the
    /// prediction after <paramref name="ids"/> (its arg-max, or <paramref name="target"/>), summed over tokens or at
    /// <paramref name="token"/>.
    /// </summary>
    public static IReadOnlyList<NeuronScore> TopNeurons(LanguageModel model, IReadOnlyList<int> ids, string node, int k,
        int? token = null, int? target = null, Method? method = null, NeuronRanking ranking = NeuronRanking.Positive,
        IReadOnlyList<Steer>? steering = null, CancellationToken cancellation = default)
    {
        var e = model.Explain(ids, new ExplainOptions { Method = method ?? Method.AttnLrp, Target = target, Nodes = [node] }, steering, cancellation);
        return e.TopNeurons(node, k, token, ranking);
    }

    /// <summary>
    /// Mean relevance per neuron of each of <paramref name="nodes"/> over a corpus: every example explains its
    /// "target" (or the model's arg-max after it) in one backward pass that also yields relevance at all nodes.
    /// </summary>
    public static IReadOnlyDictionary<string, NeuronStatistics> Aggregate(LanguageModel model, IEnumerable<CorpusExample> examples,
        IReadOnlyList<string> nodes, NeuronAnalysisOptions? options = null, IProgress<int>? progress = null, CancellationToken cancellation = default)
    {
        options ??= new NeuronAnalysisOptions();
        if (nodes.Count == 0) throw new ArgumentException("name at least one node");
        var sums = new Dictionary<string, double[]>();
        var absSums = new Dictionary<string, double[]>();
        int count = 0;
        foreach (var example in examples)
        {
            cancellation.ThrowIfCancellationRequested();
            var ids = example.Ids(model, options.MaxTokens);
            var e = model.Explain(ids, new ExplainOptions { Method = options.Method, Target = example.Target, Nodes = nodes }, options.Steering, cancellation);
            foreach (var node in nodes)
            {
                var r = e.Nodes[node];
                var per = e.RelevancePerNeuron(node);
                var abs = Neurons.PerNeuron(node, r, absolute: true);
                if (!sums.TryGetValue(node, out var s)) { sums[node] = s = new double[per.Length]; absSums[node] = new double[per.Length]; }
                for (int i = 0; i < per.Length; i++) { s[i] += per[i]; absSums[node][i] += abs[i]; }
            }
            count++;
            progress?.Report(count);
        }
        if (count == 0) throw new CorpusException("the corpus holds no examples");
        return nodes.ToDictionary(n => n, n => new NeuronStatistics
        {
            Node = n,
            Examples = count,
            MeanRelevance = sums[n].Select(v => v / count).ToArray(),
            MeanAbsoluteRelevance = absSums[n].Select(v => v / count).ToArray(),
        });
    }
}
