// Explaining generated tokens: each one is explained on the full graph of the sequence that predicted it, and a
// whole generation becomes a matrix [generated token × token of prompt and generation].
namespace Lxt.Generation;

/// <summary>
/// Relevance of every token for every generated token. Row i explains generated token i (predicted after
/// <see cref="PromptLength"/> + i tokens); its columns are all <see cref="Tokens"/>, and columns from
/// PromptLength + i on are 0 (tokens that came later).
/// </summary>
public sealed class RelevanceMatrix
{
    public required IReadOnlyList<int> Tokens { get; init; }
    public required int PromptLength { get; init; }
    /// <summary>[generated, Tokens.Count].</summary>
    public required double[][] Rows { get; init; }
    /// <summary>The logit of each explained (generated) token.</summary>
    public required double[] TargetLogits { get; init; }
    public int Generated => Rows.Length;
    public double this[int generated, int token] => Rows[generated][token];
}

public static class TokenRelevance
{
    /// <summary>
    /// Explains generated token <paramref name="index"/> of <paramref name="result"/>: relevance over the prompt and the
    /// tokens generated before it, for the logit of that token at the position that predicted it. The graph is the one
    /// it was generated with (its steering included).
    /// </summary>
    public static Explanation ExplainToken(this Generator generator, GenerationResult result, int index, ExplainOptions? options = null,
        CancellationToken cancellation = default)
    {
        if (index < 0 || index >= result.Generated.Count)
            throw new ArgumentOutOfRangeException(nameof(index), $"token {index} is outside the {result.Generated.Count} generated tokens");
        var context = result.Prompt.Concat(result.Generated.Take(index)).ToArray();
        options = (options ?? new ExplainOptions()) with { Target = result.Generated[index] };
        return generator.Model.Explain(context, options, result.Steering, cancellation);
    }

    /// <summary>Explains every generated token in turn (one backward pass each) → a <see cref="RelevanceMatrix"/>.</summary>
    public static RelevanceMatrix ExplainSequence(this Generator generator, GenerationResult result, Method? method = null,
        IProgress<int>? progress = null, CancellationToken cancellation = default)
    {
        var tokens = result.Tokens;
        var rows = new double[result.Generated.Count][];
        var logits = new double[rows.Length];
        for (int i = 0; i < rows.Length; i++)
        {
            var e = generator.ExplainToken(result, i, new ExplainOptions { Method = method ?? Method.AttnLrp }, cancellation);
            rows[i] = new double[tokens.Count];
            Array.Copy(e.PerPosition, rows[i], e.PerPosition.Length);
            logits[i] = e.TargetLogit;
            progress?.Report(i + 1);
        }
        return new RelevanceMatrix { Tokens = tokens, PromptLength = result.Prompt.Count, Rows = rows, TargetLogits = logits };
    }
}
