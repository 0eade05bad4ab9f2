// Fused attention on the CPU: blocks of query rows against the keys they keep, each block's scores only in a scratch
// row block, never the whole [heads, T, keys] matrix.
using System.Numerics.Tensors;
using Lxt.Graph;

namespace Lxt.Backend.Cpu;

internal static class Attention
{
    /// <summary>Query rows per block: a block's scores (rows × kept keys) stay in a thread's cache-sized scratch.</summary>
    const int Rows = 64;

    /// <summary>Keys per block of the gradient, against blocks of <see cref="Rows"/> query rows.</summary>
    const int KeyBlock = 128;

    /// <summary>Computes the attention op's part (<see cref="AttentionPart"/>) into <paramref name="y"/>.</summary>
    public static void Run(Op.Attention a, float[][] x, float[] y, int threads)
    {
        var dims = AttentionDims.Of(a.operands);
        if (a.part.IsOutput) Output(dims, a.mask, (float)a.scale, x, y, threads);
        else Gradient(dims, a.mask, (float)a.scale, x, y, threads, keysToo: a.part.IsGradient);
    }

    /// <summary>The keys rows r0 … r1 − 1 keep, together: c0 … c1 − 1.</summary>
    static (int C0, int C1) KeptBy(AttentionMask mask, int r0, int r1, int keys)
    {
        int first = keys, stop = 0;
        for (int i = r0; i < r1; i++)
        {
            var (f, s) = mask.Kept(i, keys);
            first = Math.Min(first, f);
            stop = Math.Max(stop, s);
        }
        return (first, stop);
    }

    /// <summary>S = scale · Q[rows]·K[c0..c1]ᵀ for one block, −∞ where the mask drops a key (S is rows × (c1 − c0)).</summary>
    static void Scores(in AttentionDims m, AttentionMask mask, float scale, float[] q, float[] k, int h, int r0, int r1, int c0, int c1, float[] s)
    {
        int rows = r1 - r0, cols = c1 - c0, kh = h / m.Group;
        Kernels.Gemm(false, true, rows, cols, m.D, q.AsSpan((h * m.T + r0) * m.D, rows * m.D), m.D,
            k.AsSpan((kh * m.Keys + c0) * m.D, cols * m.D), m.D, s.AsSpan(0, rows * cols), cols, maxThreads: 1);
        for (int i = 0; i < rows; i++)
        {
            var row = s.AsSpan(i * cols, cols);
            TensorPrimitives.Multiply(row, scale, row);
            // the row keeps keys f … e − 1: −∞ before and after, each a run
            var (f, e) = mask.Kept(r0 + i, m.Keys);
            row[..Math.Clamp(f - c0, 0, cols)].Fill(float.NegativeInfinity);
            row[Math.Clamp(e - c0, 0, cols)..].Fill(float.NegativeInfinity);
        }
    }

    /// <summary>For one block: <paramref name="s"/> ← P = exp(S − L) and, given <paramref name="dp"/>, dp ← scale · P ⊙
    /// (dO·Vᵀ − Δ), the gradient of the scores before their scale (dO and L are the rows of G and Y, x[3] and x[4]).</summary>
    static void Backward(in AttentionDims m, AttentionMask mask, float scale, float[][] x, int h, int r0, int r1, int c0, int c1, float[] s, float[]? dp)
    {
        int rows = r1 - r0, cols = c1 - c0, kh = h / m.Group;
        float[] v = x[2], g = x[3], y = x[4];
        Scores(m, mask, scale, x[0], x[1], h, r0, r1, c0, c1, s);
        if (dp is not null)
            Kernels.Gemm(false, true, rows, cols, m.Dv, g.AsSpan((h * m.T + r0) * m.Row, rows * m.Row), m.Row,
                v.AsSpan((kh * m.Keys + c0) * m.Dv, cols * m.Dv), m.Dv, dp.AsSpan(0, rows * cols), cols, maxThreads: 1);
        for (int i = 0; i < rows; i++)
        {
            int row = h * m.T + r0 + i;
            var sr = s.AsSpan(i * cols, cols);
            TensorPrimitives.Subtract(sr, y[row * m.Row + m.Dv], sr);
            TensorPrimitives.Exp(sr, sr);
            if (dp is null) continue;
            var dr = dp.AsSpan(i * cols, cols);
            TensorPrimitives.Subtract(dr, x[5][row], dr);
            TensorPrimitives.Multiply(dr, sr, dr);
            TensorPrimitives.Multiply(dr, scale, dr);
        }
    }

    /// <summary>The output Y: O and L of one block of query rows of one head at a time.</summary>
    static void Output(AttentionDims m, AttentionMask mask, float scale, float[][] x, float[] y, int threads)
    {
        int blocks = (m.T + Rows - 1) / Rows;
        Kernels.For(m.Heads * blocks, (long)Rows * m.Keys * (m.D + m.Dv + 1), threads, (from, to) =>
        {
            var s = new float[Rows * m.Keys];
            for (int w = from; w < to; w++)
            {
                int h = w / blocks, r0 = w % blocks * Rows, r1 = Math.Min(m.T, r0 + Rows), rows = r1 - r0, kh = h / m.Group;
                var (c0, c1) = KeptBy(mask, r0, r1, m.Keys);
                int cols = c1 - c0;
                Scores(m, mask, scale, x[0], x[1], h, r0, r1, c0, c1, s);
                for (int i = 0; i < rows; i++)
                {
                    var sr = s.AsSpan(i * cols, cols);
                    float max = TensorPrimitives.Max(sr);
                    TensorPrimitives.Subtract(sr, max, sr);
                    TensorPrimitives.Exp(sr, sr);
                    float sum = TensorPrimitives.Sum(sr);
                    y[(h * m.T + r0 + i) * m.Row + m.Dv] = max + MathF.Log(sum);
                    TensorPrimitives.Multiply(sr, 1f / sum, sr);
                }
                Kernels.Gemm(false, false, rows, m.Dv, cols, s.AsSpan(0, rows * cols), cols,
                    x[2].AsSpan((kh * m.Keys + c0) * m.Dv, cols * m.Dv), m.Dv, y.AsSpan((h * m.T + r0) * m.Row, rows * m.Row - 1), m.Row, maxThreads: 1);
            }
        });
    }

    /// <summary>The gradients of Q, K and V, one after the other in <paramref name="y"/> (or, unless
    /// <paramref name="keysToo"/>, that of V alone): one query head at a time, its keys in blocks, each against the
    /// blocks of query rows that keep one of them. A head's dQ is its own; its share of dK and dV goes straight into y
    /// for the first head of a group and into a scratch for the others, added to y after in head order (so every run
    /// sums alike).</summary>
    static void Gradient(AttentionDims m, AttentionMask mask, float scale, float[][] x, float[] y, int threads, bool keysToo)
    {
        float[] q = x[0], k = x[1], grad = x[3];
        int nq = keysToo ? m.Heads * m.T * m.D : 0, keyBlocks = (m.Keys + KeyBlock - 1) / KeyBlock, rowBlocks = (m.T + Rows - 1) / Rows;
        int kSize = keysToo ? m.Keys * m.D : 0, vSize = m.Keys * m.Dv, vStart = nq + m.KvHeads * kSize;
        var partial = m.Group > 1 ? new float[(m.Heads - m.KvHeads) * (kSize + vSize)] : [];
        y.AsSpan(0, nq).Clear();
        Kernels.For(m.Heads, (long)m.T * m.Keys * (keysToo ? 2 * m.D + 3 * m.Dv : m.D + m.Dv), threads, (from, to) =>
        {
            var s = new float[Rows * KeyBlock];
            var dp = keysToo ? new float[Rows * KeyBlock] : null;
            var dk = keysToo ? new float[KeyBlock * m.D] : [];
            var dv = new float[KeyBlock * m.Dv];
            for (int h = from; h < to; h++)
            {
                int kh = h / m.Group, g = h % m.Group, other = (kh * (m.Group - 1) + g - 1) * (kSize + vSize);
                // where this head's dK and dV go: [keys, d] and [keys, dv]
                var (kOut, kAt, vOut, vAt) = g == 0 ? (y, nq + kh * kSize, y, vStart + kh * vSize) : (partial, other, partial, other + kSize);
                for (int kb = 0; kb < keyBlocks; kb++)
                {
                    int c0 = kb * KeyBlock, c1 = Math.Min(m.Keys, c0 + KeyBlock), cols = c1 - c0;
                    Array.Clear(dk);
                    Array.Clear(dv);
                    for (int b = 0; b < rowBlocks; b++)
                    {
                        int r0 = b * Rows, r1 = Math.Min(m.T, r0 + Rows), rows = r1 - r0;
                        var (f, e) = KeptBy(mask, r0, r1, m.Keys);
                        if (e <= c0 || f >= c1) continue;
                        Backward(m, mask, scale, x, h, r0, r1, c0, c1, s, dp);
                        // dV += Pᵀ·dO, dK += dSᵀ·Q, dQ += dS·K (dS carries the scale)
                        Kernels.Gemm(true, false, cols, m.Dv, rows, s.AsSpan(0, rows * cols), cols,
                            grad.AsSpan((h * m.T + r0) * m.Row, rows * m.Row), m.Row, dv, m.Dv, accumulate: true, maxThreads: 1);
                        if (dp is null) continue;
                        Kernels.Gemm(true, false, cols, m.D, rows, dp.AsSpan(0, rows * cols), cols,
                            q.AsSpan((h * m.T + r0) * m.D, rows * m.D), m.D, dk, m.D, accumulate: true, maxThreads: 1);
                        Kernels.Gemm(false, false, rows, m.D, cols, dp.AsSpan(0, rows * cols), cols,
                            k.AsSpan((kh * m.Keys + c0) * m.D, cols * m.D), m.D, y.AsSpan((h * m.T + r0) * m.D, rows * m.D), m.D,
                            accumulate: true, maxThreads: 1);
                    }
                    if (keysToo) dk.AsSpan(0, cols * m.D).CopyTo(kOut.AsSpan(kAt + c0 * m.D));
                    dv.AsSpan(0, cols * m.Dv).CopyTo(vOut.AsSpan(vAt + c0 * m.Dv));
                }
            }
        });
        if (m.Group == 1) return;
        Kernels.For(m.KvHeads, (long)m.Group * (kSize + vSize), threads, (from, to) =>
        {
            for (int kh = from; kh < to; kh++)
                for (int g = 1; g < m.Group; g++)
                {
                    int other = (kh * (m.Group - 1) + g - 1) * (kSize + vSize);
                    var dkSum = y.AsSpan(nq + kh * kSize, kSize);
                    var dvSum = y.AsSpan(vStart + kh * vSize, vSize);
                    TensorPrimitives.Add(dkSum, partial.AsSpan(other, kSize), dkSum);
                    TensorPrimitives.Add(dvSum, partial.AsSpan(other + kSize, vSize), dvSum);
                }
        });
    }
}
