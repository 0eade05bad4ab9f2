// Vision Transformers: Hugging Face ViTForImageClassification and torchvision's VisionTransformer state dict.
namespace Lxt.Models;

internal static class Vit
{
    private sealed record Names(
        string Conv, string ClassToken, string Positions, string Layer, string LnBefore, string LnAfter,
        string FinalNorm, string Head, bool FusedQkv);

    private static readonly Names HuggingFace = new(
        "vit.embeddings.patch_embeddings.projection", "vit.embeddings.cls_token", "vit.embeddings.position_embeddings",
        "vit.encoder.layer.{0}", "layernorm_before", "layernorm_after", "vit.layernorm", "classifier", false);

    private static readonly Names TorchVision = new(
        "conv_proj", "class_token", "encoder.pos_embedding", "encoder.layers.encoder_layer_{0}", "ln_1", "ln_2",
        "encoder.ln", "heads.head", true);

    public static TransformerGraph Build(ModelConfig c, bool torchvision)
    {
        var n = torchvision ? TorchVision : HuggingFace;
        int image = c.Int("image_size"), patch = c.Int("patch_size"), channels = c.Int("num_channels", 3);
        int hidden = torchvision ? c.Int("hidden_dim") : c.Int("hidden_size");
        int layers = torchvision ? c.Int("num_layers") : c.Int("num_hidden_layers");
        int heads = torchvision ? c.Int("num_heads") : c.Int("num_attention_heads");
        int inter = torchvision ? c.Int("mlp_dim") : c.Int("intermediate_size");
        int classes = torchvision ? c.Int("num_classes") : c.Section("id2label") is { } ids ? c.Element("id2label")!.Value.EnumerateObject().Count() : c.Int("num_labels");
        double eps = c.Double("layer_norm_eps", torchvision ? 1e-6 : 1e-12);
        string act = torchvision ? "gelu" : c.String("hidden_act", "gelu");
        int grid = image / patch, tokens = grid * grid + 1;

        var b = new GraphBuilder();
        var pixels = b.Input("pixel_values", channels, image, image);
        var conv = b.Scope(n.Conv);
        var patches = pixels.Reshape(1, channels, image, image).Conv2d(conv.Parameter("weight", hidden, channels, patch, patch), patch)
                      + conv.Parameter("bias", hidden).Reshape(hidden, 1, 1);
        patches = patches.Named(conv.Prefix).Reshape(hidden, grid * grid).Transpose();
        var x = Expr.Concat(0, b.Parameter(n.ClassToken, 1, 1, hidden).Reshape(1, hidden), patches)
                + b.Parameter(n.Positions, 1, tokens, hidden).Reshape(tokens, hidden);
        var options = new AttentionOptions(heads, heads, hidden / heads) { Causal = false };
        var layerNames = new List<string>();
        for (int i = 0; i < layers; i++)
        {
            var layer = b.Scope(string.Format(n.Layer, i));
            var h = layer.LayerNorm(n.LnBefore, x, eps);
            Expr attended;
            if (n.FusedQkv)
            {
                var sa = layer.Scope("self_attention");
                var qkv = (h.MatMul(sa.Parameter("in_proj_weight", 3 * hidden, hidden).Transpose()) + sa.Parameter("in_proj_bias", 3 * hidden)).Named(sa.PathOf("in_proj"));
                var context = sa.AttentionCore(qkv.Slice(1, 0, hidden), qkv.Slice(1, hidden, 2 * hidden), qkv.Slice(1, 2 * hidden, 3 * hidden), options);
                attended = sa.Linear("out_proj", context, hidden);
            }
            else
            {
                var att = layer.Scope("attention");
                var self = att.Scope("attention");
                var context = self.AttentionCore(self.Linear("query", h, hidden), self.Linear("key", h, hidden), self.Linear("value", h, hidden), options);
                attended = att.Linear("output.dense", context, hidden);
            }
            x += attended;
            h = layer.LayerNorm(n.LnAfter, x, eps);
            x += torchvision
                ? layer.Mlp("mlp", h, inter, act, "0", "3")
                : layer.Linear("output.dense", layer.Linear("intermediate.dense", h, inter).Activation(act).Named(layer.PathOf("intermediate.act_fn")), hidden);
            x = x.Named(layer.Prefix);
            layerNames.Add(layer.Prefix);
        }
        var cls = b.LayerNorm(n.FinalNorm, x, eps).Slice(0, 0, 1);
        var logits = b.Linear(n.Head, cls, classes).Reshape(classes).Named("logits");
        return new TransformerGraph
        {
            Architecture = torchvision ? "vit-torchvision" : "vit",
            Task = ModelTask.ImageClassification,
            Model = b.Build("logits", logits),
            InputName = "pixel_values",
            InputShape = [channels, image, image],
            LayerOutputs = layerNames,
            Labels = torchvision ? null : Enumerable.Range(0, classes).Select(i => c.Section("id2label") is { } m && m.Has(i.ToString()) ? m.String(i.ToString()) : $"LABEL_{i}").ToArray(),
        };
    }
}
