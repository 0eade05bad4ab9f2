// Fused attention (Op.Attention) on tensor cores, as FlashAttention-2 computes it: every product of a tile (Q·Kᵀ, P·V,
// and in the backward pass K·Qᵀ, V·dOᵀ, Pᵀ·dO, dSᵀ·Q, dS·K) is a bfloat16 mma.sync over one warp (TensorCores), with
// float32 accumulators; probabilities live only in registers, a tile at a time. Heads of up to MaxDim dimensions, a
// multiple of 16.
using ILGPU;
using ILGPU.Runtime;
using static Lxt.Backend.Gpu.BFloat16Conversion;

namespace Lxt.Backend.Gpu;

/// <summary>A head dimension as a type, so that the tensor-core kernels are compiled per size: their loops over a
/// head's dimensions then end at constants in the PTX, which ptxas can unroll (ILGPU unrolls none), giving their
/// fragment arrays constant indices.</summary>
public interface IHeadDim
{
    int Value { get; }
}

public struct HeadDim16 : IHeadDim { public readonly int Value => 16; }
public struct HeadDim32 : IHeadDim { public readonly int Value => 32; }
public struct HeadDim48 : IHeadDim { public readonly int Value => 48; }
public struct HeadDim64 : IHeadDim { public readonly int Value => 64; }
public struct HeadDim80 : IHeadDim { public readonly int Value => 80; }
public struct HeadDim96 : IHeadDim { public readonly int Value => 96; }
public struct HeadDim112 : IHeadDim { public readonly int Value => 112; }
public struct HeadDim128 : IHeadDim { public readonly int Value => 128; }

public static class TensorCoreAttention
{
    /// <summary>The type of head dimension <paramref name="dim"/> (a multiple of 16 up to <see cref="MaxDim"/>).</summary>
    public static Type HeadDimType(int dim) => dim switch
    {
        16 => typeof(HeadDim16), 32 => typeof(HeadDim32), 48 => typeof(HeadDim48), 64 => typeof(HeadDim64),
        80 => typeof(HeadDim80), 96 => typeof(HeadDim96), 112 => typeof(HeadDim112), 128 => typeof(HeadDim128),
        _ => throw new ArgumentOutOfRangeException(nameof(dim), dim, "tensor-core attention takes heads of 16, 32, … 128 dimensions"),
    };

    /// <summary>Kernel <paramref name="name"/> (Forward or Backward) for heads of <paramref name="d"/> and
    /// <paramref name="dv"/> dimensions.</summary>
    public static TDelegate Specialize<TDelegate>(string name, int d, int dv) where TDelegate : Delegate =>
        typeof(TensorCoreAttention).GetMethod(name)!.MakeGenericMethod(HeadDimType(d), HeadDimType(dv)).CreateDelegate<TDelegate>();

    /// <summary>Warps of a group; each takes 16 query rows (forward) or 16 keys (backward).</summary>
    public const int Warps = 4;

    /// <summary>Threads of a group.</summary>
    public const int Threads = Warps * TensorCores.Lanes;

    /// <summary>Query rows of a group in the forward pass, keys of a tile.</summary>
    public const int Tile = 16 * Warps;

    /// <summary>Query rows of a tile in the backward pass (its shared tiles fit 48 KiB at MaxDim).</summary>
    public const int BackwardRows = 32;

    /// <summary>Largest head dimension (of queries and keys, and of values).</summary>
    public const int MaxDim = 128;

    /// <summary>Whether the kernels take an attention of these sizes.</summary>
    public static bool Takes(in AttentionShape s) => Fits(s.D) && Fits(s.Dv);

    static bool Fits(int dim) => dim > 0 && dim <= MaxDim && dim % 16 == 0;

    static float Sel(float x, bool keep) => keep ? x : float.NegativeInfinity;

    /// <summary>Two values of row <paramref name="row"/> of a [rows, width] slab at column c and c + 1 as one word of
    /// bfloat16 (zero past the slab's rows).</summary>
    internal static uint PairAt(ArrayView<float> x, int rowBase, int row, int rows, int width, int c) =>
        row < rows ? Pair(x[(rowBase + row) * width + c], x[(rowBase + row) * width + c + 1]) : 0u;

    /// <summary>Two bfloat16 of a shared [*, width] tile as one word: (row, c) and (row + 1, c), a column pair.</summary>
    internal static uint Column(ArrayView<ushort> tile, int width, int row, int c) => tile[row * width + c] | (uint)tile[(row + 1) * width + c] << 16;

    /// <summary>Two bfloat16 of a shared [*, width] tile as one word: (row, c) and (row, c + 1), a row pair.</summary>
    internal static uint Row(ArrayView<ushort> tile, int width, int row, int c) => tile[row * width + c] | (uint)tile[row * width + c + 1] << 16;

    /// <summary>The first <paramref name="width"/> values of rows <paramref name="from"/> … + <paramref name="rows"/> − 1
    /// of a [count, stride] slab at <paramref name="rowBase"/> into a shared [rows, width] tile in bfloat16, zero past
    /// the slab, by all the group's threads.</summary>
    static void LoadTile(ArrayView<float> x, int rowBase, int from, int count, int stride, int width, int rows, ArrayView<ushort> tile)
    {
        for (int i = Group.IdxX; i < rows * width; i += Group.DimX)
        {
            int r = from + i / width;
            tile[i] = r < count ? FromFloat(x[(rowBase + r) * stride + i % width]) : (ushort)0;
        }
    }

    /// <summary>Rows <paramref name="row"/> and <paramref name="row"/> + 8 of a [count, width] slab at
    /// <paramref name="rowBase"/> as the A fragments of <paramref name="steps"/> steps of 16 columns (zero past the slab).</summary>
    static void LoadA(ArrayView<float> x, int rowBase, int row, int count, int width, int steps, int t, ArrayView<uint> a)
    {
        for (int kk = 0; kk < steps; kk++)
        {
            int c = kk * 16 + 2 * t;
            a[4 * kk] = PairAt(x, rowBase, row, count, width, c);
            a[4 * kk + 1] = PairAt(x, rowBase, row + 8, count, width, c);
            a[4 * kk + 2] = PairAt(x, rowBase, row, count, width, c + 8);
            a[4 * kk + 3] = PairAt(x, rowBase, row + 8, count, width, c + 8);
        }
    }

    /// <summary>D fragments <paramref name="tiles"/> tiles of 8 columns wide into rows <paramref name="row"/> and
    /// <paramref name="row"/> + 8 (those below <paramref name="count"/>) of rows of <paramref name="stride"/> values from
    /// <paramref name="at"/>, times <paramref name="fA"/> and <paramref name="fB"/>; added atomically where
    /// <paramref name="add"/>.</summary>
    static void StoreD(ArrayView<float> y, int at, int stride, int row, int count, int tiles, int t, ArrayView<float> d, float fA, float fB, bool add = false)
    {
        for (int nt = 0; nt < tiles; nt++)
        {
            int c = nt * 8 + 2 * t;
            if (row < count)
            {
                Put(y, at + row * stride + c, d[4 * nt] * fA, add);
                Put(y, at + row * stride + c + 1, d[4 * nt + 1] * fA, add);
            }
            if (row + 8 < count)
            {
                Put(y, at + (row + 8) * stride + c, d[4 * nt + 2] * fB, add);
                Put(y, at + (row + 8) * stride + c + 1, d[4 * nt + 3] * fB, add);
            }
        }
    }

    static void Put(ArrayView<float> y, int i, float v, bool add)
    {
        if (add) Atomic.Add(ref y[i], v);
        else y[i] = v;
    }

    /// <summary>acc += A·B for one step of 16 rows of B: A the D fragments d[i] … d[i + 7] of two 8-column tiles side
    /// by side (16 columns, rounded to bfloat16), B rows <paramref name="k0"/> … + 15 of a shared [*, width] tile,
    /// <paramref name="tiles"/> tiles of 8 columns.</summary>
    static void MmaFromD(ArrayView<float> d, int i, ArrayView<ushort> tile, int width, int k0, int tiles, int g, int t, ArrayView<float> acc)
    {
        uint a0 = Pair(d[i], d[i + 1]), a1 = Pair(d[i + 2], d[i + 3]), a2 = Pair(d[i + 4], d[i + 5]), a3 = Pair(d[i + 6], d[i + 7]);
        for (int nt = 0; nt < tiles; nt++)
            TensorCores.Mma(a0, a1, a2, a3, Column(tile, width, k0 + 2 * t, nt * 8 + g), Column(tile, width, k0 + 8 + 2 * t, nt * 8 + g),
                ref acc[4 * nt], ref acc[4 * nt + 1], ref acc[4 * nt + 2], ref acc[4 * nt + 3]);
    }

    static float QuadMax(float v)
    {
        v = MathF.Max(v, Warp.ShuffleXor(v, 1));
        return MathF.Max(v, Warp.ShuffleXor(v, 2));
    }

    static float QuadSum(float v)
    {
        v += Warp.ShuffleXor(v, 1);
        return v + Warp.ShuffleXor(v, 2);
    }

    /// <summary>Part 0, Y (O and the log-sum-exp L), for <see cref="Tile"/> query rows of one head per group (grid =
    /// Heads · ⌈T / Tile⌉, <see cref="Threads"/> a group): each warp keeps its 16 rows' Q (<typeparamref name="TQ"/>,
    /// <see cref="FragmentTypes.A"/> of D), running maxima and sums and O (<typeparamref name="TO"/>,
    /// <see cref="FragmentTypes.D"/> of Dv) in registers, and walks the kept keys a shared tile of K and V at a time,
    /// 16 keys a step of its online softmax.</summary>
    public static void Forward<TQ, TO>(ArrayView<float> q, ArrayView<float> k, ArrayView<float> v, ArrayView<float> y, AttentionShape s)
        where TQ : struct, IAFragments where TO : struct, IDFragments
    {
        var kTile = SharedMemory.Allocate<ushort>(Tile * MaxDim);
        var vTile = SharedMemory.Allocate<ushort>(Tile * MaxDim);
        int tiles = (s.T + Tile - 1) / Tile;
        int h = Grid.IdxX / tiles, r0 = Grid.IdxX % tiles * Tile, kh = h / (s.Heads / s.KvHeads);
        int warp = Group.IdxX / TensorCores.Lanes, lane = Group.IdxX % TensorCores.Lanes, g = lane >> 2, t = lane & 3;
        int rowA = r0 + warp * 16 + g, rowB = rowA + 8, qBase = h * s.T, kvBase = kh * s.Keys;
        var qa = default(TQ);
        qa.Load(q, qBase, rowA, s.T, s.D, 0, t);
        var o = default(TO);
        o.Clear();
        AttentionKernels.Kept(s, rowA, out int firstA, out int stopA);
        AttentionKernels.Kept(s, rowB, out int firstB, out int stopB);
        AttentionKernels.Kept(s, r0, out int first, out _);
        AttentionKernels.Kept(s, Math.Min(s.T, r0 + Tile) - 1, out _, out int stop);
        float mA = float.NegativeInfinity, mB = float.NegativeInfinity, lA = 0f, lB = 0f;
        for (int c0 = first; c0 < stop; c0 += Tile)
        {
            Group.Barrier();
            LoadTile(k, kvBase, c0, stop, s.D, s.D, Tile, kTile);
            LoadTile(v, kvBase, c0, stop, s.Dv, s.Dv, Tile, vTile);
            Group.Barrier();
            for (int kc = 0; kc < Tile; kc += 16)
            {
                // S = scale · Q·Kᵀ for 16 keys (two tiles of 8: s0 … s3 and s4 … s7), −∞ where the mask drops a key
                float s0 = 0f, s1 = 0f, s2 = 0f, s3 = 0f, s4 = 0f, s5 = 0f, s6 = 0f, s7 = 0f;
                qa.MmaByRows(kTile, s.D, kc + g, 0, t, ref s0, ref s1, ref s2, ref s3);
                qa.MmaByRows(kTile, s.D, kc + 8 + g, 0, t, ref s4, ref s5, ref s6, ref s7);
                int key = c0 + kc + 2 * t;
                bool inA = rowA < s.T, inB = rowB < s.T;
                s0 = Sel(s0 * s.Scale, inA && key >= firstA && key < stopA);
                s1 = Sel(s1 * s.Scale, inA && key + 1 >= firstA && key + 1 < stopA);
                s2 = Sel(s2 * s.Scale, inB && key >= firstB && key < stopB);
                s3 = Sel(s3 * s.Scale, inB && key + 1 >= firstB && key + 1 < stopB);
                s4 = Sel(s4 * s.Scale, inA && key + 8 >= firstA && key + 8 < stopA);
                s5 = Sel(s5 * s.Scale, inA && key + 9 >= firstA && key + 9 < stopA);
                s6 = Sel(s6 * s.Scale, inB && key + 8 >= firstB && key + 8 < stopB);
                s7 = Sel(s7 * s.Scale, inB && key + 9 >= firstB && key + 9 < stopB);
                float nA = MathF.Max(mA, QuadMax(MathF.Max(MathF.Max(s0, s1), MathF.Max(s4, s5))));
                float nB = MathF.Max(mB, QuadMax(MathF.Max(MathF.Max(s2, s3), MathF.Max(s6, s7))));
                // rescale what the earlier keys summed (a row with no key kept yet has nothing to rescale)
                float fA = nA == float.NegativeInfinity ? 1f : MathF.Exp(mA - nA), fB = nB == float.NegativeInfinity ? 1f : MathF.Exp(mB - nB);
                mA = nA; mB = nB;
                o.Scale(fA, fB);
                s0 = Exp(s0, mA); s1 = Exp(s1, mA); s4 = Exp(s4, mA); s5 = Exp(s5, mA);
                s2 = Exp(s2, mB); s3 = Exp(s3, mB); s6 = Exp(s6, mB); s7 = Exp(s7, mB);
                lA = lA * fA + s0 + s1 + s4 + s5;
                lB = lB * fB + s2 + s3 + s6 + s7;
                // O += P·V, P from the scores' registers: the two 8-key tiles side by side are one 16-key step
                o.MmaByColumns(Pair(s0, s1), Pair(s2, s3), Pair(s4, s5), Pair(s6, s7), vTile, s.Dv, kc, 0, g, t);
            }
        }
        lA = QuadSum(lA);
        lB = QuadSum(lB);
        // Y's rows: O, then L
        int row = s.Dv + 1;
        if (t == 0 && rowA < s.T) y[(qBase + rowA) * row + s.Dv] = mA + MathF.Log(lA);
        if (t == 0 && rowB < s.T) y[(qBase + rowB) * row + s.Dv] = mB + MathF.Log(lB);
        o.Store(y, qBase * row, row, rowA, s.T, 0, t, 1f / lA, 1f / lB);
    }

    /// <summary>exp(x − m) of a kept score, 0 for a dropped one (−∞, also when no key of the row is kept yet).</summary>
    static float Exp(float x, float m) => x == float.NegativeInfinity ? 0f : MathF.Exp(x - m);

    /// <summary>Part 1 (part 2: dV alone): dK and dV for <see cref="Tile"/> keys and one query head per group (grid =
    /// Heads · ⌈Keys / Tile⌉, <see cref="Threads"/> a group), each warp 16 keys, over every query row of the head that
    /// keeps one of them, <see cref="BackwardRows"/> at a time; and each tile's share of dQ = dS·K added into dQ
    /// atomically (<paramref name="dq"/> must be zero before). dS carries the scale. <paramref name="dkv"/> holds dK
    /// [KvHeads, Keys, D] then dV [KvHeads, Keys, Dv]; the heads sharing a key/value head add into it atomically (it
    /// must then be zero before).</summary>
    public static void Backward<TD, TDv>(ArrayView<float> q, ArrayView<float> k, ArrayView<float> v, ArrayView<float> grad,
                                ArrayView<float> yIn, ArrayView<float> delta, ArrayView<float> dq, ArrayView<float> dkv, AttentionShape s)
        where TD : struct, IHeadDim where TDv : struct, IHeadDim
    {
        const int rowTiles = BackwardRows / 8;
        var qTile = SharedMemory.Allocate<ushort>(BackwardRows * MaxDim);
        var oTile = SharedMemory.Allocate<ushort>(BackwardRows * MaxDim);
        var kTile = SharedMemory.Allocate<ushort>(Tile * MaxDim);
        var dsTile = SharedMemory.Allocate<ushort>(BackwardRows * Tile);
        var rowL = SharedMemory.Allocate<float>(BackwardRows);
        var rowD = SharedMemory.Allocate<float>(BackwardRows);
        var ka = LocalMemory.Allocate<uint>(MaxDim / 16 * 4);
        var va = LocalMemory.Allocate<uint>(MaxDim / 16 * 4);
        var p = LocalMemory.Allocate<float>(rowTiles * 4);
        var ds = LocalMemory.Allocate<float>(rowTiles * 4);
        var dk = LocalMemory.Allocate<float>(MaxDim / 8 * 4);
        var dv = LocalMemory.Allocate<float>(MaxDim / 8 * 4);
        int keyTiles = (s.Keys + Tile - 1) / Tile;
        int h = Grid.IdxX / keyTiles, c0 = Grid.IdxX % keyTiles * Tile, group = s.Heads / s.KvHeads, kh = h / group, kvBase = kh * s.Keys;
        int warp = Group.IdxX / TensorCores.Lanes, lane = Group.IdxX % TensorCores.Lanes, g = lane >> 2, t = lane & 3;
        int keyA = c0 + warp * 16 + g, keyB = keyA + 8;
        int D = default(TD).Value, Dv = default(TDv).Value, dSteps = D / 16, vSteps = Dv / 16, dTiles = D / 8, vTiles = Dv / 8;
        bool keysToo = s.Part == 1; // part 2: dV alone, no dP, dS, dK or dQ
        // this warp's 16 keys and values as the left operand of K·Qᵀ and V·dOᵀ
        LoadA(k, kvBase, keyA, s.Keys, D, dSteps, t, ka);
        LoadA(v, kvBase, keyA, s.Keys, Dv, vSteps, t, va);
        for (int i = 0; i < dTiles * 4; i++) dk[i] = 0f;
        for (int i = 0; i < vTiles * 4; i++) dv[i] = 0f;
        Group.Barrier();
        LoadTile(k, kvBase, c0, s.Keys, D, D, Tile, kTile);
        int c1 = Math.Min(s.Keys, c0 + Tile);
        int qBase = h * s.T;
        for (int r0 = 0; r0 < s.T; r0 += BackwardRows)
        {
            int last = Math.Min(s.T, r0 + BackwardRows) - 1;
            AttentionKernels.Kept(s, r0, out int first, out _);
            AttentionKernels.Kept(s, last, out _, out int stop);
            if (stop <= c0 || first >= c1) continue;
            Group.Barrier();
            LoadTile(q, qBase, r0, s.T, D, D, BackwardRows, qTile);
            LoadTile(grad, qBase, r0, s.T, Dv + 1, Dv, BackwardRows, oTile);
            for (int i = Group.IdxX; i < BackwardRows; i += Group.DimX)
            {
                bool inside = r0 + i < s.T;
                rowL[i] = inside ? yIn[(qBase + r0 + i) * (Dv + 1) + Dv] : 0f;
                rowD[i] = inside && keysToo ? delta[qBase + r0 + i] : 0f;
            }
            Group.Barrier();
            // Pᵀ = exp(scale · K·Qᵀ − L) and dSᵀ = scale · Pᵀ ⊙ (V·dOᵀ − Δ), 16 keys × BackwardRows rows a warp
            for (int nt = 0; nt < rowTiles; nt++)
            {
                float s0 = 0f, s1 = 0f, s2 = 0f, s3 = 0f, o0 = 0f, o1 = 0f, o2 = 0f, o3 = 0f;
                for (int kk = 0; kk < dSteps; kk++)
                    TensorCores.Mma(ka[4 * kk], ka[4 * kk + 1], ka[4 * kk + 2], ka[4 * kk + 3],
                        Row(qTile, D, nt * 8 + g, kk * 16 + 2 * t), Row(qTile, D, nt * 8 + g, kk * 16 + 8 + 2 * t), ref s0, ref s1, ref s2, ref s3);
                for (int kk = 0; kk < (keysToo ? vSteps : 0); kk++)
                    TensorCores.Mma(va[4 * kk], va[4 * kk + 1], va[4 * kk + 2], va[4 * kk + 3],
                        Row(oTile, Dv, nt * 8 + g, kk * 16 + 2 * t), Row(oTile, Dv, nt * 8 + g, kk * 16 + 8 + 2 * t), ref o0, ref o1, ref o2, ref o3);
                int col = nt * 8 + 2 * t;
                p[4 * nt] = Probability(s, s0, r0 + col, keyA, rowL[col]);
                p[4 * nt + 1] = Probability(s, s1, r0 + col + 1, keyA, rowL[col + 1]);
                p[4 * nt + 2] = Probability(s, s2, r0 + col, keyB, rowL[col]);
                p[4 * nt + 3] = Probability(s, s3, r0 + col + 1, keyB, rowL[col + 1]);
                if (!keysToo) continue;
                ds[4 * nt] = s.Scale * p[4 * nt] * (o0 - rowD[col]);
                ds[4 * nt + 1] = s.Scale * p[4 * nt + 1] * (o1 - rowD[col + 1]);
                ds[4 * nt + 2] = s.Scale * p[4 * nt + 2] * (o2 - rowD[col]);
                ds[4 * nt + 3] = s.Scale * p[4 * nt + 3] * (o3 - rowD[col + 1]);
                // dS (rows × keys) for dQ, from this warp's keys
                int key = warp * 16 + g;
                dsTile[col * Tile + key] = FromFloat(ds[4 * nt]);
                dsTile[(col + 1) * Tile + key] = FromFloat(ds[4 * nt + 1]);
                dsTile[col * Tile + key + 8] = FromFloat(ds[4 * nt + 2]);
                dsTile[(col + 1) * Tile + key + 8] = FromFloat(ds[4 * nt + 3]);
            }
            // dV += Pᵀ·dO and dK += dSᵀ·Q, Pᵀ and dSᵀ from their registers, 16 rows a step
            for (int kk = 0; kk < BackwardRows / 16; kk++)
            {
                MmaFromD(p, 8 * kk, oTile, Dv, kk * 16, vTiles, g, t, dv);
                if (keysToo) MmaFromD(ds, 8 * kk, qTile, D, kk * 16, dTiles, g, t, dk);
            }
            if (!keysToo) continue;
            Group.Barrier();
            // dQ += dS·K: warp w takes rows 16·(w % 2) … and every other 8 columns of D from w / 2
            int m0 = (warp & 1) * 16;
            int rowA = r0 + m0 + g, rowB = rowA + 8;
            for (int nt = warp >> 1; nt < dTiles; nt += 2)
            {
                float d0 = 0f, d1 = 0f, d2 = 0f, d3 = 0f;
                for (int kk = 0; kk < Tile / 16; kk++)
                    TensorCores.Mma(Row(dsTile, Tile, m0 + g, kk * 16 + 2 * t), Row(dsTile, Tile, m0 + g + 8, kk * 16 + 2 * t),
                        Row(dsTile, Tile, m0 + g, kk * 16 + 8 + 2 * t), Row(dsTile, Tile, m0 + g + 8, kk * 16 + 8 + 2 * t),
                        Column(kTile, D, kk * 16 + 2 * t, nt * 8 + g), Column(kTile, D, kk * 16 + 8 + 2 * t, nt * 8 + g), ref d0, ref d1, ref d2, ref d3);
                int c = nt * 8 + 2 * t;
                if (rowA < s.T)
                {
                    Atomic.Add(ref dq[(qBase + rowA) * D + c], d0);
                    Atomic.Add(ref dq[(qBase + rowA) * D + c + 1], d1);
                }
                if (rowB < s.T)
                {
                    Atomic.Add(ref dq[(qBase + rowB) * D + c], d2);
                    Atomic.Add(ref dq[(qBase + rowB) * D + c + 1], d3);
                }
            }
        }
        // the heads of a group share their keys and values: each adds its share
        bool shared = group > 1;
        if (keysToo) StoreD(dkv, kvBase * D, D, keyA, s.Keys, dTiles, t, dk, 1f, 1f, shared);
        StoreD(dkv, (keysToo ? s.KvHeads * s.Keys * D : 0) + kvBase * Dv, Dv, keyA, s.Keys, vTiles, t, dv, 1f, 1f, shared);
    }

    /// <summary>P of query row <paramref name="row"/> and <paramref name="key"/> from the product of their vectors:
    /// 0 where the mask drops the key or either is past its tokens.</summary>
    static float Probability(in AttentionShape s, float product, int row, int key, float l)
    {
        if (row >= s.T || key >= s.Keys) return 0f;
        AttentionKernels.Kept(s, row, out int first, out int stop);
        return key >= first && key < stop ? MathF.Exp(s.Scale * product - l) : 0f;
    }
}
