// Batched matrix products with broadcast batch axes, on the GEMM behind Kernels.Gemm.
namespace Lxt.Backend.Cpu;

internal static class MatMul
{
    public static void Run(int[] aShape, float[] a, int[] bShape, float[] b, int[] outShape, float[] y, int threads)
    {
        int ra = aShape.Length, rb = bShape.Length, r = outShape.Length;
        int m = aShape[ra - 2], k = aShape[ra - 1], n = bShape[rb - 1];
        var batchShape = outShape[..(r - 2)];
        var aBatch = aShape[..(ra - 2)];
        var bBatch = bShape[..(rb - 2)];
        int batch = Kernels.Numel(batchShape);
        if (batch == 0 || m == 0 || n == 0) return;
        // a linear layer: one shared right operand, so the batch folds into the rows of a single product
        if (Kernels.Numel(bBatch) == 1 && Kernels.Numel(aBatch) == batch)
        {
            Kernels.Gemm(false, false, batch * m, n, k, a.AsSpan(0, batch * m * k), k, b.AsSpan(0, k * n), n,
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
                Kernels.Gemm(false, false, m, n, k, a.AsSpan(oa * m * k, m * k), k, b.AsSpan(ob * k * n, k * n), n,
                             y.AsSpan(i * m * n, m * n), n, false, perProduct);
            }
        });
    }
}
