// The perturbation (faithfulness) evaluation: remove features most-relevant-first (MoRF) and least-relevant-first
// (LeRF), record the target logit after each step, and score a method by the area between the two curves (ABPC).
using MathNet.Numerics.Interpolation;
using MathNet.Numerics.Statistics;

namespace Lxt.Evaluation;

/// <summary>One input to evaluate on.</summary>
public sealed record EvaluationSample
{
    public required float[] Input { get; init; }
    /// <summary>The explained output; null = the model's arg-max.</summary>
    public int? Target { get; init; }
    /// <summary>The feature (token, or patch) that holds the evidence for the target, if known: the evidence hit rate
    /// counts how often a method ranks it first.</summary>
    public int? EvidencePosition { get; init; }
    /// <summary>A name for reports.</summary>
    public string? Id { get; init; }
    /// <summary>This sample's own model context (a text of another length has its own graph); null = the run's.</summary>
    public AttributionContext? Context { get; init; }
}

/// <summary>Settings of a perturbation run.</summary>
public sealed record PerturbationOptions
{
    /// <summary>Perturbation steps per curve; null = one per feature for inputs of at most
    /// <see cref="EveryFeatureUpTo"/> features, else <see cref="DefaultSteps"/>.</summary>
    public int? Steps { get; init; }
    public int EveryFeatureUpTo { get; init; } = 64;
    public int DefaultSteps { get; init; } = 32;
    /// <summary>Divide each curve by the sample's unperturbed target logit (unit-free curves starting at 1). Off by
    /// default: the AttnLRP paper reports the area between the raw output curves.</summary>
    public bool Normalize { get; init; }
    public IProgress<EvaluationProgress>? Progress { get; init; }
}

/// <summary>Where a run is: the method and sample just finished.</summary>
public sealed record EvaluationProgress(string MethodId, int Sample, int Samples);

public static class PerturbationEvaluation
{
    /// <summary>
    /// Evaluates every method on every sample: each sample's features (tokens or patches) are ranked by the method's
    /// relevance and removed in that order (MoRF) and in reverse (LeRF), the target logit recorded after each step.
    /// ABPC = ∫₀¹ (LeRF − MoRF) over the fraction of features removed (trapezoid rule): the area between the
    /// perturbation curves (Blücher et al., 2024; used by Achtibat et al., 2024). Higher is more faithful.
    /// </summary>
    /// <param name="context">The model for samples without a context of their own (may be null if all have one).</param>
    public static EvaluationReport Run(AttributionContext? context, IReadOnlyList<EvaluationSample> samples,
        IReadOnlyList<IAttributionMethod> methods, PerturbationOptions? options = null, CancellationToken cancellation = default)
    {
        options ??= new PerturbationOptions();
        if (samples.Count == 0) throw new ArgumentException("the evaluation needs at least one sample", nameof(samples));
        if (methods.Count == 0) throw new ArgumentException("the evaluation needs at least one method", nameof(methods));
        var contexts = samples.Select((s, i) => s.Context ?? context ?? throw new ArgumentException(
            $"sample {i} has no context and the run was given none", nameof(samples))).ToArray();
        // the target is fixed once per sample so that every method explains the same output
        var targets = samples.Select((s, i) => contexts[i].ResolveTarget(s.Input, s.Target, cancellation)).ToArray();
        var results = new List<MethodEvaluation>();
        foreach (var method in methods)
        {
            var perSample = new List<SampleEvaluation>();
            var time = TimeSpan.Zero;
            for (int i = 0; i < samples.Count; i++)
            {
                cancellation.ThrowIfCancellationRequested();
                var attribution = method.Attribute(contexts[i], samples[i].Input, targets[i], cancellation);
                time += attribution.Time;
                perSample.Add(EvaluateSample(contexts[i], samples[i], i, attribution, options, cancellation));
                options.Progress?.Report(new EvaluationProgress(method.Id, i + 1, samples.Count));
            }
            results.Add(Aggregate(method, perSample, time));
        }
        return new EvaluationReport { Normalized = options.Normalize, Methods = results };
    }

    /// <summary>The perturbation curves of one attribution of one sample.</summary>
    public static SampleEvaluation EvaluateSample(AttributionContext context, EvaluationSample sample, int index,
        Attribution attribution, PerturbationOptions? options = null, CancellationToken cancellation = default)
    {
        options ??= new PerturbationOptions();
        int units = context.Units, t = attribution.Target;
        var relevance = attribution.PerUnit;
        if (relevance.Length != units) throw new ArgumentException($"the attribution scores {relevance.Length} features, the input has {units}");
        int steps = Math.Min(units, options.Steps ?? (units <= options.EveryFeatureUpTo ? units : options.DefaultSteps));
        if (steps < 1) throw new ArgumentOutOfRangeException(nameof(options), $"perturbation needs at least 1 step, got {steps}");
        // ties keep feature order (a stable sort), so equal relevance gives the same ranking in every run
        var morfOrder = Enumerable.Range(0, units).OrderByDescending(u => relevance[u]).ToArray();
        var lerfOrder = Enumerable.Range(0, units).OrderBy(u => relevance[u]).ToArray();
        var removed = Enumerable.Range(0, steps + 1).Select(k => (int)Math.Round((double)k * units / steps)).ToArray();
        var fractions = removed.Select(r => (double)r / units).ToArray();
        var fill = context.RemovalValues(sample.Input);
        double unperturbed = context.Forward(sample.Input, cancellation)[t];
        double[] Curve(int[] order)
        {
            var curve = new double[removed.Length];
            for (int k = 0; k < removed.Length; k++)
                curve[k] = k == 0 ? unperturbed : context.Forward(context.Remove(sample.Input, order.Take(removed[k]), fill), cancellation)[t];
            return curve;
        }
        var morf = Curve(morfOrder);
        var lerf = Curve(lerfOrder);
        if (options.Normalize)
        {
            if (unperturbed == 0) throw new InvalidOperationException($"sample {index}: the unperturbed logit is 0, the curves cannot be normalised");
            for (int k = 0; k < morf.Length; k++)
            {
                morf[k] /= unperturbed;
                lerf[k] /= unperturbed;
            }
        }
        int top = morfOrder[0];
        return new SampleEvaluation
        {
            Index = index,
            Id = sample.Id,
            Target = t,
            UnperturbedLogit = unperturbed,
            Fractions = fractions,
            Morf = morf,
            Lerf = lerf,
            Abpc = Area(fractions, lerf) - Area(fractions, morf),
            TopFeature = top,
            EvidencePosition = sample.EvidencePosition,
            EvidenceHit = sample.EvidencePosition is int e ? e == top : null,
        };
    }

    /// <summary>∫ of the piecewise-linear curve through (x, y) over [x₀, xₙ]: the trapezoid rule.</summary>
    public static double Area(double[] x, double[] y) =>
        x.Length < 2 ? 0 : LinearSpline.InterpolateSorted(x, y).Integrate(x[0], x[^1]);

    private static MethodEvaluation Aggregate(IAttributionMethod method, List<SampleEvaluation> samples, TimeSpan time)
    {
        var abpc = samples.Select(s => s.Abpc).ToArray();
        double mean = Statistics.Mean(abpc);
        double se = abpc.Length > 1 ? Statistics.StandardDeviation(abpc) / Math.Sqrt(abpc.Length) : 0;
        // mean curves on a common grid: the samples' own fractions when they agree, else 33 even points
        var grid = samples.All(s => s.Fractions.SequenceEqual(samples[0].Fractions))
            ? samples[0].Fractions
            : Enumerable.Range(0, 33).Select(k => k / 32.0).ToArray();
        double[] MeanCurve(Func<SampleEvaluation, double[]> curve) =>
            grid.Select(f => Statistics.Mean(samples.Select(s => s.Fractions.Length < 2 ? curve(s)[0] : LinearSpline.InterpolateSorted(s.Fractions, curve(s)).Interpolate(f)))).ToArray();
        var withEvidence = samples.Where(s => s.EvidenceHit is not null).ToArray();
        return new MethodEvaluation
        {
            MethodId = method.Id,
            MethodName = method.Name,
            Samples = samples,
            MeanAbpc = mean,
            AbpcStandardError = se,
            Fractions = grid,
            MeanMorf = MeanCurve(s => s.Morf),
            MeanLerf = MeanCurve(s => s.Lerf),
            MeanAreaMorf = Statistics.Mean(samples.Select(s => Area(s.Fractions, s.Morf))),
            MeanAreaLerf = Statistics.Mean(samples.Select(s => Area(s.Fractions, s.Lerf))),
            EvidenceHitRate = withEvidence.Length == 0 ? null : withEvidence.Count(s => s.EvidenceHit == true) / (double)withEvidence.Length,
            AttributionTime = time,
        };
    }
}
