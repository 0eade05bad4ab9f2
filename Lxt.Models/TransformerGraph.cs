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

    public Expr Logits => Model["logits"];
}
