// Fused attention (Op.Attention) on tensor cores, as FlashAttention-2 computes it: every product of a tile (Q·Kᵀ, P·V,
// and in the backward pass K·Qᵀ, V·dOᵀ, Pᵀ·dO, dSᵀ·Q, dS·K) is a bfloat16 mma.sync over one warp (TensorCores), with
// float32 accumulators; fragments and probabilities live in registers (Fragments.cs), a tile at a time. Heads of up
// to MaxDim dimensions, a multiple of 16, each size compiled on its own.
using System.Reflection;
using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;

namespace Lxt.Backend.Gpu;

public static class TensorCoreAttention
{
    /// <summary>Warps of a group; each takes 16 query rows (forward) or 16 keys (backward).</summary>
    public const int Warps = 4;

    /// <summary>Threads of a group.</summary>
    public const int Threads = Warps * TensorCores.Lanes;

    /// <summary>Query rows of a group in the forward pass, keys of a tile.</summary>
    public const int Tile = 16 * Warps;

    /// <summary>Query rows of a tile in the backward pass (its shared tiles fit 48 KiB at MaxDim).</summary>
    public const int BackwardRows = 32;

    /// <summary>The most words a thread holds between device memory and the shared tiles at once.</summary>
    const int MaxStagedWords = 32;

    /// <summary>Largest head dimension (of queries and keys, and of values).</summary>
    public const int MaxDim = 128;

    /// <summary>The operands the kernels may read stored in bfloat16 (<see cref="AttentionShape.Narrow"/>): Q, K and V,
    /// operands 0 to 2 of every part, which they round to bfloat16 as they load them anyway.</summary>
    public const int NarrowOperands = 3;

    /// <summary>Operand <paramref name="i"/> (Q, K or V) read in pairs, stored as <typeparamref name="TS"/> says
    /// (<see cref="FragmentTypes.Storage"/> of <see cref="AttentionShape.Narrow"/>).</summary>
    static Pairs Operand<TS>(ArrayView<float> x, int i) where TS : struct, IOperandStorage => new(x, default(TS).Narrow(i));

    /// <summary>bfloat16 values after each row of a shared tile: a row of a stride of 4 words past a multiple of 32 puts
    /// the 8 rows a warp's quads read in turn (A fragments by rows, B by columns two rows apart) on distinct banks.</summary>
    public const int Pad = 8;

    /// <summary>The row stride of a shared tile of rows of <paramref name="width"/> values.</summary>
    internal static int Stride(int width) => width + Pad;

    // The shared-window address of a kernel's first, second and third shared allocation, for ldmatrix (ILGPU has no
    // device-side address of a view): ILGPU names a kernel's allocations __shared_alloca0, 1, … in the order the
    // kernel makes them, which the PTX test checks by their sizes. 0 where the accelerator is not CUDA. On CUDA every
    // allocation starts on 16 bytes, as ldmatrix reads its rows (the kernels are loaded with PtxRewrites.AlignShared).
    static long SharedAddress0()
    {
        if (!CudaAsm.IsSupported) return 0;
        CudaAsm.Emit("mov.u64 %0, __shared_alloca0;", out long a);
        return a;
    }

    static long SharedAddress1()
    {
        if (!CudaAsm.IsSupported) return 0;
        CudaAsm.Emit("mov.u64 %0, __shared_alloca1;", out long a);
        return a;
    }

    static long SharedAddress2()
    {
        if (!CudaAsm.IsSupported) return 0;
        CudaAsm.Emit("mov.u64 %0, __shared_alloca2;", out long a);
        return a;
    }

    /// <summary><see cref="Forward"/> for heads of <paramref name="d"/> dimensions (queries and keys) and
    /// <paramref name="dv"/> (values), reading B fragments by columns through ldmatrix where
    /// <paramref name="matrixLoads"/>, with Q, K and V stored as <paramref name="narrow"/> says
    /// (<see cref="AttentionShape.Narrow"/>).</summary>
    public static MethodInfo ForwardKernel(int d, int dv, bool matrixLoads, int narrow) =>
        typeof(TensorCoreAttention).GetMethod(nameof(Forward))!.MakeGenericMethod(
            FragmentTypes.A(d), FragmentTypes.D(dv), FragmentTypes.Columns(matrixLoads),
            FragmentTypes.Staged(Tile, d), FragmentTypes.Staged(Tile, dv), FragmentTypes.Storage(narrow));

    /// <summary><see cref="Backward"/> for these sizes, as <see cref="ForwardKernel"/>.</summary>
    public static MethodInfo BackwardKernel(int d, int dv, bool matrixLoads, int narrow) =>
        typeof(TensorCoreAttention).GetMethod(nameof(Backward))!.MakeGenericMethod(
            FragmentTypes.A(dv), FragmentTypes.D(d), FragmentTypes.D(dv), FragmentTypes.Columns(matrixLoads),
            FragmentTypes.Staged(Tile, d), FragmentTypes.Staged(BackwardRows, d), FragmentTypes.Staged(BackwardRows, dv),
            FragmentTypes.Storage(narrow));

    /// <summary>Tiles of <see cref="Tile"/> that cover <paramref name="n"/> rows or keys.</summary>
    public static int Tiles(int n) => (n + Tile - 1) / Tile;

    /// <summary>Whether the kernels take an attention of these sizes.</summary>
    public static bool Takes(in AttentionShape s) => Fits(s.D) && Fits(s.Dv);

    static bool Fits(int dim) => dim > 0 && dim <= MaxDim && dim % 16 == 0;

    static float Sel(float x, bool keep) => keep ? x : float.NegativeInfinity;

    /// <summary>Two values of row <paramref name="row"/> of a [rows, width] slab at column c and c + 1 as one word of
    /// bfloat16 (zero past the slab's rows).</summary>
    internal static uint PairAt(in Pairs x, int rowBase, int row, int rows, int width, int c) =>
        row < rows ? x.At((rowBase + row) * width + c) : 0u;

    /// <summary>Reads this thread's words of a shared tile of <paramref name="rows"/> rows into
    /// <paramref name="staged"/> (<see cref="TileWalk"/>: the first values of rows <paramref name="from"/> … of a
    /// [count, stride] slab at <paramref name="rowBase"/>), to write once the tile is free. The tile's width is the
    /// staged words' (a constant of the kernel), its stride the width plus <paramref name="strideMore"/>.</summary>
    static TileWalk Stage<TS>(ref TS staged, in Pairs x, ArrayView<ushort> tile, int rows, int rowBase, int from, int count, int strideMore = 0)
        where TS : struct, IStagedWords
    {
        int width = default(TS).Words * 2 * Threads / rows;
        var walk = new TileWalk(x, tile.Cast<uint>(), rows, rowBase, from, count, width + strideMore, width, Group.IdxX);
        if (walk.Whole) staged.ReadWhole(walk, 0);
        else staged.ReadEdge(walk, 0);
        return walk;
    }

    /// <summary>y[i] = v, or y[i] += v atomically where <paramref name="add"/>.</summary>
    internal static void Put(ArrayView<float> y, int i, float v, bool add)
    {
        if (add) FloatAtomics.Add(y, i, v);
        else y[i] = v;
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
    /// 16 keys a step of its online softmax, reading V by columns as <typeparamref name="TB"/> does
    /// (<see cref="FragmentTypes.Columns"/>).</summary>
    public static void Forward<TQ, TO, TB, TSK, TSV, TS>(ArrayView<float> q, ArrayView<float> k, ArrayView<float> v, ArrayView<float> y, AttentionShape s)
        where TQ : struct, IAFragments where TO : struct, IDFragments where TB : struct, IColumnLoads
        where TSK : struct, IStagedWords where TSV : struct, IStagedWords where TS : struct, IOperandStorage
    {
        var kTile = SharedMemory.Allocate<ushort>(Tile * (MaxDim + Pad));
        var vTile = SharedMemory.Allocate<ushort>(Tile * (MaxDim + Pad));
        long vShared = SharedAddress1();
        int tiles = Tiles(s.T);
        // the last query tiles first, of every head in turn: under a causal mask they keep the most keys, so the
        // longest groups start first and the shortest fill the last wave
        int h = Grid.IdxX % s.Heads, r0 = (tiles - 1 - Grid.IdxX / s.Heads) * Tile, kh = h / (s.Heads / s.KvHeads);
        int warp = Group.IdxX / TensorCores.Lanes, lane = Group.IdxX % TensorCores.Lanes, g = lane >> 2, t = lane & 3;
        int rowA = r0 + warp * 16 + g, rowB = rowA + 8, qBase = h * s.T, kvBase = kh * s.Keys;
        var qa = default(TQ);
        qa.Load(Operand<TS>(q, 0), qBase, rowA, s.T, s.D, 0, t);
        var o = default(TO);
        o.Clear();
        AttentionKernels.Kept(s, rowA, out int firstA, out int stopA);
        AttentionKernels.Kept(s, rowB, out int firstB, out int stopB);
        AttentionKernels.Kept(s, r0, out int first, out _);
        AttentionKernels.Kept(s, Math.Min(s.T, r0 + Tile) - 1, out _, out int stop);
        float mA = float.NegativeInfinity, mB = float.NegativeInfinity, lA = 0f, lB = 0f, scale2 = s.Scale * Log2E;
        for (int c0 = first; c0 < stop; c0 += Tile)
        {
            // this tile's keys and values read while the other warps may still be on the last tile, then stored;
            // where a thread's words of both would crowd out the fragments (d = 128), the values once the keys are
            // stored (a constant test, folded as the kernel is compiled)
            var stagedKeys = default(TSK);
            var keysWalk = Stage(ref stagedKeys, Operand<TS>(k, 1), kTile, Tile, kvBase, c0, stop);
            var stagedValues = default(TSV);
            bool together = default(TSK).Words + default(TSV).Words <= MaxStagedWords;
            var valuesWalk = together ? Stage(ref stagedValues, Operand<TS>(v, 2), vTile, Tile, kvBase, c0, stop) : default;
            Group.Barrier();
            stagedKeys.Write(keysWalk, 0);
            if (!together) valuesWalk = Stage(ref stagedValues, Operand<TS>(v, 2), vTile, Tile, kvBase, c0, stop);
            stagedValues.Write(valuesWalk, 0);
            Group.Barrier();
            for (int kc = 0; kc < Tile; kc += 16)
            {
                // S = scale · Q·Kᵀ for 16 keys (two tiles of 8: s0 … s3 and s4 … s7) in base-2 units (times log₂ e, so
                // that each exponential is one ex2), −∞ where the mask drops a key
                float s0 = 0f, s1 = 0f, s2 = 0f, s3 = 0f, s4 = 0f, s5 = 0f, s6 = 0f, s7 = 0f;
                var keys = new RowWords(kTile, Stride(s.D), kc + g, t);
                qa.MmaByRows(keys.Top, 0, ref s0, ref s1, ref s2, ref s3);
                qa.MmaByRows(keys.Bottom, 0, ref s4, ref s5, ref s6, ref s7);
                s0 *= scale2; s1 *= scale2; s2 *= scale2; s3 *= scale2; s4 *= scale2; s5 *= scale2; s6 *= scale2; s7 *= scale2;
                // a step whose 16 keys the warp's 16 rows all keep (all but the mask's edges) tests no key: one branch,
                // the same for the whole warp, and at the edges each key's test without a branch of its own
                if (!KeepsAll(s, r0 + warp * 16, c0 + kc))
                {
                    int key = c0 + kc + 2 * t;
                    s0 = Sel(s0, Keeps(rowA, key, firstA, stopA, s.T));
                    s1 = Sel(s1, Keeps(rowA, key + 1, firstA, stopA, s.T));
                    s2 = Sel(s2, Keeps(rowB, key, firstB, stopB, s.T));
                    s3 = Sel(s3, Keeps(rowB, key + 1, firstB, stopB, s.T));
                    s4 = Sel(s4, Keeps(rowA, key + 8, firstA, stopA, s.T));
                    s5 = Sel(s5, Keeps(rowA, key + 9, firstA, stopA, s.T));
                    s6 = Sel(s6, Keeps(rowB, key + 8, firstB, stopB, s.T));
                    s7 = Sel(s7, Keeps(rowB, key + 9, firstB, stopB, s.T));
                }
                float nA = MathF.Max(mA, QuadMax(MathF.Max(MathF.Max(s0, s1), MathF.Max(s4, s5))));
                float nB = MathF.Max(mB, QuadMax(MathF.Max(MathF.Max(s2, s3), MathF.Max(s6, s7))));
                // a row's running maximum m is raised only where a score passes it by more than Slack (a row's first
                // kept key does, from −∞), and then what the earlier keys summed is rescaled; otherwise 2^(s − m) ≤
                // 2^Slack and neither O nor the sum changes scale, which after a row's first steps is nearly always
                bool raiseA = nA > mA + Slack, raiseB = nB > mB + Slack;
                if (raiseA || raiseB)
                {
                    float fA = raiseA ? Exp2(mA - nA) : 1f, fB = raiseB ? Exp2(mB - nB) : 1f;
                    if (raiseA) mA = nA;
                    if (raiseB) mB = nB;
                    o.Scale(fA, fB);
                    lA *= fA;
                    lB *= fB;
                }
                // 2^(s − m); a row with no key kept yet (m = −∞) has only dropped scores, −∞, whose 2^(−∞ − 0) is 0
                float baseA = mA == float.NegativeInfinity ? 0f : mA, baseB = mB == float.NegativeInfinity ? 0f : mB;
                s0 = Exp2(s0 - baseA); s1 = Exp2(s1 - baseA); s4 = Exp2(s4 - baseA); s5 = Exp2(s5 - baseA);
                s2 = Exp2(s2 - baseB); s3 = Exp2(s3 - baseB); s6 = Exp2(s6 - baseB); s7 = Exp2(s7 - baseB);
                lA += s0 + s1 + s4 + s5;
                lB += s2 + s3 + s6 + s7;
                // O += P·V, P from the scores' registers: the two 8-key tiles side by side are one 16-key step
                var values = default(TB);
                values.Start(vTile, Stride(s.Dv), kc, g, t, vShared);
                o.MmaByColumns(TensorCores.Pack(s0, s1), TensorCores.Pack(s2, s3), TensorCores.Pack(s4, s5), TensorCores.Pack(s6, s7), values, 0);
            }
        }
        lA = QuadSum(lA);
        lB = QuadSum(lB);
        // Y's rows: O, then L (in natural units: m · ln 2 + ln l)
        if (t == 0 && rowA < s.T) y[(qBase + rowA) * s.Row + s.Dv] = mA * Ln2 + MathF.Log(lA);
        if (t == 0 && rowB < s.T) y[(qBase + rowB) * s.Row + s.Dv] = mB * Ln2 + MathF.Log(lB);
        o.Store(y, qBase * s.Row, s.Row, rowA, s.T, 0, t, 1f / lA, 1f / lB, add: false);
    }

    /// <summary>How far (in base-2 units) a score may pass its row's running maximum before the maximum is raised:
    /// probabilities of up to 2^8 times their final scale stay far inside float32 and round to bfloat16 as closely as
    /// any.</summary>
    const float Slack = 8f;

    const float Log2E = 1.44269504f, Ln2 = 0.693147181f;

    /// <summary>2^x, 0 at −∞: on CUDA one <c>ex2.approx.ftz.f32</c> (a result below float32's normal range is 0, a
    /// probability too small to count), elsewhere <see cref="XMath.Exp2(float)"/>.</summary>
    static float Exp2(float x)
    {
        if (!CudaAsm.IsSupported) return XMath.Exp2(x);
        CudaAsm.Emit("ex2.approx.ftz.f32 %0, %1;", out float y, x);
        return y;
    }

    /// <summary>Part 1 (part 2: dV alone): dK and dV for <see cref="Tile"/> keys and one query head per group (grid =
    /// Heads · ⌈Keys / Tile⌉, <see cref="Threads"/> a group), each warp 16 keys, over every query row of the head that
    /// keeps one of them, <see cref="BackwardRows"/> at a time and 16 a step; and each tile's share of dQ = dS·K added
    /// into dQ atomically (<paramref name="dq"/> must be zero before). dS carries the scale. A warp keeps its values
    /// (<typeparamref name="TV"/>: <see cref="FragmentTypes.A"/> of Dv) and its dK and dV (<typeparamref name="TDK"/>,
    /// <typeparamref name="TDV"/>: <see cref="FragmentTypes.D"/>) in registers; its keys it reads from the group's shared
    /// tile of K, which dQ = dS·K reads too, so that at D = 128 a lane holds 160 words of fragments, not 192.
    /// <paramref name="dkv"/> holds dK [KvHeads, Keys, D] then dV [KvHeads, Keys, Dv]; the heads sharing a key/value
    /// head add into it atomically (it must then be zero before). The tiles of dO, Q and K are read by columns as
    /// <typeparamref name="TB"/> does (<see cref="FragmentTypes.Columns"/>).</summary>
    public static void Backward<TV, TDK, TDV, TB, TSK, TSQ, TSO, TS>(ArrayView<float> q, ArrayView<float> k, ArrayView<float> v, ArrayView<float> grad,
                                ArrayView<float> yIn, ArrayView<float> delta, ArrayView<float> dq, ArrayView<float> dkv, AttentionShape s)
        where TV : struct, IAFragments where TDK : struct, IDFragments where TDV : struct, IDFragments where TB : struct, IColumnLoads
        where TSK : struct, IStagedWords where TSQ : struct, IStagedWords where TSO : struct, IStagedWords
        where TS : struct, IOperandStorage
    {
        var qTile = SharedMemory.Allocate<ushort>(BackwardRows * (MaxDim + Pad));
        var oTile = SharedMemory.Allocate<ushort>(BackwardRows * (MaxDim + Pad));
        var kTile = SharedMemory.Allocate<ushort>(Tile * (MaxDim + Pad));
        long qShared = SharedAddress0(), oShared = SharedAddress1(), kShared = SharedAddress2();
        var dsTile = SharedMemory.Allocate<ushort>(BackwardRows * (Tile + Pad));
        var rowL = SharedMemory.Allocate<float>(BackwardRows);
        var rowD = SharedMemory.Allocate<float>(BackwardRows);
        int keyTiles = Tiles(s.Keys), D = s.D, Dv = s.Dv, dStride = Stride(D), dvStride = Stride(Dv), dsStride = Stride(Tile);
        // the first key tiles first, of every head in turn: under a causal mask the most query rows keep them, so the
        // longest groups start first; and the groups running together add into different heads' dQ
        int h = Grid.IdxX % s.Heads, c0 = Grid.IdxX / s.Heads * Tile, group = s.Heads / s.KvHeads, kh = h / group, kvBase = kh * s.Keys;
        int warp = Group.IdxX / TensorCores.Lanes, lane = Group.IdxX % TensorCores.Lanes, g = lane >> 2, t = lane & 3;
        int keyA = c0 + warp * 16 + g, keyB = keyA + 8;
        bool keysToo = s.Part == 1; // part 2: dV alone, no dP, dS, dK or dQ
        // this warp's 16 values as the left operand of V·dOᵀ
        var va = default(TV);
        if (keysToo) va.Load(Operand<TS>(v, 2), kvBase, keyA, s.Keys, Dv, 0, t);
        var dk = default(TDK);
        dk.Clear();
        var dv = default(TDV);
        dv.Clear();
        var stagedKeys = default(TSK);
        stagedKeys.Write(Stage(ref stagedKeys, Operand<TS>(k, 1), kTile, Tile, kvBase, c0, s.Keys), 0);
        int c1 = Math.Min(s.Keys, c0 + Tile), qBase = h * s.T;
        // this warp's 16 keys, the left operand of K·Qᵀ, read from the shared tile
        var keys = new RowWords(kTile, dStride, warp * 16 + g, t);
        for (int r0 = 0; r0 < s.T; r0 += BackwardRows)
        {
            int last = Math.Min(s.T, r0 + BackwardRows) - 1;
            AttentionKernels.Kept(s, r0, out int first, out _);
            AttentionKernels.Kept(s, last, out _, out int stop);
            if (stop <= c0 || first >= c1) continue;
            // the rows' queries, output gradients, L and Δ read while the other warps may still be on the last rows,
            // then stored (a thread below BackwardRows takes one row's L and Δ)
            var stagedQueries = default(TSQ);
            var queriesWalk = Stage(ref stagedQueries, Operand<TS>(q, 0), qTile, BackwardRows, qBase, r0, s.T);
            var stagedGrads = default(TSO);
            var gradsWalk = Stage(ref stagedGrads, new Pairs(grad, false), oTile, BackwardRows, qBase, r0, s.T, strideMore: 1); // rows of O and L
            int i = Group.IdxX, ri = Math.Min(r0 + (i & (BackwardRows - 1)), s.T - 1);
            float li = yIn[(qBase + ri) * s.Row + Dv] * Log2E, di = keysToo ? delta[qBase + ri] : 0f; // L in base-2 units
            Group.Barrier();
            stagedQueries.Write(queriesWalk, 0);
            stagedGrads.Write(gradsWalk, 0);
            if (i < BackwardRows)
            {
                bool inside = r0 + i < s.T;
                rowL[i] = inside ? li : 0f;
                rowD[i] = inside ? di : 0f;
            }
            Group.Barrier();
            for (int rc = 0; rc < BackwardRows; rc += 16)
            {
                // Pᵀ = exp(scale · K·Qᵀ − L) for 16 keys × 16 rows (two tiles of 8 rows: p0 … p3 and p4 … p7)
                float p0 = 0f, p1 = 0f, p2 = 0f, p3 = 0f, p4 = 0f, p5 = 0f, p6 = 0f, p7 = 0f;
                MmaRowsByRows(keys, new RowWords(qTile, dStride, rc + g, t), D, ref p0, ref p1, ref p2, ref p3, ref p4, ref p5, ref p6, ref p7);
                int col = rc + 2 * t, row = r0 + col;
                p0 = Probability(s, p0, rowL[col]);
                p1 = Probability(s, p1, rowL[col + 1]);
                p2 = Probability(s, p2, rowL[col]);
                p3 = Probability(s, p3, rowL[col + 1]);
                p4 = Probability(s, p4, rowL[col + 8]);
                p5 = Probability(s, p5, rowL[col + 9]);
                p6 = Probability(s, p6, rowL[col + 8]);
                p7 = Probability(s, p7, rowL[col + 9]);
                // 0 where the mask drops a key or a row or key is past its tokens: tested only where the step's rows do
                // not keep all its keys (one branch, the same for the whole warp)
                if (!KeepsAll(s, r0 + rc, c0 + warp * 16))
                {
                    p0 = Kept(s, row, keyA) ? p0 : 0f;
                    p1 = Kept(s, row + 1, keyA) ? p1 : 0f;
                    p2 = Kept(s, row, keyB) ? p2 : 0f;
                    p3 = Kept(s, row + 1, keyB) ? p3 : 0f;
                    p4 = Kept(s, row + 8, keyA) ? p4 : 0f;
                    p5 = Kept(s, row + 9, keyA) ? p5 : 0f;
                    p6 = Kept(s, row + 8, keyB) ? p6 : 0f;
                    p7 = Kept(s, row + 9, keyB) ? p7 : 0f;
                }
                // dV += Pᵀ·dO, Pᵀ from its registers: the two 8-row tiles side by side are one 16-row step
                var gradColumns = default(TB);
                gradColumns.Start(oTile, dvStride, rc, g, t, oShared);
                dv.MmaByColumns(TensorCores.Pack(p0, p1), TensorCores.Pack(p2, p3), TensorCores.Pack(p4, p5), TensorCores.Pack(p6, p7), gradColumns, 0);
                if (!keysToo) continue;
                // dSᵀ = scale · Pᵀ ⊙ (V·dOᵀ − Δ), and dK += dSᵀ·Q
                float o0 = 0f, o1 = 0f, o2 = 0f, o3 = 0f, o4 = 0f, o5 = 0f, o6 = 0f, o7 = 0f;
                var grads = new RowWords(oTile, dvStride, rc + g, t);
                va.MmaByRows(grads.Top, 0, ref o0, ref o1, ref o2, ref o3);
                va.MmaByRows(grads.Bottom, 0, ref o4, ref o5, ref o6, ref o7);
                o0 = s.Scale * p0 * (o0 - rowD[col]);
                o1 = s.Scale * p1 * (o1 - rowD[col + 1]);
                o2 = s.Scale * p2 * (o2 - rowD[col]);
                o3 = s.Scale * p3 * (o3 - rowD[col + 1]);
                o4 = s.Scale * p4 * (o4 - rowD[col + 8]);
                o5 = s.Scale * p5 * (o5 - rowD[col + 9]);
                o6 = s.Scale * p6 * (o6 - rowD[col + 8]);
                o7 = s.Scale * p7 * (o7 - rowD[col + 9]);
                uint w01 = TensorCores.Pack(o0, o1), w23 = TensorCores.Pack(o2, o3), w45 = TensorCores.Pack(o4, o5), w67 = TensorCores.Pack(o6, o7);
                var queryColumns = default(TB);
                queryColumns.Start(qTile, dStride, rc, g, t, qShared);
                dk.MmaByColumns(w01, w23, w45, w67, queryColumns, 0);
                // dS (rows × keys) for dQ, from this warp's keys: the same bfloat16 values, a word's halves in two rows
                int key = warp * 16 + g;
                dsTile[col * dsStride + key] = (ushort)w01;
                dsTile[(col + 1) * dsStride + key] = (ushort)(w01 >> 16);
                dsTile[col * dsStride + key + 8] = (ushort)w23;
                dsTile[(col + 1) * dsStride + key + 8] = (ushort)(w23 >> 16);
                dsTile[(col + 8) * dsStride + key] = (ushort)w45;
                dsTile[(col + 9) * dsStride + key] = (ushort)(w45 >> 16);
                dsTile[(col + 8) * dsStride + key + 8] = (ushort)w67;
                dsTile[(col + 9) * dsStride + key + 8] = (ushort)(w67 >> 16);
            }
            if (!keysToo) continue;
            Group.Barrier();
            // dQ += dS·K: warp w takes rows 16·(w % 2) … and every other 8 columns of D from w / 2
            int m0 = (warp & 1) * 16;
            int rowA = r0 + m0 + g, rowB = rowA + 8;
            var ds = new RowWords(dsTile, dsStride, m0 + g, t);
            for (int nt = warp >> 1; nt < D / 8; nt += 2)
            {
                float d0 = 0f, d1 = 0f, d2 = 0f, d3 = 0f;
                for (int kk = 0; kk < Tile / 16; kk++)
                {
                    var keyColumns = default(TB);
                    keyColumns.Start(kTile, dStride, kk * 16, g, t, kShared);
                    keyColumns.Pair(nt * 8, out uint b0, out uint b1);
                    TensorCores.Mma(ds.Top[8 * kk], ds.Bottom[8 * kk], ds.Top[8 * kk + 4], ds.Bottom[8 * kk + 4], b0, b1, ref d0, ref d1, ref d2, ref d3);
                }
                int c = nt * 8 + 2 * t;
                if (rowA < s.T)
                {
                    FloatAtomics.Add(dq, (qBase + rowA) * D + c, d0);
                    FloatAtomics.Add(dq, (qBase + rowA) * D + c + 1, d1);
                }
                if (rowB < s.T)
                {
                    FloatAtomics.Add(dq, (qBase + rowB) * D + c, d2);
                    FloatAtomics.Add(dq, (qBase + rowB) * D + c + 1, d3);
                }
            }
        }
        // the heads of a group share their keys and values: each adds its share
        bool shared = group > 1;
        if (keysToo) dk.Store(dkv, kvBase * D, D, keyA, s.Keys, 0, t, shared);
        dv.Store(dkv, (keysToo ? s.KvHeads * s.Keys * D : 0) + kvBase * Dv, Dv, keyA, s.Keys, 0, t, shared);
    }

    /// <summary>(s0 … s3) and (s4 … s7) += A·Bᵀ for two tiles of 8 rows of B, A's 16 rows and B's both read by rows
    /// from shared tiles over their first <paramref name="width"/> values; each step's A fragment is read once for both
    /// tiles.</summary>
    static void MmaRowsByRows(in RowWords a, in RowWords b, int width,
                              ref float s0, ref float s1, ref float s2, ref float s3, ref float s4, ref float s5, ref float s6, ref float s7)
    {
        for (int w = 0; w < width / 2; w += 8)
        {
            uint a0 = a.Top[w], a1 = a.Bottom[w], a2 = a.Top[w + 4], a3 = a.Bottom[w + 4];
            TensorCores.Mma(a0, a1, a2, a3, b.Top[w], b.Top[w + 4], ref s0, ref s1, ref s2, ref s3);
            TensorCores.Mma(a0, a1, a2, a3, b.Bottom[w], b.Bottom[w + 4], ref s4, ref s5, ref s6, ref s7);
        }
    }

    /// <summary>P of a query row and a key from the product of their vectors and the row's log-sum-exp
    /// <paramref name="l"/> in base-2 units (one fused multiply-add and one ex2), were the key kept.</summary>
    static float Probability(in AttentionShape s, float product, float l) => Exp2(s.Scale * Log2E * product - l);

    /// <summary>Whether query row <paramref name="row"/> keeps <paramref name="key"/>, both within their tokens (a
    /// row's stop is at most Keys): tests without branches.</summary>
    static bool Kept(in AttentionShape s, int row, int key)
    {
        AttentionKernels.Kept(s, row, out int first, out int stop);
        return Keeps(row, key, first, stop, s.T);
    }

    /// <summary>Whether a row below <paramref name="rows"/> whose kept keys are <paramref name="first"/> …
    /// <paramref name="stop"/> − 1 keeps <paramref name="key"/>: tests without branches (&amp;, not &amp;&amp;).</summary>
    static bool Keeps(int row, int key, int first, int stop, int rows) => (row < rows) & (key >= first) & (key < stop);

    /// <summary>Whether rows <paramref name="row"/> … + 15, all below T, keep every key of <paramref name="key"/> … + 15:
    /// a row's first kept key and its stop grow with the row, so the last row's first and the first row's stop bound
    /// them all.</summary>
    static bool KeepsAll(in AttentionShape s, int row, int key)
    {
        if (row + 16 > s.T) return false;
        AttentionKernels.Kept(s, row + 15, out int first, out _);
        AttentionKernels.Kept(s, row, out _, out int stop);
        return key >= first && key + 16 <= stop;
    }
}
