// Shared plumbing of the CPU kernels: the one GEMM call site, thread partitioning, and row-major shape helpers.
using System.Runtime.CompilerServices;

namespace Lxt.Backend.Cpu;

internal static class Kernels
{
    /// <summary>C (m×n) = op(A) (m×k) · op(B) (k×n), row-major with leading dimensions; optionally added to C.
    /// The single place the backend calls a GEMM, so the implementation behind it is swapped in one line.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Gemm(bool transA, bool transB, int m, int n, int k, ReadOnlySpan<float> a, int lda,
                            ReadOnlySpan<float> b, int ldb, Span<float> c, int ldc, bool accumulate = false, int maxThreads = 0)
        => Sgemm.Multiply(transA, transB, m, n, k, a, lda, b, ldb, c, ldc, accumulate, maxThreads);

    /// <summary>Runs body(start, end) over [0, count) split into at most `threads` contiguous ranges, in parallel
    /// only when `count * costPerItem` is large enough to pay for the threads.</summary>
    public static void For(int count, long costPerItem, int threads, Action<int, int> body)
    {
        const long minWorkPerThread = 1 << 15;
        if (count <= 0) return;
        long total = count * Math.Max(1, costPerItem);
        int parts = (int)Math.Min(Math.Min(threads, count), Math.Max(1, total / minWorkPerThread));
        if (parts <= 1) { body(0, count); return; }
        Parallel.For(0, parts, new ParallelOptions { MaxDegreeOfParallelism = parts }, p =>
        {
            int start = (int)((long)count * p / parts), end = (int)((long)count * (p + 1) / parts);
            if (end > start) body(start, end);
        });
    }



    /// <summary>Row-major strides of `shape` seen from the broadcast shape `target` (0 on broadcast axes).</summary>
    public static int[] BroadcastStrides(int[] shape, int[] target)
    {
        var st = new int[target.Length];
        int off = target.Length - shape.Length, acc = 1;
        for (int i = shape.Length - 1; i >= 0; i--)
        {
            st[i + off] = shape[i] == 1 ? 0 : acc;
            acc *= shape[i];
        }
        return st;
    }
}
