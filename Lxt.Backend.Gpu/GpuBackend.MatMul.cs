// Batched matrix products with broadcast batch axes and operands read transposed: cuBLAS strided-batched GEMM on CUDA
// (one call per run of batch entries whose operands sit at constant strides), the ILGPU tiled kernel elsewhere; in
// bfloat16 mode float32 operands are first rounded into reused bfloat16 scratch buffers.
using ILGPU;
using ILGPU.Runtime;
using Lxt.Graph;

namespace Lxt.Backend.Gpu;

public sealed partial class GpuBackend
{
    Action<KernelConfig, ArrayView<float>, ArrayView<ushort>, ArrayView<float>, ArrayView<ushort>, ArrayView<float>, ArrayView<ushort>, MatMulShape>? matMulTiled;
    Action<Index1D, ArrayView<float>, ArrayView<ushort>>? toBFloat16;
    // bfloat16 copies of float32 operands for products in bfloat16, grown on demand and reused by every product; the
    // accelerator's single stream orders each conversion after the product that read the previous one
    MemoryBuffer1D<ushort, Stride1D.Dense>? scratchA, scratchB;
    // one-element stand-ins for the view of the tiled kernel that an operand does not use
    MemoryBuffer1D<float, Stride1D.Dense>? unusedWide;
    MemoryBuffer1D<ushort, Stride1D.Dense>? unusedNarrow;

    /// <summary>Bytes of device memory products hold for themselves: bfloat16 copies of float32 operands and the tiled
    /// kernel's one-value stand-ins (part of <see cref="AllocatedBytes"/>).</summary>
    public long ScratchBytes =>
        (scratchA?.LengthInBytes ?? 0) + (scratchB?.LengthInBytes ?? 0) + (unusedWide?.LengthInBytes ?? 0) + (unusedNarrow?.LengthInBytes ?? 0);

    /// <summary>C = op(A)·op(B) with broadcast batch axes; aShape and bShape are the node's operand shapes, and a
    /// transposed operand is stored with its last two axes swapped.</summary>
    void MatMul(Node node, int[] aShape, GpuBuffer a, bool transA, int[] bShape, GpuBuffer b, bool transB, int[] shape, GpuBuffer y)
    {
        int ra = aShape.Length, rb = bShape.Length, r = shape.Length;
        int m = aShape[ra - 2], k = aShape[ra - 1], n = bShape[rb - 1];
        if (y.Length == 0) return;
        if (k == 0) { y.View.MemSetToZero(stream); return; }
        var batchShape = shape[..(r - 2)];
        // batch strides counted in values: whole matrices, 0 along broadcast axes
        var batchA = Walk.BroadcastStrides(aShape[..(ra - 2)], batchShape).Select(s => s * m * k).ToArray();
        var batchB = Walk.BroadcastStrides(bShape[..(rb - 2)], batchShape).Select(s => s * k * n).ToArray();
        int batch = ShapeModule.numel(batchShape);
        if (UsesCublas) CublasMatMul(node, m, n, k, a, transA, batchA, b, transB, batchB, batchShape, y);
        else TiledMatMul(node, m, n, k, a, transA, batchA, b, transB, batchB, batchShape, batch, y);
    }

    void TiledMatMul(Node node, int m, int n, int k, GpuBuffer a, bool transA, int[] batchA, GpuBuffer b, bool transB, int[] batchB,
                     int[] batchShape, int batch, GpuBuffer y)
    {
        const int maxGridZ = 65535;
        if (batch > maxGridZ) throw new NotSupportedException($"gpu backend: {Node.Describe(node)} has {batch} batch entries; at most {maxGridZ} are supported");
        int t = Tile;
        bool bf16 = Precision == GemmPrecision.BFloat16;
        // in bfloat16 mode both operands are read as bfloat16: weights as stored, activations through the scratch copies
        if (!bf16 && (a.IsBFloat16 || b.IsBFloat16 || y.IsBFloat16))
            throw new NarrowOperandException(Node.Describe(node), $"gpu backend: {Node.Describe(node)} has a bfloat16 operand or result, which only {GemmPrecision.BFloat16} products take; this backend computes them in {Precision}");
        var (aWide, aNarrow, narrowA) = TiledOperand(a, bf16, ref scratchA);
        var (bWide, bNarrow, narrowB) = TiledOperand(b, bf16, ref scratchB);
        var p = new MatMulShape
        {
            M = m, N = n, K = k, Tile = t,
            TransA = transA ? 1 : 0, TransB = transB ? 1 : 0, NarrowA = narrowA ? 1 : 0, NarrowB = narrowB ? 1 : 0,
            NarrowC = y.IsBFloat16 ? 1 : 0,
            RoundTf32 = Precision == GemmPrecision.TensorFloat32 ? 1 : 0,
            Batch = Walk.Of(node, batchShape, batchA, batchB),
        };
        var kernel = matMulTiled ??= LoadGrouped<ArrayView<float>, ArrayView<ushort>, ArrayView<float>, ArrayView<ushort>, ArrayView<float>, ArrayView<ushort>, MatMulShape>(Kernels.MatMulTiled);
        var config = new KernelConfig(new Index3D((n + t - 1) / t, (m + t - 1) / t, batch), new Index3D(t, t, 1));
        var (yWide, yNarrow) = ViewsOf(y);
        kernel(config, aWide, aNarrow, bWide, bNarrow, yWide, yNarrow, p);
    }

    /// <summary>The two views the tiled kernel takes for an operand, and whether it reads the bfloat16 one.</summary>
    (ArrayView<float> Wide, ArrayView<ushort> Narrow, bool IsNarrow) TiledOperand(GpuBuffer x, bool bf16, ref MemoryBuffer1D<ushort, Stride1D.Dense>? scratch)
    {
        if (bf16 && !x.IsBFloat16) return (UnusedWide(), ToBFloat16(x, ref scratch), true);
        var (wide, narrow) = ViewsOf(x);
        return (wide, narrow, x.IsBFloat16);
    }

    /// <summary>The float32 and bfloat16 views a kernel taking either element type gets for a buffer: its own view of
    /// its element type, and a stand-in for the other, which the kernel never reads.</summary>
    (ArrayView<float> Wide, ArrayView<ushort> Narrow) ViewsOf(GpuBuffer x) =>
        x.IsBFloat16 ? (UnusedWide(), x.NarrowView) : (x.View, UnusedNarrow());

    ArrayView<float> UnusedWide() => (unusedWide ??= AllocateMemory<float>(1)).View;
    ArrayView<ushort> UnusedNarrow() => (unusedNarrow ??= AllocateMemory<ushort>(1)).View;

    /// <summary>The float32 buffer rounded to bfloat16 into a scratch buffer (grown when too small), as a view of its length.</summary>
    ArrayView<ushort> ToBFloat16(GpuBuffer x, ref MemoryBuffer1D<ushort, Stride1D.Dense>? scratch)
    {
        if (scratch is null || scratch.Length < x.Length)
        {
            if (scratch is not null)
            {
                accelerator.Synchronize(); // a queued product may still read the old copy
                Released(scratch.LengthInBytes);
                scratch.Dispose();
            }
            scratch = null;
            scratch = AllocateMemory<ushort>(x.Length);
        }
        var view = scratch.View.SubView(0, x.Length);
        if (x.Length > 0) (toBFloat16 ??= Load<ArrayView<float>, ArrayView<ushort>>(Kernels.ToBFloat16))(x.Length, x.View, view);
        return view;
    }

    /// <summary>Device address of the bfloat16 copy of a float32 operand (the scratch view starts at its buffer).</summary>
    IntPtr NarrowCopy(GpuBuffer x, ref MemoryBuffer1D<ushort, Stride1D.Dense>? scratch)
    {
        ToBFloat16(x, ref scratch);
        return scratch!.NativePtr;
    }

    void DisposeScratch()
    {
        foreach (var s in new IDisposable?[] { scratchA, scratchB, unusedWide, unusedNarrow }) s?.Dispose();
        scratchA = scratchB = null;
        unusedWide = null;
        unusedNarrow = null;
    }

    // whether cuBLAS takes float32 operands with CUBLAS_COMPUTE_32F_FAST_16BF (cleared at its first refusal)
    bool fast16BF = true;

    void CublasMatMul(Node node, int m, int n, int k, GpuBuffer a, bool transA, int[] batchA, GpuBuffer b, bool transB, int[] batchB,
                      int[] batchShape, GpuBuffer y)
    {
        var gemm = Cublas.ColumnMajorGemm.Of(m, n, k, transA, transB);
        // the strided-batched calls over operands at pa and pb whose values are `size` bytes each
        void Calls(IntPtr pa, IntPtr pb, int size, bool narrowOperands)
        {
            foreach (var call in PlanGemmCalls(m, n, k, batchA, batchB, batchShape))
                Cublas.StridedBatched(cublas, Precision, gemm,
                    pa + (nint)(call.OffsetA * size), call.StrideA,
                    pb + (nint)(call.OffsetB * size), call.StrideB,
                    y.Pointer + (nint)(call.OffsetC * (y.IsBFloat16 ? sizeof(ushort) : sizeof(float))), (long)m * n, call.Count,
                    narrowOperands, narrowResult: y.IsBFloat16);
        }
        if (Precision == GemmPrecision.BFloat16 && !a.IsBFloat16 && !b.IsBFloat16 && !y.IsBFloat16 && fast16BF)
        {
            // two float32 operands (activations, e.g. attention): cuBLAS rounds them as it loads them
            try
            {
                Calls(a.Pointer, b.Pointer, sizeof(float), narrowOperands: false);
                return;
            }
            catch (LxtException) { fast16BF = false; } // not offered by this cuBLAS: bfloat16 copies from now on
        }
        if (Precision == GemmPrecision.BFloat16)
        {
            Calls(a.IsBFloat16 ? a.Pointer : NarrowCopy(a, ref scratchA), b.IsBFloat16 ? b.Pointer : NarrowCopy(b, ref scratchB),
                  sizeof(ushort), narrowOperands: true);
            return;
        }
        if (a.IsBFloat16 || b.IsBFloat16 || y.IsBFloat16)
            throw new NarrowOperandException(Node.Describe(node), $"gpu backend: {Node.Describe(node)} has a bfloat16 operand or result, which only {GemmPrecision.BFloat16} products take; this backend computes them in {Precision}");
        Calls(a.Pointer, b.Pointer, sizeof(float), narrowOperands: true);
    }

    /// <summary>One strided-batched GEMM: Count products, the i-th reading A at OffsetA + i·StrideA, B at
    /// OffsetB + i·StrideB and writing C at OffsetC + i·m·n (offsets and strides in values, whatever their type;
    /// a transposed operand's matrices have the same size, so the plan is the same).</summary>
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
