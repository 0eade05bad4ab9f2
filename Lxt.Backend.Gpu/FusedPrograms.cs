// Fused programs as types: every instruction of a group's register program (Lxt.Graph.FusedInstr) becomes a struct
// type whose Run method ILGPU inlines, with its registers, operands and element function as type arguments, each a
// type that reads or writes one field or applies one function. A group's kernel is the generic kernel instantiated with
// its program's type, so ILGPU compiles it to straight-line code: each register a machine register, each op its own
// instructions, nothing decoded per element and no switch to fold. Programs of the same shape share one compiled
// kernel. The table (walk sizes, operand strides, constants) is GpuBackend.EncodeFused's.
using System.Runtime.CompilerServices;
using ILGPU;

namespace Lxt.Backend.Gpu;

/// <summary>The registers of a fused program, one field each.</summary>
internal struct Registers
{
    public float R0, R1, R2, R3, R4, R5, R6, R7, R8, R9, R10, R11, R12, R13, R14, R15, R16, R17, R18, R19, R20, R21, R22, R23, R24, R25, R26, R27, R28, R29, R30, R31;

    /// <summary>Sets register <paramref name="k"/> (on the host, where a <see cref="ProgramTable"/> is built).</summary>
    public void Set(int k, float value) => HostFields.At(ref R0, k, FusedKernels.MaxRegisters) = value;
}

/// <summary>A register of a fused program, as a type.</summary>
internal interface IRegister
{
    int Index { get; }
    float Get(in Registers r);
    void Set(ref Registers r, float value);
}

internal struct R0 : IRegister { public readonly int Index => 0; [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly float Get(in Registers r) => r.R0; [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly void Set(ref Registers r, float value) => r.R0 = value; }
internal struct R1 : IRegister { public readonly int Index => 1; [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly float Get(in Registers r) => r.R1; [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly void Set(ref Registers r, float value) => r.R1 = value; }
internal struct R2 : IRegister { public readonly int Index => 2; [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly float Get(in Registers r) => r.R2; [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly void Set(ref Registers r, float value) => r.R2 = value; }
internal struct R3 : IRegister { public readonly int Index => 3; [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly float Get(in Registers r) => r.R3; [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly void Set(ref Registers r, float value) => r.R3 = value; }
internal struct R4 : IRegister { public readonly int Index => 4; [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly float Get(in Registers r) => r.R4; [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly void Set(ref Registers r, float value) => r.R4 = value; }
internal struct R5 : IRegister { public readonly int Index => 5; [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly float Get(in Registers r) => r.R5; [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly void Set(ref Registers r, float value) => r.R5 = value; }
internal struct R6 : IRegister { public readonly int Index => 6; [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly float Get(in Registers r) => r.R6; [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly void Set(ref Registers r, float value) => r.R6 = value; }
internal struct R7 : IRegister { public readonly int Index => 7; [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly float Get(in Registers r) => r.R7; [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly void Set(ref Registers r, float value) => r.R7 = value; }
internal struct R8 : IRegister { public readonly int Index => 8; [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly float Get(in Registers r) => r.R8; [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly void Set(ref Registers r, float value) => r.R8 = value; }
internal struct R9 : IRegister { public readonly int Index => 9; [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly float Get(in Registers r) => r.R9; [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly void Set(ref Registers r, float value) => r.R9 = value; }
internal struct R10 : IRegister { public readonly int Index => 10; [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly float Get(in Registers r) => r.R10; [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly void Set(ref Registers r, float value) => r.R10 = value; }
internal struct R11 : IRegister { public readonly int Index => 11; [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly float Get(in Registers r) => r.R11; [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly void Set(ref Registers r, float value) => r.R11 = value; }
internal struct R12 : IRegister { public readonly int Index => 12; [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly float Get(in Registers r) => r.R12; [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly void Set(ref Registers r, float value) => r.R12 = value; }
internal struct R13 : IRegister { public readonly int Index => 13; [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly float Get(in Registers r) => r.R13; [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly void Set(ref Registers r, float value) => r.R13 = value; }
internal struct R14 : IRegister { public readonly int Index => 14; [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly float Get(in Registers r) => r.R14; [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly void Set(ref Registers r, float value) => r.R14 = value; }
internal struct R15 : IRegister { public readonly int Index => 15; [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly float Get(in Registers r) => r.R15; [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly void Set(ref Registers r, float value) => r.R15 = value; }
internal struct R16 : IRegister { public readonly int Index => 16; [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly float Get(in Registers r) => r.R16; [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly void Set(ref Registers r, float value) => r.R16 = value; }
internal struct R17 : IRegister { public readonly int Index => 17; [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly float Get(in Registers r) => r.R17; [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly void Set(ref Registers r, float value) => r.R17 = value; }
internal struct R18 : IRegister { public readonly int Index => 18; [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly float Get(in Registers r) => r.R18; [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly void Set(ref Registers r, float value) => r.R18 = value; }
internal struct R19 : IRegister { public readonly int Index => 19; [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly float Get(in Registers r) => r.R19; [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly void Set(ref Registers r, float value) => r.R19 = value; }
internal struct R20 : IRegister { public readonly int Index => 20; [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly float Get(in Registers r) => r.R20; [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly void Set(ref Registers r, float value) => r.R20 = value; }
internal struct R21 : IRegister { public readonly int Index => 21; [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly float Get(in Registers r) => r.R21; [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly void Set(ref Registers r, float value) => r.R21 = value; }
internal struct R22 : IRegister { public readonly int Index => 22; [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly float Get(in Registers r) => r.R22; [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly void Set(ref Registers r, float value) => r.R22 = value; }
internal struct R23 : IRegister { public readonly int Index => 23; [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly float Get(in Registers r) => r.R23; [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly void Set(ref Registers r, float value) => r.R23 = value; }
internal struct R24 : IRegister { public readonly int Index => 24; [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly float Get(in Registers r) => r.R24; [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly void Set(ref Registers r, float value) => r.R24 = value; }
internal struct R25 : IRegister { public readonly int Index => 25; [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly float Get(in Registers r) => r.R25; [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly void Set(ref Registers r, float value) => r.R25 = value; }
internal struct R26 : IRegister { public readonly int Index => 26; [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly float Get(in Registers r) => r.R26; [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly void Set(ref Registers r, float value) => r.R26 = value; }
internal struct R27 : IRegister { public readonly int Index => 27; [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly float Get(in Registers r) => r.R27; [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly void Set(ref Registers r, float value) => r.R27 = value; }
internal struct R28 : IRegister { public readonly int Index => 28; [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly float Get(in Registers r) => r.R28; [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly void Set(ref Registers r, float value) => r.R28 = value; }
internal struct R29 : IRegister { public readonly int Index => 29; [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly float Get(in Registers r) => r.R29; [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly void Set(ref Registers r, float value) => r.R29 = value; }
internal struct R30 : IRegister { public readonly int Index => 30; [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly float Get(in Registers r) => r.R30; [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly void Set(ref Registers r, float value) => r.R30 = value; }
internal struct R31 : IRegister { public readonly int Index => 31; [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly float Get(in Registers r) => r.R31; [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly void Set(ref Registers r, float value) => r.R31 = value; }

/// <summary>The operand views of a fused kernel and its table, in device memory (<see cref="Table"/>, read where an
/// element needs an entry) and as a kernel parameter (<see cref="Inline"/>, read by an inline program); a kernel
/// receives both and its program reads one.</summary>
internal readonly struct FusedOperands
{
    public readonly ArrayView<float> X0, X1, X2, X3, X4, X5, X6, X7;
    public readonly ArrayView<int> Table;
    public readonly ProgramTable Inline;

    public FusedOperands(ArrayView<float> x0, ArrayView<float> x1, ArrayView<float> x2, ArrayView<float> x3,
        ArrayView<float> x4, ArrayView<float> x5, ArrayView<float> x6, ArrayView<float> x7, ArrayView<int> table, in ProgramTable inline)
    {
        X0 = x0; X1 = x1; X2 = x2; X3 = x3; X4 = x4; X5 = x5; X6 = x6; X7 = x7;
        Table = table;
        Inline = inline;
    }

    /// <summary>One operand, <paramref name="x"/>, and no table: what <see cref="Operand0"/> reads.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static FusedOperands Of(ArrayView<float> x) => new(x, x, x, x, x, x, x, x, default, default);

    /// <summary>The multi-index of linear element <paramref name="i"/> of the root over the table's walk (see
    /// <see cref="WalkLadder.Coordinates"/>), its axes read from the table.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public Coordinates CoordinatesOf(int i) => WalkLadder.Coordinates(i, Table[FusedKernels.RankAt], new TableAxes(Table));

    /// <summary>Where operand <paramref name="operand"/> holds the element at coordinates <paramref name="c"/>: the
    /// coordinates dotted with the operand's strides, read from the table.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public int StridedOffset(int operand, in Coordinates c)
    {
        int rank = Table[FusedKernels.RankAt];
        return WalkLadder.Offset(rank, new TableRun(Table, FusedKernels.HeaderLength + rank * FusedKernels.AxisLength + operand * rank), c);
    }
}

/// <summary>A value per walk axis (innermost first), the axis a constant wherever a ladder of <see cref="WalkLadder"/>
/// asks, so that reading it is one load or one field.</summary>
internal interface IAxisValues
{
    int At(int axis);
}

/// <summary>The sizes and division constants of a walk's axes (innermost first).</summary>
internal interface IWalkAxes
{
    int Size(int axis);
    uint Magic(int axis);
    int Shift(int axis);
}

/// <summary>A walk's axes as the table holds them.</summary>
internal readonly struct TableAxes(ArrayView<int> table) : IWalkAxes
{
    readonly ArrayView<int> table = table;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public int Size(int axis) => table[FusedKernels.HeaderLength + axis * FusedKernels.AxisLength];
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public uint Magic(int axis) => (uint)table[FusedKernels.HeaderLength + axis * FusedKernels.AxisLength + 1];
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public int Shift(int axis) => table[FusedKernels.HeaderLength + axis * FusedKernels.AxisLength + 2];
}

/// <summary>A run of the table's ints, one per axis from <c>start</c> (an operand's strides).</summary>
internal readonly struct TableRun(ArrayView<int> table, int start) : IAxisValues
{
    readonly ArrayView<int> table = table;
    readonly int start = start;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public int At(int axis) => table[start + axis];
}

/// <summary>The two ladders over a walk's rank that every strided load climbs, whichever way its table entries come:
/// an element's multi-index, and its offset in one operand.</summary>
internal static class WalkLadder
{
    /// <summary>The multi-index of linear element <paramref name="i"/> over a walk of <paramref name="rank"/> axes,
    /// innermost axis first: one division per axis but the outermost, each a multiply-high by the axis's magic number
    /// and a shift (<see cref="FastDivision"/>), computed once per element for all strided operands.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Coordinates Coordinates<TAxes>(int i, int rank, in TAxes axes) where TAxes : struct, IWalkAxes
    {
        var c = default(Coordinates);
        int rest = i;
        if (rank > 1) rest = Split(rest, 0, axes, out c.C0); else { c.C0 = rest; return c; }
        if (rank > 2) rest = Split(rest, 1, axes, out c.C1); else { c.C1 = rest; return c; }
        if (rank > 3) rest = Split(rest, 2, axes, out c.C2); else { c.C2 = rest; return c; }
        if (rank > 4) rest = Split(rest, 3, axes, out c.C3); else { c.C3 = rest; return c; }
        if (rank > 5) rest = Split(rest, 4, axes, out c.C4); else { c.C4 = rest; return c; }
        if (rank > 6) rest = Split(rest, 5, axes, out c.C5); else { c.C5 = rest; return c; }
        if (rank > 7) rest = Split(rest, 6, axes, out c.C6); else { c.C6 = rest; return c; }
        c.C7 = rest;
        return c;
    }

    /// <summary>The quotient of <paramref name="rest"/> by the size of walk axis <paramref name="axis"/>; the
    /// remainder is the coordinate along it.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static int Split<TAxes>(int rest, int axis, in TAxes axes, out int coordinate) where TAxes : struct, IWalkAxes
    {
        int n = axes.Size(axis), q = FastDivision.Quotient(rest, axes.Magic(axis), axes.Shift(axis));
        coordinate = rest - q * n;
        return q;
    }

    /// <summary>The coordinates <paramref name="c"/> dotted with <paramref name="strides"/> over
    /// <paramref name="rank"/> axes.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int Offset<TStrides>(int rank, in TStrides strides, in Coordinates c) where TStrides : struct, IAxisValues
    {
        int offset = c.C0 * strides.At(0);
        if (rank > 1) offset += c.C1 * strides.At(1);
        if (rank > 2) offset += c.C2 * strides.At(2);
        if (rank > 3) offset += c.C3 * strides.At(3);
        if (rank > 4) offset += c.C4 * strides.At(4);
        if (rank > 5) offset += c.C5 * strides.At(5);
        if (rank > 6) offset += c.C6 * strides.At(6);
        if (rank > 7) offset += c.C7 * strides.At(7);
        return offset;
    }
}

/// <summary>A fused program's table as a kernel parameter (an inline program, <see cref="FusedProgramType.Of"/> with
/// <c>inline</c>): the walk's rank, its axes' sizes and division constants, each operand's strides and the constants,
/// each in the register of its instruction. A kernel's parameters sit in the constant bank, so an inline program reads
/// no table entry from memory. Built on the host from the table <see cref="GpuBackend"/> encodes.</summary>
internal struct ProgramTable : IWalkAxes
{
    public int Rank;
    public AxisInts Sizes, Shifts;
    public AxisWords Magics;
    public AxisInts S0, S1, S2, S3, S4, S5, S6, S7;
    public Registers Constants;

    /// <summary>The parameter of an encoded table (GpuBackend.EncodeFused's).</summary>
    public static ProgramTable Of(int[] table)
    {
        const int h = FusedKernels.HeaderLength, n = FusedKernels.AxisLength;
        int rank = table[FusedKernels.RankAt], operands = table[FusedKernels.OperandsAt];
        int count = table[FusedKernels.CountAt], program = table[FusedKernels.ProgramAt];
        var p = new ProgramTable { Rank = rank };
        for (int axis = 0; axis < rank; axis++)
        {
            p.Sizes.Set(axis, table[h + axis * n]);
            p.Magics.Set(axis, (uint)table[h + axis * n + 1]);
            p.Shifts.Set(axis, table[h + axis * n + 2]);
        }
        for (int k = 0; k < operands; k++)
        {
            var strides = default(AxisInts);
            for (int axis = 0; axis < rank; axis++) strides.Set(axis, table[h + rank * n + k * rank + axis]);
            p.SetStrides(k, strides);
        }
        for (int pc = 0; pc < count; pc++)
        {
            int at = program + pc * FusedKernels.InstructionLength;
            if (table[at] == FusedKernels.Const) p.Constants.Set(pc, BitConverter.Int32BitsToSingle(table[at + 1]));
        }
        return p;
    }

    void SetStrides(int operand, in AxisInts strides)
    {
        switch (operand)
        {
            case 0: S0 = strides; break;
            case 1: S1 = strides; break;
            case 2: S2 = strides; break;
            case 3: S3 = strides; break;
            case 4: S4 = strides; break;
            case 5: S5 = strides; break;
            case 6: S6 = strides; break;
            default: S7 = strides; break;
        }
    }

    /// <summary><see cref="FusedOperands.CoordinatesOf"/> from the parameter's walk.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly Coordinates CoordinatesOf(int i) => WalkLadder.Coordinates(i, Rank, this);

    /// <summary>The coordinates <paramref name="c"/> dotted with <paramref name="strides"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly int StridedOffset(in AxisInts strides, in Coordinates c) => WalkLadder.Offset(Rank, strides, c);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly int Size(int axis) => Sizes.At(axis);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly uint Magic(int axis) => Magics.At(axis);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly int Shift(int axis) => Shifts.At(axis);
}

/// <summary>An int per walk axis, innermost first (<see cref="FusedKernels.MaxRank"/> of them).</summary>
internal struct AxisInts : IAxisValues
{
    public int A0, A1, A2, A3, A4, A5, A6, A7;

    /// <summary>Sets axis <paramref name="axis"/> (on the host).</summary>
    public void Set(int axis, int value) => HostFields.At(ref A0, axis, FusedKernels.MaxRank) = value;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly int At(int axis) => axis switch { 0 => A0, 1 => A1, 2 => A2, 3 => A3, 4 => A4, 5 => A5, 6 => A6, _ => A7 };
}

/// <summary>An unsigned int per walk axis, innermost first.</summary>
internal struct AxisWords
{
    public uint A0, A1, A2, A3, A4, A5, A6, A7;

    /// <summary>Sets axis <paramref name="axis"/> (on the host).</summary>
    public void Set(int axis, uint value) => HostFields.At(ref A0, axis, FusedKernels.MaxRank) = value;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly uint At(int axis) => axis switch { 0 => A0, 1 => A1, 2 => A2, 3 => A3, 4 => A4, 5 => A5, 6 => A6, _ => A7 };
}

/// <summary>Fields of the kernels' structs addressed by number on the host, where a <see cref="ProgramTable"/> is built
/// (kernels name their fields, so that ILGPU keeps each in a register).</summary>
internal static class HostFields
{
    /// <summary>Field <paramref name="k"/> of the <paramref name="count"/> same-typed fields that start at
    /// <paramref name="first"/>, checked against the count.</summary>
    public static ref T At<T>(ref T first, int k, int count)
    {
        if ((uint)k >= (uint)count) throw new ArgumentOutOfRangeException(nameof(k), $"field {k} of {count}");
        return ref Unsafe.Add(ref first, k);
    }
}

/// <summary>An element's multi-index over a fused walk of at most <see cref="FusedKernels.MaxRank"/> axes, innermost
/// axis first (unused axes 0).</summary>
internal struct Coordinates
{
    public int C0, C1, C2, C3, C4, C5, C6, C7;
}

/// <summary>Division of non-negative ints below 2³¹ by a divisor fixed per kernel launch, as a multiply-high and a
/// shift (Granlund and Montgomery's round-up method): for d ≥ 1 with l = ⌈log₂ d⌉ and m = ⌊2³²·(2ˡ − d)/d⌋ + 1,
/// n / d = (mulhi(m, n) + n) >> l, where the sum stays below 2³² because n &lt; 2³¹.</summary>
internal static class FastDivision
{
    /// <summary>The magic number m and shift l of divisor <paramref name="d"/> (1 ≤ d &lt; 2³¹).</summary>
    public static (uint Magic, int Shift) Of(int d)
    {
        if (d < 1) throw new ArgumentOutOfRangeException(nameof(d), $"a divisor must be at least 1, not {d}");
        int l = 0;
        while ((1L << l) < d) l++;
        ulong m = ((1UL << 32) * (ulong)((1L << l) - d)) / (ulong)d + 1;
        return ((uint)m, l);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int Quotient(int n, uint magic, int shift) =>
        (int)(((uint)(((ulong)magic * (uint)n) >> 32) + (uint)n) >> shift);
}

/// <summary>An operand of a fused kernel, as a type.</summary>
internal interface IOperand
{
    int Index { get; }
    float Read(in FusedOperands x, int offset);
    /// <summary>The operand's strides in an inline program's <see cref="ProgramTable"/>.</summary>
    AxisInts Strides(in ProgramTable t);
}

internal struct X0 : IOperand { public readonly int Index => 0; [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly float Read(in FusedOperands x, int offset) => x.X0[offset]; [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly AxisInts Strides(in ProgramTable t) => t.S0; }
internal struct X1 : IOperand { public readonly int Index => 1; [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly float Read(in FusedOperands x, int offset) => x.X1[offset]; [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly AxisInts Strides(in ProgramTable t) => t.S1; }
internal struct X2 : IOperand { public readonly int Index => 2; [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly float Read(in FusedOperands x, int offset) => x.X2[offset]; [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly AxisInts Strides(in ProgramTable t) => t.S2; }
internal struct X3 : IOperand { public readonly int Index => 3; [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly float Read(in FusedOperands x, int offset) => x.X3[offset]; [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly AxisInts Strides(in ProgramTable t) => t.S3; }
internal struct X4 : IOperand { public readonly int Index => 4; [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly float Read(in FusedOperands x, int offset) => x.X4[offset]; [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly AxisInts Strides(in ProgramTable t) => t.S4; }
internal struct X5 : IOperand { public readonly int Index => 5; [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly float Read(in FusedOperands x, int offset) => x.X5[offset]; [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly AxisInts Strides(in ProgramTable t) => t.S5; }
internal struct X6 : IOperand { public readonly int Index => 6; [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly float Read(in FusedOperands x, int offset) => x.X6[offset]; [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly AxisInts Strides(in ProgramTable t) => t.S6; }
internal struct X7 : IOperand { public readonly int Index => 7; [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly float Read(in FusedOperands x, int offset) => x.X7[offset]; [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly AxisInts Strides(in ProgramTable t) => t.S7; }

/// <summary>An operand of a fused kernel stored in bfloat16 (a narrow value): its float32 view holds the values in
/// pairs (<see cref="BFloat16Conversion.FromPairs"/>).</summary>
internal struct N0 : IOperand { public readonly int Index => 0; [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly float Read(in FusedOperands x, int offset) => BFloat16Conversion.FromPairs(x.X0, offset); [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly AxisInts Strides(in ProgramTable t) => t.S0; }
internal struct N1 : IOperand { public readonly int Index => 1; [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly float Read(in FusedOperands x, int offset) => BFloat16Conversion.FromPairs(x.X1, offset); [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly AxisInts Strides(in ProgramTable t) => t.S1; }
internal struct N2 : IOperand { public readonly int Index => 2; [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly float Read(in FusedOperands x, int offset) => BFloat16Conversion.FromPairs(x.X2, offset); [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly AxisInts Strides(in ProgramTable t) => t.S2; }
internal struct N3 : IOperand { public readonly int Index => 3; [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly float Read(in FusedOperands x, int offset) => BFloat16Conversion.FromPairs(x.X3, offset); [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly AxisInts Strides(in ProgramTable t) => t.S3; }
internal struct N4 : IOperand { public readonly int Index => 4; [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly float Read(in FusedOperands x, int offset) => BFloat16Conversion.FromPairs(x.X4, offset); [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly AxisInts Strides(in ProgramTable t) => t.S4; }
internal struct N5 : IOperand { public readonly int Index => 5; [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly float Read(in FusedOperands x, int offset) => BFloat16Conversion.FromPairs(x.X5, offset); [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly AxisInts Strides(in ProgramTable t) => t.S5; }
internal struct N6 : IOperand { public readonly int Index => 6; [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly float Read(in FusedOperands x, int offset) => BFloat16Conversion.FromPairs(x.X6, offset); [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly AxisInts Strides(in ProgramTable t) => t.S6; }
internal struct N7 : IOperand { public readonly int Index => 7; [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly float Read(in FusedOperands x, int offset) => BFloat16Conversion.FromPairs(x.X7, offset); [MethodImpl(MethodImplOptions.AggressiveInlining)] public readonly AxisInts Strides(in ProgramTable t) => t.S7; }

/// <summary>Instructions of a fused program, and the program itself (a sequence of them): each computes its
/// registers at linear element <c>i</c> of the group's root.</summary>
internal interface IFusedProgram
{
    void Run(ref Registers r, in FusedOperands x, in Coordinates c, int i);
}

internal struct End : IFusedProgram
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly void Run(ref Registers r, in FusedOperands x, in Coordinates c, int i) { }
}

/// <summary><typeparamref name="TFirst"/>, then <typeparamref name="TRest"/>.</summary>
internal struct Then<TFirst, TRest> : IFusedProgram where TFirst : struct, IFusedProgram where TRest : struct, IFusedProgram
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly void Run(ref Registers r, in FusedOperands x, in Coordinates c, int i)
    {
        default(TFirst).Run(ref r, x, c, i);
        default(TRest).Run(ref r, x, c, i);
    }
}

/// <summary>Register D = operand K at the root's own index (an operand of the root's shape, walked contiguously).</summary>
internal struct LoadContiguous<K, D> : IFusedProgram where K : struct, IOperand where D : struct, IRegister
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly void Run(ref Registers r, in FusedOperands x, in Coordinates c, int i) => default(D).Set(ref r, default(K).Read(x, i));
}

/// <summary>Register D = the one value of operand K (a scalar broadcast to the root).</summary>
internal struct LoadScalar<K, D> : IFusedProgram where K : struct, IOperand where D : struct, IRegister
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly void Run(ref Registers r, in FusedOperands x, in Coordinates c, int i) => default(D).Set(ref r, default(K).Read(x, 0));
}

/// <summary>Register D = operand K through its broadcast strides.</summary>
internal struct LoadStrided<K, D> : IFusedProgram where K : struct, IOperand where D : struct, IRegister
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly void Run(ref Registers r, in FusedOperands x, in Coordinates c, int i) =>
        default(D).Set(ref r, default(K).Read(x, x.StridedOffset(default(K).Index, c)));
}

/// <summary>Register D = the constant the table holds in instruction D.</summary>
internal struct Constant<D> : IFusedProgram where D : struct, IRegister
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly void Run(ref Registers r, in FusedOperands x, in Coordinates c, int i) =>
        default(D).Set(ref r, Interop.IntAsFloat((uint)x.Table[x.Table[FusedKernels.ProgramAt] + default(D).Index * FusedKernels.InstructionLength + 1]));
}

/// <summary><see cref="LoadStrided{K, D}"/> with the operand's strides from the kernel parameter (an inline program).</summary>
internal struct LoadStridedInline<K, D> : IFusedProgram where K : struct, IOperand where D : struct, IRegister
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly void Run(ref Registers r, in FusedOperands x, in Coordinates c, int i) =>
        default(D).Set(ref r, default(K).Read(x, x.Inline.StridedOffset(default(K).Strides(x.Inline), c)));
}

/// <summary><see cref="Constant{D}"/> from the kernel parameter (an inline program).</summary>
internal struct ConstantInline<D> : IFusedProgram where D : struct, IRegister
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly void Run(ref Registers r, in FusedOperands x, in Coordinates c, int i) => default(D).Set(ref r, default(D).Get(x.Inline.Constants));
}

/// <summary>Register D = F(register A).</summary>
internal struct UnaryOf<F, A, D> : IFusedProgram where F : struct, IUnaryFunction where A : struct, IRegister where D : struct, IRegister
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly void Run(ref Registers r, in FusedOperands x, in Coordinates c, int i) => default(D).Set(ref r, default(F).Apply(default(A).Get(r)));
}

/// <summary>Register D = F(register A, register B).</summary>
internal struct BinaryOf<F, A, B, D> : IFusedProgram
    where F : struct, IBinaryFunction where A : struct, IRegister where B : struct, IRegister where D : struct, IRegister
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly void Run(ref Registers r, in FusedOperands x, in Coordinates c, int i) =>
        default(D).Set(ref r, default(F).Apply(default(A).Get(r), default(B).Get(r)));
}

/// <summary>Register D = register T where register C is not 0, else register F.</summary>
internal struct WhereOf<C, T, F, D> : IFusedProgram
    where C : struct, IRegister where T : struct, IRegister where F : struct, IRegister where D : struct, IRegister
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly void Run(ref Registers r, in FusedOperands x, in Coordinates c, int i) =>
        default(D).Set(ref r, Kernels.ApplyWhere(default(C).Get(r), default(T).Get(r), default(F).Get(r)));
}

/// <summary>A program's value at linear element i of the group's root: its last register.</summary>
internal interface IFusedValue
{
    float At(in FusedOperands x, int i);
}

/// <summary>How a program finds an element's multi-index: not at all (it has no strided load), from the table at each
/// element, or from the kernel parameter (an inline program).</summary>
internal interface IElementWalk
{
    Coordinates Of(in FusedOperands x, int i);
}

internal struct NoWalk : IElementWalk
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly Coordinates Of(in FusedOperands x, int i) => default;
}

internal struct TableWalk : IElementWalk
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly Coordinates Of(in FusedOperands x, int i) => x.CoordinatesOf(i);
}

internal struct InlineWalk : IElementWalk
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly Coordinates Of(in FusedOperands x, int i) => x.Inline.CoordinatesOf(i);
}

/// <summary>The value of program P, whose last register is R, its strided loads at the multi-index W finds.</summary>
internal struct Program<P, R, W> : IFusedValue where P : struct, IFusedProgram where R : struct, IRegister where W : struct, IElementWalk
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly float At(in FusedOperands x, int i)
    {
        var r = default(Registers);
        var c = default(W).Of(x, i);
        default(P).Run(ref r, x, c, i);
        return default(R).Get(r);
    }
}

/// <summary>The value of operand 0 at the element itself: a plain kernel's operand, read as a program.</summary>
internal struct Operand0 : IFusedValue
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly float At(in FusedOperands x, int i) => x.X0[i];
}

/// <summary>Builds the type of an encoded program (GpuBackend.EncodeFused's table).</summary>
internal static class FusedProgramType
{
    static readonly Type[] RegisterTypes =
    [
        typeof(R0), typeof(R1), typeof(R2), typeof(R3), typeof(R4), typeof(R5), typeof(R6), typeof(R7),
        typeof(R8), typeof(R9), typeof(R10), typeof(R11), typeof(R12), typeof(R13), typeof(R14), typeof(R15),
        typeof(R16), typeof(R17), typeof(R18), typeof(R19), typeof(R20), typeof(R21), typeof(R22), typeof(R23),
        typeof(R24), typeof(R25), typeof(R26), typeof(R27), typeof(R28), typeof(R29), typeof(R30), typeof(R31),
    ];

    static readonly Type[] OperandTypes = [typeof(X0), typeof(X1), typeof(X2), typeof(X3), typeof(X4), typeof(X5), typeof(X6), typeof(X7)];
    static readonly Type[] NarrowOperandTypes = [typeof(N0), typeof(N1), typeof(N2), typeof(N3), typeof(N4), typeof(N5), typeof(N6), typeof(N7)];

    static Type Register(int k) => k >= 0 && k < RegisterTypes.Length
        ? RegisterTypes[k]
        : throw new NotSupportedException($"gpu backend: a fused program uses register {k}; 0 to {RegisterTypes.Length - 1} are supported");

    static Type Operand(int k, bool narrow) => k >= 0 && k < OperandTypes.Length
        ? (narrow ? NarrowOperandTypes : OperandTypes)[k]
        : throw new NotSupportedException($"gpu backend: a fused program reads operand {k}; 0 to {OperandTypes.Length - 1} are supported");

    /// <summary>The <see cref="IFusedValue"/> type computing the program of <paramref name="table"/>: reading the
    /// table's walk, strides and constants from device memory at each element, or from the kernel parameter
    /// (<see cref="ProgramTable"/>) when <paramref name="inline"/>.</summary>
    public static Type Of(int[] table, bool inline = false)
    {
        int count = table[FusedKernels.CountAt], program = table[FusedKernels.ProgramAt];
        Type body = typeof(End);
        bool strided = false;
        for (int pc = count - 1; pc >= 0; pc--)
        {
            int at = program + pc * FusedKernels.InstructionLength;
            int kind = table[at], p = table[at + 1], a = table[at + 2], b = table[at + 3];
            strided |= kind == FusedKernels.Load && a == FusedKernels.Strided;
            Type instruction = kind switch
            {
                FusedKernels.Load => (a switch
                {
                    FusedKernels.Contiguous => typeof(LoadContiguous<,>),
                    FusedKernels.Scalar => typeof(LoadScalar<,>),
                    _ => inline ? typeof(LoadStridedInline<,>) : typeof(LoadStrided<,>),
                }).MakeGenericType(Operand(p, narrow: b != 0), Register(pc)),
                FusedKernels.Const => (inline ? typeof(ConstantInline<>) : typeof(Constant<>)).MakeGenericType(Register(pc)),
                FusedKernels.Unary => typeof(UnaryOf<,,>).MakeGenericType(Unary1.Of(p), Register(a), Register(pc)),
                FusedKernels.Binary => typeof(BinaryOf<,,,>).MakeGenericType(Binary2.Of(p), Register(a), Register(b), Register(pc)),
                _ => typeof(WhereOf<,,,>).MakeGenericType(Register(p), Register(a), Register(b), Register(pc)),
            };
            body = typeof(Then<,>).MakeGenericType(instruction, body);
        }
        var walk = !strided ? typeof(NoWalk) : inline ? typeof(InlineWalk) : typeof(TableWalk);
        return typeof(Program<,,>).MakeGenericType(body, Register(count - 1), walk);
    }
}
