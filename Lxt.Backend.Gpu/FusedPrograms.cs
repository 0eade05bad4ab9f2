// Fused programs as types: every instruction of a group's register program (Lxt.Graph.FusedInstr) becomes a struct
// type whose Run method ILGPU inlines, with its registers, operand numbers and op tags as type arguments. A group's
// kernel is the generic kernel instantiated with its program's type, so ILGPU compiles it to straight-line code:
// each register is a machine register, each op one instruction, and nothing is decoded per element. Programs of the
// same shape share one compiled kernel. The table (walk sizes, operand strides, constants) is GpuBackend.EncodeFused's.
using System.Runtime.CompilerServices;
using ILGPU;

namespace Lxt.Backend.Gpu;

/// <summary>A number known from a type: a register, an operand or an op tag of a program.</summary>
internal interface IConstant { int Value { get; } }

internal struct I0 : IConstant { public int Value => 0; }
internal struct I1 : IConstant { public int Value => 1; }
internal struct I2 : IConstant { public int Value => 2; }
internal struct I3 : IConstant { public int Value => 3; }
internal struct I4 : IConstant { public int Value => 4; }
internal struct I5 : IConstant { public int Value => 5; }
internal struct I6 : IConstant { public int Value => 6; }
internal struct I7 : IConstant { public int Value => 7; }
internal struct I8 : IConstant { public int Value => 8; }
internal struct I9 : IConstant { public int Value => 9; }
internal struct I10 : IConstant { public int Value => 10; }
internal struct I11 : IConstant { public int Value => 11; }
internal struct I12 : IConstant { public int Value => 12; }
internal struct I13 : IConstant { public int Value => 13; }
internal struct I14 : IConstant { public int Value => 14; }
internal struct I15 : IConstant { public int Value => 15; }
internal struct I16 : IConstant { public int Value => 16; }
internal struct I17 : IConstant { public int Value => 17; }
internal struct I18 : IConstant { public int Value => 18; }
internal struct I19 : IConstant { public int Value => 19; }
internal struct I20 : IConstant { public int Value => 20; }
internal struct I21 : IConstant { public int Value => 21; }
internal struct I22 : IConstant { public int Value => 22; }
internal struct I23 : IConstant { public int Value => 23; }
internal struct I24 : IConstant { public int Value => 24; }
internal struct I25 : IConstant { public int Value => 25; }
internal struct I26 : IConstant { public int Value => 26; }
internal struct I27 : IConstant { public int Value => 27; }
internal struct I28 : IConstant { public int Value => 28; }
internal struct I29 : IConstant { public int Value => 29; }
internal struct I30 : IConstant { public int Value => 30; }
internal struct I31 : IConstant { public int Value => 31; }

/// <summary>The registers of a fused program: its values, one field each, picked by constants that fold away.</summary>
internal struct Registers
{
    public float R0, R1, R2, R3, R4, R5, R6, R7, R8, R9, R10, R11, R12, R13, R14, R15, R16, R17, R18, R19, R20, R21, R22, R23, R24, R25, R26, R27, R28, R29, R30, R31;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly float Get(int k)
    {
        switch (k)
        {
            case 0: return R0;
            case 1: return R1;
            case 2: return R2;
            case 3: return R3;
            case 4: return R4;
            case 5: return R5;
            case 6: return R6;
            case 7: return R7;
            case 8: return R8;
            case 9: return R9;
            case 10: return R10;
            case 11: return R11;
            case 12: return R12;
            case 13: return R13;
            case 14: return R14;
            case 15: return R15;
            case 16: return R16;
            case 17: return R17;
            case 18: return R18;
            case 19: return R19;
            case 20: return R20;
            case 21: return R21;
            case 22: return R22;
            case 23: return R23;
            case 24: return R24;
            case 25: return R25;
            case 26: return R26;
            case 27: return R27;
            case 28: return R28;
            case 29: return R29;
            case 30: return R30;
            default: return R31;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Set(int k, float value)
    {
        switch (k)
        {
            case 0: R0 = value; break;
            case 1: R1 = value; break;
            case 2: R2 = value; break;
            case 3: R3 = value; break;
            case 4: R4 = value; break;
            case 5: R5 = value; break;
            case 6: R6 = value; break;
            case 7: R7 = value; break;
            case 8: R8 = value; break;
            case 9: R9 = value; break;
            case 10: R10 = value; break;
            case 11: R11 = value; break;
            case 12: R12 = value; break;
            case 13: R13 = value; break;
            case 14: R14 = value; break;
            case 15: R15 = value; break;
            case 16: R16 = value; break;
            case 17: R17 = value; break;
            case 18: R18 = value; break;
            case 19: R19 = value; break;
            case 20: R20 = value; break;
            case 21: R21 = value; break;
            case 22: R22 = value; break;
            case 23: R23 = value; break;
            case 24: R24 = value; break;
            case 25: R25 = value; break;
            case 26: R26 = value; break;
            case 27: R27 = value; break;
            case 28: R28 = value; break;
            case 29: R29 = value; break;
            case 30: R30 = value; break;
            default: R31 = value; break;
        }
    }
}

/// <summary>The operand views of a fused kernel and its table.</summary>
internal readonly struct FusedOperands
{
    readonly ArrayView<float> x0, x1, x2, x3, x4, x5, x6, x7;
    public readonly ArrayView<int> Table;

    public FusedOperands(ArrayView<float> x0, ArrayView<float> x1, ArrayView<float> x2, ArrayView<float> x3,
        ArrayView<float> x4, ArrayView<float> x5, ArrayView<float> x6, ArrayView<float> x7, ArrayView<int> table)
    {
        this.x0 = x0; this.x1 = x1; this.x2 = x2; this.x3 = x3;
        this.x4 = x4; this.x5 = x5; this.x6 = x6; this.x7 = x7;
        Table = table;
    }

    /// <summary>One operand, <paramref name="x"/>, and no table: what <see cref="Operand0"/> reads.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static FusedOperands Of(ArrayView<float> x) => new(x, x, x, x, x, x, x, x, default);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public float Read(int operand, int offset)
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

    /// <summary>Where operand <paramref name="operand"/> holds linear element <paramref name="i"/> of the root: the
    /// element's multi-index over the table's walk, dotted with the operand's strides.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public int StridedOffset(int operand, int i)
    {
        int rank = Table[FusedKernels.RankAt], strides = FusedKernels.HeaderLength + rank + operand * rank;
        int rest = i, offset = 0;
        for (int d = rank - 1; d >= 0; d--)
        {
            int n = Table[FusedKernels.HeaderLength + d], q = rest / n;
            offset += (rest - q * n) * Table[strides + d];
            rest = q;
        }
        return offset;
    }
}

/// <summary>Instructions of a fused program, and the program itself (a sequence of them): each computes its
/// registers at linear element <c>i</c> of the group's root.</summary>
internal interface IFusedProgram
{
    void Run(ref Registers r, in FusedOperands x, int i);
}

internal struct End : IFusedProgram
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly void Run(ref Registers r, in FusedOperands x, int i) { }
}

/// <summary><typeparamref name="TFirst"/>, then <typeparamref name="TRest"/>.</summary>
internal struct Then<TFirst, TRest> : IFusedProgram where TFirst : struct, IFusedProgram where TRest : struct, IFusedProgram
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly void Run(ref Registers r, in FusedOperands x, int i)
    {
        default(TFirst).Run(ref r, x, i);
        default(TRest).Run(ref r, x, i);
    }
}

/// <summary>Register D = operand K at the root's own index (an operand of the root's shape, walked contiguously).</summary>
internal struct LoadContiguous<K, D> : IFusedProgram where K : struct, IConstant where D : struct, IConstant
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly void Run(ref Registers r, in FusedOperands x, int i) => r.Set(default(D).Value, x.Read(default(K).Value, i));
}

/// <summary>Register D = the one value of operand K (a scalar broadcast to the root).</summary>
internal struct LoadScalar<K, D> : IFusedProgram where K : struct, IConstant where D : struct, IConstant
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly void Run(ref Registers r, in FusedOperands x, int i) => r.Set(default(D).Value, x.Read(default(K).Value, 0));
}

/// <summary>Register D = operand K through its broadcast strides.</summary>
internal struct LoadStrided<K, D> : IFusedProgram where K : struct, IConstant where D : struct, IConstant
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly void Run(ref Registers r, in FusedOperands x, int i)
    {
        int k = default(K).Value;
        r.Set(default(D).Value, x.Read(k, x.StridedOffset(k, i)));
    }
}

/// <summary>Register D = the constant the table holds in instruction D.</summary>
internal struct Constant<D> : IFusedProgram where D : struct, IConstant
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly void Run(ref Registers r, in FusedOperands x, int i)
    {
        int d = default(D).Value;
        r.Set(d, Interop.IntAsFloat((uint)x.Table[x.Table[FusedKernels.ProgramAt] + d * FusedKernels.InstructionLength + 1]));
    }
}

/// <summary>Register D = unary op Op (a <see cref="Lxt.Graph.UnaryOp"/> tag) of register A.</summary>
internal struct UnaryOf<Op, A, D> : IFusedProgram where Op : struct, IConstant where A : struct, IConstant where D : struct, IConstant
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly void Run(ref Registers r, in FusedOperands x, int i) =>
        r.Set(default(D).Value, Kernels.ApplyUnary(default(Op).Value, r.Get(default(A).Value)));
}

/// <summary>Register D = binary op Op (a <see cref="Lxt.Graph.BinaryOp"/> tag) of registers A and B.</summary>
internal struct BinaryOf<Op, A, B, D> : IFusedProgram
    where Op : struct, IConstant where A : struct, IConstant where B : struct, IConstant where D : struct, IConstant
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly void Run(ref Registers r, in FusedOperands x, int i) =>
        r.Set(default(D).Value, Kernels.ApplyBinary(default(Op).Value, r.Get(default(A).Value), r.Get(default(B).Value)));
}

/// <summary>Register D = register T where register C is not 0, else register F.</summary>
internal struct WhereOf<C, T, F, D> : IFusedProgram
    where C : struct, IConstant where T : struct, IConstant where F : struct, IConstant where D : struct, IConstant
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly void Run(ref Registers r, in FusedOperands x, int i) =>
        r.Set(default(D).Value, Kernels.ApplyWhere(r.Get(default(C).Value), r.Get(default(T).Value), r.Get(default(F).Value)));
}

/// <summary>A program's value: its last register.</summary>
internal interface IFusedValue
{
    float At(in FusedOperands x, int i);
}

/// <summary>The value of program P, whose last register is R.</summary>
internal struct Program<P, R> : IFusedValue where P : struct, IFusedProgram where R : struct, IConstant
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly float At(in FusedOperands x, int i)
    {
        var r = default(Registers);
        default(P).Run(ref r, x, i);
        return r.Get(default(R).Value);
    }
}

/// <summary>The value of operand 0 at the element itself: a plain kernel's operand, read as a program.</summary>
internal struct Operand0 : IFusedValue
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly float At(in FusedOperands x, int i) => x.Read(0, i);
}

/// <summary>Builds the type of an encoded program (GpuBackend.EncodeFused's table).</summary>
internal static class FusedProgramType
{
    static readonly Type[] Constants =
    [
        typeof(I0), typeof(I1), typeof(I2), typeof(I3), typeof(I4), typeof(I5), typeof(I6), typeof(I7),
        typeof(I8), typeof(I9), typeof(I10), typeof(I11), typeof(I12), typeof(I13), typeof(I14), typeof(I15),
        typeof(I16), typeof(I17), typeof(I18), typeof(I19), typeof(I20), typeof(I21), typeof(I22), typeof(I23),
        typeof(I24), typeof(I25), typeof(I26), typeof(I27), typeof(I28), typeof(I29), typeof(I30), typeof(I31),
    ];

    static Type C(int k) => k >= 0 && k < Constants.Length
        ? Constants[k]
        : throw new NotSupportedException($"gpu backend: a fused program needs the number {k}; 0 to {Constants.Length - 1} are supported");

    /// <summary>The <see cref="IFusedValue"/> type computing the program of <paramref name="table"/>.</summary>
    public static Type Of(int[] table)
    {
        int count = table[FusedKernels.CountAt], program = table[FusedKernels.ProgramAt];
        Type body = typeof(End);
        for (int pc = count - 1; pc >= 0; pc--)
        {
            int at = program + pc * FusedKernels.InstructionLength;
            int kind = table[at], p = table[at + 1], a = table[at + 2], b = table[at + 3];
            Type instruction = kind switch
            {
                FusedKernels.Load => (a switch
                {
                    FusedKernels.Contiguous => typeof(LoadContiguous<,>),
                    FusedKernels.Scalar => typeof(LoadScalar<,>),
                    _ => typeof(LoadStrided<,>),
                }).MakeGenericType(C(p), C(pc)),
                FusedKernels.Const => typeof(Constant<>).MakeGenericType(C(pc)),
                FusedKernels.Unary => typeof(UnaryOf<,,>).MakeGenericType(C(p), C(a), C(pc)),
                FusedKernels.Binary => typeof(BinaryOf<,,,>).MakeGenericType(C(p), C(a), C(b), C(pc)),
                _ => typeof(WhereOf<,,,>).MakeGenericType(C(p), C(a), C(b), C(pc)),
            };
            body = typeof(Then<,>).MakeGenericType(instruction, body);
        }
        return typeof(Program<,>).MakeGenericType(body, C(count - 1));
    }
}
