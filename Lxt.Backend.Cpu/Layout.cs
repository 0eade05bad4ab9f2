// Data movement: broadcast, copy, permute, slice, concat, gather and scatter-add. Each views its tensors as blocks of
// contiguous runs and copies whole runs; permute falls back to a tiled transpose or a strided walk.
using System.Runtime.Intrinsics.X86;
using Lxt.Graph;
using TP = System.Numerics.Tensors.TensorPrimitives;

namespace Lxt.Backend.Cpu;

internal static class Layout
{
    public static void Copy(float[] x, float[] y, int n, int threads) =>
        Kernels.For((n + 65535) / 65536, 65536 / 8, threads, (s, e) =>
        {
            int start = s * 65536, end = Math.Min(n, e * 65536);
            x.AsSpan(start, end - start).CopyTo(y.AsSpan(start, end - start));
        });

    public static void Broadcast(int[] xShape, float[] x, int[] outShape, float[] y, int threads)
    {
        var layout = new BroadcastLayout(outShape, xShape);
        bool contiguous = layout.InnerContiguous[0];
        layout.ForEachRow(threads, 1, (row, start, len) =>
        {
            Span<int> off = stackalloc int[1];
            layout.Offsets(row, off);
            var dst = y.AsSpan(row * layout.Inner + start, len);
            if (contiguous) x.AsSpan(off[0] + start, len).CopyTo(dst); else dst.Fill(x[off[0]]);
        });
    }

    /// y[i0..ir] = x[i_perm⁻¹]: output axis i is input axis perm[i].
    public static void Permute(int[] perm, int[] xShape, float[] x, float[] y, int threads)
    {
        var xStrides = new int[xShape.Length];
        for (int i = xShape.Length - 1, acc = 1; i >= 0; acc *= xShape[i], i--) xStrides[i] = acc;
        // output dims with their source strides; size-1 dims dropped, runs that stay adjacent merged
        var dims = new List<int>();
        var strides = new List<int>();
        foreach (int p in perm)
        {
            int d = xShape[p], s = xStrides[p];
            if (d == 1) continue;
            if (dims.Count > 0 && strides[^1] == s * d) { dims[^1] *= d; strides[^1] = s; continue; }
            dims.Add(d);
            strides.Add(s);
        }
        int n = ShapeModule.numel(xShape);
        int r = dims.Count;
        if (r == 0 || (r == 1 && strides[0] == 1)) { Copy(x, y, n, threads); return; }
        if (strides[r - 1] == 1)
        {
            // contiguous runs of the last dim
            int run = dims[r - 1];
            var outer = dims.Take(r - 1).ToArray();
            var os = strides.Take(r - 1).ToArray();
            Kernels.For(n / run, run, threads, (s, e) =>
            {
                for (int row = s; row < e; row++)
                    x.AsSpan(OffsetOf(row, outer, os), run).CopyTo(y.AsSpan(row * run, run));
            });
            return;
        }
        if (r >= 2 && strides[r - 2] == 1)
        {
            // the last two axes swapped: a tiled transpose per leading index
            int p = dims[r - 2], q = dims[r - 1], sq = strides[r - 1];
            var outer = dims.Take(r - 2).ToArray();
            var os = strides.Take(r - 2).ToArray();
            Kernels.For(n / (p * q), (long)p * q, threads, (s, e) =>
            {
                for (int b = s; b < e; b++) Transpose(x, OffsetOf(b, outer, os), sq, y, b * p * q, p, q);
            });
            return;
        }
        {
            // general strided walk, innermost axis strided
            int inner = dims[r - 1], si = strides[r - 1];
            var outer = dims.Take(r - 1).ToArray();
            var os = strides.Take(r - 1).ToArray();
            Kernels.For(n / inner, inner * 2, threads, (s, e) =>
            {
                for (int row = s; row < e; row++)
                {
                    int src = OffsetOf(row, outer, os), dst = row * inner;
                    for (int j = 0; j < inner; j++) y[dst + j] = x[src + j * si];
                }
            });
        }
    }

    // y[d + i*q + j] = x[s + i + j*sq] for i < p, j < q, in 32×32 tiles so both sides stay in cache; inside a tile,
    // 8×8 blocks are transposed in registers when AVX is there
    static unsafe void Transpose(float[] x, int s, int sq, float[] y, int d, int p, int q)
    {
        const int T = 32;
        fixed (float* px = x, py = y)
        {
            float* src = px + s, dst = py + d;
            for (int i0 = 0; i0 < p; i0 += T)
            {
                int i1 = Math.Min(p, i0 + T);
                for (int j0 = 0; j0 < q; j0 += T)
                {
                    int j1 = Math.Min(q, j0 + T);
                    int i = i0;
                    if (Avx.IsSupported)
                        for (; i + 8 <= i1; i += 8)
                        {
                            int j = j0;
                            for (; j + 8 <= j1; j += 8) Transpose8x8(src + i + (long)j * sq, sq, dst + (long)i * q + j, q);
                            for (; j < j1; j++)
                                for (int ii = i; ii < i + 8; ii++) dst[(long)ii * q + j] = src[ii + (long)j * sq];
                        }
                    for (; i < i1; i++)
                    {
                        float* dr = dst + (long)i * q, sr = src + i;
                        for (int j = j0; j < j1; j++) dr[j] = sr[(long)j * sq];
                    }
                }
            }
        }
    }

    // dst[r*ldd + c] = src[c*lds + r] for an 8×8 block
    static unsafe void Transpose8x8(float* src, int lds, float* dst, int ldd)
    {
        var r0 = Avx.LoadVector256(src); var r1 = Avx.LoadVector256(src + lds);
        var r2 = Avx.LoadVector256(src + 2L * lds); var r3 = Avx.LoadVector256(src + 3L * lds);
        var r4 = Avx.LoadVector256(src + 4L * lds); var r5 = Avx.LoadVector256(src + 5L * lds);
        var r6 = Avx.LoadVector256(src + 6L * lds); var r7 = Avx.LoadVector256(src + 7L * lds);
        var t0 = Avx.UnpackLow(r0, r1); var t1 = Avx.UnpackHigh(r0, r1);
        var t2 = Avx.UnpackLow(r2, r3); var t3 = Avx.UnpackHigh(r2, r3);
        var t4 = Avx.UnpackLow(r4, r5); var t5 = Avx.UnpackHigh(r4, r5);
        var t6 = Avx.UnpackLow(r6, r7); var t7 = Avx.UnpackHigh(r6, r7);
        var u0 = Avx.Shuffle(t0, t2, 0x44); var u1 = Avx.Shuffle(t0, t2, 0xEE);
        var u2 = Avx.Shuffle(t1, t3, 0x44); var u3 = Avx.Shuffle(t1, t3, 0xEE);
        var u4 = Avx.Shuffle(t4, t6, 0x44); var u5 = Avx.Shuffle(t4, t6, 0xEE);
        var u6 = Avx.Shuffle(t5, t7, 0x44); var u7 = Avx.Shuffle(t5, t7, 0xEE);
        Avx.Store(dst, Avx.Permute2x128(u0, u4, 0x20));
        Avx.Store(dst + ldd, Avx.Permute2x128(u1, u5, 0x20));
        Avx.Store(dst + 2L * ldd, Avx.Permute2x128(u2, u6, 0x20));
        Avx.Store(dst + 3L * ldd, Avx.Permute2x128(u3, u7, 0x20));
        Avx.Store(dst + 4L * ldd, Avx.Permute2x128(u0, u4, 0x31));
        Avx.Store(dst + 5L * ldd, Avx.Permute2x128(u1, u5, 0x31));
        Avx.Store(dst + 6L * ldd, Avx.Permute2x128(u2, u6, 0x31));
        Avx.Store(dst + 7L * ldd, Avx.Permute2x128(u3, u7, 0x31));
    }

    static int OffsetOf(int index, int[] dims, int[] strides)
    {
        int off = 0;
        for (int d = dims.Length - 1; d >= 0; d--)
        {
            off += index % dims[d] * strides[d];
            index /= dims[d];
        }
        return off;
    }

    public static void Slice(int axis, int start, int stop, int[] xShape, float[] x, float[] y, int threads)
    {
        int outer = ShapeModule.product(xShape, 0, axis), inner = ShapeModule.product(xShape, axis + 1, xShape.Length);
        int inBlock = xShape[axis] * inner, outBlock = (stop - start) * inner;
        if (outBlock == 0) return;
        Kernels.For(outer, outBlock, threads, (s, e) =>
        {
            for (int o = s; o < e; o++) x.AsSpan(o * inBlock + start * inner, outBlock).CopyTo(y.AsSpan(o * outBlock, outBlock));
        });
    }

    public static void Concat(int axis, int[][] shapes, float[][] xs, int[] outShape, float[] y, int threads)
    {
        int outer = ShapeModule.product(outShape, 0, axis), inner = ShapeModule.product(outShape, axis + 1, outShape.Length);
        int outBlock = outShape[axis] * inner;
        var starts = new int[xs.Length];
        for (int p = 1; p < xs.Length; p++) starts[p] = starts[p - 1] + shapes[p - 1][axis] * inner;
        Kernels.For(outer, outBlock, threads, (s, e) =>
        {
            for (int o = s; o < e; o++)
                for (int p = 0; p < xs.Length; p++)
                {
                    int block = shapes[p][axis] * inner;
                    xs[p].AsSpan(o * block, block).CopyTo(y.AsSpan(o * outBlock + starts[p], block));
                }
        });
    }

    /// Rows of `table` picked by `indices` (integers stored as floats); an index outside the table is a binding error.
    public static void Gather(Node table, float[] t, float[] indices, int count, float[] y, int threads)
    {
        int rows = table.Shape[0];
        int width = ShapeModule.numel(table.Shape) / Math.Max(rows, 1);
        for (int i = 0; i < count; i++)
        {
            int r = (int)indices[i];
            if (r < 0 || r >= rows)
                throw new BindingException($"gather: index {r} at position {i} is outside the {rows} rows of {Node.Describe(table)}");
        }
        if (width == 0) return;
        Kernels.For(count, width, threads, (s, e) =>
        {
            for (int i = s; i < e; i++) t.AsSpan((int)indices[i] * width, width).CopyTo(y.AsSpan(i * width, width));
        });
    }

    /// Sums rows of `updates` into the rows of a zeroed output picked by `indices` (the adjoint of gather).
    public static void ScatterAdd(Node node, float[] indices, int count, float[] updates, float[] y)
    {
        int rows = node.Shape[0];
        int n = ShapeModule.numel(node.Shape);
        int width = n / Math.Max(rows, 1);
        for (int i = 0; i < count; i++)
        {
            int r = (int)indices[i];
            if (r < 0 || r >= rows)
                throw new BindingException($"scatter-add: index {r} at position {i} is outside the {rows} rows of {Node.Describe(node)}");
        }
        y.AsSpan(0, n).Clear();
        if (width == 0) return;
        // sequential: repeated indices add into the same row
        for (int i = 0; i < count; i++)
        {
            var dst = y.AsSpan((int)indices[i] * width, width);
            TP.Add(dst, updates.AsSpan(i * width, width), dst);
        }
    }
}
