// TextExplainer and ImageExplainer: a model folder explained in a few lines — open, (tokenize,) embed, explain.
// Thin over PretrainedModel + Explainer; the lxt command line runs the same code.
using Lxt.Backend.Gpu;
using Lxt.Models;

namespace Lxt.Import;

/// <summary>
/// Explains a text model of a Hugging Face folder (config.json, safetensors, optional tokenizer.json):
/// <code>
/// using var lxt = TextExplainer.Open("models/llama");
/// var e = lxt.Explain("The capital of France is");
/// </code>
/// Graphs depend on the number of tokens; one is built (and its weights bound) per length and kept.
/// </summary>
public sealed class TextExplainer : IDisposable
{
    private readonly Device _device;
    private readonly int _threads;
    private readonly GemmPrecision _precision;
    private readonly Dictionary<int, (TransformerGraph Graph, Explainer Explainer)> _byLength = new();
    private TextTokenizer? _tokenizer;
    private bool _tokenizerTried;

    private TextExplainer(PretrainedModel model, Device device, int threads, GemmPrecision precision)
    {
        Model = model;
        _device = device;
        _threads = threads;
        _precision = precision;
    }

    public PretrainedModel Model { get; }

    /// <summary>Opens a model folder of a text model; an image model or a bad folder raises an <see cref="LxtImportException"/>.
    /// <paramref name="precision"/>: how a GPU device computes matrix products (see <see cref="Backends.Create"/>).</summary>
    public static TextExplainer Open(string modelDir, Device device = Device.Cpu, int threads = 0, GemmPrecision precision = GemmPrecision.Float32)
    {
        var model = PretrainedModel.Open(modelDir);
        try
        {
            if (IsImageModel(model.Config))
                throw new LxtImportException($"'{modelDir}' holds an image model: give it pixels, not text or token ids");
            return new TextExplainer(model, device, threads, precision);
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    internal static bool IsImageModel(ModelConfig config) =>
        config.ModelType == "vit" || (config.Has("format") && config.String("format").StartsWith("torchvision", StringComparison.Ordinal));

    /// <summary>The folder's tokenizer.json, or null when the folder has none.</summary>
    public TextTokenizer? Tokenizer
    {
        get
        {
            if (!_tokenizerTried)
            {
                _tokenizerTried = true;
                var path = Path.Combine(Model.Directory, "tokenizer.json");
                if (File.Exists(path)) _tokenizer = TextTokenizer.Open(path);
            }
            return _tokenizer;
        }
    }

    /// <summary>Token ids of <paramref name="text"/> under the folder's tokenizer.json (no special tokens added).</summary>
    public int[] Encode(string text)
    {
        var tokenizer = Tokenizer ?? throw new LxtImportException(
            $"model folder '{Model.Directory}' has no tokenizer.json to turn text into token ids; give token ids instead");
        var ids = tokenizer.Encode(text);
        if (ids.Length == 0) throw new LxtImportException($"the text \"{text}\" encodes to no tokens");
        return ids;
    }

    /// <summary>The text of each token, or the ids as strings when the folder has no tokenizer.</summary>
    public IReadOnlyList<string> Tokens(IReadOnlyList<int> ids) =>
        Tokenizer is { } t ? ids.Select(t.TokenText).ToArray() : ids.Select(i => i.ToString(System.Globalization.CultureInfo.InvariantCulture)).ToArray();

    /// <summary>The text of an output index: a token for language-model heads, a label for classifiers.</summary>
    public string? OutputText(TransformerGraph graph, int index) => graph.Task switch
    {
        ModelTask.SequenceClassification => graph.Labels is { } l && index < l.Count ? l[index] : null,
        _ => Tokenizer?.TokenText(index),
    };

    /// <summary>The model graph for <paramref name="tokens"/> tokens (built once per length, checked against the weights).</summary>
    public TransformerGraph Graph(int tokens) => For(tokens).Graph;

    /// <summary>Token embeddings of <paramref name="ids"/> (the graph's input); an id outside the vocabulary raises
    /// <see cref="TokenOutOfRangeException"/>.</summary>
    public float[] Embed(IReadOnlyList<int> ids) => Model.Embed(Graph(ids.Count), ids);

    public Explanation Explain(string text, ExplainOptions? options = null, CancellationToken cancellation = default) =>
        Explain(Encode(text), options, cancellation);

    /// <summary>Explains the model's prediction for <paramref name="ids"/> (the last position for causal LMs).</summary>
    public Explanation Explain(IReadOnlyList<int> ids, ExplainOptions? options = null, CancellationToken cancellation = default)
    {
        if (ids.Count == 0) throw new LxtImportException("no token ids were given");
        var (graph, explainer) = For(ids.Count);
        var input = Model.Embed(graph, ids);
        return explainer.Explain(input, Checked(options, graph), cancellation);
    }

    internal static ExplainOptions? Checked(ExplainOptions? options, TransformerGraph graph)
    {
        int outputs = graph.Logits.Shape[0];
        if (options?.Target is int t && (t < 0 || t >= outputs))
            throw new LxtImportException($"target {t} is outside the model's {outputs} outputs");
        foreach (var node in options?.Nodes ?? [])
            if (graph.Model.FindNode(node) is null)
                throw new LxtImportException($"the model has no node named '{node}' (see the graph's named nodes, e.g. {string.Join(", ", graph.LayerOutputs.Take(3))})");
        return options;
    }

    private (TransformerGraph Graph, Explainer Explainer) For(int tokens)
    {
        if (_byLength.TryGetValue(tokens, out var cached)) return cached;
        var graph = Model.BuildGraph(tokens);
        var explainer = new Explainer(graph.Model, graph.InputName, Model.WeightsFor(graph), _device, _threads, precision: _precision) { LayerOutputs = graph.LayerOutputs };
        _byLength[tokens] = (graph, explainer);
        return (graph, explainer);
    }

    public void Dispose()
    {
        foreach (var (_, explainer) in _byLength.Values) explainer.Dispose();
        _byLength.Clear();
        _tokenizer?.Dispose();
        Model.Dispose();
    }
}

/// <summary>
/// Explains an image classifier of a model folder (Hugging Face ViT or a torchvision VisionTransformer with an Lxt
/// config.json) on a normalised pixel tensor [channels, height, width], row-major:
/// <code>
/// using var lxt = ImageExplainer.Open("models/vit");
/// var e = lxt.Explain(pixels, new ExplainOptions { Method = Method.CpLrp });
/// </code>
/// </summary>
public sealed class ImageExplainer : IDisposable
{
    private readonly Explainer _explainer;

    private ImageExplainer(PretrainedModel model, TransformerGraph graph, Explainer explainer)
    {
        Model = model;
        Graph = graph;
        _explainer = explainer;
    }

    public PretrainedModel Model { get; }
    public TransformerGraph Graph { get; }

    /// <summary>[channels, height, width] of the pixel tensor the model takes.</summary>
    public IReadOnlyList<int> InputShape => Graph.InputShape;

    /// <summary>Opens a model folder of an image model; a text model or a bad folder raises an <see cref="LxtImportException"/>.
    /// <paramref name="precision"/>: how a GPU device computes matrix products (see <see cref="Backends.Create"/>).</summary>
    public static ImageExplainer Open(string modelDir, Device device = Device.Cpu, int threads = 0, GemmPrecision precision = GemmPrecision.Float32)
    {
        var model = PretrainedModel.Open(modelDir);
        try
        {
            if (!TextExplainer.IsImageModel(model.Config))
                throw new LxtImportException($"'{modelDir}' holds a text model ({model.Config.ModelType}): give it text or token ids, not pixels");
            var graph = model.BuildGraph();
            return new ImageExplainer(model, graph, new Explainer(graph.Model, graph.InputName, model.WeightsFor(graph), device, threads, precision: precision) { LayerOutputs = graph.LayerOutputs });
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>The class name of an output index (id2label), or null.</summary>
    public string? OutputText(int index) => Graph.Labels is { } l && index < l.Count ? l[index] : null;

    /// <summary>Explains the class prediction for <paramref name="pixels"/>; per-position relevance is per pixel
    /// (summed over channels, row-major [height·width]).</summary>
    public Explanation Explain(float[] pixels, ExplainOptions? options = null, CancellationToken cancellation = default)
    {
        int expected = InputShape.Aggregate(1, (a, b) => a * b);
        if (pixels.Length != expected)
            throw new LxtImportException($"the model takes {expected} pixel values [{string.Join(", ", InputShape)}], {pixels.Length} were given");
        return _explainer.Explain(pixels, TextExplainer.Checked(options, Graph), cancellation);
    }

    public void Dispose()
    {
        _explainer.Dispose();
        Model.Dispose();
    }
}
