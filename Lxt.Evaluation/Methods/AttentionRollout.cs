// Attention Rollout (Abnar & Zuidema, 2020): head-averaged attention with the residual, multiplied through the layers.
using System.Diagnostics;
using Lxt.Graph;

namespace Lxt.Evaluation;

/// <summary>
/// Attention Rollout: per layer the heads' attention weights (the nodes named <c>*.attn_weights</c>, [heads, T, T])
/// are averaged, the residual added as 0.5·A + 0.5·I and rows renormalised; the rollout is the product
/// Â_L ⋯ Â_1. The relevance of token j is rollout[position, j] for the explained position (a ViT's class token);
/// masks (causal, sliding-window) carry through since masked weights are 0. Rollout does not depend on the target.
/// Each token's (patch's) score is spread evenly over its input elements.
/// </summary>
public sealed class AttentionRollout : IAttributionMethod
{
    public string Id => "attention-rollout";
    public string Name => "Attention Rollout";

    /// <summary>The [T, T] rollout matrix of <paramref name="input"/> (rows sum to 1).</summary>
    public static double[,] Rollout(AttributionContext context, float[] input, CancellationToken cancellation = default)
    {
        context.CheckInput(input);
        var names = context.Explainer.Model.NodeNames().Where(n => n.EndsWith(".attn_weights", StringComparison.Ordinal)).ToArray();
        if (names.Length == 0)
            throw new LxtException("attention rollout needs attention weights: the model has no node named '*.attn_weights'");
        var nodes = names.Select(n => context.Explainer.Model.FindNode(n)!).ToArray();
        var values = context.Explainer.Session.Evaluate(nodes, new Dictionary<string, float[]> { [context.Explainer.InputName] = input }, cancellation);
        double[,]? rollout = null;
        foreach (var (value, name) in values.Zip(names))
        {
            if (value.Shape.Count != 3 || value.Shape[1] != value.Shape[2])
                throw new GraphShapeException($"attention weights '{name}' have shape [{string.Join(", ", value.Shape)}], rollout expects [heads, T, T]");
            int heads = value.Shape[0], t = value.Shape[1];
            var a = new double[t, t];
            for (int h = 0; h < heads; h++)
                for (int i = 0; i < t; i++)
                    for (int j = 0; j < t; j++)
                        a[i, j] += value[(h * t + i) * t + j] / heads;
            for (int i = 0; i < t; i++)
            {
                double sum = 0;
                for (int j = 0; j < t; j++)
                {
                    a[i, j] = 0.5 * a[i, j] + (i == j ? 0.5 : 0);
                    sum += a[i, j];
                }
                for (int j = 0; j < t; j++) a[i, j] /= sum;
            }
            if (rollout is null) rollout = a;
            else
            {
                if (rollout.GetLength(0) != t) throw new GraphShapeException($"attention weights '{name}' cover {t} tokens, earlier layers {rollout.GetLength(0)}");
                rollout = Multiply(a, rollout);
            }
        }
        return rollout!;
    }

    private static double[,] Multiply(double[,] a, double[,] b)
    {
        int n = a.GetLength(0);
        var c = new double[n, n];
        for (int i = 0; i < n; i++)
            for (int k = 0; k < n; k++)
            {
                double aik = a[i, k];
                if (aik == 0) continue;
                for (int j = 0; j < n; j++) c[i, j] += aik * b[k, j];
            }
        return c;
    }

    public Attribution Attribute(AttributionContext context, float[] input, int? target = null, CancellationToken cancellation = default)
    {
        var clock = Stopwatch.StartNew();
        var logits = context.Forward(input, cancellation);
        int t = context.ResolveTarget(input, target ?? ArgMax(logits), cancellation);
        var rollout = Rollout(context, input, cancellation);
        int tokens = rollout.GetLength(0), row = context.ExplainedPosition;
        if (row < 0 || row >= tokens) throw new ArgumentOutOfRangeException(nameof(context), $"the explained position {row} is outside the {tokens} tokens");
        // tokens before the features are special (a ViT's class token); text maps token j to feature j
        int special = tokens - context.Units;
        if (special < 0) throw new GraphShapeException($"the attention covers {tokens} tokens, fewer than the input's {context.Units} features");
        var perUnit = new double[context.Units];
        for (int u = 0; u < perUnit.Length; u++) perUnit[u] = rollout[row, special + u];
        return context.CreateAttribution(this, t, logits[t], context.SpreadUnits(perUnit), clock.Elapsed);
    }

    private static int ArgMax(double[] v)
    {
        int best = 0;
        for (int i = 1; i < v.Length; i++) if (v[i] > v[best]) best = i;
        return best;
    }
}
