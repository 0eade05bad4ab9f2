// Adam: the optimiser — moment estimates with bias correction, decoupled weight decay, global-norm gradient clipping.
using Lxt.Graph;

namespace Lxt.Training;

/// <summary>Settings of <see cref="Adam"/>.</summary>
public sealed record AdamOptions
{
    public double LearningRate { get; init; } = 1e-3;
    public double Beta1 { get; init; } = 0.9;
    public double Beta2 { get; init; } = 0.999;
    public double Epsilon { get; init; } = 1e-8;
    /// <summary>Decoupled weight decay λ (AdamW, Loshchilov &amp; Hutter 2019): every step also moves each weight by
    /// −learningRate·λ·w. 0 gives plain Adam.</summary>
    public double WeightDecay { get; init; }
    /// <summary>When set, gradients are scaled together so that their global L2 norm is at most this value.</summary>
    public double? MaxGradientNorm { get; init; }
}

/// <summary>
/// Adam (Kingma &amp; Ba, 2015) over named float32 parameters, updated in place. Moments are kept per parameter name;
/// arithmetic is sequential in float64, so equal inputs give bit-identical updates.
/// </summary>
public sealed class Adam
{
    private readonly Dictionary<string, (float[] M, float[] V)> _moments = new(StringComparer.Ordinal);

    public Adam(AdamOptions? options = null)
    {
        Options = options ?? new AdamOptions();
        if (!(Options.LearningRate > 0)) throw new ArgumentOutOfRangeException(nameof(options), $"learning rate must be positive, got {Options.LearningRate}");
        if (Options.Beta1 is < 0 or >= 1 || Options.Beta2 is < 0 or >= 1)
            throw new ArgumentOutOfRangeException(nameof(options), $"betas must lie in [0, 1), got {Options.Beta1} and {Options.Beta2}");
        if (!(Options.Epsilon > 0)) throw new ArgumentOutOfRangeException(nameof(options), $"epsilon must be positive, got {Options.Epsilon}");
        if (Options.WeightDecay < 0) throw new ArgumentOutOfRangeException(nameof(options), $"weight decay must be >= 0, got {Options.WeightDecay}");
        if (Options.MaxGradientNorm is double c && !(c > 0)) throw new ArgumentOutOfRangeException(nameof(options), $"the gradient-norm bound must be positive, got {c}");
        LearningRate = Options.LearningRate;
    }

    public AdamOptions Options { get; }

    /// <summary>The step size of the next step; starts at <see cref="AdamOptions.LearningRate"/>, set it for a schedule.</summary>
    public double LearningRate { get; set; }

    /// <summary>Steps taken so far.</summary>
    public int StepCount { get; private set; }

    /// <summary>
    /// One update of every parameter from its gradient (same length). Gradients are first clipped by their global norm
    /// when <see cref="AdamOptions.MaxGradientNorm"/> is set. Returns the global gradient norm before clipping.
    /// </summary>
    public double Step(IReadOnlyList<(string Name, float[] Values, float[] Gradient)> parameters)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        double squares = 0;
        foreach (var (name, values, gradient) in parameters)
        {
            if (values.Length != gradient.Length)
                throw new ArgumentException($"parameter '{name}' has {values.Length} values but its gradient {gradient.Length}", nameof(parameters));
            foreach (var g in gradient) squares += (double)g * g;
        }
        double norm = Math.Sqrt(squares);
        if (!double.IsFinite(norm))
            throw new LxtException($"the gradient holds NaN or infinity (at step {StepCount + 1}); lower the learning rate or check the loss");
        double clip = Options.MaxGradientNorm is double max && norm > max ? max / norm : 1.0;

        StepCount++;
        double b1 = Options.Beta1, b2 = Options.Beta2, lr = LearningRate;
        double correction1 = 1 - Math.Pow(b1, StepCount), correction2 = 1 - Math.Pow(b2, StepCount);
        double decay = 1 - lr * Options.WeightDecay;
        foreach (var (name, values, gradient) in parameters)
        {
            if (!_moments.TryGetValue(name, out var state))
            {
                state = (new float[values.Length], new float[values.Length]);
                _moments[name] = state;
            }
            else if (state.M.Length != values.Length)
                throw new ArgumentException($"parameter '{name}' had {state.M.Length} values in earlier steps, now {values.Length}", nameof(parameters));
            var (m, v) = state;
            for (int i = 0; i < values.Length; i++)
            {
                double g = gradient[i] * clip;
                double mi = b1 * m[i] + (1 - b1) * g;
                double vi = b2 * v[i] + (1 - b2) * g * g;
                m[i] = (float)mi;
                v[i] = (float)vi;
                double update = mi / correction1 / (Math.Sqrt(vi / correction2) + Options.Epsilon);
                values[i] = (float)(values[i] * decay - lr * update);
            }
        }
        return norm;
    }
}
