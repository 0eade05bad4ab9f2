// TransformerGraph: a built architecture — the model graph plus what an explainer needs to feed and read it.
namespace Lxt.Models;

public enum ModelTask
{
    /// <summary>Next-token logits at one position.</summary>
    CausalLM,
    /// <summary>Vocabulary logits at one (masked) position.</summary>
    MaskedLM,
    SequenceClassification,
    ImageClassification,
}

/// <summary>
/// A model graph built from a config for one input size. Its input is the embedding matrix (text: relevance is
/// taken there, as the reference does) or the pixel tensor (images); its one output, <c>logits</c>, is the logit
/// vector at <see cref="Position"/> (text) or of the image / sequence class.
/// </summary>
public sealed class TransformerGraph
{
    public required string Architecture { get; init; }
    public required ModelTask Task { get; init; }
    public required Model Model { get; init; }
    /// <summary>"inputs_embeds" [tokens, hidden] or "pixel_values" [channels, height, width].</summary>
    public required string InputName { get; init; }
    public required IReadOnlyList<int> InputShape { get; init; }
    /// <summary>The parameter holding the token embedding table [vocab, hidden] (text models), else null.</summary>
    public string? TokenEmbedding { get; init; }
    /// <summary>Names of the nodes that are each layer's output, in order (for latent relevance).</summary>
    public required IReadOnlyList<string> LayerOutputs { get; init; }
    /// <summary>Parameters that read another stored tensor (tied embeddings): parameter → stored name.</summary>
    public IReadOnlyDictionary<string, string> TiedWeights { get; init; } = new Dictionary<string, string>();
    public int SequenceLength { get; init; }
    /// <summary>The token position whose logits are the output (text models).</summary>
    public int Position { get; init; }
    /// <summary>Class names (id2label) where the config has them.</summary>
    public IReadOnlyList<string>? Labels { get; init; }
    public int VocabularySize { get; init; }
    /// <summary>Decoding graphs (<see cref="Architectures.BuildDecoding"/>): how many earlier tokens the key/value cache
    /// inputs hold (0 for a prefill graph, which has no cache inputs); null for graphs without a cache.</summary>
    public int? PastLength { get; init; }
    /// <summary>Key/value heads and head size of the cache tensors [kvHeads, tokens, headDim] (causal LMs).</summary>
    public int KeyValueHeads { get; init; }
    public int HeadDim { get; init; }
    /// <summary>Number of layers with a key/value cache (decoding graphs), i.e. <see cref="LayerOutputs"/>' count.</summary>
    public int CacheLayers => PastLength is null ? 0 : LayerOutputs.Count;

    public Expr Logits => Model["logits"];
}

/// <summary>Names of the key/value cache inputs and outputs of decoding graphs, per layer.</summary>
public static class KeyValueCaches
{
    public static string PastKey(int layer) => $"past.{layer}.key";
    public static string PastValue(int layer) => $"past.{layer}.value";
    public static string PresentKey(int layer) => $"present.{layer}.key";
    public static string PresentValue(int layer) => $"present.{layer}.value";
}
