// EvaluationData: the samples `lxt evaluate` scores attribution methods on — JSON lines of a data file, or the demo
// task — and the model they run on: one AttributionContext per input length, all sharing one session (weights uploaded
// once), plus the Integrated Gradients baseline of text models.
using System.Globalization;
using System.Text.Json;
using Lxt.Evaluation;
using Lxt.Import;
using Lxt.Models;

namespace Lxt.Cli;

/// <summary>One line of an evaluation data file: exactly one of text, token ids or pixels; an optional target and
/// evidence feature (token position, or patch index for images).</summary>
public sealed record DataLine(int Line, string? Text, int[]? InputIds, JsonElement? Pixels, int? Target, int? Evidence);

public static class EvaluationData
{
    /// <summary>
    /// Reads a JSON-lines file: one object per non-empty line with <c>"text"</c>, <c>"input_ids"</c> or <c>"pixels"</c>
    /// ([C][H][W]), optionally <c>"target"</c> (the output to explain; default the arg-max) and <c>"evidence"</c> (the
    /// token position or patch index holding the evidence, for the hit rate). At most <paramref name="limit"/> lines.
    /// </summary>
    public static IReadOnlyList<DataLine> Read(string path, int? limit = null)
    {
        if (!File.Exists(path)) throw new InputException($"data file '{path}' does not exist");
        var lines = new List<DataLine>();
        int number = 0;
        foreach (var text in File.ReadLines(path))
        {
            number++;
            if (string.IsNullOrWhiteSpace(text)) continue;
            if (limit is int max && lines.Count >= max) break;
            lines.Add(Parse(text, $"{path}:{number}", number));
        }
        if (lines.Count == 0) throw new InputException($"data file '{path}' holds no samples");
        return lines;
    }

    /// <summary>One JSON line (see <see cref="Read"/>); <paramref name="where"/> names it in errors.</summary>
    public static DataLine Parse(string json, string where, int line)
    {
        JsonElement root;
        try
        {
            using var doc = JsonDocument.Parse(json);
            root = doc.RootElement.Clone();
        }
        catch (JsonException e) { throw new InputException($"{where}: not valid JSON ({e.Message})"); }
        if (root.ValueKind != JsonValueKind.Object)
            throw new InputException($"{where}: expected a JSON object with \"text\", \"input_ids\" or \"pixels\"");
        var given = new[] { "text", "input_ids", "pixels" }.Where(k => root.TryGetProperty(k, out var v) && v.ValueKind != JsonValueKind.Null).ToArray();
        if (given.Length != 1)
            throw new InputException(given.Length == 0
                ? $"{where}: the object has none of \"text\", \"input_ids\", \"pixels\""
                : $"{where}: the object has {string.Join(" and ", given.Select(g => $"\"{g}\""))}; give one");
        string? text = null;
        int[]? ids = null;
        JsonElement? pixels = null;
        switch (given[0])
        {
            case "text":
                var t = root.GetProperty("text");
                text = t.ValueKind == JsonValueKind.String ? t.GetString() : throw new InputException($"{where}: \"text\" should be a string");
                break;
            case "input_ids":
                var a = root.GetProperty("input_ids");
                if (a.ValueKind != JsonValueKind.Array || a.GetArrayLength() == 0 || a.EnumerateArray().Any(v => v.ValueKind != JsonValueKind.Number || !v.TryGetInt32(out _)))
                    throw new InputException($"{where}: \"input_ids\" should be a non-empty list of integers");
                ids = a.EnumerateArray().Select(v => v.GetInt32()).ToArray();
                break;
            default:
                pixels = root.GetProperty("pixels");
                break;
        }
        return new DataLine(line, text, ids, pixels, Index(root, "target", where), Index(root, "evidence", where));
    }

    private static int? Index(JsonElement root, string key, string where)
    {
        if (!root.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        if (v.ValueKind != JsonValueKind.Number || !v.TryGetInt32(out int i) || i < 0)
            throw new InputException($"{where}: \"{key}\" should be a non-negative integer, found {v}");
        return i;
    }

    /// <summary>The demo task's samples (<see cref="Lxt.Demo.DemoTask.Generate"/>): the animal's sound is the target and
    /// the animal's position the evidence.</summary>
    public static IReadOnlyList<DataLine> Demo(int count, int seed) =>
        Lxt.Demo.DemoTask.Generate(count, seed)
            .Select((e, i) => new DataLine(i + 1, null, e.Ids, null, e.Label, e.EvidencePosition)).ToArray();

    /// <summary>The lines as evaluation samples, each with the context of its input length.</summary>
    public static IReadOnlyList<EvaluationSample> Samples(EvaluationModel model, IReadOnlyList<DataLine> lines, string source)
    {
        var samples = new List<EvaluationSample>();
        foreach (var line in lines)
        {
            string where = $"{source}:{line.Line}";
            var (context, input, id) = model.Prepare(line, where);
            if (line.Target is int t && t >= context.Explainer.OutputSize)
                throw new InputException($"{where}: target {t} is outside the model's {context.Explainer.OutputSize} outputs");
            if (line.Evidence is int e && e >= context.Units)
                throw new InputException($"{where}: evidence {e} is outside the sample's {context.Units} {(context.Kind == InputKind.Image ? "patches" : "tokens")}");
            samples.Add(new EvaluationSample { Input = input, Target = line.Target, EvidencePosition = line.Evidence, Id = id, Context = context });
        }
        return samples;
    }
}

/// <summary>
/// A model folder opened for evaluation: text models get one graph and one <see cref="AttributionContext"/> per input
/// length, image models one of each; every context's explainer runs on the same <see cref="Session"/>, so the weights
/// are uploaded once. The explainers are not disposed one by one (<see cref="Explainer.Dispose"/> disposes its session);
/// disposing this disposes the session once.
/// </summary>
public sealed class EvaluationModel : IDisposable
{
    private readonly Device _device;
    private readonly int _threads;
    private readonly Dictionary<int, (TransformerGraph Graph, AttributionContext Context)> _byLength = new();
    private AttributionContext? _image;
    private Session? _session;
    private TextTokenizer? _tokenizer;

    private EvaluationModel(PretrainedModel model, Device device, int threads)
    {
        Model = model;
        _device = device;
        _threads = threads;
        IsImage = model.Config.ModelType == "vit"
                  || (model.Config.Has("format") && model.Config.String("format").StartsWith("torchvision", StringComparison.Ordinal));
        var tokenizerPath = Path.Combine(model.Directory, "tokenizer.json");
        if (!IsImage && File.Exists(tokenizerPath)) _tokenizer = TextTokenizer.Open(tokenizerPath);
    }

    public static EvaluationModel Open(string directory, Device device, int threads)
    {
        var model = PretrainedModel.Open(directory);
        try { return new EvaluationModel(model, device, threads); }
        catch { model.Dispose(); throw; }
    }

    public PretrainedModel Model { get; }
    public bool IsImage { get; }

    /// <summary>The token id the Integrated Gradients baseline of text is built from: the config's pad_token_id, if any.</summary>
    public int? PadTokenId => Model.Config.Element("pad_token_id") is { ValueKind: JsonValueKind.Number } e && e.TryGetInt32(out int id) && id >= 0 ? id : null;

    private Explainer NewExplainer(TransformerGraph graph)
    {
        _session ??= new Session(graph.Model, Model.WeightsFor(graph), _device, _threads);
        return new Explainer(graph.Model, graph.InputName, _session);
    }

    /// <summary>The context for text of <paramref name="tokens"/> tokens (built once per length).</summary>
    public AttributionContext ForTokens(int tokens) => TextGraph(tokens).Context;

    private (TransformerGraph Graph, AttributionContext Context) TextGraph(int tokens)
    {
        if (_byLength.TryGetValue(tokens, out var known)) return known;
        var graph = Model.BuildGraph(tokens);
        var entry = (graph, AttributionContext.For(graph, NewExplainer(graph)));
        _byLength[tokens] = entry;
        return entry;
    }

    /// <summary>The context of an image model.</summary>
    public AttributionContext ForImage()
    {
        if (_image is not null) return _image;
        var graph = Model.BuildGraph();
        _image = AttributionContext.For(graph, NewExplainer(graph));
        return _image;
    }

    /// <summary>A line's context, model input and a name for reports.</summary>
    public (AttributionContext Context, float[] Input, string Id) Prepare(DataLine line, string where)
    {
        if (IsImage)
        {
            if (line.Pixels is not { } pixels)
                throw new InputException($"{where}: '{Model.Directory}' holds an image model; give \"pixels\", not text or token ids");
            var context = ForImage();
            return (context, PixelInput.FromJson(pixels, where, context.InputShape), $"line {line.Line}");
        }
        if (line.Pixels is not null)
            throw new InputException($"{where}: '{Model.Directory}' holds a text model; give \"text\" or \"input_ids\", not pixels");
        var ids = line.InputIds ?? Encode(line.Text!, where);
        var (graph, ctx) = TextGraph(ids.Length);
        float[] input;
        try { input = Model.Embed(graph, ids); }
        catch (TokenOutOfRangeException e) { throw new InputException($"{where}: {e.Message}"); }
        string id = line.Text ?? (_tokenizer is { } t ? string.Join(" ", ids.Select(t.TokenText)) : string.Join(",", ids.Select(i => i.ToString(CultureInfo.InvariantCulture))));
        return (ctx, input, id);
    }

    private int[] Encode(string text, string where)
    {
        var tokenizer = _tokenizer ?? throw new InputException(
            $"{where}: model folder '{Model.Directory}' has no tokenizer.json to turn text into token ids; give \"input_ids\" instead");
        var ids = tokenizer.Encode(text);
        if (ids.Length == 0) throw new InputException($"{where}: the text encodes to no tokens");
        return ids;
    }

    /// <summary>The pad token's embedding at every position of a text context (the Integrated Gradients baseline), or
    /// null for zeros: when the config names no pad_token_id, and for images.</summary>
    public float[]? PadBaseline(AttributionContext context)
    {
        if (IsImage || PadTokenId is not int pad) return null;
        return Model.Embed(TextGraph(context.Tokens).Graph, Enumerable.Repeat(pad, context.Tokens).ToArray());
    }

    public void Dispose()
    {
        _session?.Dispose();
        _tokenizer?.Dispose();
        Model.Dispose();
    }
}

/// <summary>
/// Integrated Gradients whose baseline depends on the sample's context: for text, the embedding of the pad token
/// (the config's pad_token_id) at every position — a real input, on which RMSNorm / LayerNorm are smooth — and zeros
/// when the model has no pad token; for images, zeros.
/// </summary>
public sealed class ContextBaselineIntegratedGradients(AttributionSettings settings, Func<AttributionContext, float[]?> baseline, string baselineName)
    : IAttributionMethod
{
    private readonly Dictionary<AttributionContext, IntegratedGradients> _byContext = new();

    public string Id => "integrated-gradients";
    public string Name => $"Integrated Gradients ({settings.IntegratedGradientsSteps} steps, {settings.IntegrationRule}, {baselineName})";

    public Attribution Attribute(AttributionContext context, float[] input, int? target = null, CancellationToken cancellation = default)
    {
        if (!_byContext.TryGetValue(context, out var method))
            _byContext[context] = method = new IntegratedGradients
            {
                Steps = settings.IntegratedGradientsSteps,
                Rule = settings.IntegrationRule,
                Baseline = baseline(context),
            };
        return method.Attribute(context, input, target, cancellation);
    }
}
