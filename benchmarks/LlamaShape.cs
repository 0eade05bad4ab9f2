// The random Llama the benchmarks build: its shape, the command-line options that set it, the graph and an input.
using System.Globalization;
using Lxt.Models;

namespace Lxt.Benchmarks;

internal sealed record LlamaShape(int Layers, int Hidden, int Intermediate, int Heads, int KvHeads, int Tokens, int Vocab)
{
    public string[] TorchArgs => [$"{Layers}", $"{Hidden}", $"{Intermediate}", $"{Heads}", $"{KvHeads}", $"{Tokens}", $"{Vocab}"];
    public override string ToString() => $"layers {Layers}, hidden {Hidden}, intermediate {Intermediate}, heads {Heads}, kv heads {KvHeads}, tokens {Tokens}, vocab {Vocab}";

    /// Multiply-adds ×2 of one forward pass (projections, attention products, the last position's lm_head).
    public double ForwardFlops
    {
        get
        {
            double d = Hidden / Heads, t = Tokens;
            double proj = 2 * t * Hidden * (Heads * d + 2 * KvHeads * d) + 2 * t * Heads * d * Hidden;
            double mlp = 3 * 2 * t * Hidden * Intermediate;
            double attn = 2 * 2 * Heads * t * t * d;
            return Layers * (proj + mlp + attn) + 2.0 * Hidden * Vocab;
        }
    }

    /// <summary>The shape with the option <paramref name="flag"/> (--layers, --hidden, --intermediate, --heads,
    /// --kv-heads, --tokens, --vocab) set to the value <paramref name="next"/> reads; null for another flag.</summary>
    public LlamaShape? With(string flag, Func<string> next)
    {
        int Value() => int.Parse(next(), CultureInfo.InvariantCulture);
        return flag switch
        {
            "--layers" => this with { Layers = Value() },
            "--hidden" => this with { Hidden = Value() },
            "--intermediate" => this with { Intermediate = Value() },
            "--heads" => this with { Heads = Value() },
            "--kv-heads" => this with { KvHeads = Value() },
            "--tokens" => this with { Tokens = Value() },
            "--vocab" => this with { Vocab = Value() },
            _ => null,
        };
    }

    public TransformerGraph Build()
    {
        var json = $$"""
            {"model_type": "llama", "hidden_size": {{Hidden}}, "intermediate_size": {{Intermediate}},
             "num_hidden_layers": {{Layers}}, "num_attention_heads": {{Heads}}, "num_key_value_heads": {{KvHeads}},
             "vocab_size": {{Vocab}}, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "hidden_act": "silu"}
            """;
        return Architectures.Build(ModelConfig.Parse(json, "benchmark config"), Tokens);
    }

    /// <summary>Input embeddings drawn from N(0, 0.02²) with a fixed seed.</summary>
    public float[] RandomEmbeddings()
    {
        var rng = new Random(1);
        var x = new float[Tokens * Hidden];
        for (int i = 0; i < x.Length; i++) x[i] = (float)(0.02 * Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble()));
        return x;
    }
}
