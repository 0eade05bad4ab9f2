// The ILGPU kernels of the GPU backend: static methods over an index and array views, one per op family.
// They follow Reference.fs op by op; float32 throughout, with erf written out so every device computes the same.
using System.Runtime.CompilerServices;
using ILGPU;
using ILGPU.Runtime.Cuda;
using Lxt.Graph;

namespace Lxt.Backend.Gpu;

/// <summary>Sizes of a 2-D convolution (NCHW input, OIHW weight) passed to the convolution kernels.</summary>
public struct ConvShape
{
    public int B, C, H, W, O, OH, OW, KH, KW, SH, SW, PH, PW;
}

/// <summary>Sizes of a batched product C = op(A)·op(B): M×K by K×N, batch offsets of A and B from <see cref="Batch"/>.
/// TransA (TransB) nonzero: A (B) is stored K×M (N×K) and read transposed. NarrowA (NarrowB) nonzero: the operand is
/// read from its bfloat16 view. NarrowC nonzero: C is written rounded to bfloat16 into its bfloat16 view. RoundTf32
/// nonzero: float32 operands are rounded to TF32 as they are read.</summary>
public struct MatMulShape
{
    public int M, N, K, Tile;
    public int TransA, TransB, NarrowA, NarrowB, NarrowC, RoundTf32;
    public Walk Batch;
}

/// <summary>Atomic adds of float32 values that end whatever the values.</summary>
public static class FloatAtomics
{
    /// <summary>y[i] += v atomically. On CUDA the device's atomic add; elsewhere (ILGPU's CPU accelerator) a
    /// compare-exchange of the value's bits. ILGPU's own loop there compares the values themselves, and NaN equals
    /// nothing, so an add to a NaN would retry forever: a NaN in a scatter-add or an attention's gradient hung the run
    /// instead of coming out as NaN.</summary>
    public static void Add(ArrayView<float> y, int i, float v)
    {
        if (CudaAsm.IsSupported)
        {
            Atomic.Add(ref y[i], v);
            return;
        }
        var bits = y.Cast<int>();
        int seen = bits[i], old;
        do
        {
            old = seen;
            seen = Atomic.CompareExchange(ref bits[i], old, (int)Interop.FloatAsInt(Interop.IntAsFloat((uint)old) + v));
        }
        while (seen != old);
    }
}

/// <summary>bfloat16 as the high half of a float32: conversions shared by kernels and the host.</summary>
public static class BFloat16Conversion
{
    /// <summary>The bfloat16 nearest to x, ties to even; NaN stays a (quiet) NaN, overflow rounds to ±∞.</summary>
    public static ushort FromFloat(float x)
    {
        uint bits = Interop.FloatAsInt(x);
        if ((bits & 0x7fffffffu) > 0x7f800000u) return (ushort)((bits >> 16) | 0x40u);
        uint rounding = 0x7fffu + ((bits >> 16) & 1u);
        return (ushort)((bits + rounding) >> 16);
    }

    /// <summary>Two values rounded to bfloat16 as one 32-bit word: <paramref name="a"/> in the low half (the even
    /// element, little-endian), <paramref name="b"/> in the high half.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static uint Pair(float a, float b) => FromFloat(a) | (uint)FromFloat(b) << 16;

    /// <summary>The float32 of equal value.</summary>
    public static float ToFloat(ushort h) => Interop.IntAsFloat((uint)h << 16);

    /// <summary>Element <paramref name="j"/> of bfloat16 values read through a view of their words in pairs as float32
    /// (little-endian: an even element is the low half of its pair). Fused kernels read narrow operands so, through the
    /// float32 views they take for every operand.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float FromPairs(ArrayView<float> pairs, int j) => Half(Interop.FloatAsInt(pairs[j >> 1]), (j & 1) != 0);

    /// <summary>The float32 of one bfloat16 half of a 32-bit word of two (<see cref="Pair"/>): the low half (the even
    /// element) or the high one.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Half(uint pair, bool high) => Interop.IntAsFloat(high ? pair & 0xffff0000u : pair << 16);

    /// <summary>x rounded to bfloat16 and widened back (the value a bfloat16 product reads).</summary>
    public static float Round(float x) => ToFloat(FromFloat(x));

    /// <summary>x rounded to TF32 (float32 with a 10-bit mantissa), ties to even; NaN and ±∞ are kept.</summary>
    public static float RoundTf32(float x)
    {
        uint bits = Interop.FloatAsInt(x);
        if ((bits & 0x7f800000u) == 0x7f800000u) return x;
        uint rounding = 0xfffu + ((bits >> 13) & 1u);
        return Interop.IntAsFloat((bits + rounding) & 0xffffe000u);
    }
}

internal static class Kernels
{
    /// <summary>Largest tile edge of the shared-memory matrix product (its two tiles are allocated at this size).</summary>
    public const int MaxTile = 16;

    public static void Fill(Index1D i, ArrayView<float> y, float value) => y[i] = value;

    public static void Unary(Index1D i, ArrayView<float> x, ArrayView<float> y, int op) => y[i] = ApplyUnary(op, x[i]);

    public static void Binary(Index1D i, ArrayView<float> a, ArrayView<float> b, ArrayView<float> y, Walk walk, int op)
    {
        var o = walk.At(i);
        y[i] = ApplyBinary(op, a[o.A], b[o.B]);
    }

    public static void Where(Index1D i, ArrayView<float> cond, ArrayView<float> a, ArrayView<float> b, ArrayView<float> y, Walk walk)
    {
        var o = walk.At(i);
        y[i] = ApplyWhere(cond[o.A], a[o.B], b[o.C]);
    }

    /// <summary>y[yBase + B(i)] = x[xBase + A(i)]: broadcast, permute, slice and each part of a concat. Each side is
    /// float32, or bfloat16 in its narrow view when bit 0 (x) or bit 1 (y) of <paramref name="narrow"/> is set: narrow
    /// to narrow copies the bits, float32 to bfloat16 rounds to nearest, bfloat16 to float32 widens exactly.</summary>
    public static void StridedCopy(Index1D i, ArrayView<float> x, ArrayView<ushort> x16, ArrayView<float> y, ArrayView<ushort> y16,
                                   Walk walk, int xBase, int yBase, int narrow)
    {
        var o = walk.At(i);
        int from = xBase + o.A, to = yBase + o.B;
        if (narrow == 3) y16[to] = x16[from];
        else
        {
            float v = (narrow & 1) != 0 ? BFloat16Conversion.ToFloat(x16[from]) : x[from];
            if ((narrow & 2) != 0) y16[to] = BFloat16Conversion.FromFloat(v);
            else y[to] = v;
        }
    }

    /// <summary><see cref="StridedCopy"/> one thread per pair of neighbouring elements (launched on n/2 threads), where
    /// the walk's innermost axis has an even length and both sides walk it contiguously, and each bfloat16 side's base
    /// and strides are even (<see cref="Walk.InPairs"/>): a bfloat16 pair is one 32-bit word, so a thread moves a word
    /// (or two float32 values) per side instead of one 16-bit value.</summary>
    public static void StridedCopyPairs(Index1D j, ArrayView<float> x, ArrayView<ushort> x16, ArrayView<float> y, ArrayView<ushort> y16,
                                        Walk walk, int xBase, int yBase, int narrow)
    {
        var o = walk.At(2 * j);
        int from = xBase + o.A, to = yBase + o.B;
        if (narrow == 3)
        {
            y16.Cast<uint>()[to >> 1] = x16.Cast<uint>()[from >> 1];
            return;
        }
        float a, b;
        if ((narrow & 1) != 0)
        {
            uint pair = x16.Cast<uint>()[from >> 1];
            a = BFloat16Conversion.Half(pair, high: false);
            b = BFloat16Conversion.Half(pair, high: true);
        }
        else
        {
            a = x[from];
            b = x[from + 1];
        }
        if ((narrow & 2) != 0) y16.Cast<uint>()[to >> 1] = BFloat16Conversion.Pair(a, b);
        else
        {
            y[to] = a;
            y[to + 1] = b;
        }
    }

    /// <summary>One thread per row of x viewed as [outer, len, inner]; a row that is −∞ throughout keeps the
    /// reference's shift of 0 and so gives 0/0.</summary>
    public static void Softmax(Index1D row, ArrayView<float> x, ArrayView<float> y, int len, int inner)
    {
        int outer = row / inner, j = row - outer * inner;
        int start = outer * len * inner + j;
        float m = float.NegativeInfinity;
        for (int t = 0; t < len; t++)
        {
            float v = x[start + t * inner];
            if (v > m) m = v;
        }
        if (float.IsNegativeInfinity(m)) m = 0f;
        float z = 0f;
        for (int t = 0; t < len; t++) z += MathF.Exp(x[start + t * inner] - m);
        for (int t = 0; t < len; t++) y[start + t * inner] = MathF.Exp(x[start + t * inner] - m) / z;
    }

    /// <summary>Softmax of contiguous rows, one group per row (see <see cref="FusedKernels.SoftmaxRowsOf"/>).</summary>
    public static void SoftmaxRows(ArrayView<float> x, ArrayView<float> y, int len) =>
        FusedKernels.SoftmaxRowsOf<Operand0, WideValues>(new WideValues(y), FusedOperands.Of(x), len, pairs: false);

    /// <summary>Sum, mean or max of contiguous rows, one group per row (the reduced axes are the trailing ones).</summary>
    public static void ReduceRows(ArrayView<float> x, ArrayView<float> y, int len, int op) =>
        FusedKernels.ReduceRowsOf<Operand0>(y, FusedOperands.Of(x), len, op, pairs: false);

    /// <summary>The sum over the group's threads, in every thread: each warp's sum, then the warps' partial sums
    /// through shared memory (a group of one warp needs no shared memory or barrier).</summary>
    internal static float GroupSum(float v) => GroupReduce<SumOfWarps>(v);

    /// <summary>The maximum over the group's threads (NaN if any holds NaN), in every thread, as <see cref="GroupSum"/>.</summary>
    internal static float GroupMax(float v) => GroupReduce<MaxOfWarps>(v);

    /// <summary>A reduction of the row kernels: across a warp's lanes, and of two warps' results.</summary>
    internal interface IWarpReduction
    {
        float OverWarp(float v);
        float Combine(float a, float b);
    }

    internal struct SumOfWarps : IWarpReduction
    {
        public readonly float OverWarp(float v) => WarpSum(v);
        public readonly float Combine(float a, float b) => a + b;
    }

    internal struct MaxOfWarps : IWarpReduction
    {
        public readonly float OverWarp(float v) => WarpMax(v);
        public readonly float Combine(float a, float b) => b > a || float.IsNaN(b) ? b : a;
    }

    static float GroupReduce<T>(float v) where T : struct, IWarpReduction
    {
        var op = default(T);
        v = op.OverWarp(v);
        if (Group.DimX <= Warp.WarpSize) return v;
        var partial = SharedMemory.Allocate<float>(MaxWarpsPerGroup);
        if (Warp.LaneIdx == 0) partial[Warp.WarpIdx] = v;
        Group.Barrier();
        float r = partial[0];
        for (int w = 1; w * Warp.WarpSize < Group.DimX; w++) r = op.Combine(r, partial[w]);
        Group.Barrier(); // every thread has read the partials before a later reduction writes them
        return r;
    }

    /// <summary>The most warps a group of the row kernels may have (1024 threads of 32-lane warps).</summary>
    internal const int MaxWarpsPerGroup = 32;

    /// <summary>The sum over the warp's lanes, in every lane.</summary>
    internal static float WarpSum(float v)
    {
        for (int offset = Warp.WarpSize / 2; offset > 0; offset /= 2) v += Warp.ShuffleDown(v, offset);
        return Warp.Shuffle(v, 0);
    }

    /// <summary>The maximum over the warp's lanes (NaN if any lane holds NaN), in every lane.</summary>
    internal static float WarpMax(float v)
    {
        for (int offset = Warp.WarpSize / 2; offset > 0; offset /= 2)
        {
            float o = Warp.ShuffleDown(v, offset);
            if (o > v || float.IsNaN(o)) v = o;
        }
        return Warp.Shuffle(v, 0);
    }

    /// <summary>One thread per output value: `kept` maps it to its first input offset, `reduced` walks the
    /// `count` values folded into it.</summary>
    public static void Reduce(Index1D o, ArrayView<float> x, ArrayView<float> y, Walk kept, Walk reduced, int count, int op)
    {
        int start = kept.Offset(o);
        if (op == ReduceOp.Tags.Max)
        {
            float m = float.NegativeInfinity;
            for (int c = 0; c < count; c++)
            {
                float v = x[start + reduced.Offset(c)];
                if (v > m || float.IsNaN(v)) m = v;
            }
            y[o] = m;
            return;
        }
        float s = 0f;
        for (int c = 0; c < count; c++) s += x[start + reduced.Offset(c)];
        y[o] = op == ReduceOp.Tags.Mean ? s / count : s;
    }

    /// <summary>Rows of the table picked by indices; indices were checked on the host where that was cheap, and an
    /// unchecked out-of-range index reads NaN rather than another buffer's memory.</summary>
    public static void Gather(Index1D i, ArrayView<float> table, ArrayView<float> indices, ArrayView<float> y, int width, int rows)
    {
        int p = i / width, j = i - p * width;
        int r = (int)indices[p];
        y[i] = r >= 0 && r < rows ? table[r * width + j] : float.NaN;
    }

    /// <summary>Adds each update row into the output row its index picks (the output was zeroed first).</summary>
    public static void ScatterAdd(Index1D i, ArrayView<float> indices, ArrayView<float> updates, ArrayView<float> y, int width, int rows)
    {
        int p = i / width, j = i - p * width;
        int r = (int)indices[p];
        if (r >= 0 && r < rows) FloatAtomics.Add(y, r * width + j, updates[i]);
    }

    public static void Conv2d(Index1D i, ArrayView<float> x, ArrayView<float> w, ArrayView<float> y, ConvShape s)
    {
        int ox = i % s.OW, t = i / s.OW;
        int oy = t % s.OH; t /= s.OH;
        int o = t % s.O, b = t / s.O;
        float acc = 0f;
        for (int c = 0; c < s.C; c++)
            for (int ky = 0; ky < s.KH; ky++)
            {
                int iy = oy * s.SH - s.PH + ky;
                if (iy < 0 || iy >= s.H) continue;
                for (int kx = 0; kx < s.KW; kx++)
                {
                    int ix = ox * s.SW - s.PW + kx;
                    if (ix < 0 || ix >= s.W) continue;
                    acc += x[((b * s.C + c) * s.H + iy) * s.W + ix] * w[((o * s.C + c) * s.KH + ky) * s.KW + kx];
                }
            }
        y[i] = acc;
    }

    /// <summary>The input gradient gathered per input pixel (no atomics): the output positions whose window covers it.</summary>
    public static void Conv2dGradInput(Index1D i, ArrayView<float> g, ArrayView<float> w, ArrayView<float> y, ConvShape s)
    {
        int ix = i % s.W, t = i / s.W;
        int iy = t % s.H; t /= s.H;
        int c = t % s.C, b = t / s.C;
        float acc = 0f;
        for (int o = 0; o < s.O; o++)
            for (int ky = 0; ky < s.KH; ky++)
            {
                int ty = iy + s.PH - ky;
                if (ty < 0 || ty % s.SH != 0) continue;
                int oy = ty / s.SH;
                if (oy >= s.OH) continue;
                for (int kx = 0; kx < s.KW; kx++)
                {
                    int tx = ix + s.PW - kx;
                    if (tx < 0 || tx % s.SW != 0) continue;
                    int ox = tx / s.SW;
                    if (ox >= s.OW) continue;
                    acc += g[((b * s.O + o) * s.OH + oy) * s.OW + ox] * w[((o * s.C + c) * s.KH + ky) * s.KW + kx];
                }
            }
        y[i] = acc;
    }

    public static void Conv2dGradWeight(Index1D i, ArrayView<float> x, ArrayView<float> g, ArrayView<float> y, ConvShape s)
    {
        int kx = i % s.KW, t = i / s.KW;
        int ky = t % s.KH; t /= s.KH;
        int c = t % s.C, o = t / s.C;
        float acc = 0f;
        for (int b = 0; b < s.B; b++)
            for (int oy = 0; oy < s.OH; oy++)
            {
                int iy = oy * s.SH - s.PH + ky;
                if (iy < 0 || iy >= s.H) continue;
                for (int ox = 0; ox < s.OW; ox++)
                {
                    int ix = ox * s.SW - s.PW + kx;
                    if (ix < 0 || ix >= s.W) continue;
                    acc += x[((b * s.C + c) * s.H + iy) * s.W + ix] * g[((b * s.O + o) * s.OH + oy) * s.OW + ox];
                }
            }
        y[i] = acc;
    }

    /// <summary>1 at the k largest entries of each contiguous row, else 0, one warp per row (group = one warp, grid =
    /// rows): k rounds, each picking the largest entry not yet picked, ties (and NaNs, which lose to every number) to
    /// the lower index, as the reference's stable sort does. O(k·width / lanes) per lane.</summary>
    public static void TopKMaskRows(ArrayView<float> x, ArrayView<float> y, int width, int k)
    {
        int start = Grid.IdxX * width, lane = Group.IdxX, lanes = Group.DimX;
        for (int t = lane; t < width; t += lanes) y[start + t] = 0f;
        Group.Barrier();
        for (int round = 0; round < k && round < width; round++)
        {
            float bv = float.NaN;
            int bi = int.MaxValue;
            for (int t = lane; t < width; t += lanes)
            {
                float v = x[start + t];
                if (y[start + t] == 0f && Beats(v, t, bv, bi)) { bv = v; bi = t; }
            }
            for (int offset = Warp.WarpSize / 2; offset > 0; offset /= 2)
            {
                float ov = Warp.ShuffleDown(bv, offset);
                int oi = Warp.ShuffleDown(bi, offset);
                if (Beats(ov, oi, bv, bi)) { bv = ov; bi = oi; }
            }
            if (lane == 0 && bi != int.MaxValue) y[start + bi] = 1f;
            Group.Barrier();
        }
    }

    /// <summary>Whether entry (av at ai) ranks before (bv at bi): the larger number, a number before NaN, else the lower index.</summary>
    static bool Beats(float av, int ai, float bv, int bi)
    {
        bool aNaN = float.IsNaN(av), bNaN = float.IsNaN(bv);
        if (aNaN != bNaN) return bNaN;
        if (!aNaN && av != bv) return av > bv;
        return ai < bi;
    }

    /// <summary>float32 operands into bfloat16 words (for products in bfloat16).</summary>
    public static void ToBFloat16(Index1D i, ArrayView<float> x, ArrayView<ushort> y) => y[i] = BFloat16Conversion.FromFloat(x[i]);

    /// <summary>C = op(A)·op(B) for one Tile×Tile block of one batch entry per group, through two shared-memory tiles.
    /// Each operand is read from its float32 view, or from its bfloat16 view when narrow (the other view is unused), and
    /// C written likewise. Grid: (⌈N/Tile⌉, ⌈M/Tile⌉, batch); group: (Tile, Tile).</summary>
    public static void MatMulTiled(ArrayView<float> a, ArrayView<ushort> a16, ArrayView<float> b, ArrayView<ushort> b16,
                                   ArrayView<float> c, ArrayView<ushort> c16, MatMulShape s)
    {
        var tileA = SharedMemory.Allocate<float>(MaxTile * MaxTile);
        var tileB = SharedMemory.Allocate<float>(MaxTile * MaxTile);
        int t = s.Tile, tx = Group.IdxX, ty = Group.IdxY;
        int col = Grid.IdxX * t + tx, row = Grid.IdxY * t + ty, batch = Grid.IdxZ;
        var o = s.Batch.At(batch);
        float acc = 0f;
        for (int k0 = 0; k0 < s.K; k0 += t)
        {
            int ka = k0 + tx, kb = k0 + ty;
            tileA[ty * t + tx] = row < s.M && ka < s.K
                ? Operand(a, a16, s.NarrowA, o.A + (s.TransA != 0 ? ka * s.M + row : row * s.K + ka), s.RoundTf32)
                : 0f;
            tileB[ty * t + tx] = kb < s.K && col < s.N
                ? Operand(b, b16, s.NarrowB, o.B + (s.TransB != 0 ? col * s.K + kb : kb * s.N + col), s.RoundTf32)
                : 0f;
            Group.Barrier();
            for (int kk = 0; kk < t; kk++) acc += tileA[ty * t + kk] * tileB[kk * t + tx];
            Group.Barrier();
        }
        if (row < s.M && col < s.N)
        {
            int at = batch * s.M * s.N + row * s.N + col;
            if (s.NarrowC != 0) c16[at] = BFloat16Conversion.FromFloat(acc);
            else c[at] = acc;
        }
    }

    static float Operand(ArrayView<float> x, ArrayView<ushort> x16, int narrow, int i, int tf32)
    {
        if (narrow != 0) return BFloat16Conversion.ToFloat(x16[i]);
        return tf32 != 0 ? BFloat16Conversion.RoundTf32(x[i]) : x[i];
    }


    /// <summary>One element of a unary op (by <see cref="UnaryOp"/> tag): the Unary and the fused kernels' semantics,
    /// each op's function a type of <see cref="Unary1"/> (which fused programs name directly).</summary>
    internal static float ApplyUnary(int op, float x)
    {
        switch (op)
        {
            case UnaryOp.Tags.Neg: return default(Unary1.Neg).Apply(x);
            case UnaryOp.Tags.Exp: return default(Unary1.Exp).Apply(x);
            case UnaryOp.Tags.Log: return default(Unary1.Log).Apply(x);
            case UnaryOp.Tags.Sqrt: return default(Unary1.Sqrt).Apply(x);
            case UnaryOp.Tags.Rsqrt: return default(Unary1.Rsqrt).Apply(x);
            case UnaryOp.Tags.Tanh: return default(Unary1.Tanh).Apply(x);
            case UnaryOp.Tags.Sigmoid: return default(Unary1.Sigmoid).Apply(x);
            case UnaryOp.Tags.Erf: return default(Unary1.Erf).Apply(x);
            case UnaryOp.Tags.GeluErf: return default(Unary1.GeluErf).Apply(x);
            case UnaryOp.Tags.GeluTanh: return default(Unary1.GeluTanh).Apply(x);
            case UnaryOp.Tags.Silu: return default(Unary1.Silu).Apply(x);
            case UnaryOp.Tags.Relu: return default(Unary1.Relu).Apply(x);
            case UnaryOp.Tags.Abs: return default(Unary1.Abs).Apply(x);
            case UnaryOp.Tags.Sign: return default(Unary1.Sign).Apply(x);
            case UnaryOp.Tags.Reciprocal: return default(Unary1.Reciprocal).Apply(x);
            case UnaryOp.Tags.Sin: return default(Unary1.Sin).Apply(x);
            case UnaryOp.Tags.Cos: return default(Unary1.Cos).Apply(x);
            case UnaryOp.Tags.Square: return default(Unary1.Square).Apply(x);
            default: return float.NaN;
        }
    }

    /// <summary>One element of a binary op (by <see cref="BinaryOp"/> tag): the Binary and the fused kernels'
    /// semantics, each op's function a type of <see cref="Binary2"/>.</summary>
    internal static float ApplyBinary(int op, float a, float b)
    {
        switch (op)
        {
            case BinaryOp.Tags.Add: return default(Binary2.Add).Apply(a, b);
            case BinaryOp.Tags.Sub: return default(Binary2.Sub).Apply(a, b);
            case BinaryOp.Tags.Mul: return default(Binary2.Mul).Apply(a, b);
            case BinaryOp.Tags.Div: return default(Binary2.Div).Apply(a, b);
            case BinaryOp.Tags.Pow: return default(Binary2.Pow).Apply(a, b);
            case BinaryOp.Tags.Maximum: return default(Binary2.Maximum).Apply(a, b);
            case BinaryOp.Tags.Minimum: return default(Binary2.Minimum).Apply(a, b);
            case BinaryOp.Tags.Greater: return default(Binary2.Greater).Apply(a, b);
            case BinaryOp.Tags.Equal: return default(Binary2.Equal).Apply(a, b);
            default: return float.NaN;
        }
    }

    /// <summary>One element of Where: the Where and the fused kernels' semantics.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static float ApplyWhere(float cond, float whenTrue, float whenFalse) => cond != 0f ? whenTrue : whenFalse;

    /// <summary>erf(u) for |u| &lt; 0.75 from its Maclaurin series (eight terms reach float precision).</summary>
    static float ErfSeries(float u)
    {
        float u2 = u * u;
        float q = -1.492565035840625e-05f;
        q = q * u2 + 0.00012055332981789664f;
        q = q * u2 - 0.0008548327023450852f;
        q = q * u2 + 0.005223977625442188f;
        q = q * u2 - 0.026866170645131252f;
        q = q * u2 + 0.11283791670955126f;
        q = q * u2 - 0.37612638903183754f;
        q = q * u2 + 1.1283791670955126f;
        return u * q;
    }

    /// <summary>erfc(a) for a ≥ 0 as t·exp(−a² + P(t)), t = 1/(1 + a/2): fractional error below 1.2e-7
    /// (the Chebyshev fit of Numerical Recipes §6.2, as on the CPU backend).</summary>
    static float ErfcOfAbs(float a)
    {
        float t = 1f / (1f + 0.5f * a);
        float p = 0.17087277f;
        p = p * t - 0.82215223f;
        p = p * t + 1.48851587f;
        p = p * t - 1.13520398f;
        p = p * t + 0.27886807f;
        p = p * t - 0.18628806f;
        p = p * t + 0.09678418f;
        p = p * t + 0.37409196f;
        p = p * t + 1.00002368f;
        p = p * t - 1.26551223f;
        return t * MathF.Exp(p - a * a);
    }

    internal static float ErfOf(float x)
    {
        float a = MathF.Abs(x);
        if (a < 0.75f) return ErfSeries(x);
        float r = 1f - ErfcOfAbs(a);
        return x < 0f ? -r : r;
    }

    /// <summary>0.5 x (1 + erf(x/√2)), with 1 + erf(u) = erfc(|u|) for negative u so the left tail keeps its accuracy.</summary>
    internal static float GeluErfOf(float x)
    {
        float u = x * 0.70710678118654752f;
        float a = MathF.Abs(u);
        float onePlusErf = a < 0.75f ? 1f + ErfSeries(u) : u < 0f ? ErfcOfAbs(a) : 2f - ErfcOfAbs(a);
        return 0.5f * x * onePlusErf;
    }
}

/// <summary>The function of a unary op as a type, so a kernel generic in it compiles just that function.</summary>
internal interface IUnaryFunction
{
    float Apply(float x);
}

/// <summary>The function of a binary op as a type.</summary>
internal interface IBinaryFunction
{
    float Apply(float a, float b);
}

/// <summary>The element functions of the unary ops, one type each (named as the <see cref="UnaryOp"/> cases).</summary>
internal static class Unary1
{
    public struct Neg : IUnaryFunction { [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly float Apply(float x) => -x; }
    public struct Exp : IUnaryFunction { [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly float Apply(float x) => MathF.Exp(x); }
    public struct Log : IUnaryFunction { [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly float Apply(float x) => MathF.Log(x); }
    public struct Sqrt : IUnaryFunction { [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly float Apply(float x) => MathF.Sqrt(x); }
    public struct Rsqrt : IUnaryFunction { [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly float Apply(float x) => 1f / MathF.Sqrt(x); }
    public struct Tanh : IUnaryFunction { [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly float Apply(float x) => MathF.Tanh(x); }
    public struct Sigmoid : IUnaryFunction { [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly float Apply(float x) => 1f / (1f + MathF.Exp(-x)); }
    public struct Erf : IUnaryFunction { [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly float Apply(float x) => Kernels.ErfOf(x); }
    public struct GeluErf : IUnaryFunction { [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly float Apply(float x) => Kernels.GeluErfOf(x); }
    public struct GeluTanh : IUnaryFunction { [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly float Apply(float x) => 0.5f * x * (1f + MathF.Tanh(0.7978845608028654f * (x + 0.044715f * x * x * x))); }
    public struct Silu : IUnaryFunction { [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly float Apply(float x) => x / (1f + MathF.Exp(-x)); }
    public struct Relu : IUnaryFunction { [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly float Apply(float x) => x > 0f ? x : 0f; }
    public struct Abs : IUnaryFunction { [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly float Apply(float x) => MathF.Abs(x); }
    public struct Sign : IUnaryFunction { [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly float Apply(float x) => x > 0f ? 1f : x < 0f ? -1f : 0f; }
    public struct Reciprocal : IUnaryFunction { [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly float Apply(float x) => 1f / x; }
    public struct Sin : IUnaryFunction { [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly float Apply(float x) => MathF.Sin(x); }
    public struct Cos : IUnaryFunction { [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly float Apply(float x) => MathF.Cos(x); }
    public struct Square : IUnaryFunction { [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly float Apply(float x) => x * x; }

    /// <summary>The function type of each <see cref="UnaryOp"/> tag.</summary>
    public static Type Of(int tag) => tag switch
    {
        UnaryOp.Tags.Neg => typeof(Neg),
        UnaryOp.Tags.Exp => typeof(Exp),
        UnaryOp.Tags.Log => typeof(Log),
        UnaryOp.Tags.Sqrt => typeof(Sqrt),
        UnaryOp.Tags.Rsqrt => typeof(Rsqrt),
        UnaryOp.Tags.Tanh => typeof(Tanh),
        UnaryOp.Tags.Sigmoid => typeof(Sigmoid),
        UnaryOp.Tags.Erf => typeof(Erf),
        UnaryOp.Tags.GeluErf => typeof(GeluErf),
        UnaryOp.Tags.GeluTanh => typeof(GeluTanh),
        UnaryOp.Tags.Silu => typeof(Silu),
        UnaryOp.Tags.Relu => typeof(Relu),
        UnaryOp.Tags.Abs => typeof(Abs),
        UnaryOp.Tags.Sign => typeof(Sign),
        UnaryOp.Tags.Reciprocal => typeof(Reciprocal),
        UnaryOp.Tags.Sin => typeof(Sin),
        UnaryOp.Tags.Cos => typeof(Cos),
        UnaryOp.Tags.Square => typeof(Square),
        _ => throw new NotSupportedException($"gpu backend: no element function for unary op tag {tag}"),
    };
}

/// <summary>The element functions of the binary ops, one type each (named as the <see cref="BinaryOp"/> cases).</summary>
internal static class Binary2
{
    public struct Add : IBinaryFunction { [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly float Apply(float a, float b) => a + b; }
    public struct Sub : IBinaryFunction { [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly float Apply(float a, float b) => a - b; }
    public struct Mul : IBinaryFunction { [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly float Apply(float a, float b) => a * b; }
    public struct Div : IBinaryFunction { [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly float Apply(float a, float b) => a / b; }
    public struct Pow : IBinaryFunction { [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly float Apply(float a, float b) => MathF.Pow(a, b); }
    public struct Maximum : IBinaryFunction { [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly float Apply(float a, float b) => float.IsNaN(a) || float.IsNaN(b) ? float.NaN : a > b ? a : b; }
    public struct Minimum : IBinaryFunction { [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly float Apply(float a, float b) => float.IsNaN(a) || float.IsNaN(b) ? float.NaN : a < b ? a : b; }
    public struct Greater : IBinaryFunction { [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly float Apply(float a, float b) => a > b ? 1f : 0f; }
    public struct Equal : IBinaryFunction { [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly float Apply(float a, float b) => a == b ? 1f : 0f; }

    /// <summary>The function type of each <see cref="BinaryOp"/> tag.</summary>
    public static Type Of(int tag) => tag switch
    {
        BinaryOp.Tags.Add => typeof(Add),
        BinaryOp.Tags.Sub => typeof(Sub),
        BinaryOp.Tags.Mul => typeof(Mul),
        BinaryOp.Tags.Div => typeof(Div),
        BinaryOp.Tags.Pow => typeof(Pow),
        BinaryOp.Tags.Maximum => typeof(Maximum),
        BinaryOp.Tags.Minimum => typeof(Minimum),
        BinaryOp.Tags.Greater => typeof(Greater),
        BinaryOp.Tags.Equal => typeof(Equal),
        _ => throw new NotSupportedException($"gpu backend: no element function for binary op tag {tag}"),
    };
}
