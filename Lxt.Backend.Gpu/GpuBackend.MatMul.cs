// Batched matrix products with broadcast batch axes: cuBLAS strided-batched SGEMM on CUDA (one call per run of
// batch entries whose operands sit at constant strides), the ILGPU tiled kernel on other accelerators.
using ILGPU;
using ILGPU.Runtime;
using Lxt.Graph;

namespace Lxt.Backend.Gpu;

public sealed partial class GpuBackend
{
    Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, MatMulShape>? matMulTiled;

    void MatMul(Node node, int[] aShape, GpuBuffer a, int[] bShape, GpuBuffer b, int[] shape, GpuBuffer y)
    {
        int ra = aShape.Length, rb = bShape.Length, r = shape.Length;
        int m = aShape[ra - 2], k = aShape[ra - 1], n = bShape[rb - 1];
        if (y.Length == 0) return;
        if (k == 0) { y.View.MemSetToZero(); return; }
        var batchShape = shape[..(r - 2)];
        // batch strides counted in floats: whole matrices, 0 along broadcast axes
        var batchA = Walk.BroadcastStrides(aShape[..(ra - 2)], batchShape).Select(s => s * m * k).ToArray();
        var batchB = Walk.BroadcastStrides(bShape[..(rb - 2)], batchShape).Select(s => s * k * n).ToArray();
        int batch = ShapeModule.numel(batchShape);
        if (UsesCublas) CublasMatMul(m, n, k, a, batchA, b, batchB, batchShape, y);
        else TiledMatMul(node, m, n, k, a, batchA, b, batchB, batchShape, batch, y);
    }

    void TiledMatMul(Node node, int m, int n, int k, GpuBuffer a, int[] batchA, GpuBuffer b, int[] batchB, int[] batchShape, int batch, GpuBuffer y)
    {
        const int maxGridZ = 65535;
        if (batch > maxGridZ) throw new NotSupportedException($"gpu backend: {Node.Describe(node)} has {batch} batch entries; at most {maxGridZ} are supported");
        int t = Tile;
        var p = new MatMulShape { M = m, N = n, K = k, Tile = t, Batch = Walk.Of(node, batchShape, batchA, batchB) };
        var kernel = matMulTiled ??= accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, MatMulShape>(Kernels.MatMulTiled);
        var config = new KernelConfig(new Index3D((n + t - 1) / t, (m + t - 1) / t, batch), new Index3D(t, t, 1));
        kernel(config, a.View, b.View, y.View, p);
    }

    void CublasMatMul(int m, int n, int k, GpuBuffer a, int[] batchA, GpuBuffer b, int[] batchB, int[] batchShape, GpuBuffer y)
    {
        foreach (var call in PlanGemmCalls(m, n, k, batchA, batchB, batchShape))
            Cublas.RowMajorBatched(cublas, m, n, k,
                a.Pointer + (nint)(call.OffsetA * sizeof(float)), call.StrideA,
                b.Pointer + (nint)(call.OffsetB * sizeof(float)), call.StrideB,
                y.Pointer + (nint)(call.OffsetC * sizeof(float)), call.Count);
    }

    /// <summary>One strided-batched GEMM: Count products, the i-th reading A at OffsetA + i·StrideA, B at
    /// OffsetB + i·StrideB and writing C at OffsetC + i·m·n (offsets and strides in floats).</summary>
    internal readonly record struct GemmCall(long OffsetA, long StrideA, long OffsetB, long StrideB, long OffsetC, int Count);

    /// <summary>Splits the batch axes into a prefix looped on the host and the longest suffix along which both
    /// operands advance by one constant stride (a whole matrix or 0), which one strided-batched call covers.</summary>
    internal static List<GemmCall> PlanGemmCalls(int m, int n, int k, int[] batchA, int[] batchB, int[] batchShape)
    {
        int nb = batchShape.Length;
        int split = nb;
        long strideA = 0, strideB = 0;
        for (int s = 0; s <= nb; s++)
        {
            if (Uniform(batchShape, batchA, s, m * k, out var sa) && Uniform(batchShape, batchB, s, k * n, out var sb))
            {
                split = s; strideA = sa; strideB = sb;
                break;
            }
        }
        int outer = ShapeModule.product(batchShape, 0, split), inner = ShapeModule.product(batchShape, split, nb);
        var calls = new List<GemmCall>(outer);
        for (int o = 0; o < outer; o++)
        {
            // the operands' offsets at the multi-index of o over the prefix axes
            int rem = o;
            long offA = 0, offB = 0;
            for (int d = split - 1; d >= 0; d--)
            {
                int i = rem % batchShape[d];
                rem /= batchShape[d];
                offA += (long)i * batchA[d];
                offB += (long)i * batchB[d];
            }
            calls.Add(new GemmCall(offA, strideA, offB, strideB, (long)o * inner * m * n, inner));
        }
        return calls;
    }

    /// <summary>True when the batch axes from `from` on advance an operand by one constant stride per flat batch
    /// index: every axis broadcast (stride 0), or all laid out contiguously (stride = the matrix size).</summary>
    static bool Uniform(int[] batchShape, int[] strides, int from, int matrix, out long stride)
    {
        bool allZero = true;
        for (int d = from; d < batchShape.Length; d++) if (batchShape[d] != 1 && strides[d] != 0) allZero = false;
        stride = allZero ? 0 : matrix;
        if (allZero) return true;
        long expected = matrix;
        for (int d = batchShape.Length - 1; d >= from; d--)
        {
            if (batchShape[d] != 1 && strides[d] != expected) return false;
            expected *= batchShape[d];
        }
        return true;
    }
}
