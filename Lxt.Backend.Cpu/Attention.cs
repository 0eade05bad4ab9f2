// Fused attention on the CPU: blocks of query rows against the keys they keep, each block's scores only in a scratch
// row block, never the whole [heads, T, keys] matrix.
using System.Numerics.Tensors;
using Lxt.Graph;

namespace Lxt.Backend.Cpu;

internal static class Attention
{
    /// <summary>Query rows per block: a block's scores (rows × kept keys) stay in a thread's cache-sized scratch.</summary>
    const int Rows = 64;

    /// <summary>Shapes of an attention op's operands: Q [heads, T, d], K [kvHeads, keys, d], V [kvHeads, keys, dv].</summary>
    readonly record struct Dims(int Heads, int T, int D, int KvHeads, int Keys, int Dv)
    {
        public int Group => Heads / KvHeads;
        public static Dims Of(Op.Attention a)
        {
            var q = a.operands[0].Shape;
            var k = a.operands[1].Shape;
            int dv = a.operands.Length > 2 ? a.operands[2].Shape[2] : 0;
            return new Dims(q[0], q[1], q[2], k[0], k[1], dv);
        }
    }

    /// <summary>Computes the attention op's part (<see cref="AttentionPart"/>) into <paramref name="y"/>.</summary>
    public static void Run(Op.Attention a, float[][] x, float[] y, int threads)
    {
        var dims = Dims.Of(a);
        if (a.part.IsKeyValueGradient) KeyValueGradient(dims, a.mask, (float)a.scale, x, y, threads);
        else RowBlocks(a.part, dims, a.mask, (float)a.scale, x, y, threads);
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
    static void Scores(in Dims m, AttentionMask mask, float scale, float[] q, float[] k, int h, int r0, int r1, int c0, int c1, float[] s)
    {
        int rows = r1 - r0, cols = c1 - c0, kh = h / m.Group;
        Kernels.Gemm(false, true, rows, cols, m.D, q.AsSpan((h * m.T + r0) * m.D, rows * m.D), m.D,
            k.AsSpan((kh * m.Keys + c0) * m.D, cols * m.D), m.D, s.AsSpan(0, rows * cols), cols, maxThreads: 1);
        for (int i = 0; i < rows; i++)
        {
            var row = s.AsSpan(i * cols, cols);
            TensorPrimitives.Multiply(row, scale, row);
            var (f, e) = mask.Kept(r0 + i, m.Keys);
            for (int j = 0; j < cols; j++)
                if (c0 + j < f || c0 + j >= e) row[j] = float.NegativeInfinity;
        }
    }

    /// <summary>For one block: <paramref name="s"/> ← P = exp(S − L) and <paramref name="dp"/> ← scale · P ⊙ (dO·Vᵀ − Δ),
    /// the gradient of the scores before their scale.</summary>
    static void Backward(in Dims m, AttentionMask mask, float scale, float[][] x, int h, int r0, int r1, int c0, int c1, float[] s, float[] dp)
    {
        int rows = r1 - r0, cols = c1 - c0, kh = h / m.Group;
        float[] v = x[2], dO = x[3], lse = x[4], delta = x[5];
        Scores(m, mask, scale, x[0], x[1], h, r0, r1, c0, c1, s);
        Kernels.Gemm(false, true, rows, cols, m.Dv, dO.AsSpan((h * m.T + r0) * m.Dv, rows * m.Dv), m.Dv,
            v.AsSpan((kh * m.Keys + c0) * m.Dv, cols * m.Dv), m.Dv, dp.AsSpan(0, rows * cols), cols, maxThreads: 1);
        for (int i = 0; i < rows; i++)
        {
            var sr = s.AsSpan(i * cols, cols);
            var dr = dp.AsSpan(i * cols, cols);
            TensorPrimitives.Subtract(sr, lse[h * m.T + r0 + i], sr);
            TensorPrimitives.Exp(sr, sr);
            TensorPrimitives.Subtract(dr, delta[h * m.T + r0 + i], dr);
            TensorPrimitives.Multiply(dr, sr, dr);
            TensorPrimitives.Multiply(dr, scale, dr);
        }
    }

    /// <summary>The output, the log-sum-exp or the queries' gradient: one block of query rows of one head at a time.</summary>
    static void RowBlocks(AttentionPart part, Dims m, AttentionMask mask, float scale, float[][] x, float[] y, int threads)
    {
        int blocks = (m.T + Rows - 1) / Rows;
        Kernels.For(m.Heads * blocks, (long)Rows * m.Keys * (m.D + m.Dv + 1), threads, (from, to) =>
        {
            var s = new float[Rows * m.Keys];
            var dp = part.IsQueryGradient ? new float[Rows * m.Keys] : null;
            for (int w = from; w < to; w++)
            {
                int h = w / blocks, r0 = w % blocks * Rows, r1 = Math.Min(m.T, r0 + Rows), rows = r1 - r0, kh = h / m.Group;
                var (c0, c1) = KeptBy(mask, r0, r1, m.Keys);
                int cols = c1 - c0;
                if (part.IsQueryGradient)
                {
                    // dQ = scale · (P ⊙ (dO·Vᵀ − Δ))·K
                    Backward(m, mask, scale, x, h, r0, r1, c0, c1, s, dp!);
                    Kernels.Gemm(false, false, rows, m.D, cols, dp.AsSpan(0, rows * cols), cols,
                        x[1].AsSpan((kh * m.Keys + c0) * m.D, cols * m.D), m.D, y.AsSpan((h * m.T + r0) * m.D, rows * m.D), m.D, maxThreads: 1);
                    continue;
                }
                Scores(m, mask, scale, x[0], x[1], h, r0, r1, c0, c1, s);
                for (int i = 0; i < rows; i++)
                {
                    var sr = s.AsSpan(i * cols, cols);
                    float max = TensorPrimitives.Max(sr);
                    TensorPrimitives.Subtract(sr, max, sr);
                    TensorPrimitives.Exp(sr, sr);
                    float sum = TensorPrimitives.Sum(sr);
                    if (part.IsLogSumExp) y[h * m.T + r0 + i] = max + MathF.Log(sum);
                    else TensorPrimitives.Multiply(sr, 1f / sum, sr);
                }
                if (part.IsOutput)
                    Kernels.Gemm(false, false, rows, m.Dv, cols, s.AsSpan(0, rows * cols), cols,
                        x[2].AsSpan((kh * m.Keys + c0) * m.Dv, cols * m.Dv), m.Dv, y.AsSpan((h * m.T + r0) * m.Dv, rows * m.Dv), m.Dv, maxThreads: 1);
            }
        });
    }

    /// <summary>The keys' and values' gradients [kvHeads, keys, d + dv]: one block of keys of one key/value head at a
    /// time, summed over the query rows of every head of its group that keep a key of the block.</summary>
    static void KeyValueGradient(Dims m, AttentionMask mask, float scale, float[][] x, float[] y, int threads)
    {
        float[] q = x[0], dO = x[3];
        int keyBlocks = (m.Keys + Rows - 1) / Rows, rowBlocks = (m.T + Rows - 1) / Rows, width = m.D + m.Dv;
        // every key's row of y is written whole by its block
        Kernels.For(m.KvHeads * keyBlocks, (long)Rows * m.T * m.Group * (m.D + m.Dv) * 2, threads, (from, to) =>
        {
            var s = new float[Rows * Rows];
            var dp = new float[Rows * Rows];
            var dk = new float[Rows * m.D];
            var dv = new float[Rows * m.Dv];
            for (int w = from; w < to; w++)
            {
                int kh = w / keyBlocks, c0 = w % keyBlocks * Rows, c1 = Math.Min(m.Keys, c0 + Rows), cols = c1 - c0;
                Array.Clear(dk);
                Array.Clear(dv);
                for (int h = kh * m.Group; h < (kh + 1) * m.Group; h++)
                    for (int b = 0; b < rowBlocks; b++)
                    {
                        int r0 = b * Rows, r1 = Math.Min(m.T, r0 + Rows), rows = r1 - r0;
                        var (f, e) = KeptBy(mask, r0, r1, m.Keys);
                        if (e <= c0 || f >= c1) continue;
                        Backward(m, mask, scale, x, h, r0, r1, c0, c1, s, dp);
                        // dV += Pᵀ·dO, dK += scale · dSᵀ·Q
                        Kernels.Gemm(true, false, cols, m.Dv, rows, s.AsSpan(0, rows * cols), cols,
                            dO.AsSpan((h * m.T + r0) * m.Dv, rows * m.Dv), m.Dv, dv, m.Dv, accumulate: true, maxThreads: 1);
                        Kernels.Gemm(true, false, cols, m.D, rows, dp.AsSpan(0, rows * cols), cols,
                            q.AsSpan((h * m.T + r0) * m.D, rows * m.D), m.D, dk, m.D, accumulate: true, maxThreads: 1);
                    }
                for (int j = 0; j < cols; j++)
                {
                    dk.AsSpan(j * m.D, m.D).CopyTo(y.AsSpan((kh * m.Keys + c0 + j) * width, m.D));
                    dv.AsSpan(j * m.Dv, m.Dv).CopyTo(y.AsSpan((kh * m.Keys + c0 + j) * width + m.D, m.Dv));
                }
            }
        });
    }
}
