// Architectures: picks the builder for a config (by architectures[0] / model_type / torchvision format).
namespace Lxt.Models;

public static class Architectures
{
    /// <summary>The model_type values and architecture names this module builds.</summary>
    public static IReadOnlyList<string> Supported { get; } =
    [
        "llama", "mistral", "qwen2", "qwen3", "qwen3_moe", "mixtral", "gemma3_text", "gemma3", "gpt2", "bert (BertForSequenceClassification, BertForMaskedLM)",
        "vit (ViTForImageClassification)", "torchvision VisionTransformer",
    ];

    /// <summary>
    /// Builds the graph of the model a config describes, for <paramref name="tokens"/> input tokens (text) with the
    /// logits of <paramref name="position"/> (default: the last token) as output. Image models ignore both.
    /// </summary>
    public static TransformerGraph Build(ModelConfig config, int tokens = 0, int? position = null, string? weightPrefix = null)
    {
        if (config.Has("format") && config.String("format").StartsWith("torchvision", StringComparison.Ordinal))
            return Vit.Build(config, torchvision: true);
        string type = config.ModelType ?? throw new ModelConfigException($"{config.Source}: missing key 'model_type'");
        if (type == "vit") return Vit.Build(config, torchvision: false);
        if (tokens < 1) throw new ModelConfigException($"{config.Source}: a text model needs at least one token");
        int pos = position ?? tokens - 1;
        if (pos < 0 || pos >= tokens) throw new ArgumentOutOfRangeException(nameof(position), $"position {pos} is outside the {tokens} tokens");
        return type switch
        {
            "gpt2" => Gpt2.Build(config, tokens, pos, weightPrefix ?? "transformer"),
            "bert" => Bert.Build(config, config.Architecture ?? "BertForSequenceClassification", tokens, pos),
            _ => Decoder.Build(config, type, tokens, pos),
        };
    }

    /// <summary>
    /// A decoding graph of a causal LM: <paramref name="tokens"/> new tokens after <paramref name="pastLength"/> cached
    /// ones, the logits of the last new token as output <c>logits</c>, and every layer's keys and values over all
    /// pastLength + tokens positions as outputs <c>present.{i}.key</c> / <c>.value</c> [kvHeads, pastLength+tokens, headDim].
    /// With pastLength 0 it is the prefill graph (no cache inputs); otherwise the cache inputs are
    /// <c>past.{i}.key</c> / <c>.value</c> [kvHeads, pastLength, headDim].
    /// </summary>
    public static TransformerGraph BuildDecoding(ModelConfig config, int tokens, int pastLength, string? weightPrefix = null)
    {
        string type = config.ModelType ?? throw new ModelConfigException($"{config.Source}: missing key 'model_type'");
        if (tokens < 1) throw new ModelConfigException($"{config.Source}: a decoding graph needs at least one new token");
        if (pastLength < 0) throw new ArgumentOutOfRangeException(nameof(pastLength), $"the cache cannot hold {pastLength} tokens");
        return type switch
        {
            "gpt2" => Gpt2.Build(config, tokens, tokens - 1, weightPrefix ?? "transformer", pastLength),
            "bert" or "vit" => throw new ModelConfigException($"{config.Source}: model_type '{type}' is no causal language model; it cannot generate"),
            _ when config.Has("format") => throw new ModelConfigException($"{config.Source}: an image model cannot generate"),
            _ => Decoder.Build(config, type, tokens, tokens - 1, pastLength),
        };
    }
}
