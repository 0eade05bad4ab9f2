// The fused kernels, generic in a group's program (see FusedPrograms.cs), which reads up to eight broadcast operands
// and applies the element functions of the Unary, Binary and Where kernels. Fused computes the group's root one
// thread per element (FusedPairs one per pair, see GpuBackend.PairedKernels); SoftmaxRows (one group per row),
// SoftmaxWarpRows (one warp per row), SoftmaxRegisterRows (one warp per row, held in registers) and ReduceRows read a
// softmax's or trailing reduction's operand through the program (a prologue). Tables (walk, strides, program) are built once per group by GpuBackend.Fused.cs and reach a
// kernel twice, in device memory and as a parameter (ProgramTable); the program's type reads one of them.
using System.Runtime.CompilerServices;
using ILGPU;
using Lxt.Graph;

namespace Lxt.Backend.Gpu;

internal static class FusedKernels
{
    /// <summary>Operand views the kernel takes (Lxt.Graph.Fusion.MaxOperands).</summary>
    public const int MaxOperands = 8;

    /// <summary>Registers of a program: the most instructions it may have (Lxt.Graph.Fusion.MaxInstructions).</summary>
    public const int MaxRegisters = 32;

    /// <summary>Axes of the output walk after size-1 axes are dropped and contiguous ones merged.</summary>
    public const int MaxRank = 8;

    // table layout: header, then per walk axis (innermost first) its size and its size's FastDivision magic number
    // and shift, then each operand's strides (innermost first), then the program
    public const int RankAt = 0, OperandsAt = 1, CountAt = 2, ProgramAt = 3, HeaderLength = 4, AxisLength = 3;

    /// <summary>How a Load finds its element (the instruction's third int): through the strides, at the output's own
    /// index (an operand of the root's shape, contiguous), or at 0 (a scalar).</summary>
    public const int Strided = 0, Contiguous = 1, Scalar = 2;

    /// <summary>Each instruction is four ints: its kind, then (operand | float bits | op tag | cond register) and
    /// up to two registers; a Load's are its operand, how it finds its element, and 1 when the operand is stored in
    /// bfloat16 (0 for float32).</summary>
    public const int InstructionLength = 4;
    public const int Load = 0, Const = 1, Unary = 2, Binary = 3, Where = 4;

    /// <summary>The group's root, one thread per element.</summary>
    public static void Fused<TValue>(Index1D i, ArrayView<float> y,
        ArrayView<float> x0, ArrayView<float> x1, ArrayView<float> x2, ArrayView<float> x3,
        ArrayView<float> x4, ArrayView<float> x5, ArrayView<float> x6, ArrayView<float> x7,
        ArrayView<int> table, ProgramTable inline) where TValue : struct, IFusedValue =>
        ElementOf<TValue, WideValues>(i, new WideValues(y), new FusedOperands(x0, x1, x2, x3, x4, x5, x6, x7, table, inline));

    /// <summary>The group's root, one thread per pair of elements (launched on ⌈n/2⌉ threads): see
    /// <see cref="PairOf{TValue, TOut}"/>.</summary>
    public static void FusedPairs<TValue>(Index1D j, ArrayView<float> y,
        ArrayView<float> x0, ArrayView<float> x1, ArrayView<float> x2, ArrayView<float> x3,
        ArrayView<float> x4, ArrayView<float> x5, ArrayView<float> x6, ArrayView<float> x7,
        ArrayView<int> table, ProgramTable inline) where TValue : struct, IFusedValue =>
        PairOf<TValue, WideValues>(j, new WideValues(y), new FusedOperands(x0, x1, x2, x3, x4, x5, x6, x7, table, inline));

    /// <summary><see cref="Fused{TValue}"/> into bfloat16 values, each rounded to nearest (a narrow value).</summary>
    public static void FusedNarrow<TValue>(Index1D i, ArrayView<ushort> y,
        ArrayView<float> x0, ArrayView<float> x1, ArrayView<float> x2, ArrayView<float> x3,
        ArrayView<float> x4, ArrayView<float> x5, ArrayView<float> x6, ArrayView<float> x7,
        ArrayView<int> table, ProgramTable inline) where TValue : struct, IFusedValue =>
        ElementOf<TValue, NarrowValues>(i, new NarrowValues(y), new FusedOperands(x0, x1, x2, x3, x4, x5, x6, x7, table, inline));

    /// <summary><see cref="FusedPairs{TValue}"/> into bfloat16 values, each pair stored as one 32-bit word.</summary>
    public static void FusedNarrowPairs<TValue>(Index1D j, ArrayView<ushort> y,
        ArrayView<float> x0, ArrayView<float> x1, ArrayView<float> x2, ArrayView<float> x3,
        ArrayView<float> x4, ArrayView<float> x5, ArrayView<float> x6, ArrayView<float> x7,
        ArrayView<int> table, ProgramTable inline) where TValue : struct, IFusedValue =>
        PairOf<TValue, NarrowValues>(j, new NarrowValues(y), new FusedOperands(x0, x1, x2, x3, x4, x5, x6, x7, table, inline));

    /// <summary>Element <paramref name="i"/> of the value <typeparamref name="TValue"/> computes, into
    /// <paramref name="y"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void ElementOf<TValue, TOut>(int i, TOut y, in FusedOperands x) where TValue : struct, IFusedValue where TOut : struct, IValueSink
    {
        var value = default(TValue);
        y.Set(i, value.At(x, i));
    }

    /// <summary>Elements 2j and 2j + 1 of the value <typeparamref name="TValue"/> computes, both computed before either
    /// is stored and stored as a pair (one 32-bit word into bfloat16); the last thread of an odd count computes its
    /// one element twice and stores it once.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void PairOf<TValue, TOut>(int j, TOut y, in FusedOperands x) where TValue : struct, IFusedValue where TOut : struct, IValueSink
    {
        var value = default(TValue);
        int n = (int)y.Length, i = 2 * j;
        float a = value.At(x, i), b = value.At(x, Math.Min(i + 1, n - 1));
        if (i + 1 < n) y.SetPair(i, a, b);
        else y.Set(i, a);
    }

    /// <summary>Softmax of contiguous rows of a fused group's value (a prologue), one group per row; a thread takes
    /// neighbouring values in pairs where <paramref name="pairs"/> is not 0 and rows have an even length.</summary>
    public static void SoftmaxRows<TValue>(ArrayView<float> y,
        ArrayView<float> x0, ArrayView<float> x1, ArrayView<float> x2, ArrayView<float> x3,
        ArrayView<float> x4, ArrayView<float> x5, ArrayView<float> x6, ArrayView<float> x7,
        ArrayView<int> table, ProgramTable inline, int len, int pairs) where TValue : struct, IFusedValue =>
        SoftmaxRowsOf<TValue, WideValues>(new WideValues(y), new FusedOperands(x0, x1, x2, x3, x4, x5, x6, x7, table, inline), len, pairs != 0);

    /// <summary><see cref="SoftmaxRows{TValue}"/> into bfloat16 values, each rounded to nearest (a narrow value).</summary>
    public static void SoftmaxRowsNarrow<TValue>(ArrayView<ushort> y,
        ArrayView<float> x0, ArrayView<float> x1, ArrayView<float> x2, ArrayView<float> x3,
        ArrayView<float> x4, ArrayView<float> x5, ArrayView<float> x6, ArrayView<float> x7,
        ArrayView<int> table, ProgramTable inline, int len, int pairs) where TValue : struct, IFusedValue =>
        SoftmaxRowsOf<TValue, NarrowValues>(new NarrowValues(y), new FusedOperands(x0, x1, x2, x3, x4, x5, x6, x7, table, inline), len, pairs != 0);

    /// <summary>Softmax of contiguous rows of a fused group's value (a prologue), one warp per row and
    /// <c>Group.DimX / Warp.WarpSize</c> rows a group (<see cref="SoftmaxWarpRowsOf{TValue, TOut}"/>); pairs as
    /// <see cref="SoftmaxRows{TValue}"/>.</summary>
    public static void SoftmaxWarpRows<TValue>(ArrayView<float> y,
        ArrayView<float> x0, ArrayView<float> x1, ArrayView<float> x2, ArrayView<float> x3,
        ArrayView<float> x4, ArrayView<float> x5, ArrayView<float> x6, ArrayView<float> x7,
        ArrayView<int> table, ProgramTable inline, int len, int pairs) where TValue : struct, IFusedValue =>
        SoftmaxWarpRowsOf<TValue, WideValues>(new WideValues(y), new FusedOperands(x0, x1, x2, x3, x4, x5, x6, x7, table, inline), len, pairs != 0);

    /// <summary><see cref="SoftmaxWarpRows{TValue}"/> into bfloat16 values, each rounded to nearest (a narrow value).</summary>
    public static void SoftmaxWarpRowsNarrow<TValue>(ArrayView<ushort> y,
        ArrayView<float> x0, ArrayView<float> x1, ArrayView<float> x2, ArrayView<float> x3,
        ArrayView<float> x4, ArrayView<float> x5, ArrayView<float> x6, ArrayView<float> x7,
        ArrayView<int> table, ProgramTable inline, int len, int pairs) where TValue : struct, IFusedValue =>
        SoftmaxWarpRowsOf<TValue, NarrowValues>(new NarrowValues(y), new FusedOperands(x0, x1, x2, x3, x4, x5, x6, x7, table, inline), len, pairs != 0);

    /// <summary>Softmax of contiguous rows of a fused group's value (a prologue), one warp per row, each lane holding
    /// its values of the row in <typeparamref name="TCells"/>'s registers (<see cref="SoftmaxRegisterRowsOf{TValue, TOut, TCells}"/>);
    /// pairs as <see cref="SoftmaxRows{TValue}"/>.</summary>
    public static void SoftmaxRegisterRows<TValue, TCells>(ArrayView<float> y,
        ArrayView<float> x0, ArrayView<float> x1, ArrayView<float> x2, ArrayView<float> x3,
        ArrayView<float> x4, ArrayView<float> x5, ArrayView<float> x6, ArrayView<float> x7,
        ArrayView<int> table, ProgramTable inline, int len, int pairs) where TValue : struct, IFusedValue where TCells : struct, IRowCells =>
        SoftmaxRegisterRowsOf<TValue, WideValues, TCells>(new WideValues(y), new FusedOperands(x0, x1, x2, x3, x4, x5, x6, x7, table, inline), len, pairs != 0);

    /// <summary><see cref="SoftmaxRegisterRows{TValue, TCells}"/> into bfloat16 values, each rounded to nearest (a narrow value).</summary>
    public static void SoftmaxRegisterRowsNarrow<TValue, TCells>(ArrayView<ushort> y,
        ArrayView<float> x0, ArrayView<float> x1, ArrayView<float> x2, ArrayView<float> x3,
        ArrayView<float> x4, ArrayView<float> x5, ArrayView<float> x6, ArrayView<float> x7,
        ArrayView<int> table, ProgramTable inline, int len, int pairs) where TValue : struct, IFusedValue where TCells : struct, IRowCells =>
        SoftmaxRegisterRowsOf<TValue, NarrowValues, TCells>(new NarrowValues(y), new FusedOperands(x0, x1, x2, x3, x4, x5, x6, x7, table, inline), len, pairs != 0);

    /// <summary>Sum, mean or max of contiguous rows of a fused group's value (a prologue), one group per row; pairs as
    /// <see cref="SoftmaxRows{TValue}"/>.</summary>
    public static void ReduceRows<TValue>(ArrayView<float> y,
        ArrayView<float> x0, ArrayView<float> x1, ArrayView<float> x2, ArrayView<float> x3,
        ArrayView<float> x4, ArrayView<float> x5, ArrayView<float> x6, ArrayView<float> x7,
        ArrayView<int> table, ProgramTable inline, int len, int op, int pairs) where TValue : struct, IFusedValue =>
        ReduceRowsOf<TValue>(y, new FusedOperands(x0, x1, x2, x3, x4, x5, x6, x7, table, inline), len, op, pairs != 0);

    /// <summary>Most elements of a softmax row the row kernel keeps in shared memory (32 KiB a group, under the 48 KiB
    /// every CUDA device gives a group without opting in).</summary>
    public const int CachedRowLimit = 8192;

    /// <summary>Softmax of contiguous rows of the value <typeparamref name="TValue"/> computes from
    /// <paramref name="x"/>, one group per row (grid = rows; a warp, or several for long rows): threads stride over the
    /// row so loads coalesce, and combine their maxima and sums by shuffles within warps and shared memory across
    /// them. A row that is −∞ throughout keeps the reference's shift of 0 and so gives 0/0. A row of at most the group's dynamic shared memory (launched with
    /// <see cref="CachedRowLimit"/> or fewer elements) is read once: the first pass keeps its values there and the
    /// second their exponentials; a longer one evaluates the value in each of the three passes. The plain softmax
    /// kernel and every prologue run this one body.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void SoftmaxRowsOf<TValue, TOut>(TOut y, in FusedOperands x, int len, bool pairs)
        where TValue : struct, IFusedValue where TOut : struct, IValueSink
    {
        if (pairs && (len & 1) == 0) SoftmaxRowsBy<TValue, TOut, InPairs>(y, x, len);
        else SoftmaxRowsBy<TValue, TOut, OneByOne>(y, x, len);
    }

    /// <summary><see cref="SoftmaxRowsOf{TValue, TOut}"/>, each thread taking <typeparamref name="TStep"/>'s count of
    /// neighbouring values at a time: pairs where rows have an even length (so each pair starts at an even index and
    /// a narrow pair is one 32-bit word), single values otherwise.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void SoftmaxRowsBy<TValue, TOut, TStep>(TOut y, in FusedOperands x, int len)
        where TValue : struct, IFusedValue where TOut : struct, IValueSink where TStep : struct, IRowStep
    {
        var value = default(TValue);
        bool pairs = default(TStep).Pairs;
        int step = pairs ? 2 : 1;
        var cache = SharedMemory.GetDynamic<float>();
        bool cached = len <= cache.Length;
        int start = Grid.IdxX * len, first = Group.IdxX * step, stride = Group.DimX * step;
        // a pair's values are kept at t / 2 and len / 2 + t / 2, so the threads of a warp touch neighbouring banks
        int half = len >> 1;
        float m = float.NegativeInfinity;
        for (int t = first; t < len; t += stride)
        {
            float a = value.At(x, start + t);
            float b = pairs ? value.At(x, start + t + 1) : a;
            if (cached)
            {
                cache[pairs ? t >> 1 : t] = a;
                if (pairs) cache[half + (t >> 1)] = b;
            }
            if (a > m) m = a;
            if (b > m) m = b;
        }
        m = Kernels.GroupMax(m);
        if (float.IsNegativeInfinity(m)) m = 0f;
        float z = 0f;
        for (int t = first; t < len; t += stride)
        {
            float a = MathF.Exp((cached ? cache[pairs ? t >> 1 : t] : value.At(x, start + t)) - m);
            float b = pairs ? MathF.Exp((cached ? cache[half + (t >> 1)] : value.At(x, start + t + 1)) - m) : 0f;
            if (cached)
            {
                cache[pairs ? t >> 1 : t] = a;
                if (pairs) cache[half + (t >> 1)] = b;
            }
            z += a + b;
        }
        z = Kernels.GroupSum(z);
        for (int t = first; t < len; t += stride)
        {
            float a = (cached ? cache[pairs ? t >> 1 : t] : MathF.Exp(value.At(x, start + t) - m)) / z;
            if (pairs) y.SetPair(start + t, a, (cached ? cache[half + (t >> 1)] : MathF.Exp(value.At(x, start + t + 1) - m)) / z);
            else y.Set(start + t, a);
        }
    }

    /// <summary>Softmax of contiguous rows, one warp per row and no group barrier: each lane keeps a running maximum
    /// and the sum of exponentials relative to it as it reads its values once (an online softmax), the lanes combine
    /// theirs by shuffles, and a second pass evaluates each value again and writes it. The rows of a launch are
    /// <c>y</c>'s length over <paramref name="len"/>; a warp past the last row does nothing. Special values give what
    /// <see cref="SoftmaxRowsOf{TValue, TOut}"/> gives: a row that is −∞ throughout 0/0, a NaN or a +∞ NaN throughout.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void SoftmaxWarpRowsOf<TValue, TOut>(TOut y, in FusedOperands x, int len, bool pairs)
        where TValue : struct, IFusedValue where TOut : struct, IValueSink
    {
        if (pairs && (len & 1) == 0) SoftmaxWarpRowsBy<TValue, TOut, InPairs>(y, x, len);
        else SoftmaxWarpRowsBy<TValue, TOut, OneByOne>(y, x, len);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void SoftmaxWarpRowsBy<TValue, TOut, TStep>(TOut y, in FusedOperands x, int len)
        where TValue : struct, IFusedValue where TOut : struct, IValueSink where TStep : struct, IRowStep
    {
        var value = default(TValue);
        bool pairs = default(TStep).Pairs;
        int step = pairs ? 2 : 1;
        if (!WarpRowStart(y, len, out int start)) return;
        int first = Warp.LaneIdx * step, stride = Warp.WarpSize * step;
        float m = float.NegativeInfinity, z = 0f;
        for (int t = first; t < len; t += stride)
        {
            Online(ref m, ref z, value.At(x, start + t));
            if (pairs) Online(ref m, ref z, value.At(x, start + t + 1));
        }
        for (int offset = Warp.WarpSize >> 1; offset > 0; offset >>= 1)
        {
            float mo = Warp.ShuffleXor(m, offset), zo = Warp.ShuffleXor(z, offset);
            float mn = mo > m ? mo : m;
            z = Rescaled(z, m, mn) + Rescaled(zo, mo, mn);
            m = mn;
        }
        if (float.IsPositiveInfinity(m)) z = float.NaN; // the reference's exp(∞ − ∞)
        if (float.IsNegativeInfinity(m)) m = 0f;
        for (int t = first; t < len; t += stride)
        {
            float a = MathF.Exp(value.At(x, start + t) - m) / z;
            if (pairs) y.SetPair(start + t, a, MathF.Exp(value.At(x, start + t + 1) - m) / z);
            else y.Set(start + t, a);
        }
    }

    /// <summary>Softmax of contiguous rows, one warp per row with the row in registers: each lane reads its cells
    /// (<typeparamref name="TCells"/>, enough for the row) at once, the lanes take the row's maximum and the sum of
    /// exponentials by shuffles, and each lane writes its cells. The rows of a launch are <c>y</c>'s length over
    /// <paramref name="len"/>; a warp past the last row does nothing. Special values give what
    /// <see cref="SoftmaxRowsOf{TValue, TOut}"/> gives: a row that is −∞ throughout 0/0, a NaN or a +∞ NaN throughout.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void SoftmaxRegisterRowsOf<TValue, TOut, TCells>(TOut y, in FusedOperands x, int len, bool pairs)
        where TValue : struct, IFusedValue where TOut : struct, IValueSink where TCells : struct, IRowCells
    {
        if (pairs && (len & 1) == 0) SoftmaxRegisterRowsBy<TValue, TOut, TCells, InPairs>(y, x, len);
        else SoftmaxRegisterRowsBy<TValue, TOut, TCells, OneByOne>(y, x, len);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void SoftmaxRegisterRowsBy<TValue, TOut, TCells, TStep>(TOut y, in FusedOperands x, int len)
        where TValue : struct, IFusedValue where TOut : struct, IValueSink where TCells : struct, IRowCells where TStep : struct, IRowStep
    {
        if (!WarpRowStart(y, len, out int start)) return;
        int first = Warp.LaneIdx * (default(TStep).Pairs ? 2 : 1);
        var cells = default(TCells);
        cells.Read<TValue, TStep>(x, start, first, len);
        float m = Kernels.WarpMax(cells.Max(float.NegativeInfinity));
        if (float.IsNegativeInfinity(m)) m = 0f;
        float z = Kernels.WarpSum(cells.Exponentials(m));
        cells.Write<TOut, TStep>(y, start, first, len, z);
    }

    /// <summary>Where the row of this thread's warp starts in a launch of one warp per row, <c>Group.DimX / WarpSize</c>
    /// rows a group (<see cref="GpuBackend"/>'s WarpRowsLaunch); false for a warp past the last row, which leaves whole.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static bool WarpRowStart<TOut>(TOut y, int len, out int start) where TOut : struct, IValueSink
    {
        int row = Grid.IdxX * (Group.DimX / Warp.WarpSize) + Warp.WarpIdx;
        start = row * len;
        return (long)row * len < y.Length;
    }

    /// <summary>One value into a running maximum <paramref name="m"/> and the sum <paramref name="z"/> of exponentials
    /// relative to it: a larger value rescales the sum; −∞ adds nothing while the maximum is −∞; NaN makes the sum NaN.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Online(ref float m, ref float z, float v)
    {
        if (v > m)
        {
            z = Rescaled(z, m, v) + 1f;
            m = v;
        }
        else if (!float.IsNegativeInfinity(m) || float.IsNaN(v)) z += MathF.Exp(v - m);
    }

    /// <summary>A sum of exponentials relative to <paramref name="from"/> made relative to <paramref name="to"/> ≥ it.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static float Rescaled(float z, float from, float to) => from == to ? z : z * MathF.Exp(from - to);

    /// <summary>Sum, mean or max (by <see cref="ReduceOp"/> tag) of contiguous rows of the value
    /// <typeparamref name="TValue"/> computes from <paramref name="x"/>, one group per row: the body of the plain
    /// row reduction and of every reduction prologue. Threads take neighbouring values in pairs where rows have an
    /// even length (see <see cref="SoftmaxRowsBy{TValue, TOut, TStep}"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void ReduceRowsOf<TValue>(ArrayView<float> y, in FusedOperands x, int len, int op, bool pairs) where TValue : struct, IFusedValue
    {
        if (pairs && (len & 1) == 0) ReduceRowsBy<TValue, InPairs>(y, x, len, op);
        else ReduceRowsBy<TValue, OneByOne>(y, x, len, op);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void ReduceRowsBy<TValue, TStep>(ArrayView<float> y, in FusedOperands x, int len, int op)
        where TValue : struct, IFusedValue where TStep : struct, IRowStep
    {
        var value = default(TValue);
        bool pairs = default(TStep).Pairs;
        int step = pairs ? 2 : 1;
        int row = Grid.IdxX, start = row * len, first = Group.IdxX * step, stride = Group.DimX * step;
        if (op == ReduceOp.Tags.Max)
        {
            float m = float.NegativeInfinity;
            for (int t = first; t < len; t += stride)
            {
                float a = value.At(x, start + t);
                float b = pairs ? value.At(x, start + t + 1) : a;
                if (a > m || float.IsNaN(a)) m = a;
                if (b > m || float.IsNaN(b)) m = b;
            }
            m = Kernels.GroupMax(m);
            if (Group.IdxX == 0) y[row] = m;
            return;
        }
        float s = 0f;
        for (int t = first; t < len; t += stride)
            s += pairs ? value.At(x, start + t) + value.At(x, start + t + 1) : value.At(x, start + t);
        s = Kernels.GroupSum(s);
        if (Group.IdxX == 0) y[row] = op == ReduceOp.Tags.Mean ? s / len : s;
    }
}

/// <summary>How many neighbouring values a thread of a row kernel takes at a time: two (<see cref="InPairs"/>) or one.</summary>
internal interface IRowStep
{
    bool Pairs { get; }
}

internal struct InPairs : IRowStep
{
    public readonly bool Pairs => true;
}

internal struct OneByOne : IRowStep
{
    public readonly bool Pairs => false;
}

/// <summary>Where a kernel writes the values it computes: float32 or bfloat16 elements.</summary>
internal interface IValueSink
{
    /// <summary>Number of values.</summary>
    long Length { get; }

    void Set(int i, float value);

    /// <summary>Values i and i + 1, i even.</summary>
    void SetPair(int i, float a, float b);
}

/// <summary>float32 values.</summary>
internal readonly struct WideValues(ArrayView<float> y) : IValueSink
{
    readonly ArrayView<float> y = y;

    public long Length => y.Length;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Set(int i, float value) => y[i] = value;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void SetPair(int i, float a, float b)
    {
        y[i] = a;
        y[i + 1] = b;
    }
}

/// <summary>bfloat16 values, each rounded to nearest (ties to even).</summary>
internal readonly struct NarrowValues(ArrayView<ushort> y) : IValueSink
{
    readonly ArrayView<ushort> y = y;

    public long Length => y.Length;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Set(int i, float value) => y[i] = BFloat16Conversion.FromFloat(value);

    /// <summary>Both values as one 32-bit word (i even: the buffer starts a word, so the pair is one).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void SetPair(int i, float a, float b) => y.Cast<uint>()[i >> 1] = BFloat16Conversion.Pair(a, b);
}
