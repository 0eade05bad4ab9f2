// ExplainPipeline: one explanation from a model folder and an input (text, token ids, image, pixel JSON) to a
// result record — load, tokenize/embed or read pixels, explain — over TextExplainer / ImageExplainer.
using System.Diagnostics;
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

    public bool IsImage => this is ImageFile or PixelsFile;
}

/// <summary>What to explain, how and where.</summary>
public sealed record ExplainRequest(string ModelDir, ExplainInput Input)
{
    public Method Method { get; init; } = Method.AttnLrp;
    public int? Target { get; init; }
    public Device Device { get; init; } = Device.Cpu;
    /// <summary>CPU threads; 0 = all cores.</summary>
    public int Threads { get; init; }
    /// <summary>Named nodes whose per-token (latent) relevance to report.</summary>
    public IReadOnlyList<string> Nodes { get; init; } = [];
}

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
    public required TimeSpan LoadTime { get; init; }
    public required TimeSpan ForwardTime { get; init; }
    public required TimeSpan RelevanceTime { get; init; }
}

public static class ExplainPipeline
{
    public static ExplainResult Run(ExplainRequest request, CancellationToken cancellation = default) =>
        request.Input.IsImage ? RunImage(request, cancellation) : RunText(request, cancellation);

    private static ExplainOptions Options(ExplainRequest r) => new() { Method = r.Method, Target = r.Target, Nodes = r.Nodes };

    private static ExplainResult RunText(ExplainRequest request, CancellationToken cancellation)
    {
        var clock = Stopwatch.StartNew();
        using var lxt = TextExplainer.Open(request.ModelDir, request.Device, request.Threads);
        var ids = request.Input switch
        {
            ExplainInput.Text t => lxt.Encode(t.Value),
            ExplainInput.TokenIds i => i.Ids,
            _ => throw new UnreachableException(),
        };
        if (ids.Length == 0) throw new InputException("no token ids were given");
        var graph = lxt.Graph(ids.Length);
        var load = clock.Elapsed;
        var e = lxt.Explain(ids, Options(request), cancellation);
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
            LoadTime = load,
            ForwardTime = e.ForwardTime,
            RelevanceTime = e.RelevanceTime,
        };
    }

    private static ExplainResult RunImage(ExplainRequest request, CancellationToken cancellation)
    {
        var clock = Stopwatch.StartNew();
        using var lxt = ImageExplainer.Open(request.ModelDir, request.Device, request.Threads);
        var shape = lxt.InputShape;
        var pixels = request.Input switch
        {
            ExplainInput.PixelsFile p => PixelInput.ReadJson(p.Path, shape),
            ExplainInput.ImageFile i => PixelInput.ReadImage(i.Path, shape, Normalization.For(request.ModelDir)),
            _ => throw new UnreachableException(),
        };
        var load = clock.Elapsed;
        var e = lxt.Explain(pixels, Options(request), cancellation);
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
}
