// AttributionContext: one model as attribution methods and the perturbation evaluation see it — an explainer plus
// the input's layout (tokens or image patches), the explained position and how features are removed.
using Lxt.Models;

namespace Lxt.Evaluation;

/// <summary>How the explained input is laid out.</summary>
public enum InputKind
{
    /// <summary>[tokens, hidden] embeddings (or a [tokens] vector): a feature is a token row; removal zeroes it.</summary>
    Tokens,
    /// <summary>[channels, height, width] pixels: a feature is a patch; removal fills it with the image's channel means.</summary>
    Image,
}

/// <summary>
/// The model an attribution method explains: an <see cref="Lxt.Explainer"/> (weights bound once, plans cached) and
/// the input's layout. Features — the units the perturbation evaluation removes and rollout scores — are token rows
/// for text and patches of <see cref="PatchSize"/>² pixels for images.
/// </summary>
public sealed class AttributionContext
{
    /// <param name="explainer">The model, its input and output.</param>
    /// <param name="explainedPosition">The token whose output is explained (attention rollout reads that row):
    /// defaults to the last token for text and to 0 (the class token) for images.</param>
    /// <param name="patchSize">The image patch size; defaults to the kernel of the model's square rank-4 weight
    /// (a ViT's patch embedding), else 1.</param>
    public AttributionContext(Explainer explainer, int? explainedPosition = null, int? patchSize = null)
    {
        Explainer = explainer;
        InputShape = explainer.InputShape.ToArray();
        InputLength = InputShape.Aggregate(1, (a, d) => a * d);
        Kind = InputShape.Count == 3 ? InputKind.Image : InputKind.Tokens;
        if (Kind == InputKind.Tokens)
        {
            Tokens = InputShape.Count == 0 ? 1 : InputShape[0];
            PatchSize = 1;
            Units = Tokens;
            ExplainedPosition = explainedPosition ?? Tokens - 1;
        }
        else
        {
            PatchSize = patchSize ?? InferPatchSize(explainer.Model, InputShape[1], InputShape[2]);
            if (PatchSize < 1) throw new ArgumentOutOfRangeException(nameof(patchSize), $"patch size {PatchSize} must be at least 1");
            GridHeight = (InputShape[1] + PatchSize - 1) / PatchSize;
            GridWidth = (InputShape[2] + PatchSize - 1) / PatchSize;
            Units = GridHeight * GridWidth;
            ExplainedPosition = explainedPosition ?? 0;
        }
    }

    /// <summary>A context for a graph built from a checkpoint: its explained position (text) or class token (images).</summary>
    public static AttributionContext For(TransformerGraph graph, Explainer explainer, int? patchSize = null) =>
        new(explainer, graph.Task == ModelTask.ImageClassification ? 0 : graph.Position, patchSize);

    public Explainer Explainer { get; }
    public InputKind Kind { get; }
    public IReadOnlyList<int> InputShape { get; }
    public int InputLength { get; }
    /// <summary>Token rows (text); 0 for images.</summary>
    public int Tokens { get; }
    /// <summary>Patch edge in pixels (images); 1 for text.</summary>
    public int PatchSize { get; }
    public int GridHeight { get; }
    public int GridWidth { get; }
    /// <summary>Features: tokens (text) or patches (images, row-major over the patch grid).</summary>
    public int Units { get; }
    /// <summary>The token whose output is explained (rollout's row).</summary>
    public int ExplainedPosition { get; }
    /// <summary>Values per position: the embedding width (text), or the channel count (images: per pixel).</summary>
    public int Width => Kind == InputKind.Tokens ? (InputShape.Count >= 2 ? InputLength / Tokens : 1) : InputShape[0];
    /// <summary>Positions of <see cref="Attribution.PerPosition"/>: tokens, or pixels (height·width).</summary>
    public int Positions => Kind == InputKind.Tokens ? Tokens : InputShape[1] * InputShape[2];

    /// <summary>The model's output vector.</summary>
    public double[] Forward(float[] input, CancellationToken cancellation = default)
    {
        CheckInput(input);
        return Explainer.Forward(input, cancellation);
    }

    /// <summary>The explained target: <paramref name="target"/>, or the arg-max of the output.</summary>
    public int ResolveTarget(float[] input, int? target, CancellationToken cancellation = default)
    {
        if (target is int t)
        {
            if (t < 0 || t >= Explainer.OutputSize) throw new ArgumentOutOfRangeException(nameof(target), $"target {t} is outside the {Explainer.OutputSize} outputs");
            return t;
        }
        var logits = Forward(input, cancellation);
        int best = 0;
        for (int i = 1; i < logits.Length; i++) if (logits[i] > logits[best]) best = i;
        return best;
    }

    internal void CheckInput(float[] input)
    {
        if (input.Length != InputLength)
            throw new ArgumentException($"the input has {input.Length} values, '{Explainer.InputName}' [{string.Join(", ", InputShape)}] needs {InputLength}");
    }

    /// <summary>Sums per-element relevance to positions: over the embedding (text) or over channels (images).</summary>
    public double[] PerPosition(double[] perElement)
    {
        var r = new double[Positions];
        if (Kind == InputKind.Tokens)
        {
            int w = Width;
            for (int i = 0; i < perElement.Length; i++) r[i / w] += perElement[i];
        }
        else
        {
            int plane = Positions;
            for (int i = 0; i < perElement.Length; i++) r[i % plane] += perElement[i];
        }
        return r;
    }

    /// <summary>Sums per-position relevance to features: tokens as they are, pixels summed over their patch.</summary>
    public double[] PerUnit(double[] perPosition)
    {
        if (Kind == InputKind.Tokens) return (double[])perPosition.Clone();
        var r = new double[Units];
        int width = InputShape[2];
        for (int p = 0; p < perPosition.Length; p++) r[UnitOfPixel(p / width, p % width)] += perPosition[p];
        return r;
    }

    internal int UnitOfPixel(int row, int column) => row / PatchSize * GridWidth + column / PatchSize;

    /// <summary>The input elements that make up feature <paramref name="unit"/>.</summary>
    public IEnumerable<int> ElementsOf(int unit)
    {
        if (Kind == InputKind.Tokens)
        {
            int w = Width;
            for (int i = unit * w; i < (unit + 1) * w; i++) yield return i;
            yield break;
        }
        int channels = InputShape[0], height = InputShape[1], width = InputShape[2];
        int r0 = unit / GridWidth * PatchSize, c0 = unit % GridWidth * PatchSize;
        for (int c = 0; c < channels; c++)
            for (int y = r0; y < Math.Min(r0 + PatchSize, height); y++)
                for (int x = c0; x < Math.Min(c0 + PatchSize, width); x++)
                    yield return (c * height + y) * width + x;
    }

    /// <summary>What a removed element is replaced with: 0 (text: the zero embedding) or its channel's mean over the
    /// image (images).</summary>
    public float[] RemovalValues(float[] input)
    {
        CheckInput(input);
        var fill = new float[input.Length];
        if (Kind == InputKind.Image)
        {
            int plane = Positions;
            for (int c = 0; c < InputShape[0]; c++)
            {
                double sum = 0;
                for (int i = 0; i < plane; i++) sum += input[c * plane + i];
                Array.Fill(fill, (float)(sum / plane), c * plane, plane);
            }
        }
        return fill;
    }

    /// <summary>A copy of <paramref name="input"/> with the given features removed (see <see cref="RemovalValues"/>).</summary>
    public float[] Remove(float[] input, IEnumerable<int> units, float[]? removalValues = null)
    {
        removalValues ??= RemovalValues(input);
        var x = (float[])input.Clone();
        foreach (var u in units)
        {
            if (u < 0 || u >= Units) throw new ArgumentOutOfRangeException(nameof(units), $"feature {u} is outside the {Units} features");
            foreach (var i in ElementsOf(u)) x[i] = removalValues[i];
        }
        return x;
    }

    /// <summary>An attribution from relevance per input element (positions and features summed from it).</summary>
    public Attribution CreateAttribution(IAttributionMethod method, int target, double targetLogit, double[] perElement, TimeSpan time)
    {
        var perPosition = PerPosition(perElement);
        return new Attribution
        {
            MethodId = method.Id,
            MethodName = method.Name,
            Target = target,
            TargetLogit = targetLogit,
            Shape = InputShape,
            InputRelevance = perElement,
            PerPosition = perPosition,
            PerUnit = PerUnit(perPosition),
            Time = time,
        };
    }

    /// <summary>Spreads per-feature values evenly over each feature's elements (rollout scores features, not elements).</summary>
    internal double[] SpreadUnits(double[] perUnit)
    {
        var e = new double[InputLength];
        for (int u = 0; u < Units; u++)
        {
            var elements = ElementsOf(u).ToArray();
            foreach (var i in elements) e[i] = perUnit[u] / elements.Length;
        }
        return e;
    }

    private static int InferPatchSize(Model model, int height, int width)
    {
        foreach (var (_, shape) in model.Parameters.OrderBy(kv => kv.Key, StringComparer.Ordinal))
            if (shape.Count == 4 && shape[2] == shape[3] && shape[2] > 1 && height % shape[2] == 0 && width % shape[2] == 0)
                return shape[2];
        return 1;
    }
}
