// Occlusion (Zeiler & Fergus, 2014) / token deletion: the output drop when a sliding window of the input is removed.
using System.Diagnostics;

namespace Lxt.Evaluation;

/// <summary>
/// Occlusion: a window slides over the input (tokens for text, square pixel windows over all channels for images);
/// each placement removes what it covers (the zero embedding for text, the channel means for images) and its drop
/// f(x) − f(occluded) is shared evenly by the elements it covers; elements under several placements average their
/// shares. A window's elements thus sum to its drop: one window over the whole input sums to f(x) − f(empty).
/// </summary>
public sealed class Occlusion : IAttributionMethod
{
    /// <summary>Window: tokens (text, default 1) or pixels (images, default the patch size).</summary>
    public int? Window { get; init; }
    /// <summary>Stride: defaults to the window.</summary>
    public int? Stride { get; init; }

    public string Id => "occlusion";
    public string Name => $"Occlusion (window {Window?.ToString() ?? "1 token / 1 patch"}, stride {Stride?.ToString() ?? "= window"})";

    /// <summary>Window starts covering 0..length−1: every stride, plus one flush with the end.</summary>
    internal static int[] Starts(int length, int window, int stride)
    {
        if (window >= length) return [0];
        var starts = new List<int>();
        for (int s = 0; s + window <= length; s += stride) starts.Add(s);
        if (starts[^1] + window < length) starts.Add(length - window);
        return starts.ToArray();
    }

    public Attribution Attribute(AttributionContext context, float[] input, int? target = null, CancellationToken cancellation = default)
    {
        context.CheckInput(input);
        var clock = Stopwatch.StartNew();
        var logits = context.Forward(input, cancellation);
        int t = target is int given ? context.ResolveTarget(input, given, cancellation) : Array.IndexOf(logits, logits.Max());
        var fill = context.RemovalValues(input);
        var share = new double[input.Length];
        var count = new int[input.Length];
        void Occlude(IReadOnlyCollection<int> elements)
        {
            var x = (float[])input.Clone();
            foreach (var i in elements) x[i] = fill[i];
            double drop = logits[t] - context.Forward(x, cancellation)[t];
            foreach (var i in elements)
            {
                share[i] += drop / elements.Count;
                count[i]++;
            }
        }
        if (context.Kind == InputKind.Tokens)
        {
            int window = Window ?? 1, stride = Stride ?? window;
            Check(window, stride);
            foreach (var s in Starts(context.Tokens, window, stride))
                Occlude(Enumerable.Range(s, Math.Min(window, context.Tokens - s)).SelectMany(context.ElementsOf).ToArray());
        }
        else
        {
            int window = Window ?? context.PatchSize, stride = Stride ?? window;
            Check(window, stride);
            int channels = context.InputShape[0], height = context.InputShape[1], width = context.InputShape[2];
            foreach (var y0 in Starts(height, window, stride))
                foreach (var x0 in Starts(width, window, stride))
                {
                    var elements = new List<int>();
                    for (int c = 0; c < channels; c++)
                        for (int y = y0; y < Math.Min(y0 + window, height); y++)
                            for (int x = x0; x < Math.Min(x0 + window, width); x++)
                                elements.Add((c * height + y) * width + x);
                    Occlude(elements);
                }
        }
        for (int i = 0; i < share.Length; i++) if (count[i] > 0) share[i] /= count[i];
        return context.CreateAttribution(this, t, logits[t], share, clock.Elapsed);
    }

    private static void Check(int window, int stride)
    {
        if (window < 1) throw new ArgumentOutOfRangeException(nameof(Window), $"the occlusion window must be at least 1, got {window}");
        if (stride < 1) throw new ArgumentOutOfRangeException(nameof(Stride), $"the occlusion stride must be at least 1, got {stride}");
    }
}
