// Gradient checkpointing on the CPU backend: the relevance pass's peak intermediate bytes and time for each mode on a
// random Llama (the 1B shape with few layers by default), and whether relevance matches the run without checkpointing.
using System.Diagnostics;
using System.Globalization;

namespace Lxt.Benchmarks;

internal static class CheckpointingBench
{
    public static int Run(string[] args)
    {
        var shape = new LlamaShape(Layers: 2, Hidden: 2048, Intermediate: 8192, Heads: 32, KvHeads: 8, Tokens: 512, Vocab: 1000);
        int threads = 0, reps = 2;
        var modes = new List<string>();
        for (int i = 0; i < args.Length; i++)
        {
            int Next() => int.Parse(args[++i], CultureInfo.InvariantCulture);
            if (i + 1 < args.Length && shape.With(args[i], () => args[++i]) is { } changed) { shape = changed; continue; }
            switch (args[i])
            {
                case "--threads" when i + 1 < args.Length: threads = Next(); break;
                case "--reps" when i + 1 < args.Length: reps = Next(); break;
                case "--mode" when i + 1 < args.Length: modes.Add(args[++i]); break;
                default:
                    Console.Error.WriteLine($"checkpointing: unknown option '{args[i]}'");
                    return 2;
            }
        }
        if (modes.Count == 0) modes.AddRange(["none", "layers", "products"]);
        var graph = shape.Build();
        var weights = Weights.Random(graph.Model, seed: 3);
        var input = shape.RandomEmbeddings();
        Console.WriteLine($"llama: {shape}; AttnLRP, cpu, float32");
        double[]? reference = null;
        foreach (var mode in modes)
        {
            if (!Checkpointing.TryParse(mode, out var checkpointing))
                throw new ArgumentException($"unknown mode '{mode}' ({Checkpointing.NamesInWords})");
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
