// The LRP rule sets and the plain gradient baselines (Gradient, Input × Gradient) through the Explainer.
using System.Diagnostics;

namespace Lxt.Evaluation;

/// <summary>An <see cref="Lxt.Method"/> (AttnLRP, CP-LRP, ε-LRP, Gradient, Input × Gradient): one rewritten backward pass.</summary>
public sealed class LrpAttribution(Method method) : IAttributionMethod
{
    public Method Method { get; } = method;
    public string Id => Method.Id;
    public string Name => Method.Name;

    public Attribution Attribute(AttributionContext context, float[] input, int? target = null, CancellationToken cancellation = default)
    {
        context.CheckInput(input);
        var clock = Stopwatch.StartNew();
        var e = context.Explainer.Explain(input, new ExplainOptions { Method = Method, Target = target }, cancellation);
        // with a target given, Explain's logits come from the rewritten forward, which rules keep equal to the model's
        return context.CreateAttribution(this, e.Target, e.TargetLogit, e.InputRelevance.ToDoubleArray(), clock.Elapsed);
    }

    /// <summary>The gradient of the target logit at <paramref name="input"/> (one cached plan run).</summary>
    internal static (double[] Gradient, double Logit) GradientAt(AttributionContext context, float[] input, int target, CancellationToken cancellation)
    {
        var e = context.Explainer.Explain(input, new ExplainOptions { Method = Method.Gradient, Target = target }, cancellation);
        return (e.InputRelevance.ToDoubleArray(), e.TargetLogit);
    }
}
