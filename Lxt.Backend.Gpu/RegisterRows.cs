// Softmax rows held in registers: one warp per row, each lane keeping its values of the row in registers from reading
// them to writing their softmax, so a row is read once, with all of a lane's loads independent of each other, and
// no shared memory or group barrier is used. The cells a lane holds are a nested type (RowCells<RowCells<…NoCells>>),
// built per row length as the fused programs' types are (FusedPrograms.cs), so that ILGPU keeps every cell in
// registers and compiles each pass over them to straight-line code.
using System.Runtime.CompilerServices;
using ILGPU;

namespace Lxt.Backend.Gpu;

/// <summary>A lane's cells of a row, each two values: at t and t + 1 (a pair, for rows of even length) or at t and
/// t + WarpSize (values one at a time), the next cell 2·WarpSize values further; cells past the row hold −∞ and
/// write nothing.</summary>
internal interface IRowCells
{
    /// <summary>Reads the cells from value <typeparamref name="TValue"/> (a program) of the row starting at
    /// <paramref name="start"/>, this cell at <paramref name="t"/>.</summary>
    void Read<TValue, TStep>(in FusedOperands x, int start, int t, int len) where TValue : struct, IFusedValue where TStep : struct, IRowStep;

    /// <summary>The largest value, NaN ignored (it makes the sum NaN instead), at least <paramref name="m"/>.</summary>
    float Max(float m);

    /// <summary>Replaces each value v by exp(v − <paramref name="m"/>) and returns their sum.</summary>
    float Exponentials(float m);

    /// <summary>Writes each value over <paramref name="z"/> into the row starting at <paramref name="start"/>.</summary>
    void Write<TOut, TStep>(TOut y, int start, int t, int len, float z) where TOut : struct, IValueSink where TStep : struct, IRowStep;
}

internal struct NoCells : IRowCells
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Read<TValue, TStep>(in FusedOperands x, int start, int t, int len) where TValue : struct, IFusedValue where TStep : struct, IRowStep { }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly float Max(float m) => m;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public float Exponentials(float m) => 0f;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly void Write<TOut, TStep>(TOut y, int start, int t, int len, float z) where TOut : struct, IValueSink where TStep : struct, IRowStep { }
}

internal struct RowCells<TRest> : IRowCells where TRest : struct, IRowCells
{
    float a, b;
#pragma warning disable CS0649 // written through its own methods (a struct's fields, changed in place)
    TRest rest;
#pragma warning restore CS0649

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static int Second<TStep>(int t) where TStep : struct, IRowStep => default(TStep).Pairs ? t + 1 : t + Warp.WarpSize;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Read<TValue, TStep>(in FusedOperands x, int start, int t, int len) where TValue : struct, IFusedValue where TStep : struct, IRowStep
    {
        var value = default(TValue);
        int second = Second<TStep>(t);
        a = t < len ? value.At(x, start + t) : float.NegativeInfinity;
        b = second < len ? value.At(x, start + second) : float.NegativeInfinity;
        rest.Read<TValue, TStep>(x, start, t + 2 * Warp.WarpSize, len);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly float Max(float m)
    {
        if (a > m) m = a;
        if (b > m) m = b;
        return rest.Max(m);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public float Exponentials(float m)
    {
        a = MathF.Exp(a - m);
        b = MathF.Exp(b - m);
        return a + b + rest.Exponentials(m);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly void Write<TOut, TStep>(TOut y, int start, int t, int len, float z) where TOut : struct, IValueSink where TStep : struct, IRowStep
    {
        int second = Second<TStep>(t);
        if (default(TStep).Pairs)
        {
            if (t < len) y.SetPair(start + t, a / z, b / z);
        }
        else
        {
            if (t < len) y.Set(start + t, a / z);
            if (second < len) y.Set(start + second, b / z);
        }
        rest.Write<TOut, TStep>(y, start, t + 2 * Warp.WarpSize, len, z);
    }
}

/// <summary>The cell types of register rows.</summary>
internal static class RowCellTypes
{
    /// <summary>Most cells a lane holds: rows of up to 2·32·WarpSize values (2048 on a CUDA device) run in registers.</summary>
    public const int MaxCells = 32;

    /// <summary>Cells a lane needs for rows of <paramref name="len"/> values on warps of <paramref name="warp"/>
    /// lanes: 0 when the row is longer than <see cref="MaxCells"/> cells hold.</summary>
    public static int For(int len, int warp)
    {
        int cells = (len + 2 * warp - 1) / (2 * warp);
        return cells >= 1 && cells <= MaxCells ? cells : 0;
    }

    /// <summary>The type of <paramref name="cells"/> nested cells.</summary>
    public static Type Of(int cells)
    {
        if (cells < 1 || cells > MaxCells) throw new ArgumentOutOfRangeException(nameof(cells), $"1 to {MaxCells} cells, not {cells}");
        var type = typeof(NoCells);
        for (int k = 0; k < cells; k++) type = typeof(RowCells<>).MakeGenericType(type);
        return type;
    }
}
