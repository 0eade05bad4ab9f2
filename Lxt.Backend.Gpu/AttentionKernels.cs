// Fused attention (Op.Attention) on ILGPU: one warp per query row (the output and its log-sum-exp, the queries'
// gradient) or per key (the keys' and values' gradients); the gradient part launches both. Probabilities are recomputed from Q, K and each row's log-sum-exp where they
// are needed and never written; a warp keeps one chunk of them, one per lane, in shared memory.
using ILGPU;
using ILGPU.Runtime;
using Lxt.Graph;
using static Lxt.Backend.Gpu.Kernels;

namespace Lxt.Backend.Gpu;

/// <summary>An attention op's sizes and mask for its kernels: Q [Heads, T, D], K [KvHeads, Keys, D], V [KvHeads, Keys,
/// Dv]. Query row i keeps key j when j ≤ Offset + i (if Causal ≠ 0) and Offset + i − j &lt; Window (if Window &gt; 0).
/// Part: 0 the output Y (O and L, rows of Dv + 1), 1 the gradients of Q, K and V, 2 that of V alone.</summary>
public struct AttentionShape
{
    public int Heads, T, D, KvHeads, Keys, Dv, Causal, Offset, Window, Part;
    public float Scale;

    /// <summary>Bit i set: operand i (Q, K, V) is stored in bfloat16 and passed as its pairs' words
    /// (<see cref="GpuBuffer.NarrowPairs"/>); only <see cref="TensorCoreAttention"/> reads such operands.</summary>
    public int Narrow;

    /// <summary>A row of Y and of its gradient G: O (or dO), then L.</summary>
    public readonly int Row => Dv + 1;

    public static AttentionShape Of(Op.Attention a)
    {
        var m = AttentionDims.Of(a.operands);
        return new AttentionShape
        {
            Heads = m.Heads, T = m.T, D = m.D, KvHeads = m.KvHeads, Keys = m.Keys, Dv = m.Dv,
            Causal = a.mask.Causal ? 1 : 0, Offset = a.mask.Offset, Window = a.mask.Window is { } w ? w.Value : 0,
            Part = a.part.IsOutput ? 0 : a.part.IsGradient ? 1 : 2,
            Scale = (float)a.scale,
        };
    }
}

public static class AttentionKernels
{
    /// <summary>Most lanes a warp may have: the shared chunk holds one value per lane.</summary>
    public const int MaxLanes = 64;

    internal static void Kept(in AttentionShape s, int row, out int first, out int stop)
    {
        int at = s.Offset + row;
        first = s.Window > 0 ? Math.Max(0, at - s.Window + 1) : 0;
        stop = s.Causal != 0 ? Math.Min(s.Keys, at + 1) : s.Keys;
    }

    static float Dot(ArrayView<float> a, int ai, ArrayView<float> b, int bi, int n)
    {
        float acc = 0f;
        for (int c = 0; c < n; c++) acc += a[ai + c] * b[bi + c];
        return acc;
    }

    /// <summary>Part 0 (Y: O = P·V and L) or 1 (dQ = scale · (P ⊙ (dO·Vᵀ − Δ))·K) of one query row per group of one
    /// warp; grid = Heads·T. The row's L is computed online (each lane a running maximum and sum over its keys, then
    /// combined), or read off Y (<paramref name="yIn"/>) for part 1, whose dO is G's (<paramref name="g"/>) row.</summary>
    public static void QueryRows(ArrayView<float> q, ArrayView<float> k, ArrayView<float> v, ArrayView<float> g,
                                 ArrayView<float> yIn, ArrayView<float> delta, ArrayView<float> y, AttentionShape s)
    {
        var chunk = SharedMemory.Allocate<float>(MaxLanes);
        int row = Grid.IdxX, lane = Group.IdxX, lanes = Group.DimX;
        int h = row / s.T, kh = h / (s.Heads / s.KvHeads), yRow = row * s.Row;
        Kept(s, row % s.T, out int first, out int stop);
        int qi = row * s.D;
        bool gradient = s.Part == 1;
        float l;
        if (gradient) l = yIn[yRow + s.Dv];
        else
        {
            float m = float.NegativeInfinity, z = 0f;
            for (int j = first + lane; j < stop; j += lanes)
            {
                float sc = s.Scale * Dot(q, qi, k, (kh * s.Keys + j) * s.D, s.D);
                if (sc > m) { z = z * MathF.Exp(m - sc) + 1f; m = sc; }
                else z += MathF.Exp(sc - m);
            }
            float max = WarpMax(m);
            l = max + MathF.Log(WarpSum(z == 0f ? 0f : z * MathF.Exp(m - max)));
            if (lane == 0) y[yRow + s.Dv] = l;
        }
        int width = gradient ? s.D : s.Dv, at = gradient ? qi : yRow;
        var rows = gradient ? k : v;
        float dl = gradient ? delta[row] : 0f;
        for (int c = lane; c < width; c += lanes) y[at + c] = 0f;
        for (int start = first; start < stop; start += lanes)
        {
            int j = start + lane;
            float w = 0f;
            if (j < stop)
            {
                float p = MathF.Exp(s.Scale * Dot(q, qi, k, (kh * s.Keys + j) * s.D, s.D) - l);
                w = gradient ? s.Scale * p * (Dot(g, yRow, v, (kh * s.Keys + j) * s.Dv, s.Dv) - dl) : p;
            }
            chunk[lane] = w;
            Group.Barrier();
            int count = Math.Min(lanes, stop - start);
            for (int c = lane; c < width; c += lanes)
            {
                float acc = y[at + c];
                for (int jj = 0; jj < count; jj++) acc += chunk[jj] * rows[(kh * s.Keys + start + jj) * width + c];
                y[at + c] = acc;
            }
            Group.Barrier();
        }
    }

    /// <summary>The rest of part 1: dK = scale · dSᵀ·Q [KvHeads, Keys, D] and after it dV = Pᵀ·dO [KvHeads, Keys, Dv],
    /// one key per group of one warp (grid = KvHeads·Keys), summed over the query rows of every head of its group
    /// (consecutive rows of Q) that keep it; part 2, dV alone. <paramref name="y"/> starts at dK (dV).</summary>
    public static void KeyRows(ArrayView<float> q, ArrayView<float> k, ArrayView<float> v, ArrayView<float> g,
                               ArrayView<float> yIn, ArrayView<float> delta, ArrayView<float> y, AttentionShape s)
    {
        var ps = SharedMemory.Allocate<float>(MaxLanes);
        var dss = SharedMemory.Allocate<float>(MaxLanes);
        int key = Grid.IdxX, lane = Group.IdxX, lanes = Group.DimX;
        int kw = s.Part == 1 ? s.D : 0, kh = key / s.Keys, j = key % s.Keys, width = kw + s.Dv;
        int group = s.Heads / s.KvHeads, queries = group * s.T, firstRow = kh * group * s.T, values = s.KvHeads * s.Keys * kw;
        for (int c = lane; c < width; c += lanes) y[c < kw ? key * s.D + c : values + key * s.Dv + c - kw] = 0f;
        for (int start = 0; start < queries; start += lanes)
        {
            int r = start + lane;
            float p = 0f, ds = 0f;
            if (r < queries)
            {
                Kept(s, r % s.T, out int first, out int stop);
                if (j >= first && j < stop)
                {
                    int qr = firstRow + r;
                    p = MathF.Exp(s.Scale * Dot(q, qr * s.D, k, key * s.D, s.D) - yIn[qr * s.Row + s.Dv]);
                    if (kw > 0) ds = s.Scale * p * (Dot(g, qr * s.Row, v, key * s.Dv, s.Dv) - delta[qr]);
                }
            }
            ps[lane] = p;
            dss[lane] = ds;
            Group.Barrier();
            int count = Math.Min(lanes, queries - start);
            for (int c = lane; c < width; c += lanes)
            {
                int at = c < kw ? key * s.D + c : values + key * s.Dv + c - kw;
                float acc = y[at];
                if (c < kw)
                    for (int rr = 0; rr < count; rr++) acc += dss[rr] * q[(firstRow + start + rr) * s.D + c];
                else
                    for (int rr = 0; rr < count; rr++) acc += ps[rr] * g[(firstRow + start + rr) * s.Row + c - kw];
                y[at] = acc;
            }
            Group.Barrier();
        }
    }
}
