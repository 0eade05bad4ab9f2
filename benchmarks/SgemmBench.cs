using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Lxt.Backend.Cpu;

namespace Lxt.Benchmarks;

internal static unsafe class SgemmBench
{
    public static int Run(string[] args)
    {
        int threads = 1, reps = 5;
        int[] sizes = [512, 1024, 2048];
        string? shapes = null;
        for (int i = 0; i < args.Length; i++)
        {
            switch (args[i])
            {
                case "--threads" when i + 1 < args.Length: threads = int.Parse(args[++i]); break;
                case "--reps" when i + 1 < args.Length: reps = int.Parse(args[++i]); break;
                case "--sizes" when i + 1 < args.Length: sizes = args[++i].Split(',').Select(int.Parse).ToArray(); break;
                case "--shapes" when i + 1 < args.Length: shapes = args[++i]; break;
                default:
                    Console.Error.WriteLine($"sgemm: unknown option '{args[i]}' (options: --threads N, --sizes a,b,c, --shapes MxNxK[a][b],..., --reps R)");
                    return 2;
            }
        }
        if (threads < 1) { Console.Error.WriteLine("--threads must be >= 1"); return 2; }

        Console.WriteLine($"kernel: {Sgemm.KernelName}");
        if (shapes is not null) return Shapes(shapes, threads, reps);
        var blas = OpenBlas.TryLoad(threads, out string blasInfo);
        if (blas is null) Console.WriteLine(blasInfo);

        // All Lxt runs first, then OpenBLAS: OpenBLAS worker threads keep spinning for a while after a call and
        // would steal cores from whatever runs next.
        double peakBefore = FmaPeak.Measure().gflops;
        var lxt = new double[sizes.Length];
        var results = new float[sizes.Length][];
        for (int s = 0; s < sizes.Length; s++)
        {
            int n = sizes[s];
            var (a, b) = Inputs(n);
            var c = new float[n * n];
            lxt[s] = BestGflops(2.0 * n * n * n, Reps(n, reps), () => Sgemm.Multiply(false, false, n, n, n, a, n, b, n, c, n, false, threads));
            results[s] = c;
        }
        var other = new string[sizes.Length];
        for (int s = 0; s < sizes.Length; s++)
        {
            other[s] = "OpenBLAS n/a";
            if (blas is null) continue;
            int n = sizes[s];
            var (a, b) = Inputs(n);
            var c2 = new float[n * n];
            double ob = BestGflops(2.0 * n * n * n, Reps(n, reps), () => blas.Sgemm(n, n, n, a, b, c2));
            other[s] = $"OpenBLAS {ob:F1} GFLOP/s";
            double maxDiff = 0;
            float[] c = results[s];
            for (int i = 0; i < c.Length; i++) maxDiff = Math.Max(maxDiff, Math.Abs(c[i] - c2[i]));
            if (maxDiff > 1e-3 * Math.Sqrt(n)) Console.WriteLine($"warning: {n}: results differ from OpenBLAS by {maxDiff}");
        }
        // The peak is measured before and after the SGEMM runs and the higher value is used, so that a busy
        // machine during one of the measurements does not inflate the percentages.
        var (peak1, isa) = FmaPeak.Measure();
        peak1 = Math.Max(peak1, peakBefore);
        double peak = peak1 * threads; // peak of one core times the thread count
        Console.WriteLine($"fma peak: {peak:F1} GFLOP/s ({isa}, {threads} thread{(threads == 1 ? "" : "s")})");
        for (int s = 0; s < sizes.Length; s++)
            Console.WriteLine($"sgemm {sizes[s]}: {lxt[s]:F1} GFLOP/s = {100 * lxt[s] / peak:F0}% of peak ({other[s]})");
        return 0;
    }

    // MxNxK with optional suffixes a / b: A / B stored transposed (the products of a transformer layer)
    private static int Shapes(string list, int threads, int reps)
    {
        foreach (var spec in list.Split(','))
        {
            var body = spec.TrimEnd('a', 'b');
            bool ta = spec[body.Length..].Contains('a'), tb = spec[body.Length..].Contains('b');
            var d = body.Split('x').Select(int.Parse).ToArray();
            int m = d[0], n = d[1], k = d[2];
            var rng = new Random(1);
            var a = RandomMatrix(rng, m * k);
            var b = RandomMatrix(rng, k * n);
            var c = new float[m * n];
            double g = BestGflops(2.0 * m * n * k, reps * 2, () =>
                Sgemm.Multiply(ta, tb, m, n, k, a, ta ? m : k, b, tb ? k : n, c, n, false, threads));
            Console.WriteLine($"sgemm {m}x{n}x{k}{(ta ? " Aᵀ" : "")}{(tb ? " Bᵀ" : "")}: {g:F1} GFLOP/s");
        }
        Console.WriteLine($"fma peak: {FmaPeak.Measure().gflops * threads:F1} GFLOP/s");
        return 0;
    }

    private static int Reps(int n, int reps) => n <= 512 ? reps * 4 : n <= 1024 ? reps * 2 : reps;

    private static (float[] a, float[] b) Inputs(int n)
    {
        var rng = new Random(n);
        return (RandomMatrix(rng, n * n), RandomMatrix(rng, n * n));
    }

    private static float[] RandomMatrix(Random rng, int len)
    {
        var x = new float[len];
        for (int i = 0; i < len; i++) x[i] = (float)(rng.NextDouble() * 2 - 1);
        return x;
    }

    // best of `reps` timed runs after a warm-up of at least 3 runs and 0.2 s (JIT tiering, thread pool start-up)
    private static double BestGflops(double flops, int reps, Action run)
    {
        var sw = Stopwatch.StartNew();
        for (int i = 0; i < 3 || sw.Elapsed.TotalSeconds < 0.2; i++) run();
        double best = double.MaxValue;
        for (int i = 0; i < reps; i++)
        {
            sw.Restart();
            run();
            best = Math.Min(best, sw.Elapsed.TotalSeconds);
        }
        return flops / best / 1e9;
    }
}

internal static class FmaPeak
{
    public static (double gflops, string isa) Measure()
    {
        // best of many short trials: a short trial is likely to run undisturbed even on a busy machine
        const long iters = 2_000_000;
        const int trials = 40;
        if (Vector512.IsHardwareAccelerated && Avx512F.IsSupported)
        {
            Loop512(1000); // make sure it is jitted
            double best = 0;
            for (int t = 0; t < trials; t++)
            {
                var sw = Stopwatch.StartNew();
                Loop512(iters);
                best = Math.Max(best, iters * 12.0 * 16 * 2 / sw.Elapsed.TotalSeconds / 1e9);
            }
            return (best, "Vector512");
        }
        if (Vector256.IsHardwareAccelerated && Fma.IsSupported)
        {
            Loop256(1000);
            double best = 0;
            for (int t = 0; t < trials; t++)
            {
                var sw = Stopwatch.StartNew();
                Loop256(iters);
                best = Math.Max(best, iters * 12.0 * 8 * 2 / sw.Elapsed.TotalSeconds / 1e9);
            }
            return (best, "Vector256");
        }
        return (double.NaN, "no SIMD FMA");
    }

    // 12 independent FMA chains held in registers.
    [MethodImpl(MethodImplOptions.AggressiveOptimization | MethodImplOptions.NoInlining)]
    private static float Loop512(long iters)
    {
        var x = Vector512.Create(0.999999f); var y = Vector512.Create(1e-7f);
        Vector512<float> a0 = Vector512.Create(1f), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0,
            a6 = a0, a7 = a0, a8 = a0, a9 = a0, a10 = a0, a11 = a0;
        for (long i = 0; i < iters; i++)
        {
            a0 = Avx512F.FusedMultiplyAdd(a0, x, y); a1 = Avx512F.FusedMultiplyAdd(a1, x, y);
            a2 = Avx512F.FusedMultiplyAdd(a2, x, y); a3 = Avx512F.FusedMultiplyAdd(a3, x, y);
            a4 = Avx512F.FusedMultiplyAdd(a4, x, y); a5 = Avx512F.FusedMultiplyAdd(a5, x, y);
            a6 = Avx512F.FusedMultiplyAdd(a6, x, y); a7 = Avx512F.FusedMultiplyAdd(a7, x, y);
            a8 = Avx512F.FusedMultiplyAdd(a8, x, y); a9 = Avx512F.FusedMultiplyAdd(a9, x, y);
            a10 = Avx512F.FusedMultiplyAdd(a10, x, y); a11 = Avx512F.FusedMultiplyAdd(a11, x, y);
        }
        var s = ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7)) + ((a8 + a9) + (a10 + a11));
        return Vector512.Sum(s);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization | MethodImplOptions.NoInlining)]
    private static float Loop256(long iters)
    {
        var x = Vector256.Create(0.999999f); var y = Vector256.Create(1e-7f);
        Vector256<float> a0 = Vector256.Create(1f), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0,
            a6 = a0, a7 = a0, a8 = a0, a9 = a0, a10 = a0, a11 = a0;
        for (long i = 0; i < iters; i++)
        {
            a0 = Fma.MultiplyAdd(a0, x, y); a1 = Fma.MultiplyAdd(a1, x, y);
            a2 = Fma.MultiplyAdd(a2, x, y); a3 = Fma.MultiplyAdd(a3, x, y);
            a4 = Fma.MultiplyAdd(a4, x, y); a5 = Fma.MultiplyAdd(a5, x, y);
            a6 = Fma.MultiplyAdd(a6, x, y); a7 = Fma.MultiplyAdd(a7, x, y);
            a8 = Fma.MultiplyAdd(a8, x, y); a9 = Fma.MultiplyAdd(a9, x, y);
            a10 = Fma.MultiplyAdd(a10, x, y); a11 = Fma.MultiplyAdd(a11, x, y);
        }
        var s = ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7)) + ((a8 + a9) + (a10 + a11));
        return Vector256.Sum(s);
    }
}

// OpenBLAS cblas_sgemm loaded at run time.
internal sealed unsafe class OpenBlas
{
    private const int RowMajor = 101, NoTrans = 111;
    private readonly delegate* unmanaged<int, int, int, int, int, int, float, float*, int, float*, int, float, float*, int, void> _sgemm;

    private OpenBlas(nint sgemm) => _sgemm = (delegate* unmanaged<int, int, int, int, int, int, float, float*, int, float*, int, float, float*, int, void>)sgemm;

    public static OpenBlas? TryLoad(int threads, out string info)
    {
        string[] candidates =
        [
            "libopenblas.so.0",
            "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
            "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",
            "libopenblas.so",
        ];
        foreach (var path in candidates)
        {
            if (!NativeLibrary.TryLoad(path, out nint lib)) continue;
            if (!NativeLibrary.TryGetExport(lib, "cblas_sgemm", out nint sgemm)) continue;
            if (NativeLibrary.TryGetExport(lib, "openblas_set_num_threads", out nint setThreads))
                ((delegate* unmanaged<int, void>)setThreads)(threads);
            info = $"OpenBLAS loaded from {path}";
            return new OpenBlas(sgemm);
        }
        info = "OpenBLAS not found (apt-get install libopenblas0-pthread)";
        return null;
    }

    public void Sgemm(int m, int n, int k, float[] a, float[] b, float[] c)
    {
        fixed (float* pa = a) fixed (float* pb = b) fixed (float* pc = c)
            _sgemm(RowMajor, NoTrans, NoTrans, m, n, k, 1f, pa, k, pb, n, 0f, pc, n);
    }
}
