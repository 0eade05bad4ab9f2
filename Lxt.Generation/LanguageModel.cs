// LanguageModel: a causal LM checkpoint opened for running — one session (weights uploaded once) shared by the graphs
// of every length, token embeddings, steered graphs, next-token logits, explanations and activations.
using Lxt.Import;
using Lxt.Models;

namespace Lxt.Generation;

/// <summary>
/// A causal language model ready to run: the checkpoint's weights bound once to a backend and shared by every graph
/// built from it (one per input length, full or decoding with a key/value cache, steered or not). Not thread-safe.
/// </summary>
public sealed class LanguageModel : IDisposable
{
    private readonly bool _ownsModel;
    private readonly Dictionary<(int Tokens, int Past, bool Cached, string Steering), (TransformerGraph Graph, Model Model)> _graphs = new();
    private float[]? _embeddings;

    /// <summary>Runs <paramref name="model"/> on <paramref name="device"/>; with <paramref name="ownsModel"/> disposing this
    /// disposes the checkpoint too.</summary>
    public LanguageModel(PretrainedModel model, Device device = Device.Cpu, int threads = 0, bool ownsModel = false)
    {
        Pretrained = model;
        _ownsModel = ownsModel;
        TransformerGraph first;
        try { first = model.BuildDecodingGraph(1, 0); }
        catch when (ownsModel) { model.Dispose(); throw; }
        Session = new Session(first.Model, model.WeightsFor(first), device, threads);
        Hidden = first.InputShape[1];
        VocabularySize = first.VocabularySize;
        Layers = first.LayerOutputs.Count;
        TokenEmbedding = first.TokenEmbedding!;
        var tokenizerPath = Path.Combine(model.Directory, "tokenizer.json");
        Tokenizer = File.Exists(tokenizerPath) ? TextTokenizer.Open(tokenizerPath) : null;
        MaxPositions = model.Config.Has("n_positions") ? model.Config.Int("n_positions")
            : model.Config.Has("max_position_embeddings") ? model.Config.Int("max_position_embeddings") : null;
        StopTokens = ReadEos(model.Config);
    }

    /// <summary>Opens a model folder (config.json, safetensors, optionally tokenizer.json).</summary>
    public static LanguageModel Open(string directory, Device device = Device.Cpu, int threads = 0)
    {
        var model = PretrainedModel.Open(directory);
        try { return new LanguageModel(model, device, threads, ownsModel: true); }
        catch { model.Dispose(); throw; }
    }

    public PretrainedModel Pretrained { get; }
    public Session Session { get; }
    /// <summary>The folder's tokenizer.json, or null when it has none (then work with token ids).</summary>
    public TextTokenizer? Tokenizer { get; }
    public int Hidden { get; }
    public int VocabularySize { get; }
    public int Layers { get; }
    internal string TokenEmbedding { get; }
    /// <summary>The longest sequence the model's positions allow (n_positions / max_position_embeddings), if the config says.</summary>
    public int? MaxPositions { get; }
    /// <summary>The config's eos_token_id (one id or a list); empty when it has none.</summary>
    public IReadOnlyList<int> StopTokens { get; }

    /// <summary>Token ids of a text (needs the folder's tokenizer).</summary>
    public int[] Encode(string text) =>
        (Tokenizer ?? throw new LxtImportException($"model folder '{Pretrained.Directory}' has no tokenizer.json; give token ids")).Encode(text);

    /// <summary>The text of token ids (the tokenizer's decoding, or "#id" per token without a tokenizer).</summary>
    public string Decode(IEnumerable<int> ids) => Tokenizer?.Decode(ids) ?? string.Concat(ids.Select(i => $"#{i} "));

    /// <summary>The text of one token as a reader sees it (or "#id").</summary>
    public string TokenText(int id) => Tokenizer?.TokenText(id) ?? $"#{id}";

    /// <summary>Token embeddings [ids.Count, hidden]; the embedding table is read once.</summary>
    public float[] Embed(IReadOnlyList<int> ids)
    {
        _embeddings ??= Pretrained.Checkpoint.ReadFloat32(TokenEmbedding);
        int vocab = _embeddings.Length / Hidden;
        var result = new float[ids.Count * Hidden];
        for (int i = 0; i < ids.Count; i++)
        {
            if (ids[i] < 0 || ids[i] >= vocab)
                throw new TokenOutOfRangeException($"token id {ids[i]} at position {i} is outside the vocabulary of {vocab} ('{TokenEmbedding}')");
            Array.Copy(_embeddings, (long)ids[i] * Hidden, result, (long)i * Hidden, Hidden);
        }
        return result;
    }

    /// <summary>The full graph over <paramref name="tokens"/> tokens (logits of the last one), with the steers applied.</summary>
    public (TransformerGraph Graph, Model Model) FullGraph(int tokens, IReadOnlyList<Steer>? steering = null) =>
        Graph(tokens, 0, cached: false, steering);

    /// <summary>The decoding graph for <paramref name="tokens"/> new tokens after <paramref name="pastLength"/> cached ones
    /// (<see cref="Architectures.BuildDecoding"/>), with the steers applied.</summary>
    public (TransformerGraph Graph, Model Model) DecodingGraph(int tokens, int pastLength, IReadOnlyList<Steer>? steering = null) =>
        Graph(tokens, pastLength, cached: true, steering);

    private (TransformerGraph Graph, Model Model) Graph(int tokens, int past, bool cached, IReadOnlyList<Steer>? steering)
    {
        steering ??= [];
        var key = (tokens, past, cached, string.Join("\n", steering));
        if (_graphs.TryGetValue(key, out var known)) return known;
        var graph = cached ? Pretrained.BuildDecodingGraph(tokens, past) : Pretrained.BuildGraph(tokens);
        var built = (graph, Steering.Apply(graph.Model, steering));
        _graphs[key] = built;
        return built;
    }

    /// <summary>The logits after <paramref name="ids"/>, computed over the whole sequence (no cache).</summary>
    public double[] NextTokenLogits(IReadOnlyList<int> ids, IReadOnlyList<Steer>? steering = null, CancellationToken cancellation = default)
    {
        CheckLength(ids.Count);
        var (graph, model) = FullGraph(ids.Count, steering);
        return Session.Evaluate(AtRowsRead(model, [model["logits"]]), new Dictionary<string, float[]> { [graph.InputName] = Embed(ids) }, cancellation)[0].ToDoubleArray();
    }

    // each graph's outputs with every value computed only at the rows read, rewritten once per graph
    private readonly System.Runtime.CompilerServices.ConditionalWeakTable<Model, Expr[]> _atRowsRead = new();

    /// <summary>The outputs a graph of this model (<see cref="FullGraph"/>, <see cref="DecodingGraph"/>) is run for, as
    /// <see cref="Expr.AtRowsRead"/> gives them: made on the graph's first run, so later runs skip the rewrite's walk
    /// over the graph. A graph is run for the same outputs every time.</summary>
    internal Expr[] AtRowsRead(Model model, IReadOnlyList<Expr> outputs) => _atRowsRead.GetValue(model, _ => Expr.AtRowsRead(outputs));

    /// <summary>Values of named nodes for a sequence (e.g. <c>model.layers.0.mlp.act_fn</c> [T, intermediate]).</summary>
    public IReadOnlyDictionary<string, TensorValue> Activations(IReadOnlyList<int> ids, IReadOnlyList<string> nodes,
        IReadOnlyList<Steer>? steering = null, CancellationToken cancellation = default)
    {
        CheckLength(ids.Count);
        var (graph, model) = FullGraph(ids.Count, steering);
        var exprs = nodes.Select(n => model.FindNode(n) ?? throw new KeyNotFoundException(UnknownNode(model, n))).ToArray();
        var values = Session.Evaluate(exprs, new Dictionary<string, float[]> { [graph.InputName] = Embed(ids) }, cancellation);
        return nodes.Select((n, i) => (n, values[i])).ToDictionary(p => p.n, p => p.Item2);
    }

    /// <summary>
    /// Explains the prediction after <paramref name="ids"/> (the logits of the last token): relevance of every token and
    /// of the named nodes of <paramref name="options"/>, in one backward pass.
    /// </summary>
    public Explanation Explain(IReadOnlyList<int> ids, ExplainOptions? options = null, IReadOnlyList<Steer>? steering = null,
        CancellationToken cancellation = default)
    {
        CheckLength(ids.Count);
        var (graph, model) = FullGraph(ids.Count, steering);
        // the explainer borrows this session (and so its uploaded weights); it is not disposed
        var explainer = new Explainer(model, graph.InputName, Session);
        return explainer.Explain(Embed(ids), options, cancellation);
    }

    /// <summary>Names of the named nodes of the graph for <paramref name="tokens"/> tokens.</summary>
    public IReadOnlyList<string> NodeNames(int tokens = 1) => FullGraph(tokens).Model.NodeNames();

    internal static string UnknownNode(Model model, string name) =>
        $"the model has no node named '{name}' (named nodes include: {string.Join(", ", model.NodeNames().Where(n => !n.StartsWith("past.", StringComparison.Ordinal)).Take(12))}, ...)";

    internal void CheckLength(int tokens)
    {
        if (tokens < 1) throw new ArgumentException("a sequence needs at least one token");
        if (MaxPositions is int max && tokens > max)
            throw new ArgumentException($"{tokens} tokens exceed the model's {max} positions ({Pretrained.Config.Source})");
    }

    private static IReadOnlyList<int> ReadEos(ModelConfig c)
    {
        var e = c.Element("eos_token_id");
        if (e is null) return [];
        return e.Value.ValueKind switch
        {
            System.Text.Json.JsonValueKind.Number => [e.Value.GetInt32()],
            System.Text.Json.JsonValueKind.Array => e.Value.EnumerateArray().Select(v => v.GetInt32()).ToArray(),
            _ => throw new ModelConfigException($"{c.Source}: 'eos_token_id' should be an integer or a list of integers, found {e}"),
        };
    }

    public void Dispose()
    {
        Session.Dispose();
        Tokenizer?.Dispose();
        if (_ownsModel) Pretrained.Dispose();
    }
}
