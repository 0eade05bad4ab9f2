// Pointwise ops: unary functions, broadcast binary ops, where, fill. TensorPrimitives does the arithmetic on contiguous
// runs; the few functions it lacks (erf, GELU, comparisons, select) are short vector loops here.
using System.Numerics;
using System.Runtime.InteropServices;
using Lxt.Graph;
using TP = System.Numerics.Tensors.TensorPrimitives;

namespace Lxt.Backend.Cpu;

internal static class Elementwise
{
    const int Chunk = 1024; // scratch length for functions composed of several passes: stays in L1

    public static void Unary(UnaryOp op, float[] x, float[] y, int n, int threads)
    {
        int tag = op.Tag;
        const long costPerElement = 4; // most of these are transcendental
        Kernels.For((n + Chunk - 1) / Chunk, Chunk * costPerElement, threads, (s, e) =>
        {
            int start = s * Chunk, end = Math.Min(n, e * Chunk);
            UnaryRun(tag, x.AsSpan(start, end - start), y.AsSpan(start, end - start));
        });
    }

    static void UnaryRun(int tag, ReadOnlySpan<float> x, Span<float> y)
    {
        switch (tag)
        {
            case UnaryOp.Tags.Neg: TP.Negate(x, y); break;
            case UnaryOp.Tags.Exp: TP.Exp(x, y); break;
            case UnaryOp.Tags.Log: TP.Log(x, y); break;
            case UnaryOp.Tags.Sqrt: TP.Sqrt(x, y); break;
            case UnaryOp.Tags.Rsqrt: TP.Sqrt(x, y); TP.Reciprocal(y, y); break;
            case UnaryOp.Tags.Tanh: TP.Tanh(x, y); break;
            case UnaryOp.Tags.Sigmoid: TP.Sigmoid(x, y); break;
            case UnaryOp.Tags.Erf: Erf(x, y); break;
            case UnaryOp.Tags.GeluErf: GeluErf(x, y); break;
            case UnaryOp.Tags.GeluTanh: GeluTanh(x, y); break;
            case UnaryOp.Tags.Silu: Silu(x, y); break;
            case UnaryOp.Tags.Relu: Relu(x, y); break;
            case UnaryOp.Tags.Abs: TP.Abs(x, y); break;
            case UnaryOp.Tags.Sign: Sign(x, y); break;
            case UnaryOp.Tags.Reciprocal: TP.Reciprocal(x, y); break;
            case UnaryOp.Tags.Sin: TP.Sin(x, y); break;
            case UnaryOp.Tags.Cos: TP.Cos(x, y); break;
            case UnaryOp.Tags.Square: TP.Multiply(x, x, y); break;
            default: throw new NotSupportedException($"cpu backend: unary op tag {tag} is not implemented");
        }
    }

    // erf(x)/x = 2/√π Σ (-1)ⁿ x²ⁿ / (n! (2n+1)): eight terms reach float precision for |x| < 0.75
    static readonly float[] ErfSeries = Enumerable.Range(0, 8)
        .Select(n => (float)(2.0 / Math.Sqrt(Math.PI) * (n % 2 == 0 ? 1 : -1) / (Factorial(n) * (2 * n + 1)))).ToArray();
    static double Factorial(int n) => n <= 1 ? 1.0 : n * Factorial(n - 1);

    // erfc(a) ≈ t·exp(-a² + P(t)), t = 1/(1 + a/2), fractional error < 1.2e-7 for all a ≥ 0
    // (the Chebyshev fit of Numerical Recipes §6.2); coefficients of P from t⁰ up
    static readonly float[] ErfcFit =
        [-1.26551223f, 1.00002368f, 0.37409196f, 0.09678418f, -0.18628806f, 0.27886807f, -1.13520398f, 1.48851587f, -0.82215223f, 0.17087277f];

    /// te = erfc(|u|) for one chunk (at most Chunk long), through the fit above with exp from TensorPrimitives.
    static void ErfcOfAbs(ReadOnlySpan<float> u, Span<float> te)
    {
        Span<float> t = stackalloc float[Chunk];
        int w = Vector<float>.Count, i = 0;
        var one = Vector<float>.One;
        var half = new Vector<float>(0.5f);
        for (; i + w <= u.Length; i += w)
        {
            var a = Vector.Abs(new Vector<float>(u.Slice(i, w)));
            var tv = one / (one + half * a);
            var p = new Vector<float>(ErfcFit[9]);
            for (int c = 8; c >= 0; c--) p = p * tv + new Vector<float>(ErfcFit[c]);
            tv.CopyTo(t.Slice(i, w));
            (p - a * a).CopyTo(te.Slice(i, w));
        }
        for (; i < u.Length; i++)
        {
            float a = MathF.Abs(u[i]), tv = 1f / (1f + 0.5f * a), p = ErfcFit[9];
            for (int c = 8; c >= 0; c--) p = p * tv + ErfcFit[c];
            t[i] = tv;
            te[i] = p - a * a;
        }
        var ts = t[..u.Length];
        TP.Exp(te, te);
        TP.Multiply(te, ts, te);
    }

    /// u · erf(u)/u's series, valid for |u| < 0.75.
    static float Series(float u)
    {
        float u2 = u * u, q = ErfSeries[7];
        for (int c = 6; c >= 0; c--) q = q * u2 + ErfSeries[c];
        return u * q;
    }

    static Vector<float> Series(Vector<float> u)
    {
        var u2 = u * u;
        var q = new Vector<float>(ErfSeries[7]);
        for (int c = 6; c >= 0; c--) q = q * u2 + new Vector<float>(ErfSeries[c]);
        return u * q;
    }

    /// Float erf to about 1e-7 relative: the series near 0, ±(1 − erfc(|x|)) elsewhere.
    static void Erf(ReadOnlySpan<float> x, Span<float> y)
    {
        Span<float> te = stackalloc float[Chunk];
        int w = Vector<float>.Count;
        var small = new Vector<float>(0.75f);
        for (int s = 0; s < x.Length; s += Chunk)
        {
            int len = Math.Min(Chunk, x.Length - s);
            var xs = x.Slice(s, len);
            var ys = y.Slice(s, len);
            ErfcOfAbs(xs, te[..len]);
            int i = 0;
            for (; i + w <= len; i += w)
            {
                var xv = new Vector<float>(xs.Slice(i, w));
                var tail = Vector<float>.One - new Vector<float>(te.Slice(i, w));
                tail = Vector.ConditionalSelect(Vector.LessThan(xv, Vector<float>.Zero), -tail, tail);
                Vector.ConditionalSelect(Vector.LessThan(Vector.Abs(xv), small), Series(xv), tail).CopyTo(ys.Slice(i, w));
            }
            for (; i < len; i++)
            {
                float xv = xs[i];
                ys[i] = MathF.Abs(xv) < 0.75f ? Series(xv) : xv < 0f ? te[i] - 1f : 1f - te[i];
            }
        }
    }

    // 0.5 x (1 + erf(u)), u = x/√2, with 1 + erf(u) = erfc(|u|) for negative u so the left tail keeps its relative accuracy
    static void GeluErf(ReadOnlySpan<float> x, Span<float> y)
    {
        Span<float> u = stackalloc float[Chunk];
        Span<float> te = stackalloc float[Chunk];
        int w = Vector<float>.Count;
        var small = new Vector<float>(0.75f);
        var two = new Vector<float>(2f);
        for (int s = 0; s < x.Length; s += Chunk)
        {
            int len = Math.Min(Chunk, x.Length - s);
            var xs = x.Slice(s, len);
            var us = u[..len];
            TP.Multiply(xs, 0.70710678118654752f, us);
            ErfcOfAbs(us, te[..len]);
            int i = 0;
            for (; i + w <= len; i += w)
            {
                var uv = new Vector<float>(us.Slice(i, w));
                var tv = new Vector<float>(te.Slice(i, w));
                var onePlusErf = Vector.ConditionalSelect(Vector.LessThan(uv, Vector<float>.Zero), tv, two - tv);
                onePlusErf = Vector.ConditionalSelect(Vector.LessThan(Vector.Abs(uv), small), Vector<float>.One + Series(uv), onePlusErf);
                onePlusErf.CopyTo(us.Slice(i, w));
            }
            for (; i < len; i++)
            {
                float uv = us[i];
                us[i] = MathF.Abs(uv) < 0.75f ? 1f + Series(uv) : uv < 0f ? te[i] : 2f - te[i];
            }
            TP.Multiply(us, xs, us);
            TP.Multiply(us, 0.5f, y.Slice(s, len));
        }
    }

    // 0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³)))
    static void GeluTanh(ReadOnlySpan<float> x, Span<float> y)
    {
        Span<float> t = stackalloc float[Chunk];
        for (int s = 0; s < x.Length; s += Chunk)
        {
            int len = Math.Min(Chunk, x.Length - s);
            var xs = x.Slice(s, len);
            var ts = t[..len];
            TP.Multiply(xs, xs, ts);
            TP.Multiply(ts, 0.044715f, ts);
            TP.Add(ts, 1f, ts);
            TP.Multiply(ts, xs, ts);
            TP.Multiply(ts, 0.7978845608028654f, ts);
            TP.Tanh(ts, ts);
            TP.Add(ts, 1f, ts);
            TP.Multiply(ts, xs, ts);
            TP.Multiply(ts, 0.5f, y.Slice(s, len));
        }
    }

    // x / (1 + e^-x), computed as x · sigmoid(x)
    static void Silu(ReadOnlySpan<float> x, Span<float> y)
    {
        Span<float> t = stackalloc float[Chunk];
        for (int s = 0; s < x.Length; s += Chunk)
        {
            int len = Math.Min(Chunk, x.Length - s);
            TP.Sigmoid(x.Slice(s, len), t[..len]);
            TP.Multiply(t[..len], x.Slice(s, len), y.Slice(s, len));
        }
    }

    // x > 0 ? x : 0 (NaN gives 0, as in the reference)
    static void Relu(ReadOnlySpan<float> x, Span<float> y)
    {
        var xv = MemoryMarshal.Cast<float, Vector<float>>(x);
        var yv = MemoryMarshal.Cast<float, Vector<float>>(y);
        for (int i = 0; i < xv.Length; i++)
            yv[i] = Vector.ConditionalSelect(Vector.GreaterThan(xv[i], Vector<float>.Zero), xv[i], Vector<float>.Zero);
        for (int i = xv.Length * Vector<float>.Count; i < x.Length; i++) y[i] = x[i] > 0f ? x[i] : 0f;
    }

    static void Sign(ReadOnlySpan<float> x, Span<float> y)
    {
        var xv = MemoryMarshal.Cast<float, Vector<float>>(x);
        var yv = MemoryMarshal.Cast<float, Vector<float>>(y);
        var one = Vector<float>.One;
        for (int i = 0; i < xv.Length; i++)
            yv[i] = Vector.ConditionalSelect(Vector.GreaterThan(xv[i], Vector<float>.Zero), one, Vector<float>.Zero)
                  - Vector.ConditionalSelect(Vector.LessThan(xv[i], Vector<float>.Zero), one, Vector<float>.Zero);
        for (int i = xv.Length * Vector<float>.Count; i < x.Length; i++) y[i] = x[i] > 0f ? 1f : x[i] < 0f ? -1f : 0f;
    }

    /// The float32 value of one binary op, as Reference.binary defines it.
    public static float Scalar(int tag, float a, float b) => tag switch
    {
        BinaryOp.Tags.Add => a + b,
        BinaryOp.Tags.Sub => a - b,
        BinaryOp.Tags.Mul => a * b,
        BinaryOp.Tags.Div => a / b,
        BinaryOp.Tags.Pow => MathF.Pow(a, b),
        BinaryOp.Tags.Maximum => MathF.Max(a, b),
        BinaryOp.Tags.Minimum => MathF.Min(a, b),
        BinaryOp.Tags.Greater => a > b ? 1f : 0f,
        BinaryOp.Tags.Equal => a == b ? 1f : 0f,
        _ => throw new NotSupportedException($"cpu backend: binary op tag {tag} is not implemented"),
    };

    public static void Binary(BinaryOp op, int[] aShape, float[] a, int[] bShape, float[] b, int[] outShape, float[] y, int threads)
    {
        int tag = op.Tag;
        var layout = new BroadcastLayout(outShape, aShape, bShape);
        bool ac = layout.InnerContiguous[0], bc = layout.InnerContiguous[1];
        long cost = tag == BinaryOp.Tags.Pow ? 8 : 1;
        layout.ForEachRow(threads, cost, (row, start, len) =>
        {
            Span<int> off = stackalloc int[2];
            layout.Offsets(row, off);
            var dst = y.AsSpan(row * layout.Inner + start, len);
            if (ac && bc) Both(tag, a.AsSpan(off[0] + start, len), b.AsSpan(off[1] + start, len), dst);
            else if (bc) ScalarLeft(tag, a[off[0]], b.AsSpan(off[1] + start, len), dst);
            else if (ac) ScalarRight(tag, a.AsSpan(off[0] + start, len), b[off[1]], dst);
            else dst.Fill(Scalar(tag, a[off[0]], b[off[1]]));
        });
    }

    static void Both(int tag, ReadOnlySpan<float> a, ReadOnlySpan<float> b, Span<float> y)
    {
        switch (tag)
        {
            case BinaryOp.Tags.Add: TP.Add(a, b, y); break;
            case BinaryOp.Tags.Sub: TP.Subtract(a, b, y); break;
            case BinaryOp.Tags.Mul: TP.Multiply(a, b, y); break;
            case BinaryOp.Tags.Div: TP.Divide(a, b, y); break;
            case BinaryOp.Tags.Pow: TP.Pow(a, b, y); break;
            case BinaryOp.Tags.Maximum: TP.Max(a, b, y); break;
            case BinaryOp.Tags.Minimum: TP.Min(a, b, y); break;
            case BinaryOp.Tags.Greater: Compare(a, b, y, greater: true); break;
            case BinaryOp.Tags.Equal: Compare(a, b, y, greater: false); break;
            default: throw new NotSupportedException($"cpu backend: binary op tag {tag} is not implemented");
        }
    }

    static void ScalarLeft(int tag, float a, ReadOnlySpan<float> b, Span<float> y)
    {
        switch (tag)
        {
            case BinaryOp.Tags.Add: TP.Add(b, a, y); break;
            case BinaryOp.Tags.Sub: TP.Subtract(a, b, y); break;
            case BinaryOp.Tags.Mul: TP.Multiply(b, a, y); break;
            case BinaryOp.Tags.Div: TP.Divide(a, b, y); break;
            case BinaryOp.Tags.Pow: TP.Pow(a, b, y); break;
            case BinaryOp.Tags.Maximum: TP.Max(b, a, y); break;
            case BinaryOp.Tags.Minimum: TP.Min(b, a, y); break;
            case BinaryOp.Tags.Greater: CompareScalar(b, a, y, Comparison.Less); break; // a > b[i] ⇔ b[i] < a
            case BinaryOp.Tags.Equal: CompareScalar(b, a, y, Comparison.Equal); break;
            default: for (int i = 0; i < b.Length; i++) y[i] = Scalar(tag, a, b[i]); break;
        }
    }

    static void ScalarRight(int tag, ReadOnlySpan<float> a, float b, Span<float> y)
    {
        switch (tag)
        {
            case BinaryOp.Tags.Add: TP.Add(a, b, y); break;
            case BinaryOp.Tags.Sub: TP.Subtract(a, b, y); break;
            case BinaryOp.Tags.Mul: TP.Multiply(a, b, y); break;
            case BinaryOp.Tags.Div: TP.Divide(a, b, y); break;
            case BinaryOp.Tags.Pow: TP.Pow(a, b, y); break;
            case BinaryOp.Tags.Maximum: TP.Max(a, b, y); break;
            case BinaryOp.Tags.Minimum: TP.Min(a, b, y); break;
            case BinaryOp.Tags.Greater: CompareScalar(a, b, y, Comparison.Greater); break;
            case BinaryOp.Tags.Equal: CompareScalar(a, b, y, Comparison.Equal); break;
            default: for (int i = 0; i < a.Length; i++) y[i] = Scalar(tag, a[i], b); break;
        }
    }

    enum Comparison { Greater, Less, Equal }

    // y[i] = (x[i] op c) ? 1 : 0, vectorised (comparisons against a scalar: masks, thresholds of the rules)
    static void CompareScalar(ReadOnlySpan<float> x, float c, Span<float> y, Comparison op)
    {
        var xv = MemoryMarshal.Cast<float, Vector<float>>(x);
        var yv = MemoryMarshal.Cast<float, Vector<float>>(y);
        var cv = new Vector<float>(c);
        var one = Vector<float>.One;
        for (int i = 0; i < xv.Length; i++)
        {
            var mask = op switch
            {
                Comparison.Greater => Vector.GreaterThan(xv[i], cv),
                Comparison.Less => Vector.LessThan(xv[i], cv),
                _ => Vector.Equals(xv[i], cv),
            };
            yv[i] = Vector.ConditionalSelect(mask, one, Vector<float>.Zero);
        }
        for (int i = xv.Length * Vector<float>.Count; i < x.Length; i++)
            y[i] = (op switch { Comparison.Greater => x[i] > c, Comparison.Less => x[i] < c, _ => x[i] == c }) ? 1f : 0f;
    }

    static void Compare(ReadOnlySpan<float> a, ReadOnlySpan<float> b, Span<float> y, bool greater)
    {
        var av = MemoryMarshal.Cast<float, Vector<float>>(a);
        var bv = MemoryMarshal.Cast<float, Vector<float>>(b);
        var yv = MemoryMarshal.Cast<float, Vector<float>>(y);
        var one = Vector<float>.One;
        for (int i = 0; i < av.Length; i++)
        {
            var mask = greater ? Vector.GreaterThan(av[i], bv[i]) : Vector.Equals(av[i], bv[i]);
            yv[i] = Vector.ConditionalSelect(mask, one, Vector<float>.Zero);
        }
        for (int i = av.Length * Vector<float>.Count; i < a.Length; i++)
            y[i] = (greater ? a[i] > b[i] : a[i] == b[i]) ? 1f : 0f;
    }

    /// y = cond ≠ 0 ? whenTrue : whenFalse, all three broadcast to the output.
    public static void Where(int[] cShape, float[] c, int[] tShape, float[] t, int[] fShape, float[] f, int[] outShape, float[] y, int threads)
    {
        var layout = new BroadcastLayout(outShape, cShape, tShape, fShape);
        bool cc = layout.InnerContiguous[0], tc = layout.InnerContiguous[1], fc = layout.InnerContiguous[2];
        layout.ForEachRow(threads, 1, (row, start, len) =>
        {
            Span<int> off = stackalloc int[3];
            layout.Offsets(row, off);
            var dst = y.AsSpan(row * layout.Inner + start, len);
            if (!cc)
            {
                // one condition for the whole run: a copy or a fill
                bool pick = c[off[0]] != 0f;
                int o = pick ? off[1] : off[2];
                float[] src = pick ? t : f;
                if (pick ? tc : fc) src.AsSpan(o + start, len).CopyTo(dst); else dst.Fill(src[o]);
                return;
            }
            var cs = c.AsSpan(off[0] + start, len);
            var ts = tc ? t.AsSpan(off[1] + start, len) : default;
            var fs = fc ? f.AsSpan(off[2] + start, len) : default;
            var tb = new Vector<float>(tc ? 0f : t[off[1]]);
            var fb = new Vector<float>(fc ? 0f : f[off[2]]);
            int w = Vector<float>.Count, i = 0;
            for (; i + w <= len; i += w)
            {
                var isZero = Vector.Equals(new Vector<float>(cs.Slice(i, w)), Vector<float>.Zero);
                var tv = tc ? new Vector<float>(ts.Slice(i, w)) : tb;
                var fv = fc ? new Vector<float>(fs.Slice(i, w)) : fb;
                Vector.ConditionalSelect(isZero, fv, tv).CopyTo(dst.Slice(i, w));
            }
            for (; i < len; i++) dst[i] = cs[i] != 0f ? (tc ? ts[i] : tb[0]) : (fc ? fs[i] : fb[0]);
        });
    }
}
