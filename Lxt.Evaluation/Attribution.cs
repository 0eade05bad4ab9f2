// Attribution methods behind one interface: the LRP rule sets and the baselines they are compared with, by id.
namespace Lxt.Evaluation;

/// <summary>An attribution method: relevance of every input element for one output of one model.</summary>
public interface IAttributionMethod
{
    /// <summary>The command-line id (<c>attnlrp</c>, <c>integrated-gradients</c>, ...).</summary>
    string Id { get; }
    /// <summary>A readable name with the method's settings.</summary>
    string Name { get; }
    /// <summary>Relevance of <paramref name="input"/>'s elements for output <paramref name="target"/> (null: the arg-max).</summary>
    Attribution Attribute(AttributionContext context, float[] input, int? target = null, CancellationToken cancellation = default);
}

/// <summary>The relevance one method gave one input.</summary>
public sealed class Attribution
{
    public required string MethodId { get; init; }
    public required string MethodName { get; init; }
    public required int Target { get; init; }
    /// <summary>The unmodified model's output at the target.</summary>
    public required double TargetLogit { get; init; }
    /// <summary>The input's shape.</summary>
    public required IReadOnlyList<int> Shape { get; init; }
    /// <summary>Relevance per input element, flattened row-major in <see cref="Shape"/>.</summary>
    public required double[] InputRelevance { get; init; }
    /// <summary>Per token (summed over the embedding) or per pixel (summed over channels, row-major height·width),
    /// as <see cref="Lxt.Explanation.PerPosition"/>.</summary>
    public required double[] PerPosition { get; init; }
    /// <summary>Per feature: per token, or per patch (row-major over the patch grid).</summary>
    public required double[] PerUnit { get; init; }
    public required TimeSpan Time { get; init; }
    public double RelevanceSum => InputRelevance.Sum();
}

/// <summary>How Integrated Gradients integrates the gradient along the straight path from the baseline.</summary>
public enum IntegrationRule
{
    /// <summary>Left Riemann sum: α = k/m, k = 0..m−1.</summary>
    RiemannLeft,
    /// <summary>Right Riemann sum: α = k/m, k = 1..m.</summary>
    RiemannRight,
    /// <summary>Midpoint Riemann sum: α = (k + ½)/m.</summary>
    RiemannMiddle,
    /// <summary>Trapezoid rule on α = k/m, k = 0..m (m + 1 gradients; error O(1/m²) on smooth paths).</summary>
    Trapezoid,
    /// <summary>Gauss–Legendre quadrature of order m on [0, 1] (Captum's default).</summary>
    GaussLegendre,
}

/// <summary>Settings of the parameterised methods, for <see cref="AttributionMethods.Parse"/> (command-line flags).</summary>
public sealed record AttributionSettings
{
    /// <summary>Gamma on Conv2d layers (adds the Gamma rule to <c>cp-lrp</c>).</summary>
    public double? ConvGamma { get; init; }
    /// <summary>Gamma on linear layers (adds the Gamma rule to <c>cp-lrp</c>).</summary>
    public double? LinearGamma { get; init; }
    public double Epsilon { get; init; } = 1e-6;
    public int IntegratedGradientsSteps { get; init; } = 32;
    public IntegrationRule IntegrationRule { get; init; } = IntegrationRule.GaussLegendre;
    /// <summary>The Integrated Gradients baseline (input-sized); null = zeros.</summary>
    public float[]? Baseline { get; init; }
    public int SmoothGradSamples { get; init; } = 25;
    /// <summary>SmoothGrad's noise σ as a fraction of the input's range (max − min).</summary>
    public double SmoothGradNoise { get; init; } = 0.1;
    /// <summary>Occlusion window: tokens (text) or pixels (images; default the patch size).</summary>
    public int? OcclusionWindow { get; init; }
    public int? OcclusionStride { get; init; }
    /// <summary>Seed of SmoothGrad's noise and of the random baseline.</summary>
    public int Seed { get; init; }
}

/// <summary>Every attribution method by id.</summary>
public static class AttributionMethods
{
    /// <summary>The ids <see cref="Parse"/> accepts: the LRP methods first, then the baselines.</summary>
    public static IReadOnlyList<string> Ids { get; } =
    [
        "attnlrp", "cp-lrp", "epsilon", "gradient", "input-x-gradient",
        "integrated-gradients", "smoothgrad", "attention-rollout", "occlusion", "random",
    ];

    /// <summary>The method with id <paramref name="id"/>, configured by <paramref name="settings"/>.</summary>
    public static IAttributionMethod Parse(string id, AttributionSettings? settings = null)
    {
        settings ??= new AttributionSettings();
        return id.Trim().ToLowerInvariant() switch
        {
            "epsilon" => new LrpAttribution(Method.Epsilon(settings.Epsilon)),
            "integrated-gradients" => new IntegratedGradients
            {
                Steps = settings.IntegratedGradientsSteps,
                Rule = settings.IntegrationRule,
                Baseline = settings.Baseline,
            },
            "smoothgrad" => new SmoothGrad { Samples = settings.SmoothGradSamples, NoiseLevel = settings.SmoothGradNoise, Seed = settings.Seed },
            "attention-rollout" => new AttentionRollout(),
            "occlusion" => new Occlusion { Window = settings.OcclusionWindow, Stride = settings.OcclusionStride },
            "random" => new RandomAttribution { Seed = settings.Seed },
            var lrp when Method.Ids.Contains(lrp) => new LrpAttribution(Method.Parse(lrp, settings.ConvGamma, settings.LinearGamma)),
            _ => throw new ArgumentException($"unknown attribution method '{id}' (known: {string.Join(", ", Ids)})", nameof(id)),
        };
    }

    /// <summary>Methods from a comma-separated list of ids (<c>attnlrp,integrated-gradients,random</c>).</summary>
    public static IReadOnlyList<IAttributionMethod> ParseList(string ids, AttributionSettings? settings = null) =>
        ids.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(id => Parse(id, settings)).ToArray();
}
