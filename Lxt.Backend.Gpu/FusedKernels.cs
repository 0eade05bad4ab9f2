// The fused kernels: a group's register program (see Lxt.Graph.FusedGroup) interpreted per element by one function,
// Element, reading up to eight broadcast operands with the element functions of the Unary, Binary and Where kernels.
// Fused computes the group's root one thread per element; SoftmaxRows and ReduceRows read a softmax's or trailing
// reduction's operand through the program (a prologue). Tables (shape, strides, program) are built once per group
// by GpuBackend.Fused.cs.
using ILGPU;
using Lxt.Graph;

namespace Lxt.Backend.Gpu;

internal static class FusedKernels
{
    /// <summary>Operand views the kernel takes (Lxt.Graph.Fusion.MaxOperands).</summary>
    public const int MaxOperands = 8;

    /// <summary>Registers of the kernel: the most instructions a program may have (Lxt.Graph.Fusion.MaxInstructions).</summary>
    public const int MaxRegisters = 32;

    /// <summary>Axes of the output walk after size-1 axes are dropped and contiguous ones merged.</summary>
    public const int MaxRank = 8;

    // table layout: header, then the walk's sizes (outermost first), then each operand's strides, then the program;
    // the header says whether any load needs the element's multi-index (one that is neither contiguous nor a scalar)
    public const int RankAt = 0, OperandsAt = 1, CountAt = 2, ProgramAt = 3, NeedsIndexAt = 4, HeaderLength = 5;

    /// <summary>How a Load finds its element (the instruction's third int): through the strides, at the output's own
    /// index (an operand of the root's shape, contiguous), or at 0 (a scalar).</summary>
    public const int Strided = 0, Contiguous = 1, Scalar = 2;

    /// <summary>Each instruction is four ints: its kind, then (operand | float bits | op tag | cond register) and
    /// up to two registers.</summary>
    public const int InstructionLength = 4;
    public const int Load = 0, Const = 1, Unary = 2, Binary = 3, Where = 4;

    public static void Fused(Index1D i, ArrayView<float> y,
        ArrayView<float> x0, ArrayView<float> x1, ArrayView<float> x2, ArrayView<float> x3,
        ArrayView<float> x4, ArrayView<float> x5, ArrayView<float> x6, ArrayView<float> x7,
        ArrayView<int> table)
    {
        var registers = LocalMemory.Allocate<float>(MaxRegisters);
        var index = LocalMemory.Allocate<int>(MaxRank);
        y[i] = Element(i, registers, index, table, x0, x1, x2, x3, x4, x5, x6, x7);
    }

    /// <summary>Softmax of contiguous rows of a fused group's value, one warp per row (group = one warp, grid =
    /// rows): <see cref="Kernels.SoftmaxRows"/> with each element computed by the program where that kernel reads
    /// it, so the passes, the shift and the order of the sums are the same.</summary>
    public static void SoftmaxRows(ArrayView<float> y,
        ArrayView<float> x0, ArrayView<float> x1, ArrayView<float> x2, ArrayView<float> x3,
        ArrayView<float> x4, ArrayView<float> x5, ArrayView<float> x6, ArrayView<float> x7,
        ArrayView<int> table, int len)
    {
        var registers = LocalMemory.Allocate<float>(MaxRegisters);
        var index = LocalMemory.Allocate<int>(MaxRank);
        int start = Grid.IdxX * len, lane = Group.IdxX, width = Group.DimX;
        float m = float.NegativeInfinity;
        for (int t = lane; t < len; t += width)
        {
            float v = Element(start + t, registers, index, table, x0, x1, x2, x3, x4, x5, x6, x7);
            if (v > m) m = v;
        }
        m = Kernels.WarpMax(m);
        if (float.IsNegativeInfinity(m)) m = 0f;
        float z = 0f;
        for (int t = lane; t < len; t += width)
            z += MathF.Exp(Element(start + t, registers, index, table, x0, x1, x2, x3, x4, x5, x6, x7) - m);
        z = Kernels.WarpSum(z);
        for (int t = lane; t < len; t += width)
            y[start + t] = MathF.Exp(Element(start + t, registers, index, table, x0, x1, x2, x3, x4, x5, x6, x7) - m) / z;
    }

    /// <summary>Sum, mean or max of contiguous rows of a fused group's value, one warp per row:
    /// <see cref="Kernels.ReduceRows"/> with each element computed by the program where that kernel reads it.</summary>
    public static void ReduceRows(ArrayView<float> y,
        ArrayView<float> x0, ArrayView<float> x1, ArrayView<float> x2, ArrayView<float> x3,
        ArrayView<float> x4, ArrayView<float> x5, ArrayView<float> x6, ArrayView<float> x7,
        ArrayView<int> table, int len, int op)
    {
        var registers = LocalMemory.Allocate<float>(MaxRegisters);
        var index = LocalMemory.Allocate<int>(MaxRank);
        int row = Grid.IdxX, start = row * len, lane = Group.IdxX, width = Group.DimX;
        if (op == ReduceOp.Tags.Max)
        {
            float m = float.NegativeInfinity;
            for (int t = lane; t < len; t += width)
            {
                float v = Element(start + t, registers, index, table, x0, x1, x2, x3, x4, x5, x6, x7);
                if (v > m || float.IsNaN(v)) m = v;
            }
            m = Kernels.WarpMax(m);
            if (lane == 0) y[row] = m;
            return;
        }
        float s = 0f;
        for (int t = lane; t < len; t += width) s += Element(start + t, registers, index, table, x0, x1, x2, x3, x4, x5, x6, x7);
        s = Kernels.WarpSum(s);
        if (lane == 0) y[row] = op == ReduceOp.Tags.Mean ? s / len : s;
    }

    /// <summary>The group's value at linear element <paramref name="i"/> of its root: the program interpreted over
    /// <paramref name="registers"/> (MaxRegisters floats) with <paramref name="index"/> (MaxRank ints) as scratch
    /// for the element's multi-index. The one interpreter every fused kernel calls.</summary>
    internal static float Element(int i, ArrayView<float> registers, ArrayView<int> index, ArrayView<int> table,
        ArrayView<float> x0, ArrayView<float> x1, ArrayView<float> x2, ArrayView<float> x3,
        ArrayView<float> x4, ArrayView<float> x5, ArrayView<float> x6, ArrayView<float> x7)
    {
        int rank = table[RankAt], count = table[CountAt], program = table[ProgramAt];
        if (table[NeedsIndexAt] != 0)
        {
            int rest = i;
            for (int d = rank - 1; d >= 0; d--)
            {
                int n = table[HeaderLength + d], q = rest / n;
                index[d] = rest - q * n;
                rest = q;
            }
        }
        for (int pc = 0; pc < count; pc++)
        {
            int at = program + pc * InstructionLength;
            int kind = table[at], p = table[at + 1];
            float v;
            if (kind == Load)
            {
                int mode = table[at + 2], offset = mode == Contiguous ? i : 0;
                if (mode == Strided)
                {
                    int strides = HeaderLength + rank + p * rank;
                    for (int d = 0; d < rank; d++) offset += index[d] * table[strides + d];
                }
                v = Read(p, offset, x0, x1, x2, x3, x4, x5, x6, x7);
            }
            else if (kind == Const) v = Interop.IntAsFloat((uint)p);
            else if (kind == Unary) v = Kernels.ApplyUnary(p, registers[table[at + 2]]);
            else if (kind == Binary) v = Kernels.ApplyBinary(p, registers[table[at + 2]], registers[table[at + 3]]);
            else v = Kernels.ApplyWhere(registers[p], registers[table[at + 2]], registers[table[at + 3]]);
            registers[pc] = v;
        }
        return registers[count - 1];
    }

    static float Read(int operand, int offset,
        ArrayView<float> x0, ArrayView<float> x1, ArrayView<float> x2, ArrayView<float> x3,
        ArrayView<float> x4, ArrayView<float> x5, ArrayView<float> x6, ArrayView<float> x7)
    {
        switch (operand)
        {
            case 0: return x0[offset];
            case 1: return x1[offset];
            case 2: return x2[offset];
            case 3: return x3[offset];
            case 4: return x4[offset];
            case 5: return x5[offset];
            case 6: return x6[offset];
            default: return x7[offset];
        }
    }
}
