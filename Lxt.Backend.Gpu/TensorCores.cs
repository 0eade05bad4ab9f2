// One warp's bfloat16 tensor-core product, D += A·B with A 16×16, B 16×8 and D 16×8 in float32, as PTX's
// mma.sync.m16n8k16 lays its fragments over the 32 lanes. On CUDA it is that instruction; on any other accelerator the
// same fragments are multiplied through warp shuffles, so kernels written on it run and are tested on ILGPU's CPU
// accelerator (with warps of 32 lanes) exactly as laid out on the device.
using System.Runtime.CompilerServices;
using ILGPU;
using ILGPU.Runtime.Cuda;

namespace Lxt.Backend.Gpu;

/// <summary>The fragments of <c>mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32</c>. Lane l is in quad
/// g = l / 4 at t = l % 4. A (16×16, row-major) as four words of two bfloat16 (low half first): a0 = A[g][2t, 2t+1],
/// a1 = A[g+8][2t, 2t+1], a2 = A[g][2t+8, 2t+9], a3 = A[g+8][2t+8, 2t+9]. B (16×8): b0 = B[2t, 2t+1][g],
/// b1 = B[2t+8, 2t+9][g]. D (16×8): d0, d1 = D[g][2t, 2t+1], d2, d3 = D[g+8][2t, 2t+1]. A's D-shaped halves are
/// two D tiles side by side: (d0, d1) of the left tile is a0, (d2, d3) a1, and the right tile's a2 and a3.</summary>
public static class TensorCores
{
    /// <summary>Lanes of the warp the fragments span.</summary>
    public const int Lanes = 32;

    /// <summary>D += A·B over one warp (see <see cref="TensorCores"/> for the fragments).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Mma(uint a0, uint a1, uint a2, uint a3, uint b0, uint b1, ref float d0, ref float d1, ref float d2, ref float d3)
    {
        if (CudaAsm.IsSupported)
        {
            Ref<float> r0 = d0, r1 = d1, r2 = d2, r3 = d3;
            Input<uint> x0 = a0, x1 = a1, x2 = a2, x3 = a3, y0 = b0, y1 = b1;
            CudaAsm.EmitRef("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};",
                ref r0, ref r1, ref r2, ref r3, ref x0, ref x1, ref x2, ref x3, ref y0, ref y1);
            d0 = r0.Value; d1 = r1.Value; d2 = r2.Value; d3 = r3.Value;
        }
        else Emulate(a0, a1, a2, a3, b0, b1, ref d0, ref d1, ref d2, ref d3);
    }

    /// <summary>Two values rounded to bfloat16 (to nearest, ties to even) as one word of a fragment, <paramref name="a"/>
    /// in the low half: on CUDA one <c>cvt.rn.bf16x2.f32</c> (SM 8.0 and later, as the mma itself), which puts its first
    /// source in the high half; elsewhere <see cref="BFloat16Conversion.Pair"/>, the same value.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static uint Pack(float a, float b)
    {
        if (!CudaAsm.IsSupported) return BFloat16Conversion.Pair(a, b);
        CudaAsm.Emit("cvt.rn.bf16x2.f32 %0, %1, %2;", out uint pair, b, a);
        return pair;
    }

    /// <summary>D = A·B + C by one <see cref="Mma"/> of a group of one warp from row-major float32 matrices (A [16, 16]
    /// and B [16, 8], rounded to bfloat16; C and D [16, 8]), so that a device's instruction can be checked against the
    /// layout described above, the emulation's. A's words are packed by <see cref="Pack"/>, B's by the software
    /// <see cref="BFloat16Conversion.Pair"/> (low half first), as the attention kernels pack some words one way and
    /// compose others from halves: a <c>cvt</c> that ordered its halves the other way would pair A's columns with the
    /// wrong rows of B.</summary>
    public static void Product(ArrayView<float> a, ArrayView<float> b, ArrayView<float> c, ArrayView<float> d)
    {
        int lane = Group.IdxX, g = lane >> 2, t = lane & 3, top = g * 16 + 2 * t, bottom = top + 8 * 16;
        uint a0 = Pack(a[top], a[top + 1]), a1 = Pack(a[bottom], a[bottom + 1]);
        uint a2 = Pack(a[top + 8], a[top + 9]), a3 = Pack(a[bottom + 8], a[bottom + 9]);
        uint b0 = BFloat16Conversion.Pair(b[2 * t * 8 + g], b[(2 * t + 1) * 8 + g]);
        uint b1 = BFloat16Conversion.Pair(b[(2 * t + 8) * 8 + g], b[(2 * t + 9) * 8 + g]);
        int upper = g * 8 + 2 * t, lower = upper + 8 * 8;
        float d0 = c[upper], d1 = c[upper + 1], d2 = c[lower], d3 = c[lower + 1];
        Mma(a0, a1, a2, a3, b0, b1, ref d0, ref d1, ref d2, ref d3);
        d[upper] = d0;
        d[upper + 1] = d1;
        d[lower] = d2;
        d[lower + 1] = d3;
    }

    /// <summary>The product of <see cref="Mma"/> from the fragments alone: each lane gathers its rows of A from its
    /// quad and its two columns of B from the quads holding them.</summary>
    static void Emulate(uint a0, uint a1, uint a2, uint a3, uint b0, uint b1, ref float d0, ref float d1, ref float d2, ref float d3)
    {
        int lane = Warp.LaneIdx, g = lane >> 2, t = lane & 3;
        for (int u = 0; u < 4; u++)
        {
            int rows = 4 * g + u, left = 4 * (2 * t) + u, right = 4 * (2 * t + 1) + u;
            // A[g][2u, 2u+1, 2u+8, 2u+9], A[g+8][…]; B[2u, 2u+1, 2u+8, 2u+9][2t] and [2t+1]
            uint top = Warp.Shuffle(a0, rows), bottom = Warp.Shuffle(a1, rows), topFar = Warp.Shuffle(a2, rows), bottomFar = Warp.Shuffle(a3, rows);
            uint l0 = Warp.Shuffle(b0, left), l1 = Warp.Shuffle(b1, left), r0 = Warp.Shuffle(b0, right), r1 = Warp.Shuffle(b1, right);
            d0 += Dot(top, l0) + Dot(topFar, l1);
            d1 += Dot(top, r0) + Dot(topFar, r1);
            d2 += Dot(bottom, l0) + Dot(bottomFar, l1);
            d3 += Dot(bottom, r0) + Dot(bottomFar, r1);
        }
    }

    /// <summary>The dot product of two words of two bfloat16.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static float Dot(uint x, uint y) =>
        BFloat16Conversion.Half(x, false) * BFloat16Conversion.Half(y, false) + BFloat16Conversion.Half(x, true) * BFloat16Conversion.Half(y, true);
}
