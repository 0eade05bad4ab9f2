// Decoder-only language models of the Llama family: Llama 2/3, Mistral, Qwen2, Qwen3, Qwen3-MoE, Mixtral, Gemma 3 text.
namespace Lxt.Models;

internal static class Decoder
{
    private sealed record Family(
        bool QkvBias, bool OutputBias, bool MlpBias, bool QkNorm, bool Gemma, bool TiedByDefault);

    private static Family FamilyOf(string modelType, ModelConfig c) => modelType switch
    {
        "llama" or "mistral" => new(c.Bool("attention_bias", false), c.Bool("attention_bias", false), c.Bool("mlp_bias", false), false, false, false),
        "qwen2" => new(true, false, false, false, false, false),
        "qwen3" or "qwen3_moe" => new(c.Bool("attention_bias", false), c.Bool("attention_bias", false), false, true, false, false),
        "mixtral" => new(false, false, false, false, false, false),
        "gemma3_text" or "gemma3" => new(c.Bool("attention_bias", false), c.Bool("attention_bias", false), false, true, true, true),
        _ => throw new ModelConfigException($"{c.Source}: model_type '{modelType}' is not a supported decoder"),
    };

    /// <summary>The graph for <paramref name="tokens"/> tokens with the logits at <paramref name="position"/>. With
    /// <paramref name="pastLength"/> set it is a decoding graph: the tokens follow <paramref name="pastLength"/> cached
    /// ones (inputs <c>past.{i}.key</c> / <c>past.{i}.value</c> when non-zero), and it also outputs every layer's keys
    /// and values (<c>present.{i}.key</c> / <c>present.{i}.value</c>).</summary>
    public static TransformerGraph Build(ModelConfig c, string modelType, int tokens, int position, int? pastLength = null)
    {
        if (modelType == "gemma3" && c.Section("text_config") is { } text) { c = text; modelType = "gemma3_text"; }
        var f = FamilyOf(modelType, c);
        int hidden = c.Int("hidden_size"), layers = c.Int("num_hidden_layers"), heads = c.Int("num_attention_heads");
        int kvHeads = c.Int("num_key_value_heads", heads), vocab = c.Int("vocab_size");
        int headDim = c.Int("head_dim", hidden / heads);
        double eps = c.Double("rms_norm_eps", 1e-6);
        string act = c.String("hidden_activation", c.String("hidden_act", "silu"));
        bool tied = c.Bool("tie_word_embeddings", f.TiedByDefault);
        var layerTypes = c.Strings("layer_types");

        var b = new GraphBuilder();
        var x = b.Input("inputs_embeds", tokens, hidden);
        var m = b.Scope("model");
        if (f.Gemma) x *= Math.Sqrt(hidden); // Gemma scales embeddings by √hidden (in the model's dtype)
        var layerNames = new List<string>();
        var outputs = new Dictionary<string, Expr>();
        int past = pastLength ?? 0;
        for (int i = 0; i < layers; i++)
        {
            var layer = m.Scope($"layers.{i}");
            bool sliding = layerTypes.Count > i ? layerTypes[i] == "sliding_attention"
                : f.Gemma ? (i + 1) % c.Int("sliding_window_pattern", 6) != 0
                : c.Bool("use_sliding_window", modelType == "mistral") && i >= c.Int("max_window_layers", 0);
            var attention = new AttentionOptions(heads, kvHeads, headDim)
            {
                Rotary = RotaryFor(c, f, headDim, sliding),
                QkvBias = f.QkvBias,
                OutputBias = f.OutputBias,
                OutputFeatures = hidden,
                QkNormEps = f.QkNorm ? eps : null,
                QkNormUnitOffset = f.Gemma,
                Scale = f.Gemma ? 1.0 / Math.Sqrt(c.Double("query_pre_attn_scalar", headDim)) : null,
                SlidingWindow = sliding && c.Has("sliding_window") ? c.Int("sliding_window") : null,
                SoftCap = c.Has("attn_logit_softcapping") ? c.Double("attn_logit_softcapping") : null,
            };
            var cache = past > 0
                ? new KeyValueCache(b.Input(KeyValueCaches.PastKey(i), kvHeads, past, headDim), b.Input(KeyValueCaches.PastValue(i), kvHeads, past, headDim))
                : null;
            var attended = layer.Attention("self_attn", layer.RmsNorm("input_layernorm", x, eps, f.Gemma), attention, cache);
            var attn = attended.Output;
            if (pastLength is not null)
            {
                outputs[KeyValueCaches.PresentKey(i)] = attended.Key;
                outputs[KeyValueCaches.PresentValue(i)] = attended.Value;
            }
            if (f.Gemma)
            {
                x += layer.RmsNorm("post_attention_layernorm", attn, eps, unitOffset: true);
                var mlp = layer.GatedMlp("mlp", layer.RmsNorm("pre_feedforward_layernorm", x, eps, true), c.Int("intermediate_size"), act);
                x += layer.RmsNorm("post_feedforward_layernorm", mlp, eps, unitOffset: true);
            }
            else
            {
                x += attn;
                var normed = layer.RmsNorm("post_attention_layernorm", x, eps);
                x += IsMoeLayer(c, modelType, i) ? Moe(layer, normed, c, modelType, act) : layer.GatedMlp("mlp", normed, c.Int("intermediate_size"), act, f.MlpBias);
            }
            x = x.Named(layer.Prefix);
            layerNames.Add(layer.Prefix);
        }
        var last = m.RmsNorm("norm", x, eps, f.Gemma).Slice(0, position, position + 1).Reshape(hidden);
        var logits = b.Linear("lm_head", last.Reshape(1, hidden), vocab, bias: false).Reshape(vocab);
        if (c.Has("final_logit_softcapping"))
        {
            double cap = c.Double("final_logit_softcapping");
            logits = (logits * (1.0 / cap)).Tanh() * cap;
        }
        return new TransformerGraph
        {
            Architecture = modelType,
            Task = ModelTask.CausalLM,
            Model = b.Build(new Dictionary<string, Expr>(outputs) { ["logits"] = logits.Named("logits") }),
            InputName = "inputs_embeds",
            InputShape = [tokens, hidden],
            PastLength = pastLength,
            KeyValueHeads = kvHeads,
            HeadDim = headDim,
            TokenEmbedding = "model.embed_tokens.weight",
            LayerOutputs = layerNames,
            TiedWeights = tied ? new Dictionary<string, string> { ["lm_head.weight"] = "model.embed_tokens.weight" } : new Dictionary<string, string>(),
            SequenceLength = tokens,
            Position = position,
            VocabularySize = vocab,
        };
    }

    private static RotaryEmbedding RotaryFor(ModelConfig c, Family f, int headDim, bool sliding)
    {
        if (!f.Gemma) return Rope.FromConfig(c, headDim);
        // Gemma 3: local layers use their own base frequency and no scaling
        var perType = c.Section("rope_parameters");
        if (perType?.Section(sliding ? "sliding_attention" : "full_attention") is { } p) return Rope.FromConfig(c, headDim, parameters: p);
        return sliding ? RotaryEmbedding.Default(headDim, c.Double("rope_local_base_freq", 10000)) : Rope.FromConfig(c, headDim, 1e6);
    }

    private static bool IsMoeLayer(ModelConfig c, string modelType, int layer) => modelType switch
    {
        "mixtral" => true,
        "qwen3_moe" => !c.Strings("mlp_only_layers").Contains(layer.ToString())
                       && !(c.Element("mlp_only_layers") is { } e && e.EnumerateArray().Any(v => v.GetInt32() == layer))
                       && ExpertCount(c) > 0 && (layer + 1) % c.Int("decoder_sparse_step", 1) == 0,
        _ => false,
    };

    private static int ExpertCount(ModelConfig c) => c.Int("num_experts", c.Int("num_local_experts", 0));

    /// <summary>
    /// Sparse mixture of experts: router softmax, top-k routing weights (renormalised where configured), the weighted
    /// sum of the chosen experts. Experts are evaluated densely and masked, which gives the same values.
    /// </summary>
    private static Expr Moe(GraphBuilder layer, Expr x, ModelConfig c, string modelType, string act)
    {
        bool mixtral = modelType == "mixtral";
        var s = layer.Scope(mixtral ? "block_sparse_moe" : "mlp");
        int experts = ExpertCount(c), topK = c.Int("num_experts_per_tok");
        int inter = mixtral ? c.Int("intermediate_size") : c.Int("moe_intermediate_size");
        var probs = s.Linear("gate", x, experts, bias: false).Softmax(-1);
        var weights = probs * probs.TopKMask(topK);
        if (mixtral || c.Bool("norm_topk_prob", false)) weights /= weights.Sum(-1, keepDims: true);
        weights = weights.Named(s.PathOf("routing_weights"));
        Expr? sum = null;
        for (int e = 0; e < experts; e++)
        {
            var expert = mixtral
                ? s.GatedMlp($"experts.{e}", x, inter, act, gateName: "w1", upName: "w3", downName: "w2")
                : s.GatedMlp($"experts.{e}", x, inter, act);
            var routed = expert * weights.Slice(1, e, e + 1);
            sum = sum is null ? routed : sum + routed;
        }
        return sum!.Named(s.Prefix);
    }
}
