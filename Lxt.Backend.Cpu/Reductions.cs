// Softmax and Sum/Mean/Max reductions. Any axis is viewed as [outer, length, inner]: inner = 1 reduces contiguous
// rows with TensorPrimitives; inner > 1 combines whole rows of length inner at once. Non-adjacent reduced axes are
// first permuted to the end.
using Lxt.Graph;
using TP = System.Numerics.Tensors.TensorPrimitives;

namespace Lxt.Backend.Cpu;

internal static class Reductions
{
    public static void Softmax(int axis, int[] shape, float[] x, float[] y, int threads)
    {
        int outer = ShapeModule.product(shape, 0, axis), len = shape[axis], inner = ShapeModule.product(shape, axis + 1, shape.Length);
        if (len == 0 || outer == 0 || inner == 0) return;
        if (inner == 1)
        {
            Kernels.For(outer, (long)len * 4, threads, (s, e) =>
            {
                for (int o = s; o < e; o++)
                {
                    var row = x.AsSpan(o * len, len);
                    var dst = y.AsSpan(o * len, len);
                    float m = TP.Max(row);
                    // a row masked entirely to -∞ keeps the reference's shift of 0, giving 0/0
                    if (float.IsNegativeInfinity(m)) m = 0f;
                    TP.Subtract(row, m, dst);
                    TP.Exp(dst, dst);
                    TP.Divide(dst, TP.Sum(dst), dst);
                }
            });
            return;
        }
        int pieces = outer >= threads ? 1 : Math.Max(1, Math.Min(threads * 2, inner / 4096));
        Kernels.For(outer * pieces, (long)len * inner / pieces * 4, threads, (s, e) =>
        {
            var m = new float[inner];
            var z = new float[inner];
            for (int item = s; item < e; item++)
            {
                int o = item / pieces, piece = item % pieces;
                int c0 = (int)((long)inner * piece / pieces), c1 = (int)((long)inner * (piece + 1) / pieces), w = c1 - c0;
                int block = o * len * inner + c0;
                var ms = m.AsSpan(0, w);
                var zs = z.AsSpan(0, w);
                x.AsSpan(block, w).CopyTo(ms);
                for (int j = 1; j < len; j++) TP.Max(ms, x.AsSpan(block + j * inner, w), ms);
                for (int i = 0; i < w; i++) if (float.IsNegativeInfinity(ms[i])) ms[i] = 0f;
                zs.Clear();
                for (int j = 0; j < len; j++)
                {
                    var dst = y.AsSpan(block + j * inner, w);
                    TP.Subtract(x.AsSpan(block + j * inner, w), ms, dst);
                    TP.Exp(dst, dst);
                    TP.Add(zs, dst, zs);
                }
                for (int j = 0; j < len; j++)
                {
                    var dst = y.AsSpan(block + j * inner, w);
                    TP.Divide(dst, zs, dst);
                }
            }
        });
    }

    public static void Reduce(ReduceOp op, int[] axes, int[] shape, float[] x, float[] y, int threads)
    {
        if (axes.Length == 0) { x.AsSpan(0, ShapeModule.numel(shape)).CopyTo(y); return; }
        bool adjacent = true;
        for (int i = 1; i < axes.Length; i++) adjacent &= axes[i] == axes[i - 1] + 1;
        if (!adjacent)
        {
            // move the reduced axes last: [kept..., reduced...], then reduce one contiguous block
            var perm = Enumerable.Range(0, shape.Length).Where(a => !axes.Contains(a)).Concat(axes).ToArray();
            int n = ShapeModule.numel(shape);
            var tmp = System.Buffers.ArrayPool<float>.Shared.Rent(n);
            try
            {
                Layout.Permute(perm, shape, x, tmp, threads);
                var permuted = perm.Select(a => shape[a]).ToArray();
                int kept = shape.Length - axes.Length;
                Block(op.Tag, ShapeModule.product(permuted, 0, kept), ShapeModule.product(permuted, kept, permuted.Length), 1, tmp, y, threads);
            }
            finally { System.Buffers.ArrayPool<float>.Shared.Return(tmp); }
            return;
        }
        int first = axes[0], last = axes[^1];
        Block(op.Tag, ShapeModule.product(shape, 0, first), ShapeModule.product(shape, first, last + 1),
              ShapeModule.product(shape, last + 1, shape.Length), x, y, threads);
    }

    /// Reduces x viewed as [outer, len, inner] over its middle axis into y [outer, inner].
    static void Block(int tag, int outer, int len, int inner, float[] x, float[] y, int threads)
    {
        if (outer == 0 || inner == 0) return;
        if (len == 0)
        {
            // an empty sum is 0 and its mean 0/0, as in the reference; an empty max has no value
            if (tag == ReduceOp.Tags.Max) throw new InvalidOperationException("reduce max over an empty axis has no value");
            y.AsSpan(0, outer * inner).Fill(tag == ReduceOp.Tags.Mean ? float.NaN : 0f);
            return;
        }
        bool max = tag == ReduceOp.Tags.Max;
        float scale = tag == ReduceOp.Tags.Mean ? len : 1f;
        if (inner == 1)
        {
            Kernels.For(outer, len, threads, (s, e) =>
            {
                for (int o = s; o < e; o++)
                {
                    var row = x.AsSpan(o * len, len);
                    float v = max ? TP.Max(row) : TP.Sum(row);
                    y[o] = tag == ReduceOp.Tags.Mean ? v / scale : v;
                }
            });
            return;
        }
        int pieces = outer >= threads ? 1 : Math.Max(1, Math.Min(threads * 2, inner / 4096));
        Kernels.For(outer * pieces, (long)len * inner / pieces, threads, (s, e) =>
        {
            for (int item = s; item < e; item++)
            {
                int o = item / pieces, piece = item % pieces;
                int c0 = (int)((long)inner * piece / pieces), c1 = (int)((long)inner * (piece + 1) / pieces), w = c1 - c0;
                int block = o * len * inner + c0;
                var dst = y.AsSpan(o * inner + c0, w);
                x.AsSpan(block, w).CopyTo(dst);
                for (int j = 1; j < len; j++)
                {
                    var row = x.AsSpan(block + j * inner, w);
                    if (max) TP.Max(dst, row, dst); else TP.Add(dst, row, dst);
                }
                if (tag == ReduceOp.Tags.Mean) TP.Divide(dst, scale, dst);
            }
        });
    }

    /// <summary>1 at the k largest entries of each row (last axis), else 0; ties go to the lower index (as the reference).</summary>
    public static void TopKMask(int k, int[] shape, ReadOnlySpan<float> x, Span<float> y)
    {
        int width = shape[^1], rows = width == 0 ? 0 : x.Length / width;
        y.Clear();
        if (k == 1)
        {
            // the arg-max (an explanation's picked target over a vocabulary): one scan, NaN below every number
            for (int r = 0; r < rows; r++)
            {
                var row = x.Slice(r * width, width);
                int best = -1;
                for (int i = 0; i < width; i++)
                    if (!float.IsNaN(row[i]) && (best < 0 || row[i] > row[best])) best = i;
                y[r * width + Math.Max(best, 0)] = 1f;
            }
            return;
        }
        var order = new int[width];
        for (int r = 0; r < rows; r++)
        {
            var row = x.Slice(r * width, width);
            for (int i = 0; i < width; i++) order[i] = i;
            var rowCopy = row.ToArray();
            Array.Sort(order, (i, j) => rowCopy[i] != rowCopy[j] ? rowCopy[j].CompareTo(rowCopy[i]) : i.CompareTo(j));
            for (int i = 0; i < k; i++) y[r * width + order[i]] = 1f;
        }
    }
}
