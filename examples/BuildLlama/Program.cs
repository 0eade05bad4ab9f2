// Builds a 2-layer Llama-style decoder with the fluent API, binds random weights, runs it, explains its prediction
// under several rule sets and checks conservation layer by layer.
using Lxt;

const int vocab = 100, hidden = 64, intermediate = 128, heads = 4, kvHeads = 2, layers = 2, tokens = 6;
int headDim = hidden / heads;

var b = new GraphBuilder();
var x = b.Input("inputs_embeds", tokens, hidden);
var m = b.Scope("model");
var attention = new AttentionOptions(heads, kvHeads, headDim) { Rotary = RotaryEmbedding.Default(headDim, 10000) };
var layerNames = new List<string>();
for (int i = 0; i < layers; i++)
{
    var layer = m.Scope($"layers.{i}");
    x += layer.Attention("self_attn", layer.RmsNorm("input_layernorm", x, 1e-6), attention);
    x = (x + layer.GatedMlp("mlp", layer.RmsNorm("post_attention_layernorm", x, 1e-6), intermediate)).Named(layer.Prefix);
    layerNames.Add(layer.Prefix);
}
var last = m.RmsNorm("norm", x, 1e-6).Slice(0, tokens - 1, tokens);
var model = b.Build("logits", b.Linear("lm_head", last, vocab, bias: false).Reshape(vocab));
Console.WriteLine($"{model.Parameters.Count} parameters, {model.NodeNames().Count} named nodes, inputs: {string.Join(", ", model.Inputs)}");

var weights = Weights.Random(model, seed: 1, std: 0.2);
var rng = new Random(2);
var embeddings = Enumerable.Range(0, tokens * hidden).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();

using var explainer = new Explainer(model, "inputs_embeds", weights, Device.Cpu);
foreach (var method in new[] { Method.AttnLrp, Method.CpLrp, Method.InputXGradient })
{
    var e = explainer.Explain(embeddings, new ExplainOptions { Method = method });
    Console.WriteLine($"{method.Id,-17} target {e.Target} (logit {e.TargetLogit:F4}): " +
                      string.Join(" ", e.PerPosition.Select(r => r.ToString("+0.000;-0.000"))) + $"  Σ {e.RelevanceSum:F4}");
}

// CP-LRP is exactly conservative on this bias-free model: Σ R is the target logit at every layer boundary
Console.WriteLine(explainer.CheckConservation(embeddings, Method.CpLrp, layerNames).Report);
