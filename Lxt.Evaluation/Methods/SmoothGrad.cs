// SmoothGrad (Smilkov et al., 2017): the gradient averaged over Gaussian-noised copies of the input.
using System.Diagnostics;
using MathNet.Numerics.Distributions;

namespace Lxt.Evaluation;

/// <summary>
/// SmoothGrad: R = mean over n samples of ∇f(x + ε), ε ~ N(0, σ²) per element with σ = <see cref="NoiseLevel"/> ·
/// (max x − min x). Seeded: the same seed, input and target give the same relevance. σ = 0 is the plain gradient.
/// </summary>
public sealed class SmoothGrad : IAttributionMethod
{
    public int Samples { get; init; } = 25;
    /// <summary>σ relative to the input's range (Smilkov et al. find 10–20 % works).</summary>
    public double NoiseLevel { get; init; } = 0.1;
    public int Seed { get; init; }
    /// <summary>Multiply the averaged gradient by the input (SmoothGrad × Input).</summary>
    public bool TimesInput { get; init; }

    public string Id => "smoothgrad";
    public string Name => $"SmoothGrad ({Samples} samples, σ = {NoiseLevel:0.###} of the input range{(TimesInput ? ", × input" : "")})";

    public Attribution Attribute(AttributionContext context, float[] input, int? target = null, CancellationToken cancellation = default)
    {
        context.CheckInput(input);
        if (Samples < 1) throw new ArgumentOutOfRangeException(nameof(Samples), $"SmoothGrad needs at least 1 sample, got {Samples}");
        if (NoiseLevel < 0) throw new ArgumentOutOfRangeException(nameof(NoiseLevel), $"the noise level must not be negative, got {NoiseLevel}");
        var clock = Stopwatch.StartNew();
        int t = context.ResolveTarget(input, target, cancellation);
        double sigma = NoiseLevel * (input.Max() - input.Min());
        var rng = new Random(Seed);
        var mean = new double[input.Length];
        var noisy = new float[input.Length];
        var noise = new double[input.Length];
        for (int s = 0; s < Samples; s++)
        {
            if (sigma > 0) Normal.Samples(rng, noise, 0, sigma);
            for (int i = 0; i < noisy.Length; i++) noisy[i] = (float)(input[i] + noise[i]);
            var (gradient, _) = LrpAttribution.GradientAt(context, noisy, t, cancellation);
            for (int i = 0; i < mean.Length; i++) mean[i] += gradient[i] / Samples;
        }
        if (TimesInput) for (int i = 0; i < mean.Length; i++) mean[i] *= input[i];
        double logit = context.Forward(input, cancellation)[t];
        return context.CreateAttribution(this, t, logit, mean, clock.Elapsed);
    }
}
