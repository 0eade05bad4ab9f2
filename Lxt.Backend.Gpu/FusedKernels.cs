// The fused kernels, generic in a group's program (see FusedPrograms.cs), which reads up to eight broadcast operands
// and applies the element functions of the Unary, Binary and Where kernels. Fused computes the group's root one
// thread per element; SoftmaxRows and ReduceRows read a softmax's or trailing reduction's operand through the
// program (a prologue). Tables (walk, strides, program) are built once per group by GpuBackend.Fused.cs.
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

    public static void Fused<TValue>(Index1D i, ArrayView<float> y,
        ArrayView<float> x0, ArrayView<float> x1, ArrayView<float> x2, ArrayView<float> x3,
        ArrayView<float> x4, ArrayView<float> x5, ArrayView<float> x6, ArrayView<float> x7,
        ArrayView<int> table) where TValue : struct, IFusedValue
    {
        var x = new FusedOperands(x0, x1, x2, x3, x4, x5, x6, x7, table);
        y[i] = default(TValue).At(x, i);
    }

    /// <summary><see cref="Fused{TValue}"/> into bfloat16 values, each rounded to nearest (a narrow value).</summary>
    public static void FusedNarrow<TValue>(Index1D i, ArrayView<ushort> y,
        ArrayView<float> x0, ArrayView<float> x1, ArrayView<float> x2, ArrayView<float> x3,
        ArrayView<float> x4, ArrayView<float> x5, ArrayView<float> x6, ArrayView<float> x7,
        ArrayView<int> table) where TValue : struct, IFusedValue
    {
        var x = new FusedOperands(x0, x1, x2, x3, x4, x5, x6, x7, table);
        y[i] = BFloat16Conversion.FromFloat(default(TValue).At(x, i));
    }

    /// <summary>Softmax of contiguous rows of a fused group's value (a prologue), one group per row.</summary>
    public static void SoftmaxRows<TValue>(ArrayView<float> y,
        ArrayView<float> x0, ArrayView<float> x1, ArrayView<float> x2, ArrayView<float> x3,
        ArrayView<float> x4, ArrayView<float> x5, ArrayView<float> x6, ArrayView<float> x7,
        ArrayView<int> table, int len) where TValue : struct, IFusedValue =>
        SoftmaxRowsOf<TValue, WideValues>(new WideValues(y), new FusedOperands(x0, x1, x2, x3, x4, x5, x6, x7, table), len);

    /// <summary><see cref="SoftmaxRows{TValue}"/> into bfloat16 values, each rounded to nearest (a narrow value).</summary>
    public static void SoftmaxRowsNarrow<TValue>(ArrayView<ushort> y,
        ArrayView<float> x0, ArrayView<float> x1, ArrayView<float> x2, ArrayView<float> x3,
        ArrayView<float> x4, ArrayView<float> x5, ArrayView<float> x6, ArrayView<float> x7,
        ArrayView<int> table, int len) where TValue : struct, IFusedValue =>
        SoftmaxRowsOf<TValue, NarrowValues>(new NarrowValues(y), new FusedOperands(x0, x1, x2, x3, x4, x5, x6, x7, table), len);

    /// <summary>Sum, mean or max of contiguous rows of a fused group's value (a prologue), one group per row.</summary>
    public static void ReduceRows<TValue>(ArrayView<float> y,
        ArrayView<float> x0, ArrayView<float> x1, ArrayView<float> x2, ArrayView<float> x3,
        ArrayView<float> x4, ArrayView<float> x5, ArrayView<float> x6, ArrayView<float> x7,
        ArrayView<int> table, int len, int op) where TValue : struct, IFusedValue =>
        ReduceRowsOf<TValue>(y, new FusedOperands(x0, x1, x2, x3, x4, x5, x6, x7, table), len, op);

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
    internal static void SoftmaxRowsOf<TValue, TOut>(TOut y, in FusedOperands x, int len)
        where TValue : struct, IFusedValue where TOut : struct, IValueSink
    {
        var value = default(TValue);
        var cache = SharedMemory.GetDynamic<float>();
        bool cached = len <= cache.Length;
        int start = Grid.IdxX * len, lane = Group.IdxX, width = Group.DimX;
        float m = float.NegativeInfinity;
        for (int t = lane; t < len; t += width)
        {
            float v = value.At(x, start + t);
            if (cached) cache[t] = v;
            if (v > m) m = v;
        }
        m = Kernels.GroupMax(m);
        if (float.IsNegativeInfinity(m)) m = 0f;
        float z = 0f;
        for (int t = lane; t < len; t += width)
        {
            float e = MathF.Exp((cached ? cache[t] : value.At(x, start + t)) - m);
            if (cached) cache[t] = e;
            z += e;
        }
        z = Kernels.GroupSum(z);
        for (int t = lane; t < len; t += width)
            y.Set(start + t, (cached ? cache[t] : MathF.Exp(value.At(x, start + t) - m)) / z);
    }

    /// <summary>Sum, mean or max (by <see cref="ReduceOp"/> tag) of contiguous rows of the value
    /// <typeparamref name="TValue"/> computes from <paramref name="x"/>, one group per row: the body of the plain
    /// row reduction and of every reduction prologue.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void ReduceRowsOf<TValue>(ArrayView<float> y, in FusedOperands x, int len, int op) where TValue : struct, IFusedValue
    {
        var value = default(TValue);
        int row = Grid.IdxX, start = row * len, lane = Group.IdxX, width = Group.DimX;
        if (op == ReduceOp.Tags.Max)
        {
            float m = float.NegativeInfinity;
            for (int t = lane; t < len; t += width)
            {
                float v = value.At(x, start + t);
                if (v > m || float.IsNaN(v)) m = v;
            }
            m = Kernels.GroupMax(m);
            if (lane == 0) y[row] = m;
            return;
        }
        float s = 0f;
        for (int t = lane; t < len; t += width) s += value.At(x, start + t);
        s = Kernels.GroupSum(s);
        if (lane == 0) y[row] = op == ReduceOp.Tags.Mean ? s / len : s;
    }
}

/// <summary>Where a kernel writes the values it computes: float32 or bfloat16 elements.</summary>
internal interface IValueSink
{
    void Set(int i, float value);
}

/// <summary>float32 values.</summary>
internal readonly struct WideValues(ArrayView<float> y) : IValueSink
{
    readonly ArrayView<float> y = y;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Set(int i, float value) => y[i] = value;
}

/// <summary>bfloat16 values, each rounded to nearest (ties to even).</summary>
internal readonly struct NarrowValues(ArrayView<ushort> y) : IValueSink
{
    readonly ArrayView<ushort> y = y;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Set(int i, float value) => y[i] = BFloat16Conversion.FromFloat(value);
}
