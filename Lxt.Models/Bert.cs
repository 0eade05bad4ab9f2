// BERT encoders: BertForSequenceClassification (pooler tanh + classifier) and BertForMaskedLM (tied decoder).
namespace Lxt.Models;

internal static class Bert
{
    public static TransformerGraph Build(ModelConfig c, string architecture, int tokens, int position)
    {
        bool masked = architecture == "BertForMaskedLM";
        int hidden = c.Int("hidden_size"), layers = c.Int("num_hidden_layers"), heads = c.Int("num_attention_heads");
        int inter = c.Int("intermediate_size"), vocab = c.Int("vocab_size");
        double eps = c.Double("layer_norm_eps", 1e-12);
        string act = c.String("hidden_act", "gelu");
        if (tokens > c.Int("max_position_embeddings", 512))
            throw new ModelConfigException($"{c.Source}: {tokens} tokens exceed max_position_embeddings = {c.Int("max_position_embeddings")}");
        var b = new GraphBuilder();
        var bert = b.Scope("bert");
        var emb = bert.Scope("embeddings");
        var x = b.Input("inputs_embeds", tokens, hidden)
              + emb.Parameter("position_embeddings.weight", c.Int("max_position_embeddings", 512), hidden).Slice(0, 0, tokens)
              + emb.Parameter("token_type_embeddings.weight", c.Int("type_vocab_size", 2), hidden).Slice(0, 0, 1);
        x = emb.LayerNorm("LayerNorm", x, eps);
        var options = new AttentionOptions(heads, heads, hidden / heads) { Causal = false };
        var layerNames = new List<string>();
        for (int i = 0; i < layers; i++)
        {
            var layer = bert.Scope($"encoder.layer.{i}");
            var attention = layer.Scope("attention");
            var self = attention.Scope("self");
            var context = self.AttentionCore(self.Linear("query", x, hidden), self.Linear("key", x, hidden), self.Linear("value", x, hidden), options);
            x = attention.LayerNorm("output.LayerNorm", attention.Linear("output.dense", context, hidden) + x, eps);
            var act1 = layer.Linear("intermediate.dense", x, inter).Activation(act).Named(layer.PathOf("intermediate.act_fn"));
            x = layer.LayerNorm("output.LayerNorm", layer.Linear("output.dense", act1, hidden) + x, eps).Named(layer.Prefix);
            layerNames.Add(layer.Prefix);
        }
        Expr logits;
        string[]? labels = null;
        if (masked)
        {
            var head = b.Scope("cls.predictions");
            var h = head.Linear("transform.dense", x.Slice(0, position, position + 1), hidden).Activation(act);
            h = head.LayerNorm("transform.LayerNorm", h, eps);
            logits = (b.Linear("cls.predictions.decoder", h, vocab, bias: false) + head.Parameter("bias", vocab)).Reshape(vocab);
        }
        else
        {
            var pooled = bert.Linear("pooler.dense", x.Slice(0, 0, 1), hidden).Tanh().Named("bert.pooler");
            int classes = c.Has("num_labels") ? c.Int("num_labels") : c.Section("id2label") is { } _ ? CountLabels(c) : 2;
            logits = b.Linear("classifier", pooled, classes).Reshape(classes);
            labels = Enumerable.Range(0, classes).Select(i => c.Section("id2label") is { } m && m.Has(i.ToString()) ? m.String(i.ToString()) : $"LABEL_{i}").ToArray();
        }
        return new TransformerGraph
        {
            Architecture = "bert",
            Task = masked ? ModelTask.MaskedLM : ModelTask.SequenceClassification,
            Model = b.Build("logits", logits.Named("logits")),
            InputName = "inputs_embeds",
            InputShape = [tokens, hidden],
            TokenEmbedding = "bert.embeddings.word_embeddings.weight",
            LayerOutputs = layerNames,
            TiedWeights = masked ? new Dictionary<string, string> { ["cls.predictions.decoder.weight"] = "bert.embeddings.word_embeddings.weight" } : new Dictionary<string, string>(),
            SequenceLength = tokens,
            Position = masked ? position : 0,
            Labels = labels,
            VocabularySize = vocab,
        };
    }

    private static int CountLabels(ModelConfig c) => c.Element("id2label")!.Value.EnumerateObject().Count();
}
