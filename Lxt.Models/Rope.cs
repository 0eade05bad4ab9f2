// Rotary embedding frequencies from a config: default, linear, llama3 and dynamic-free variants.
namespace Lxt.Models;

/// <summary>Rotary embedding frequencies as a config describes them.</summary>
public static class Rope
{
    /// <summary>Reads rope_parameters (transformers ≥ 5) or rope_theta + rope_scaling (older configs).</summary>
    public static RotaryEmbedding FromConfig(ModelConfig c, int headDim, double fallbackTheta = 10000, ModelConfig? parameters = null)
    {
        parameters ??= c.Section("rope_parameters");
        var scaling = parameters ?? c.Section("rope_scaling");
        double theta = parameters?.Double("rope_theta", c.Double("rope_theta", fallbackTheta)) ?? c.Double("rope_theta", fallbackTheta);
        int dim = (int)(headDim * (parameters?.Double("partial_rotary_factor", c.Double("partial_rotary_factor", 1.0)) ?? 1.0));
        if (dim != headDim) throw new ModelConfigException($"{c.Source}: partial rotary embeddings (partial_rotary_factor) are not supported");
        var inv = RotaryEmbedding.Default(dim, theta).InverseFrequencies;
        string stored = c.String("dtype", c.String("torch_dtype", "float32"));
        return WithType(c, scaling, inv) with { FrequencyDType = stored };
    }

    private static RotaryEmbedding WithType(ModelConfig c, ModelConfig? scaling, double[] inv)
    {
        string type = scaling is null ? "default" : scaling.String("rope_type", scaling.String("type", "default"));
        switch (type)
        {
            case "default":
                return new RotaryEmbedding(inv);
            case "linear":
                double f = scaling!.Double("factor");
                return new RotaryEmbedding(inv.Select(x => x / f).ToArray());
            case "llama3":
                return new RotaryEmbedding(Llama3(inv, scaling!));
            default:
                throw new ModelConfigException($"{c.Source}: rope type '{type}' is not supported (default, linear, llama3)");
        }
    }

    /// <summary>Llama 3.1's frequency-dependent scaling (transformers' _compute_llama3_parameters).</summary>
    private static double[] Llama3(double[] inv, ModelConfig s)
    {
        double factor = s.Double("factor"), low = s.Double("low_freq_factor"), high = s.Double("high_freq_factor");
        double old = s.Double("original_max_position_embeddings");
        double lowWavelen = old / low, highWavelen = old / high;
        return inv.Select(f =>
        {
            double wavelen = 2 * Math.PI / f;
            double scaled = wavelen > lowWavelen ? f / factor : f;
            bool medium = !(wavelen < highWavelen) && !(wavelen > lowWavelen);
            if (!medium) return scaled;
            double smooth = (old / wavelen - low) / (high - low);
            return (1 - smooth) * scaled / factor + smooth * scaled;
        }).ToArray();
    }
}
