// ExplainPipeline: one explanation from a model folder and an input (text, token ids, image, pixel JSON) to a
// result record — load, tokenize/embed or read pixels, explain — over TextExplainer / ImageExplainer.
using System.Diagnostics;
using Lxt.Backend.Gpu;
using Lxt.Import;

namespace Lxt.Cli;

/// <summary>The input of one explanation: exactly one of text, token ids, an image file or a pixel JSON file.</summary>
public abstract record ExplainInput
{
    public sealed record Text(string Value) : ExplainInput;
    public sealed record TokenIds(int[] Ids) : ExplainInput;
    /// <summary>A PNG / JPEG file, resized and normalised for the model.</summary>
    public sealed record ImageFile(string Path) : ExplainInput;
    /// <summary>A JSON [C][H][W] array of normalised pixels, bare or under the key "image".</summary>
    public sealed record PixelsFile(string Path) : ExplainInput;
    /// <summary>Normalised pixels [C, H, W], row-major (a batch line's "pixels").</summary>
    public sealed record Pixels(float[] Values) : ExplainInput;

    public bool IsImage => this is ImageFile or PixelsFile or Pixels;
}

/// <summary>What to explain, how and where.</summary>
public sealed record ExplainRequest(string ModelDir, ExplainInput Input)
{
    public Method Method { get; init; } = Method.AttnLrp;
    public int? Target { get; init; }
    public Device Device { get; init; } = Device.Cpu;
    /// <summary>How a GPU device computes matrix products (float32 elsewhere).</summary>
    public GemmPrecision Precision { get; init; } = GemmPrecision.Float32;
    /// <summary>CPU threads; 0 = all cores.</summary>
    public int Threads { get; init; }
    /// <summary>Named nodes whose per-token (latent) relevance to report.</summary>
    public IReadOnlyList<string> Nodes { get; init; } = [];
    /// <summary>Also report per-token relevance at every layer output (text models), for the relevance trace.</summary>
    public bool Trace { get; init; }
    /// <summary>Gradient checkpointing of the relevance pass (recompute layer interiors instead of keeping them).</summary>
    public Checkpointing Checkpointing { get; init; } = Checkpointing.None;
    /// <summary>Query rows of a block of masked attention (0: whole; see <see cref="ExplainOptions.AttentionBlockRows"/>).</summary>
    public int AttentionBlockRows { get; init; } = ExplainOptions.DefaultAttentionBlockRows;
    /// <summary>Every value at every position (see <see cref="ExplainOptions.AllPositions"/>).</summary>
    public bool AllPositions { get; init; }
    /// <summary>Attention as one op (see <see cref="ExplainOptions.FusedAttention"/>).</summary>
    public bool? FusedAttention { get; init; }
}

/// <summary>Per-token relevance at one layer output.</summary>
public sealed record LayerRelevance(string Layer, double[] Relevance);

/// <summary>One explanation, as reported on the terminal and in the JSON file.</summary>
public sealed record ExplainResult
{
    /// <summary>The method id ("attnlrp", "cp-lrp", ...).</summary>
    public required string Rules { get; init; }
    /// <summary>The rule set's descriptive name.</summary>
    public required string RuleSetName { get; init; }
    public required int Target { get; init; }
    /// <summary>The target's token text or class label, when known.</summary>
    public string? TargetText { get; init; }
    public required double TargetLogit { get; init; }
    public required double[] Logits { get; init; }
    /// <summary>Token texts (or the ids as strings without a tokenizer); null for images.</summary>
    public IReadOnlyList<string>? Tokens { get; init; }
    public IReadOnlyList<int>? TokenIds { get; init; }
    /// <summary>Relevance per token, or per pixel row-major over <see cref="ImageSize"/>.</summary>
    public required double[] Relevance { get; init; }
    /// <summary>(height, width) for images; null for text.</summary>
    public (int Height, int Width)? ImageSize { get; init; }
    /// <summary>The ViT patch size, when the config names one (for patch summaries).</summary>
    public int? PatchSize { get; init; }
    public double RelevanceSum => Relevance.Sum();
    /// <summary>Per-token relevance at each requested named node.</summary>
    public IReadOnlyDictionary<string, double[]> Nodes { get; init; } = new Dictionary<string, double[]>();
    /// <summary>Per-token relevance at each layer output, first layer first (when the request asked for a trace).</summary>
    public IReadOnlyList<LayerRelevance>? Trace { get; init; }
    public required TimeSpan LoadTime { get; init; }
    public required TimeSpan ForwardTime { get; init; }
    public required TimeSpan RelevanceTime { get; init; }
}

public static class ExplainPipeline
{
    /// <summary>Opens the model folder, explains the one input of <paramref name="request"/> and closes the folder.</summary>
    public static ExplainResult Run(ExplainRequest request, CancellationToken cancellation = default)
    {
        var clock = Stopwatch.StartNew();
        using var session = ExplainSession.Open(request.ModelDir, request.Device, request.Threads, request.Input.IsImage, request.Precision);
        var opened = clock.Elapsed;
        var result = session.Explain(request, request.Input, cancellation);
        return result with { LoadTime = opened + result.LoadTime };
    }
}

/// <summary>
/// An opened model folder that explains one input after another with the same options — the single run of
/// <c>lxt explain</c> and every line of a batch. Text graphs are built once per sequence length and kept.
/// </summary>
public sealed class ExplainSession : IDisposable
{
    private readonly TextExplainer? _text;
    private readonly ImageExplainer? _image;

    private ExplainSession(string modelDir, TextExplainer? text, ImageExplainer? image)
    {
        ModelDir = modelDir;
        _text = text;
        _image = image;
    }

    public string ModelDir { get; }
    public bool IsImage => _image is not null;
    /// <summary>[channels, height, width] of an image model's input; null for text models.</summary>
    public IReadOnlyList<int>? ImageShape => _image?.InputShape;

    /// <summary>Opens a folder as an image model when <paramref name="image"/> is true, a text model when false, and
    /// by its config.json (ViT, torchvision) when null. <paramref name="precision"/>: a GPU device's matrix products.</summary>
    public static ExplainSession Open(string modelDir, Device device = Device.Cpu, int threads = 0, bool? image = null,
                                      GemmPrecision precision = GemmPrecision.Float32)
    {
        image ??= IsImageModel(modelDir);
        return image.Value
            ? new ExplainSession(modelDir, null, ImageExplainer.Open(modelDir, device, threads, precision))
            : new ExplainSession(modelDir, TextExplainer.Open(modelDir, device, threads, precision), null);
    }

    // the rule Lxt.Import applies when it opens a folder (TextExplainer / ImageExplainer refuse the other kind)
    private static bool IsImageModel(string modelDir)
    {
        var path = Path.Combine(modelDir, "config.json");
        if (!File.Exists(path)) return false; // the explainer's own open names what is missing
        var config = Lxt.Models.ModelConfig.Load(path);
        return config.ModelType == "vit" || (config.Has("format") && config.String("format").StartsWith("torchvision", StringComparison.Ordinal));
    }

    private static ExplainOptions Options(ExplainRequest r, IReadOnlyList<string> nodes) => new() { Method = r.Method, Target = r.Target, Nodes = nodes, Checkpointing = r.Checkpointing, AttentionBlockRows = r.AttentionBlockRows, AllPositions = r.AllPositions, FusedAttention = r.FusedAttention };

    /// <summary>Explains <paramref name="input"/> with the method, target and nodes of <paramref name="request"/>.
    /// <see cref="ExplainResult.LoadTime"/> is the time spent reading the input and building its graph.</summary>
    public ExplainResult Explain(ExplainRequest request, ExplainInput input, CancellationToken cancellation = default) =>
        _text is not null ? ExplainText(_text, request, input, cancellation) : ExplainImage(_image!, request, input, cancellation);

    private ExplainResult ExplainText(TextExplainer lxt, ExplainRequest request, ExplainInput input, CancellationToken cancellation)
    {
        var clock = Stopwatch.StartNew();
        var ids = input switch
        {
            ExplainInput.Text t => lxt.Encode(t.Value),
            ExplainInput.TokenIds i => i.Ids,
            _ => throw new InputException($"'{ModelDir}' holds a text model: give it text or token ids, not pixels"),
        };
        if (ids.Length == 0) throw new InputException("no token ids were given");
        var graph = lxt.Graph(ids.Length);
        var layers = request.Trace ? graph.LayerOutputs.ToArray() : [];
        var nodes = request.Nodes.Concat(layers).Distinct().ToArray();
        var load = clock.Elapsed;
        var e = lxt.Explain(ids, Options(request, nodes), cancellation);
        return new ExplainResult
        {
            Rules = e.Method.Id,
            RuleSetName = e.Method.Name,
            Target = e.Target,
            TargetText = lxt.OutputText(graph, e.Target),
            TargetLogit = e.TargetLogit,
            Logits = e.Logits,
            Tokens = lxt.Tokens(ids),
            TokenIds = ids,
            Relevance = e.PerPosition,
            Nodes = request.Nodes.ToDictionary(n => n, e.PerToken),
            Trace = request.Trace ? layers.Select(l => new LayerRelevance(l, e.PerToken(l))).ToArray() : null,
            LoadTime = load,
            ForwardTime = e.ForwardTime,
            RelevanceTime = e.RelevanceTime,
        };
    }

    private ExplainResult ExplainImage(ImageExplainer lxt, ExplainRequest request, ExplainInput input, CancellationToken cancellation)
    {
        var clock = Stopwatch.StartNew();
        var shape = lxt.InputShape;
        var pixels = input switch
        {
            ExplainInput.PixelsFile p => PixelInput.ReadJson(p.Path, shape),
            ExplainInput.ImageFile i => PixelInput.ReadImage(i.Path, shape, Normalization.For(ModelDir)),
            ExplainInput.Pixels p => p.Values.Length == shape.Aggregate(1, (a, b) => a * b) ? p.Values
                : throw new InputException($"{p.Values.Length} pixel values were given, the model takes [{string.Join(", ", shape)}]"),
            _ => throw new InputException($"'{ModelDir}' holds an image model: give it pixels, not text or token ids"),
        };
        var load = clock.Elapsed;
        var e = lxt.Explain(pixels, Options(request, request.Nodes), cancellation);
        return new ExplainResult
        {
            Rules = e.Method.Id,
            RuleSetName = e.Method.Name,
            Target = e.Target,
            TargetText = lxt.OutputText(e.Target),
            TargetLogit = e.TargetLogit,
            Logits = e.Logits,
            Relevance = e.PerPosition,
            ImageSize = (shape[1], shape[2]),
            PatchSize = lxt.Model.Config.Int("patch_size", 0) is > 0 and var patch ? patch : null,
            Nodes = request.Nodes.ToDictionary(n => n, e.PerToken),
            LoadTime = load,
            ForwardTime = e.ForwardTime,
            RelevanceTime = e.RelevanceTime,
        };
    }

    public void Dispose()
    {
        _text?.Dispose();
        _image?.Dispose();
    }
}
