// PretrainedModel: a model folder (config.json + safetensors) opened for building graphs and reading weights.
using Lxt.Models;

namespace Lxt.Import;

/// <summary>A config that does not match its weights: a missing tensor or one of another shape.</summary>
public sealed class ModelWeightsException(string message) : LxtImportException(message);

/// <summary>
/// A Hugging Face (or torchvision, with an Lxt config.json) model folder: its config and memory-mapped weights.
/// Graphs are built per input length; weights are read (converted to float32 once) when a session binds them.
/// </summary>
public sealed class PretrainedModel : IDisposable
{
    private PretrainedModel(string directory, ModelConfig config, SafetensorsCheckpoint checkpoint)
    {
        Directory = directory;
        Config = config;
        Checkpoint = checkpoint;
    }

    public string Directory { get; }
    public ModelConfig Config { get; }
    public SafetensorsCheckpoint Checkpoint { get; }

    /// <summary>Opens a model folder. A missing or unreadable config or checkpoint raises an <see cref="LxtImportException"/>
    /// subtype naming the file; nothing stays open on failure.</summary>
    public static PretrainedModel Open(string directory)
    {
        var config = LoadConfig(directory);
        var checkpoint = SafetensorsCheckpoint.Open(directory);
        return new PretrainedModel(directory, config, checkpoint);
    }

    /// <summary>The graph of a model folder over <paramref name="tokens"/> tokens: checked against the folder's
    /// checkpoint (tensor names and shapes) where it holds one, else built from its config.json alone, so a model can
    /// be planned before its weights are downloaded. Weights are not read.</summary>
    public static TransformerGraph GraphOf(string directory, int tokens)
    {
        if (!SafetensorsCheckpoint.IsIn(directory)) return Architectures.Build(LoadConfig(directory), tokens);
        using var model = Open(directory);
        return model.BuildGraph(tokens);
    }

    private static ModelConfig LoadConfig(string directory)
    {
        if (!System.IO.Directory.Exists(directory)) throw new LxtImportException($"model folder '{directory}' does not exist");
        var configPath = Path.Combine(directory, "config.json");
        if (!File.Exists(configPath)) throw new LxtImportException($"model folder '{directory}' has no config.json");
        return ModelConfig.Load(configPath);
    }

    /// <summary>GPT-2 checkpoints come with and without the "transformer." prefix.</summary>
    private string? WeightPrefix => Config.ModelType == "gpt2" && !Checkpoint.Contains("transformer.wte.weight") && Checkpoint.Contains("wte.weight") ? "" : null;

    /// <summary>Builds the graph for <paramref name="tokens"/> tokens and checks every parameter against the checkpoint.</summary>
    public TransformerGraph BuildGraph(int tokens = 0, int? position = null)
    {
        var graph = Architectures.Build(Config, tokens, position, WeightPrefix);
        Validate(graph);
        return graph;
    }

    /// <summary>A decoding graph (<see cref="Architectures.BuildDecoding"/>) of a causal LM, checked against the checkpoint:
    /// <paramref name="tokens"/> new tokens after <paramref name="pastLength"/> cached ones.</summary>
    public TransformerGraph BuildDecodingGraph(int tokens, int pastLength)
    {
        var graph = Architectures.BuildDecoding(Config, tokens, pastLength, WeightPrefix);
        Validate(graph);
        return graph;
    }

    /// <summary>The weights of this checkpoint as a graph's parameters see them (tied weights resolved).</summary>
    public IWeightSource WeightsFor(TransformerGraph graph) => new CheckpointWeights(this, graph.TiedWeights);

    /// <summary>Token embeddings [ids.Length, hidden] for a text graph: rows of its embedding table.</summary>
    public float[] Embed(TransformerGraph graph, IReadOnlyList<int> ids)
    {
        var table = graph.TokenEmbedding ?? throw new LxtImportException($"{graph.Architecture} models take no token ids");
        var shape = Checkpoint.Shape(table);
        int vocab = (int)shape[0], hidden = (int)shape[1];
        var values = Checkpoint.ReadFloat32(table);
        var result = new float[ids.Count * hidden];
        for (int i = 0; i < ids.Count; i++)
        {
            if (ids[i] < 0 || ids[i] >= vocab)
                throw new TokenOutOfRangeException($"token id {ids[i]} at position {i} is outside the vocabulary of {vocab} ('{table}')");
            Array.Copy(values, (long)ids[i] * hidden, result, (long)i * hidden, hidden);
        }
        return result;
    }

    private void Validate(TransformerGraph graph)
    {
        foreach (var (name, shape) in graph.Model.Parameters)
        {
            var stored = Resolve(name, graph.TiedWeights);
            var actual = Checkpoint.Shape(stored);
            if (!actual.Select(d => (int)d).SequenceEqual(shape))
                throw new ModelWeightsException(
                    $"{Checkpoint.Path}: tensor '{stored}' has shape [{string.Join(", ", actual)}], the config ({Config.Source}) implies [{string.Join(", ", shape)}]");
        }
    }

    internal string Resolve(string name, IReadOnlyDictionary<string, string> tied)
    {
        if (Checkpoint.Contains(name)) return name;
        if (tied.TryGetValue(name, out var alias) && Checkpoint.Contains(alias)) return alias;
        throw new ModelWeightsException($"{Checkpoint.Path}: no tensor '{name}', which the config ({Config.Source}) needs");
    }

    public void Dispose() => Checkpoint.Dispose();

    private sealed class CheckpointWeights(PretrainedModel model, IReadOnlyDictionary<string, string> tied) : IWeightSource
    {
        public bool Contains(string name) => model.Checkpoint.Contains(name) || (tied.TryGetValue(name, out var a) && model.Checkpoint.Contains(a));

        public float[] Read(string name, IReadOnlyList<int> expectedShape)
        {
            var stored = model.Resolve(name, tied);
            var shape = model.Checkpoint.Shape(stored);
            if (!shape.Select(d => (int)d).SequenceEqual(expectedShape))
                throw new ModelWeightsException($"{model.Checkpoint.Path}: tensor '{stored}' has shape [{string.Join(", ", shape)}], expected [{string.Join(", ", expectedShape)}]");
            return model.Checkpoint.ReadFloat32(stored);
        }
    }
}

/// <summary>A token id outside the model's vocabulary.</summary>
public sealed class TokenOutOfRangeException(string message) : LxtImportException(message);
