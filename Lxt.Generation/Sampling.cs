// Sampling: picks the next token from logits — greedy, or seeded sampling with temperature, top-k and top-p.
namespace Lxt.Generation;

/// <summary>Picks tokens from logits as <see cref="GenerationOptions"/> says; one seeded random stream per generation.</summary>
public sealed class Sampler
{
    private readonly GenerationOptions _options;
    private readonly Random _random;

    public Sampler(GenerationOptions options)
    {
        if (options.Temperature < 0 || double.IsNaN(options.Temperature))
            throw new ArgumentOutOfRangeException(nameof(options), $"temperature must be ≥ 0 (0 = greedy), it is {options.Temperature}");
        if (options.TopK is < 1) throw new ArgumentOutOfRangeException(nameof(options), $"top-k must be at least 1, it is {options.TopK}");
        if (options.TopP is double p && !(p > 0 && p <= 1)) throw new ArgumentOutOfRangeException(nameof(options), $"top-p must lie in (0, 1], it is {p}");
        _options = options;
        _random = new Random(options.Seed);
    }

    /// <summary>The arg-max (lowest index on ties).</summary>
    public static int ArgMax(IReadOnlyList<double> logits)
    {
        int best = 0;
        for (int i = 1; i < logits.Count; i++) if (logits[i] > logits[best]) best = i;
        return best;
    }

    /// <summary>The next token: the arg-max at temperature 0, else a draw from softmax(logits / T) restricted to the top-k
    /// tokens and then to the smallest set whose probability reaches top-p.</summary>
    public int Next(IReadOnlyList<double> logits)
    {
        if (_options.Temperature == 0) return ArgMax(logits);
        var order = Enumerable.Range(0, logits.Count).Where(i => !double.IsNaN(logits[i]))
            .OrderByDescending(i => logits[i]).ThenBy(i => i).ToArray();
        if (order.Length == 0) throw new InvalidOperationException("every logit is NaN; nothing to sample");
        if (_options.TopK is int k && k < order.Length) order = order[..k];
        double top = logits[order[0]];
        var weights = order.Select(i => Math.Exp((logits[i] - top) / _options.Temperature)).ToArray();
        double total = weights.Sum();
        int keep = order.Length;
        if (_options.TopP is double p && p < 1)
        {
            double cumulative = 0;
            for (keep = 0; keep < order.Length;)
            {
                cumulative += weights[keep++] / total;
                if (cumulative >= p) break;
            }
            total = weights.Take(keep).Sum();
        }
        double u = _random.NextDouble() * total;
        for (int i = 0; i < keep; i++)
        {
            u -= weights[i];
            if (u < 0) return order[i];
        }
        return order[keep - 1];
    }
}
