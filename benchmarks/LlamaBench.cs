// AttnLRP end to end on a random Llama: Lxt's forward and explanation beside the same computation in PyTorch, with
// Lxt's peak resident memory measured in a child process that runs only the explanation.
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Lxt.Backend.Cpu;
using Lxt.Graph;
using Lxt.Models;
using Microsoft.FSharp.Collections;

namespace Lxt.Benchmarks;

internal static class LlamaBench
{
    sealed record Options(LlamaShape Shape, int Threads, int Reps, bool Profile, bool Torch, string? TorchScript, int AttentionBlocks, bool AllPositions, bool? FusedAttention);

    public static int Run(string[] args, bool memoryChild = false)
    {
        var o = Parse(args);
        if (o is null) return 2;
        return memoryChild ? MemoryChild(o) : Compare(o, args);
    }

    static Options? Parse(string[] args)
    {
        var shape = new LlamaShape(Layers: 8, Hidden: 1024, Intermediate: 2816, Heads: 16, KvHeads: 4, Tokens: 256, Vocab: 32000);
        int threads = 1, reps = 5, blocks = ExplainOptions.DefaultAttentionBlockRows;
        bool profile = false, torch = true, allPositions = false;
        bool? fused = null;
        string? script = null;
        for (int i = 0; i < args.Length; i++)
        {
            string a = args[i];
            int Next() => int.Parse(args[++i], CultureInfo.InvariantCulture);
            if (i + 1 < args.Length && shape.With(a, () => args[++i]) is { } changed) { shape = changed; continue; }
            switch (a)
            {
                case "--threads" when i + 1 < args.Length: threads = Next(); break;
                case "--reps" when i + 1 < args.Length: reps = Next(); break;
                case "--attention-blocks" when i + 1 < args.Length: blocks = Next(); break;
                case "--torch-script" when i + 1 < args.Length: script = args[++i]; break;
                case "--profile": profile = true; break;
                case "--all-positions": allPositions = true; break;
                case "--fused-attention": fused = true; break;
                case "--no-fused-attention": fused = false; break;
                case "--no-torch": torch = false; break;
                default:
                    Console.Error.WriteLine($"llama: unknown option '{a}'");
                    return null;
            }
        }
        if (threads < 1 || reps < 1 || blocks < 0 || shape.Hidden % shape.Heads != 0 || shape.Heads % shape.KvHeads != 0)
        {
            Console.Error.WriteLine("llama: need threads >= 1, reps >= 1, attention blocks >= 0, hidden divisible by heads, heads by kv heads");
            return null;
        }
        return new(shape, threads, reps, profile, torch, script, blocks, allPositions, fused);
    }

    static double MedianMs(int reps, Action body)
    {
        body(); // warm-up
        var ms = new double[reps];
        for (int i = 0; i < reps; i++)
        {
            var sw = Stopwatch.StartNew();
            body();
            ms[i] = sw.Elapsed.TotalMilliseconds;
        }
        Array.Sort(ms);
        return ms[reps / 2];
    }

    static int Compare(Options o, string[] args)
    {
        var s = o.Shape;
        Console.WriteLine($"Llama AttnLRP: {s}; {o.Threads} thread(s); median of {o.Reps} after a warm-up");
        Console.WriteLine($"SGEMM kernel {Sgemm.KernelName}; forward {s.ForwardFlops / 1e9:F1} GFLOP");
        var g = s.Build();
        var weights = Weights.Random(g.Model, seed: 0);
        var input = s.RandomEmbeddings();
        double fwdMs, lrpMs;
        double? wholeMs = null, everyMs = null, productsMs = null;
        int target;
        bool fused;
        using (var explainer = new Explainer(g.Model, g.InputName, weights, Device.Cpu, o.Threads))
        {
            var logits = explainer.Forward(input);
            target = Array.IndexOf(logits, logits.Max());
            fwdMs = MedianMs(o.Reps, () => explainer.Forward(input));
            // the target is fixed so the timed pass is one forward + relevance pass, as the PyTorch script's
            var opts = new ExplainOptions { Method = Method.AttnLrp, Target = target, AttentionBlockRows = o.AttentionBlocks, AllPositions = o.AllPositions, FusedAttention = o.FusedAttention };
            lrpMs = MedianMs(o.Reps, () => explainer.Explain(input, opts));
            // where the attention runs in blocks, the same explanation with every attention whole, for the ratio
            fused = opts.FusesAttentionOn(explainer.Session.Backend);
            if (fused)
                productsMs = MedianMs(o.Reps, () => explainer.Explain(input, opts with { FusedAttention = false }));
            else if (o.AttentionBlocks > 0 && s.Tokens > o.AttentionBlocks)
                wholeMs = MedianMs(o.Reps, () => explainer.Explain(input, opts with { AttentionBlockRows = 0 }));
            // and with every value computed at every position, for the ratio of computing only the rows read
            if (!o.AllPositions)
                everyMs = MedianMs(o.Reps, () => explainer.Explain(input, opts with { AllPositions = true }));
        }
        GC.Collect();

        var mem = MeasureMemory(args);
        var torch = o.Torch ? RunTorch(o) : null;

        Console.WriteLine();
        Console.WriteLine("| | forward | AttnLRP (forward + relevance) |");
        Console.WriteLine("|---|---|---|");
        Console.WriteLine($"| Lxt ({o.Threads} thread) | {fwdMs:F0} ms | {lrpMs:F0} ms |");
        if (wholeMs is double whole)
            Console.WriteLine($"| Lxt, attention whole (blocks {o.AttentionBlocks} rows above: {lrpMs / whole:F2}×) | | {whole:F0} ms |");
        if (productsMs is double products)
            Console.WriteLine($"| Lxt, attention as products and a softmax (attention as one op above: {lrpMs / products:F2}×) | | {products:F0} ms |");
        if (everyMs is double every)
            Console.WriteLine($"| Lxt, every position (the rows read above: {lrpMs / every:F2}×) | | {every:F0} ms |");
        if (torch is var (tf, tl, version))
        {
            Console.WriteLine($"| PyTorch {version} ({o.Threads} thread) | {tf:F0} ms | {tl:F0} ms |");
            Console.WriteLine($"| lxt/torch | {fwdMs / tf:F2} | {lrpMs / tl:F2} |");
        }
        Console.WriteLine();
        Console.WriteLine($"Lxt AttnLRP: {2 * s.ForwardFlops / 1e9 / (lrpMs / 1e3):F1} GFLOP/s counted as 2 × forward FLOPs");
        if (mem is var (hwm, planned))
            Console.WriteLine($"Lxt peak resident memory of an explanation: {hwm / 1e9:F2} GB (VmHWM); plan's peak intermediate bytes {planned / 1e9:F2} GB");
        if (o.Profile) Profile(o, g, weights, input, target, fused);
        return 0;
    }

    // The explanation graph as Explainer builds it, run on an Executable with profiling on.
    static void Profile(Options o, TransformerGraph g, Weights weights, float[] input, int target, bool fused)
    {
        var model = g.Model;
        var output = model["logits"].Node;
        var inputNode = model.Inputs.First(i => i.Name == g.InputName).Node;
        var clock = Stopwatch.StartNew();
        var graph = Explainer.RelevanceGraph(output, inputNode, Method.AttnLrp.RuleSet, o.AttentionBlocks, [], pick: false, o.AllPositions, fused);
        double graphMs = clock.Elapsed.TotalMilliseconds;
        clock.Restart();
        var plan = PlanModule.compile(ListModule.OfSeq(graph));
        double compileMs = clock.Elapsed.TotalMilliseconds;
        var backend = new CpuBackend(o.Threads);
        using var exe = new Executable(plan, backend);
        foreach (var p in PlanModule.parameters(plan))
        {
            var name = ((Op.Parameter)p.Op).name;
            exe.BindParameter(name, backend.Wrap(weights.Read(name, p.Shape)), owned: false);
        }
        var seed = new float[output.Shape[0]];
        seed[target] = 1;
        var feeds = new Dictionary<string, IBuffer> { [g.InputName] = backend.Wrap(input), [Explainer.SeedName] = backend.Wrap(seed) };
        exe.Recycle(exe.Run(feeds));
        exe.Profiling = true;
        for (int i = 0; i < o.Reps; i++) exe.Recycle(exe.Run(feeds));
        var rows = exe.Profile;
        double total = rows.Sum(r => r.Seconds);
        Console.WriteLine();
        Console.WriteLine($"Profile of the explanation plan ({plan.Steps.Length} steps, {plan.LazyTransposes.Count} lazy transposes), per run:");
        Console.WriteLine($"{"op",-22} {"count",6} {"ms",9} {"share",6} {"GB moved",9} {"GB/s",7}");
        foreach (var r in rows)
            Console.WriteLine($"{r.Kind,-22} {r.Count / o.Reps,6} {r.Seconds * 1e3 / o.Reps,9:F1} {r.Seconds / total,6:P0} {r.Bytes / 1e9 / o.Reps,9:F3} {r.Bytes / 1e9 / Math.Max(r.Seconds, 1e-9),7:F1}");
        Console.WriteLine($"{"total",-22} {rows.Sum(r => r.Count) / o.Reps,6} {total * 1e3 / o.Reps,9:F1}");
        Console.WriteLine($"outside the steps: rules + relevance graph {graphMs:F0} ms (once per method and asked nodes: Explainer keeps it), plan compile {compileMs:F0} ms (once)");
    }

    // ---- peak memory: a child process that builds the model and runs one explanation ----

    static int MemoryChild(Options o)
    {
        var g = o.Shape.Build();
        var weights = Weights.Random(g.Model, seed: 0);
        var input = o.Shape.RandomEmbeddings();
        using var explainer = new Explainer(g.Model, g.InputName, weights, Device.Cpu, o.Threads);
        explainer.Explain(input, new ExplainOptions { Method = Method.AttnLrp, Target = 0, AttentionBlockRows = o.AttentionBlocks, AllPositions = o.AllPositions, FusedAttention = o.FusedAttention });
        Console.WriteLine(JsonSerializer.Serialize(new { vmhwm = VmHwmBytes(), planned = explainer.Session.PeakIntermediateBytes }));
        return 0;
    }

    static long VmHwmBytes()
    {
        foreach (var line in File.ReadLines("/proc/self/status"))
            if (line.StartsWith("VmHWM:", StringComparison.Ordinal))
                return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture) * 1024;
        return -1;
    }

    static (long Hwm, long Planned)? MeasureMemory(string[] args)
    {
        var exe = Environment.ProcessPath!;
        var psi = new ProcessStartInfo(exe) { RedirectStandardOutput = true, RedirectStandardError = true };
        if (Path.GetFileNameWithoutExtension(exe) == "dotnet") psi.ArgumentList.Add(typeof(LlamaBench).Assembly.Location);
        psi.ArgumentList.Add("llama-memory");
        foreach (var a in args) if (a != "--profile") psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        string stdout = p.StandardOutput.ReadToEnd(), stderr = p.StandardError.ReadToEnd();
        p.WaitForExit();
        try
        {
            using var doc = JsonDocument.Parse(stdout.Trim().Split('\n')[^1]);
            return (doc.RootElement.GetProperty("vmhwm").GetInt64(), doc.RootElement.GetProperty("planned").GetInt64());
        }
        catch (Exception e) when (e is JsonException or IndexOutOfRangeException or KeyNotFoundException)
        {
            Console.WriteLine($"memory measurement failed (exit {p.ExitCode}): {stderr.Trim()}");
            return null;
        }
    }

    // ---- PyTorch: the same pass in ../shared/bench/torch_llama_lrp.py ----

    static string? FindTorchScript(string? given)
    {
        if (given is not null) return File.Exists(given) ? Path.GetFullPath(given) : null;
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            var candidate = Path.Combine(dir.FullName, "shared", "bench", "torch_llama_lrp.py");
            if (File.Exists(candidate)) return candidate;
        }
        return null;
    }

    static (double Forward, double Lrp, string Version)? RunTorch(Options o)
    {
        const string python = "/usr/bin/python3";
        var script = FindTorchScript(o.TorchScript);
        if (script is null)
        {
            Console.WriteLine("PyTorch comparison skipped: torch_llama_lrp.py not found in a shared/bench folder above the benchmark (give --torch-script PATH)");
            return null;
        }
        if (!File.Exists(python))
        {
            Console.WriteLine($"PyTorch comparison skipped: {python} is missing (apt-get install -y python3-torch libopenblas0-pthread)");
            return null;
        }
        var psi = new ProcessStartInfo(python) { RedirectStandardOutput = true, RedirectStandardError = true };
        psi.ArgumentList.Add(script);
        psi.ArgumentList.Add("bench");
        foreach (var a in o.Shape.TorchArgs) psi.ArgumentList.Add(a);
        // torch.set_num_threads does not bind OpenBLAS's own pool: without these, its GEMMs use every core
        foreach (var v in new[] { "THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS" })
            psi.Environment[v] = o.Threads.ToString(CultureInfo.InvariantCulture);
        using var p = Process.Start(psi)!;
        string stdout = p.StandardOutput.ReadToEnd(), stderr = p.StandardError.ReadToEnd();
        p.WaitForExit();
        if (p.ExitCode != 0)
        {
            bool noTorch = stderr.Contains("No module named 'torch'", StringComparison.Ordinal);
            Console.WriteLine(noTorch
                ? "PyTorch comparison skipped: python3 has no torch module (apt-get install -y python3-torch libopenblas0-pthread)"
                : $"PyTorch comparison failed (exit {p.ExitCode}): {stderr.Trim()}");
            return null;
        }
        using var doc = JsonDocument.Parse(stdout.Trim().Split('\n')[^1]);
        var r = doc.RootElement;
        return (r.GetProperty("forward_ms").GetDouble(), r.GetProperty("attnlrp_ms").GetDouble(), r.GetProperty("torch").GetString() ?? "?");
    }
}
