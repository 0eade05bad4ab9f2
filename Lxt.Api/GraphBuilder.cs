// GraphBuilder: a fluent way to declare transformer graphs (inputs, parameters, layers) named after module paths.
using Lxt.Graph;

namespace Lxt;

/// <summary>
/// Declares model graphs. A builder is an immutable scope (a module-path prefix) over a shared parameter registry:
/// <c>b.Scope("model.layers.0").Linear("q_proj", x, 64)</c> declares the parameter
/// <c>model.layers.0.q_proj.weight</c> and names its output <c>model.layers.0.q_proj</c>.
/// </summary>
public sealed class GraphBuilder
{
    private readonly ParameterRegistry _registry;

    public GraphBuilder() : this(new ParameterRegistry(), "") { }

    private GraphBuilder(ParameterRegistry registry, string prefix)
    {
        _registry = registry;
        Prefix = prefix;
    }

    /// <summary>The module path this builder names things under ("" at the root).</summary>
    public string Prefix { get; }

    /// <summary>A builder for a sub-module; the parameter registry is shared.</summary>
    public GraphBuilder Scope(string name) => new(_registry, PathOf(name));

    /// <summary>The full module path of <paramref name="name"/> under this scope.</summary>
    public string PathOf(string name) => Prefix.Length == 0 ? name : name.Length == 0 ? Prefix : $"{Prefix}.{name}";

    public Expr Input(string name, params int[] shape) => new(Ops.input(name, shape, DType.Float));
    public Expr IntegerInput(string name, params int[] shape) => new(Ops.input(name, shape, DType.Int));

    /// <summary>A named weight; declaring the same name again must give the same shape (tied weights share it).</summary>
    public Expr Parameter(string name, params int[] shape)
    {
        var path = PathOf(name);
        _registry.Declare(path, shape);
        return new(Ops.parameter(path, shape));
    }

    public Expr Constant(double[] values, params int[] shape) => new(Ops.constant(shape, values));
    public Expr Scalar(double value) => new(Ops.scalar(value));
    public Expr Fill(double value, params int[] shape) => new(Ops.fill(shape, value));

    /// <summary>y = x Wᵀ + b with W stored [out, in] (PyTorch's layout), or x W when <paramref name="transposedWeight"/>
    /// (W stored [in, out], as GPT-2's Conv1D).</summary>
    public Expr Linear(string name, Expr x, int outFeatures, bool bias = true, bool transposedWeight = false)
    {
        int inFeatures = x.Shape[^1];
        var s = Scope(name);
        var y = transposedWeight
            ? x.MatMul(s.Parameter("weight", inFeatures, outFeatures))
            : x.MatMul(s.Parameter("weight", outFeatures, inFeatures).Transpose());
        if (bias) y += s.Parameter("bias", outFeatures);
        return y.Named(s.Prefix);
    }

    /// <summary>Rows of the table <c>name.weight</c> [vocab, dim] for integer ids.</summary>
    public Expr Embedding(string name, Expr ids, int vocabulary, int dim)
    {
        var s = Scope(name);
        return s.Parameter("weight", vocabulary, dim).Gather(ids).Named(s.Prefix);
    }

    /// <summary>RMSNorm: x · rsqrt(mean(x²) + ε) · w over the last axis; <paramref name="unitOffset"/> scales by (1 + w) as Gemma does.</summary>
    public Expr RmsNorm(string name, Expr x, double eps, bool unitOffset = false)
    {
        var s = Scope(name);
        var w = s.Parameter("weight", x.Shape[^1]);
        var normed = x * (x.Square().Mean(-1, keepDims: true) + eps).Rsqrt();
        return (normed * (unitOffset ? w + 1.0 : w)).Named(s.Prefix);
    }

    /// <summary>LayerNorm: (x − mean) · rsqrt(var + ε) · w + b over the last axis.</summary>
    public Expr LayerNorm(string name, Expr x, double eps, bool bias = true, string weightName = "weight", string biasName = "bias")
    {
        var s = Scope(name);
        int d = x.Shape[^1];
        var centred = x - x.Mean(-1, keepDims: true);
        var y = centred * ((centred.Square().Mean(-1, keepDims: true) + eps).Rsqrt()) * s.Parameter(weightName, d);
        if (bias) y += s.Parameter(biasName, d);
        return y.Named(s.Prefix);
    }

    /// <summary>Self-attention with projections <c>q_proj, k_proj, v_proj, o_proj</c> over x [tokens, hidden].</summary>
    public Expr Attention(string name, Expr x, AttentionOptions o) => Attention(name, x, o, null).Output;

    /// <summary>
    /// Self-attention as <see cref="Attention(string, Expr, AttentionOptions)"/> over the new tokens x [T, hidden],
    /// attending also to the keys and values of <paramref name="cache"/> (earlier tokens, positions 0..Tpast−1); the new
    /// tokens sit at positions Tpast..Tpast+T−1. Returns the output and the keys/values of all Tpast+T tokens.
    /// </summary>
    public AttentionResult Attention(string name, Expr x, AttentionOptions o, KeyValueCache? cache)
    {
        var s = Scope(name);
        var q = s.Linear(o.QueryName, x, o.Heads * o.HeadDim, o.QkvBias);
        var k = s.Linear(o.KeyName, x, o.KeyValueHeads * o.HeadDim, o.QkvBias);
        var v = s.Linear(o.ValueName, x, o.KeyValueHeads * o.HeadDim, o.QkvBias);
        var core = s.AttentionCore(q, k, v, o, cache);
        return core with { Output = s.Linear(o.OutputName, core.Output, o.OutputFeatures ?? x.Shape[^1], o.OutputBias) };
    }

    /// <summary>
    /// Scaled dot-product attention on projected q [T, heads·d], k and v [T, kvHeads·d]: per-head q/k norms, rotary
    /// embedding, grouped-query sharing of key/value heads, causal or sliding-window mask, optional logit soft-capping.
    /// Returns [T, heads·d]. Attention weights are named <c>{scope}.attn_weights</c>.
    /// </summary>
    public Expr AttentionCore(Expr q, Expr k, Expr v, AttentionOptions o) => AttentionCore(q, k, v, o, null).Output;

    /// <summary>
    /// <see cref="AttentionCore(Expr, Expr, Expr, AttentionOptions)"/> for T new tokens after the Tpast tokens held in
    /// <paramref name="cache"/> (keys already normed and rotated, before grouped-query sharing). Rotary positions start
    /// at Tpast; the mask keeps key j for query i when j ≤ Tpast + i (causal) and within the sliding window.
    /// Attention weights [heads, T, Tpast+T] are named <c>{scope}.attn_weights</c>; the returned keys and values
    /// [kvHeads, Tpast+T, d] are what the next step's cache holds.
    /// </summary>
    public AttentionResult AttentionCore(Expr q, Expr k, Expr v, AttentionOptions o, KeyValueCache? cache)
    {
        int t = q.Shape[0], h = o.Heads, kv = o.KeyValueHeads, d = o.HeadDim;
        if (h % kv != 0)
            throw new GraphShapeException($"attention '{Prefix}': {h} heads are not a multiple of {kv} key/value heads");
        int past = cache?.Length ?? 0;
        if (cache is not null && (cache.Key.Rank != 3 || cache.Key.Shape[0] != kv || cache.Key.Shape[2] != d
                                  || !cache.Key.Shape.SequenceEqual(cache.Value.Shape)))
            throw new GraphShapeException(
                $"attention '{Prefix}': the cache's keys {cache.Key} and values {cache.Value} should both be [{kv}, Tpast, {d}]");
        Expr Heads(Expr x, int n) => x.Reshape(t, n, d).Permute(1, 0, 2); // [n, T, d]
        var qh = Heads(q, h);
        var kh = Heads(k, kv);
        var vh = Heads(v, kv);
        if (o.QkNormEps is double eps)
        {
            qh = Scope(o.QueryNormName).RmsNorm("", qh, eps, o.QkNormUnitOffset);
            kh = Scope(o.KeyNormName).RmsNorm("", kh, eps, o.QkNormUnitOffset);
        }
        if (o.Rotary is { } rope)
        {
            qh = rope.Apply(this, qh, past);
            kh = rope.Apply(this, kh, past);
        }
        if (cache is not null)
        {
            kh = Expr.Concat(1, cache.Key, kh);
            vh = Expr.Concat(1, cache.Value, vh);
        }
        Expr presentKey = kh, presentValue = vh;
        int keys = past + t;
        // grouped-query sharing without copies: the h/kv query heads of a group are consecutive, so [h, T, d] is
        // [kv, (h/kv)·T, d] and each group multiplies its key and value head once, as one product per group
        var scores = qh.Reshape(kv, h / kv * t, d).MatMul(kh.Transpose()).Reshape(h, t, keys) * (o.Scale ?? 1.0 / Math.Sqrt(d));
        if (o.SoftCap is double cap) scores = (scores * (1.0 / cap)).Tanh() * cap;
        if (o.Causal || o.SlidingWindow is not null)
        {
            var keep = new double[t * keys];
            for (int i = 0; i < t; i++)
                for (int j = 0; j < keys; j++)
                    keep[i * keys + j] = (!o.Causal || j <= past + i) && (o.SlidingWindow is not int w || past + i - j < w) ? 1 : 0;
            scores = Expr.Where(Constant(keep, t, keys), scores, Scalar(double.NegativeInfinity));
        }
        var weights = scores.Softmax(-1).Named(PathOf("attn_weights"));
        var heads = weights.Reshape(kv, h / kv * t, keys).MatMul(vh).Reshape(h, t, d);
        return new AttentionResult(heads.Permute(1, 0, 2).Reshape(t, h * d), presentKey, presentValue);
    }

    /// <summary>Gated MLP: down(act(gate(x)) · up(x)), as Llama, Qwen, Mistral and Gemma use. The activation's output
    /// is named <c>{scope}.act_fn</c>.</summary>
    public Expr GatedMlp(string name, Expr x, int intermediate, string activation = "silu", bool bias = false,
        string gateName = "gate_proj", string upName = "up_proj", string downName = "down_proj")
    {
        var s = Scope(name);
        var act = s.Linear(gateName, x, intermediate, bias).Activation(activation).Named(s.PathOf("act_fn"));
        return s.Linear(downName, act * s.Linear(upName, x, intermediate, bias), x.Shape[^1], bias);
    }

    /// <summary>Two-layer MLP: out(act(in(x))), as GPT-2, BERT and ViT use.</summary>
    public Expr Mlp(string name, Expr x, int intermediate, string activation, string inName, string outName,
        bool bias = true, bool transposedWeights = false)
    {
        var s = Scope(name);
        var act = s.Linear(inName, x, intermediate, bias, transposedWeights).Activation(activation).Named(s.PathOf("act_fn"));
        return s.Linear(outName, act, x.Shape[^1], bias, transposedWeights);
    }

    /// <summary>Collects the declared parameters and the outputs into an immutable model.</summary>
    public Model Build(IReadOnlyDictionary<string, Expr> outputs) => new(outputs, _registry.Snapshot());

    public Model Build(string outputName, Expr output) => Build(new Dictionary<string, Expr> { [outputName] = output });
}

/// <summary>How an attention block is laid out. Names default to the Hugging Face module names.</summary>
public sealed record AttentionOptions(int Heads, int KeyValueHeads, int HeadDim)
{
    public bool Causal { get; init; } = true;
    public RotaryEmbedding? Rotary { get; init; }
    public bool QkvBias { get; init; }
    public bool OutputBias { get; init; }
    public int? OutputFeatures { get; init; }
    /// <summary>Multiplies q·kᵀ; defaults to 1/√HeadDim.</summary>
    public double? Scale { get; init; }
    /// <summary>Per-head RMSNorm of queries and keys (Qwen3, Gemma 3) with this ε.</summary>
    public double? QkNormEps { get; init; }
    public bool QkNormUnitOffset { get; init; }
    public int? SlidingWindow { get; init; }
    public double? SoftCap { get; init; }
    public string QueryName { get; init; } = "q_proj";
    public string KeyName { get; init; } = "k_proj";
    public string ValueName { get; init; } = "v_proj";
    public string OutputName { get; init; } = "o_proj";
    public string QueryNormName { get; init; } = "q_norm";
    public string KeyNormName { get; init; } = "k_norm";
}

/// <summary>Keys and values of earlier tokens for one attention block, each [kvHeads, Tpast, headDim] (keys after
/// q/k norm and rotary embedding, before grouped-query sharing), as <see cref="AttentionResult"/> returns them.</summary>
public sealed record KeyValueCache(Expr Key, Expr Value)
{
    /// <summary>Tpast: how many earlier tokens the cache holds.</summary>
    public int Length => Key.Shape[1];
}

/// <summary>An attention block's output [T, features] and the keys and values [kvHeads, Tpast+T, headDim] of every
/// token it attended to (the cache of the next decoding step).</summary>
public sealed record AttentionResult(Expr Output, Expr Key, Expr Value);

/// <summary>
/// Rotary position embedding (rotate-half layout) for positions 0..T−1. As in Hugging Face, the angles, cos and sin
/// are computed in float32 whatever the model's precision, and <see cref="FrequencyDType"/> rounds the inverse
/// frequencies the way a checkpoint loaded in that dtype holds them.
/// </summary>
public sealed record RotaryEmbedding(double[] InverseFrequencies, double AttentionScaling = 1.0)
{
    /// <summary>"float32" (default) or "bfloat16" / "float16": the dtype the inverse-frequency buffer is stored in.</summary>
    public string FrequencyDType { get; init; } = "float32";

    /// <summary>The default RoPE frequencies θ^(−2i/d), computed in float32 as transformers does.</summary>
    public static RotaryEmbedding Default(int headDim, double theta) =>
        new(Enumerable.Range(0, headDim / 2).Select(i => (double)(1f / MathF.Pow((float)theta, (float)(2 * i) / headDim))).ToArray());

    private float Stored(double f) => FrequencyDType switch
    {
        "bfloat16" => BitConverter.Int32BitsToSingle((int)RoundToBFloat16(BitConverter.SingleToInt32Bits((float)f))),
        "float16" => (float)(Half)(float)f,
        _ => (float)f,
    };

    private static uint RoundToBFloat16(int bits)
    {
        uint u = (uint)bits;
        return (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000;
    }

    /// <summary>x [heads, T, d] ↦ x·cos + rotate_half(x)·sin, with cos/sin constants of the positions
    /// <paramref name="offset"/>..<paramref name="offset"/>+T−1.</summary>
    internal Expr Apply(GraphBuilder b, Expr x, int offset = 0)
    {
        int t = x.Shape[1], d = x.Shape[2], half = InverseFrequencies.Length;
        if (2 * half != d) throw new GraphShapeException($"rotary embedding with {half} frequencies does not fit head size {d}");
        var cos = new double[t * d];
        var sin = new double[t * d];
        float scaling = (float)AttentionScaling;
        for (int p = 0; p < t; p++)
            for (int i = 0; i < d; i++)
            {
                float angle = Stored(InverseFrequencies[i % half]) * (p + offset);
                cos[p * d + i] = MathF.Cos(angle) * scaling;
                // rotate_half(x) = concat(−x₂, x₁): the minus rides on the first half of sin (exactly: (−a)·b = a·(−b)),
                // so the halves are swapped by one concat and no negation is a kernel of its own
                sin[p * d + i] = (i < half ? -MathF.Sin(angle) : MathF.Sin(angle)) * scaling;
            }
        var swapped = Expr.Concat(-1, x.Slice(2, half, d), x.Slice(2, 0, half));
        return x * b.Constant(cos, t, d) + swapped * b.Constant(sin, t, d);
    }
}

internal sealed class ParameterRegistry
{
    private readonly Dictionary<string, int[]> _shapes = new();

    public void Declare(string name, int[] shape)
    {
        lock (_shapes)
        {
            if (_shapes.TryGetValue(name, out var known) && !known.AsSpan().SequenceEqual(shape))
                throw new GraphShapeException(
                    $"parameter '{name}' was declared with shape [{string.Join(", ", known)}] and again with [{string.Join(", ", shape)}]");
            _shapes[name] = shape;
        }
    }

    public IReadOnlyDictionary<string, int[]> Snapshot()
    {
        lock (_shapes) return new Dictionary<string, int[]>(_shapes);
    }
}
