// GPT-2: learned positions, pre-LayerNorm blocks, fused c_attn, Conv1D weights stored [in, out], tied output embedding.
namespace Lxt.Models;

internal static class Gpt2
{
    /// <summary>As <see cref="Decoder.Build"/>: <paramref name="pastLength"/> set makes a decoding graph with key/value
    /// cache inputs and outputs.</summary>
    public static TransformerGraph Build(ModelConfig c, int tokens, int position, string prefix, int? pastLength = null)
    {
        int hidden = c.Int("n_embd"), layers = c.Int("n_layer"), heads = c.Int("n_head"), vocab = c.Int("vocab_size");
        int inner = c.Has("n_inner") ? c.Int("n_inner") : 4 * hidden;
        double eps = c.Double("layer_norm_epsilon", 1e-5);
        string act = c.String("activation_function", "gelu_new");
        int past = pastLength ?? 0;
        if (past + tokens > c.Int("n_positions")) throw new ModelConfigException($"{c.Source}: {past + tokens} tokens exceed n_positions = {c.Int("n_positions")}");
        var b = new GraphBuilder();
        var t = prefix.Length == 0 ? b : b.Scope(prefix);
        var x = b.Input("inputs_embeds", tokens, hidden);
        x += t.Parameter("wpe.weight", c.Int("n_positions"), hidden).Slice(0, past, past + tokens);
        var layerNames = new List<string>();
        var outputs = new Dictionary<string, Expr>();
        int headDim = hidden / heads;
        for (int i = 0; i < layers; i++)
        {
            var block = t.Scope($"h.{i}");
            var attn = block.Scope("attn");
            var qkv = attn.Linear("c_attn", block.LayerNorm("ln_1", x, eps), 3 * hidden, transposedWeight: true);
            double scale = 1.0 / Math.Sqrt(hidden / heads);
            if (c.Bool("scale_attn_by_inverse_layer_idx", false)) scale /= i + 1;
            if (!c.Bool("scale_attn_weights", true)) scale = 1.0;
            var options = new AttentionOptions(heads, heads, hidden / heads) { Scale = scale };
            var cache = past > 0
                ? new KeyValueCache(b.Input(KeyValueCaches.PastKey(i), heads, past, headDim), b.Input(KeyValueCaches.PastValue(i), heads, past, headDim))
                : null;
            var attended = attn.AttentionCore(qkv.Slice(1, 0, hidden), qkv.Slice(1, hidden, 2 * hidden), qkv.Slice(1, 2 * hidden, 3 * hidden), options, cache);
            var context = attended.Output;
            if (pastLength is not null)
            {
                outputs[KeyValueCaches.PresentKey(i)] = attended.Key;
                outputs[KeyValueCaches.PresentValue(i)] = attended.Value;
            }
            x += attn.Linear("c_proj", context, hidden, transposedWeight: true);
            x += block.Mlp("mlp", block.LayerNorm("ln_2", x, eps), inner, act, "c_fc", "c_proj", transposedWeights: true);
            x = x.Named(block.Prefix);
            layerNames.Add(block.Prefix);
        }
        var last = t.LayerNorm("ln_f", x, eps).Slice(0, position, position + 1);
        var logits = b.Linear("lm_head", last, vocab, bias: false).Reshape(vocab).Named("logits");
        return new TransformerGraph
        {
            Architecture = "gpt2",
            Task = ModelTask.CausalLM,
            Model = b.Build(new Dictionary<string, Expr>(outputs) { ["logits"] = logits }),
            InputName = "inputs_embeds",
            InputShape = [tokens, hidden],
            PastLength = pastLength,
            KeyValueHeads = heads,
            HeadDim = headDim,
            TokenEmbedding = t.PathOf("wte.weight"),
            LayerOutputs = layerNames,
            TiedWeights = new Dictionary<string, string> { ["lm_head.weight"] = t.PathOf("wte.weight") },
            SequenceLength = tokens,
            Position = position,
            VocabularySize = vocab,
        };
    }
}
