// The random baseline: relevance drawn from N(0, 1), seeded by the seed, the target and the input's values.
using System.Diagnostics;
using MathNet.Numerics.Distributions;

namespace Lxt.Evaluation;

/// <summary>
/// Random relevance, N(0, 1) per element: the floor a faithful method must beat. Deterministic: the generator is
/// seeded with <see cref="Seed"/>, the target and a hash of the input's bits (so different inputs get different draws).
/// </summary>
public sealed class RandomAttribution : IAttributionMethod
{
    public int Seed { get; init; }
    public string Id => "random";
    public string Name => $"Random (seed {Seed})";

    public Attribution Attribute(AttributionContext context, float[] input, int? target = null, CancellationToken cancellation = default)
    {
        context.CheckInput(input);
        var clock = Stopwatch.StartNew();
        var logits = context.Forward(input, cancellation);
        int t = target is int given ? context.ResolveTarget(input, given, cancellation) : Array.IndexOf(logits, logits.Max());
        // FNV-1a over the input's bits: stable across processes, unlike HashCode
        uint hash = 2166136261;
        void Mix(int v)
        {
            for (int b = 0; b < 4; b++) hash = (hash ^ (uint)((v >> (8 * b)) & 0xFF)) * 16777619;
        }
        Mix(Seed);
        Mix(t);
        foreach (var v in input) Mix(BitConverter.SingleToInt32Bits(v));
        var relevance = new double[input.Length];
        Normal.Samples(new Random((int)hash), relevance, 0, 1);
        return context.CreateAttribution(this, t, logits[t], relevance, clock.Elapsed);
    }
}
