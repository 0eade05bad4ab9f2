// Gradient checkpointing on the CPU backend: the relevance pass's peak intermediate bytes and time for each mode on a
// random Llama (the 1B shape with few layers by default), and whether relevance matches the run without checkpointing.
using System.Diagnostics;
using System.Globalization;
using Lxt.Models;

namespace Lxt.Benchmarks;

internal static class CheckpointingBench
{
    public static int Run(string[] args)
    {
        int layers = 2, hidden = 2048, inter = 8192, heads = 32, kv = 8, tokens = 512, vocab = 1000, threads = 0, reps = 2;
        var modes = new List<string>();
        for (int i = 0; i < args.Length; i++)
        {
            int Next() => int.Parse(args[++i], CultureInfo.InvariantCulture);
            switch (args[i])
            {
                case "--layers" when i + 1 < args.Length: layers = Next(); break;
                case "--hidden" when i + 1 < args.Length: hidden = Next(); break;
                case "--intermediate" when i + 1 < args.Length: inter = Next(); break;
                case "--heads" when i + 1 < args.Length: heads = Next(); break;
                case "--kv-heads" when i + 1 < args.Length: kv = Next(); break;
                case "--tokens" when i + 1 < args.Length: tokens = Next(); break;
                case "--vocab" when i + 1 < args.Length: vocab = Next(); break;
                case "--threads" when i + 1 < args.Length: threads = Next(); break;
                case "--reps" when i + 1 < args.Length: reps = Next(); break;
                case "--mode" when i + 1 < args.Length: modes.Add(args[++i]); break;
                default:
                    Console.Error.WriteLine($"checkpointing: unknown option '{args[i]}'");
                    return 2;
            }
        }
        if (modes.Count == 0) modes.AddRange(["none", "layers", "products"]);
        var json = $$"""
            {"model_type": "llama", "hidden_size": {{hidden}}, "intermediate_size": {{inter}}, "num_attention_heads": {{heads}},
             "num_key_value_heads": {{kv}}, "num_hidden_layers": {{layers}}, "vocab_size": {{vocab}}, "rms_norm_eps": 1e-5,
             "rope_theta": 500000.0, "max_position_embeddings": 131072, "tie_word_embeddings": false}
            """;
        var graph = Architectures.Build(ModelConfig.Parse(json, "llama"), tokens);
        var weights = Weights.Random(graph.Model, seed: 3);
        var rng = new Random(5);
        var input = new float[graph.InputShape.Aggregate(1, (a, b) => a * b)];
        for (int i = 0; i < input.Length; i++) input[i] = (float)(rng.NextDouble() - 0.5) * 0.05f;
        Console.WriteLine($"llama: layers {layers}, hidden {hidden}, intermediate {inter}, heads {heads}, kv heads {kv}, tokens {tokens}, vocab {vocab}; AttnLRP, cpu, float32");
        double[]? reference = null;
        foreach (var mode in modes)
        {
            var checkpointing = mode switch
            {
                "none" => Checkpointing.None,
                "layers" => Checkpointing.EveryLayer,
                "sqrt" => Checkpointing.SqrtLayers,
                "products" => Checkpointing.Products,
                _ => throw new ArgumentException($"unknown mode '{mode}' (none, layers, sqrt or products)"),
            };
            using var explainer = new Explainer(graph.Model, graph.InputName, weights, Device.Cpu, threads) { LayerOutputs = graph.LayerOutputs };
            var options = new ExplainOptions { Target = 7, Checkpointing = checkpointing };
            Explanation? e = null;
            var seconds = new double[reps];
            for (int r = 0; r < reps; r++)
            {
                var sw = Stopwatch.StartNew();
                e = explainer.Explain(input, options);
                seconds[r] = sw.Elapsed.TotalSeconds;
            }
            var relevance = e!.InputRelevance.ToDoubleArray();
            reference ??= relevance;
            double worst = 0, scale = reference.Max(Math.Abs);
            for (int i = 0; i < relevance.Length; i++) worst = Math.Max(worst, Math.Abs(relevance[i] - reference[i]));
            bool identical = relevance.SequenceEqual(reference);
            Console.WriteLine(FormattableString.Invariant(
                $"{mode,-9} peak {explainer.Session.PeakIntermediateBytes / (1024.0 * 1024.0),9:F1} MiB   time {seconds.Min(),7:F2} s (best of {reps}: {string.Join(", ", seconds.Select(s => s.ToString("F2", CultureInfo.InvariantCulture)))})   relevance {(identical ? "bit-identical" : $"max diff {worst:G3} (scale {scale:G3})")}"));
        }
        return 0;
    }
}
