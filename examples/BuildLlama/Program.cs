// Builds a 2-layer Llama-style decoder with the fluent API, binds random weights and runs it on a few tokens.
using Lxt;

const int vocab = 100, hidden = 64, intermediate = 128, heads = 4, kvHeads = 2, layers = 2;
int[] tokens = [3, 14, 15, 92, 65, 35];
int t = tokens.Length, headDim = hidden / heads;

var b = new GraphBuilder();
var ids = b.IntegerInput("input_ids", t);
var m = b.Scope("model");
var x = m.Embedding("embed_tokens", ids, vocab, hidden);
var attention = new AttentionOptions(heads, kvHeads, headDim) { Rotary = RotaryEmbedding.Default(headDim, 10000) };
for (int i = 0; i < layers; i++)
{
    var layer = m.Scope($"layers.{i}");
    x += layer.Attention("self_attn", layer.RmsNorm("input_layernorm", x, 1e-6), attention);
    x = (x + layer.GatedMlp("mlp", layer.RmsNorm("post_attention_layernorm", x, 1e-6), intermediate)).Named(layer.Prefix);
}
var logits = b.Linear("lm_head", m.RmsNorm("norm", x, 1e-6), vocab, bias: false);
var model = b.Build("logits", logits);

Console.WriteLine($"{model.Parameters.Count} parameters, {model.NodeNames().Count} named nodes, inputs: {string.Join(", ", model.Inputs)}");
using var session = new Session(model, Weights.Random(model, seed: 1), Device.Cpu);
var result = session.Run(new Dictionary<string, float[]> { ["input_ids"] = tokens.Select(v => (float)v).ToArray() });
var last = result["logits"].Span.Slice((t - 1) * vocab, vocab);
int best = 0;
for (int i = 1; i < vocab; i++) if (last[i] > last[best]) best = i;
Console.WriteLine($"logits {string.Join("×", result["logits"].Shape)}; next token after [{string.Join(", ", tokens)}]: {best} (logit {last[best]:F4})");
