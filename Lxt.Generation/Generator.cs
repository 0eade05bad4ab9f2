// Generator: token-by-token generation for causal LMs with a key/value cache (one prefill graph, then one decoding
// graph per cache length), greedy or sampled, with stop tokens and steering.
namespace Lxt.Generation;

/// <summary>How to generate.</summary>
public sealed record GenerationOptions
{
    /// <summary>0 (default): greedy; otherwise sample from softmax(logits / Temperature).</summary>
    public double Temperature { get; init; }
    /// <summary>Sample only among the k most likely tokens.</summary>
    public int? TopK { get; init; }
    /// <summary>Nucleus sampling: only among the most likely tokens whose probabilities reach p.</summary>
    public double? TopP { get; init; }
    /// <summary>Seed of the sampling random stream: the same seed gives the same tokens.</summary>
    public int Seed { get; init; }
    /// <summary>Tokens that end generation (kept as the last generated token); null: the config's eos_token_id.</summary>
    public IReadOnlyList<int>? StopTokens { get; init; }
    /// <summary>Interventions on neurons applied to every graph run (prefill and each step).</summary>
    public IReadOnlyList<Steer> Steering { get; init; } = [];
    /// <summary>Decode with the key/value cache (default) or recompute the whole sequence every step.</summary>
    public bool UseCache { get; init; } = true;
    /// <summary>Keep the logits that predicted each generated token.</summary>
    public bool KeepLogits { get; init; } = true;
}

public enum StopReason
{
    /// <summary>maxNewTokens were generated.</summary>
    MaxTokens,
    /// <summary>A stop token was generated.</summary>
    StopToken,
    /// <summary>The model's positions ran out.</summary>
    ContextFull,
}

/// <summary>The outcome of <see cref="Generator.Generate"/>.</summary>
public sealed class GenerationResult
{
    public required IReadOnlyList<int> Prompt { get; init; }
    public required IReadOnlyList<int> Generated { get; init; }
    /// <summary>Per generated token, the logits it was picked from (empty unless <see cref="GenerationOptions.KeepLogits"/>).</summary>
    public required IReadOnlyList<double[]> StepLogits { get; init; }
    public required StopReason StopReason { get; init; }
    /// <summary>The steers the tokens were generated under.</summary>
    public required IReadOnlyList<Steer> Steering { get; init; }
    /// <summary>Prompt followed by the generated tokens.</summary>
    public IReadOnlyList<int> Tokens => Prompt.Concat(Generated).ToArray();
}

/// <summary>A sequence being decoded: its tokens, each layer's cached keys and values, the latest logits.</summary>
public sealed class DecodeState
{
    internal DecodeState(List<int> tokens, double[][] keys, double[][] values, double[] logits, IReadOnlyList<Steer> steering)
    {
        TokenList = tokens;
        Keys = keys;
        Values = values;
        Logits = logits;
        Steering = steering;
    }

    internal List<int> TokenList { get; }
    // float64 so that a float64 backend decodes exactly; a float32 backend's values convert exactly
    internal double[][] Keys { get; set; }
    internal double[][] Values { get; set; }
    public IReadOnlyList<int> Tokens => TokenList;
    /// <summary>The logits that predict the next token.</summary>
    public double[] Logits { get; internal set; }
    public IReadOnlyList<Steer> Steering { get; }
    public int Length => TokenList.Count;
}

/// <summary>Generates tokens from a <see cref="LanguageModel"/>.</summary>
public sealed class Generator(LanguageModel model)
{
    public LanguageModel Model { get; } = model;

    /// <summary>Runs the prefill graph over <paramref name="ids"/>: the cache of every layer and the next-token logits.</summary>
    public DecodeState Prefill(IReadOnlyList<int> ids, IReadOnlyList<Steer>? steering = null, CancellationToken cancellation = default)
    {
        Model.CheckLength(ids.Count);
        steering ??= [];
        var (graph, m) = Model.DecodingGraph(ids.Count, 0, steering);
        var (logits, keys, values) = Run(graph, m, Model.Embed(ids), null, cancellation);
        return new DecodeState(ids.ToList(), keys, values, logits, steering);
    }

    /// <summary>Appends <paramref name="id"/> with one decoding step over the cache; returns (and stores) the next logits.</summary>
    public double[] Step(DecodeState state, int id, CancellationToken cancellation = default)
    {
        Model.CheckLength(state.Length + 1);
        var (graph, m) = Model.DecodingGraph(1, state.Length, state.Steering);
        var (logits, keys, values) = Run(graph, m, Model.Embed([id]), state, cancellation);
        state.TokenList.Add(id);
        state.Keys = keys;
        state.Values = values;
        state.Logits = logits;
        return logits;
    }

    private (double[] Logits, double[][] Keys, double[][] Values) Run(Lxt.Models.TransformerGraph graph, Lxt.Model m, float[] embeds,
        DecodeState? past, CancellationToken cancellation)
    {
        int layers = graph.CacheLayers;
        var outputs = new List<Expr> { m["logits"] };
        for (int i = 0; i < layers; i++)
        {
            outputs.Add(m[Lxt.Models.KeyValueCaches.PresentKey(i)]);
            outputs.Add(m[Lxt.Models.KeyValueCaches.PresentValue(i)]);
        }
        var feeds = new Dictionary<string, float[]> { [graph.InputName] = embeds };
        var cache = new Dictionary<string, double[]>();
        if (past is not null)
            for (int i = 0; i < layers; i++)
            {
                cache[Lxt.Models.KeyValueCaches.PastKey(i)] = past.Keys[i];
                cache[Lxt.Models.KeyValueCaches.PastValue(i)] = past.Values[i];
            }
        // the last layer at the last position (the logits'), its keys and values at every position
        var values = Model.Session.Evaluate(Model.AtRowsRead(m, outputs), feeds, cache, cancellation);
        return (values[0].ToDoubleArray(),
            Enumerable.Range(0, layers).Select(i => values[1 + 2 * i].ToDoubleArray()).ToArray(),
            Enumerable.Range(0, layers).Select(i => values[2 + 2 * i].ToDoubleArray()).ToArray());
    }

    /// <summary>
    /// Generates up to <paramref name="maxNewTokens"/> tokens after <paramref name="prompt"/>: greedy by default, or
    /// sampled (seeded) with temperature, top-k and top-p; stops after a stop token or when the positions run out.
    /// </summary>
    public GenerationResult Generate(IReadOnlyList<int> prompt, int maxNewTokens, GenerationOptions? options = null,
        IProgress<int>? progress = null, CancellationToken cancellation = default)
    {
        options ??= new GenerationOptions();
        if (maxNewTokens < 0) throw new ArgumentOutOfRangeException(nameof(maxNewTokens), $"cannot generate {maxNewTokens} tokens");
        var sampler = new Sampler(options);
        var stop = new HashSet<int>(options.StopTokens ?? Model.StopTokens);
        var generated = new List<int>();
        var stepLogits = new List<double[]>();
        var reason = StopReason.MaxTokens;
        if (maxNewTokens > 0)
        {
            var tokens = prompt.ToList();
            DecodeState? state = options.UseCache ? Prefill(prompt, options.Steering, cancellation) : null;
            var logits = state?.Logits ?? Model.NextTokenLogits(tokens, options.Steering, cancellation);
            while (true)
            {
                int next = sampler.Next(logits);
                generated.Add(next);
                if (options.KeepLogits) stepLogits.Add(logits);
                progress?.Report(generated.Count);
                if (stop.Contains(next)) { reason = StopReason.StopToken; break; }
                if (generated.Count == maxNewTokens) break;
                if (Model.MaxPositions is int max && tokens.Count + 1 > max) { reason = StopReason.ContextFull; break; }
                tokens.Add(next);
                logits = state is not null ? Step(state, next, cancellation) : Model.NextTokenLogits(tokens, options.Steering, cancellation);
            }
        }
        return new GenerationResult
        {
            Prompt = prompt.ToArray(),
            Generated = generated,
            StepLogits = stepLogits,
            StopReason = reason,
            Steering = options.Steering,
        };
    }
}
