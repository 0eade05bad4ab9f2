// Neurons: which axis of a named node holds its neurons (attention heads for attention weights), per-neuron sums of
// relevance (or activation) over tokens or at one token, and the top-k of them.
namespace Lxt;

/// <summary>How neurons are ranked: by signed relevance (largest first) or by its magnitude.</summary>
public enum NeuronRanking
{
    Positive,
    Absolute,
}

/// <summary>One neuron of a named node with its score (relevance, or an activation).</summary>
public sealed record NeuronScore(string Node, int Index, double Value);

/// <summary>
/// Neuron-level views of node tensors. A node's neurons lie along its last axis ([tokens, features] nodes such as
/// <c>model.layers.0.mlp.act_fn</c> or a layer output), except for attention weights <c>{scope}.attn_weights</c>
/// [heads, queries, keys], whose "neurons" are the heads (axis 0). The token axis is the first axis, or the query
/// axis of attention weights.
/// </summary>
public static class Neurons
{
    /// <summary>The axis holding the neurons of a node named <paramref name="name"/> with this shape.</summary>
    public static int NeuronAxis(string name, IReadOnlyList<int> shape) =>
        IsAttentionWeights(name, shape) ? 0 : shape.Count - 1;

    /// <summary>The token axis of such a node, or null for a node without one (a vector).</summary>
    public static int? TokenAxis(string name, IReadOnlyList<int> shape) =>
        IsAttentionWeights(name, shape) ? 1 : shape.Count >= 2 ? 0 : null;

    /// <summary>How many neurons (or heads) the node has.</summary>
    public static int Count(string name, IReadOnlyList<int> shape) => shape[NeuronAxis(name, shape)];

    private static bool IsAttentionWeights(string name, IReadOnlyList<int> shape) =>
        shape.Count == 3 && name.EndsWith("attn_weights", StringComparison.Ordinal);

    /// <summary>
    /// Sums a node's values per neuron: over every other axis, or — with <paramref name="token"/> — only at that
    /// token (for attention weights: the row of that query, summed over keys); <paramref name="absolute"/> sums |values|.
    /// </summary>
    public static double[] PerNeuron(string name, TensorValue values, int? token = null, bool absolute = false)
    {
        var shape = values.Shape;
        int axis = NeuronAxis(name, shape), n = shape[axis];
        int? tokenAxis = TokenAxis(name, shape);
        if (token is int t && (tokenAxis is not int ta || t < 0 || t >= shape[ta]))
            throw new ArgumentOutOfRangeException(nameof(token),
                $"token {t} is outside node '{name}' [{string.Join(", ", shape)}]");
        var strides = new int[shape.Count];
        for (int a = shape.Count - 1, s = 1; a >= 0; s *= shape[a], a--) strides[a] = s;
        var sums = new double[n];
        int count = values.Values.Length;
        for (int flat = 0; flat < count; flat++)
        {
            if (token is int tk && flat / strides[tokenAxis!.Value] % shape[tokenAxis.Value] != tk) continue;
            sums[flat / strides[axis] % n] += absolute ? Math.Abs(values[flat]) : values[flat];
        }
        return sums;
    }

    /// <summary>The <paramref name="k"/> best neurons of per-neuron scores, best first.</summary>
    public static IReadOnlyList<NeuronScore> TopK(string node, IReadOnlyList<double> perNeuron, int k, NeuronRanking ranking = NeuronRanking.Positive)
    {
        if (k < 1) throw new ArgumentOutOfRangeException(nameof(k), $"k must be at least 1, it is {k}");
        Func<double, double> key = ranking == NeuronRanking.Absolute ? Math.Abs : v => v;
        return Enumerable.Range(0, perNeuron.Count)
            .OrderByDescending(i => double.IsNaN(perNeuron[i]) ? double.NegativeInfinity : key(perNeuron[i])).ThenBy(i => i)
            .Take(k).Select(i => new NeuronScore(node, i, perNeuron[i])).ToArray();
    }

    /// <summary>Relevance per neuron of a node the explanation computed (see <see cref="ExplainOptions.Nodes"/>).</summary>
    public static double[] RelevancePerNeuron(this Explanation explanation, string node, int? token = null)
    {
        if (!explanation.Nodes.TryGetValue(node, out var r))
            throw new KeyNotFoundException(
                $"the explanation holds no relevance for '{node}'; ask for it in ExplainOptions.Nodes (it holds: {string.Join(", ", explanation.Nodes.Keys)})");
        return PerNeuron(node, r, token);
    }

    /// <summary>The <paramref name="k"/> most relevant neurons (or heads) of a node, summed over tokens or at one token.</summary>
    public static IReadOnlyList<NeuronScore> TopNeurons(this Explanation explanation, string node, int k, int? token = null,
        NeuronRanking ranking = NeuronRanking.Positive) =>
        TopK(node, explanation.RelevancePerNeuron(node, token), k, ranking);
}
