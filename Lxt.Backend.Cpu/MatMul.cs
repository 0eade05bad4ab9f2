// Batched matrix products with broadcast batch axes, on the GEMM behind Kernels.Gemm. Either operand may be stored
// with its last two axes swapped (a lazy transpose of the plan); the GEMM then reads it transposed.
using Lxt.Graph;

namespace Lxt.Backend.Cpu;

internal static class MatMul
{
    /// <summary>y = a · b over the last two axes. aShape and bShape are the logical operand shapes; when transA
    /// (transB) the buffer holds the operand with its last two axes swapped.</summary>
    public static void Run(int[] aShape, float[] a, bool transA, int[] bShape, float[] b, bool transB, int[] outShape, float[] y, int threads)
    {
        int ra = aShape.Length, rb = bShape.Length, r = outShape.Length;
        int m = aShape[ra - 2], k = aShape[ra - 1], n = bShape[rb - 1];
        int lda = transA ? m : k, ldb = transB ? k : n;
        var batchShape = outShape[..(r - 2)];
        var aBatch = aShape[..(ra - 2)];
        var bBatch = bShape[..(rb - 2)];
        int batch = ShapeModule.numel(batchShape);
        if (batch == 0 || m == 0 || n == 0) return;
        // a linear layer: one shared right operand, so the batch folds into the rows of a single product
        if (ShapeModule.numel(bBatch) == 1 && ShapeModule.numel(aBatch) == batch && (!transA || batch == 1))
        {
            Kernels.Gemm(transA, transB, batch * m, n, k, a.AsSpan(0, batch * m * k), lda, b.AsSpan(0, k * n), ldb,
                         y.AsSpan(0, batch * m * n), n, false, threads);
            return;
        }
        var sa = Kernels.BroadcastStrides(aBatch, batchShape);
        var sb = Kernels.BroadcastStrides(bBatch, batchShape);
        long work = (long)m * n * Math.Max(k, 1);
        int perProduct = batch >= threads ? 1 : threads; // few large products: let each use the threads itself
        Kernels.For(batch, work, perProduct == 1 ? threads : 1, (s, e) =>
        {
            for (int i = s; i < e; i++)
            {
                int oa = 0, ob = 0, rest = i;
                for (int d = batchShape.Length - 1; d >= 0; d--)
                {
                    int j = rest % batchShape[d];
                    rest /= batchShape[d];
                    oa += j * sa[d];
                    ob += j * sb[d];
                }
                Kernels.Gemm(transA, transB, m, n, k, a.AsSpan(oa * m * k, m * k), lda, b.AsSpan(ob * k * n, k * n), ldb,
                             y.AsSpan(i * m * n, m * n), n, false, perProduct);
            }
        });
    }
}
