// A warp's tensor-core fragments held in registers: the A fragments of its rows (four words of two bfloat16 per step of
// 16 columns) and the D fragments of a product (four floats per tile of 8 columns), as nested types built per head size
// (AFragments<AFragments<…NoAFragments>>), so that ILGPU keeps every fragment in a register and compiles each pass over
// them to straight-line code, as RegisterRows.cs holds softmax rows; and a lane's views of the shared tiles the B
// fragments come from (RowWords; by columns ColumnHalves, or MatrixColumns through ldmatrix), each fixed once a step.
// Layouts as TensorCores describes them.
using System.Runtime.CompilerServices;
using ILGPU;
using ILGPU.Runtime.Cuda;

// each level's `rest` is written through its own methods (a struct's fields, changed in place), which the compiler
// does not count as assignments
#pragma warning disable CS0649

namespace Lxt.Backend.Gpu;

/// <summary>A lane's A fragments of rows r and r + 8 (r = its quad), one step of 16 columns each.</summary>
public interface IAFragments
{
    /// <summary>Rows <paramref name="row"/> and + 8 of a [count, width] slab at <paramref name="rowBase"/>, this step
    /// from column <paramref name="c"/> (zero past the slab).</summary>
    void Load(in Pairs x, int rowBase, int row, int count, int width, int c, int t);

    /// <summary>(s0 … s3) += these rows · B, B[k][n] the k-th value of a shared tile's row n (read by rows):
    /// <paramref name="b"/> is this lane's words of its row n (<see cref="RowWords"/>), this step from its word
    /// <paramref name="w"/>.</summary>
    void MmaByRows(ArrayView<uint> b, int w, ref float s0, ref float s1, ref float s2, ref float s3);
}

public struct NoAFragments : IAFragments
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly void Load(in Pairs x, int rowBase, int row, int count, int width, int c, int t) { }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly void MmaByRows(ArrayView<uint> b, int w, ref float s0, ref float s1, ref float s2, ref float s3) { }
}

public struct AFragments<TRest> : IAFragments where TRest : struct, IAFragments
{
    uint a0, a1, a2, a3;
    TRest rest;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Load(in Pairs x, int rowBase, int row, int count, int width, int c, int t)
    {
        int at = c + 2 * t;
        a0 = TensorCoreAttention.PairAt(x, rowBase, row, count, width, at);
        a1 = TensorCoreAttention.PairAt(x, rowBase, row + 8, count, width, at);
        a2 = TensorCoreAttention.PairAt(x, rowBase, row, count, width, at + 8);
        a3 = TensorCoreAttention.PairAt(x, rowBase, row + 8, count, width, at + 8);
        rest.Load(x, rowBase, row, count, width, c + 16, t);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void MmaByRows(ArrayView<uint> b, int w, ref float s0, ref float s1, ref float s2, ref float s3)
    {
        TensorCores.Mma(a0, a1, a2, a3, b[w], b[w + 4], ref s0, ref s1, ref s2, ref s3);
        rest.MmaByRows(b, w + 8, ref s0, ref s1, ref s2, ref s3);
    }
}

/// <summary>A lane's D fragments of rows r and r + 8 (r = its quad), one tile of 8 columns each.</summary>
public interface IDFragments
{
    void Clear();

    /// <summary>Multiplies row r's values by <paramref name="fA"/> and row r + 8's by <paramref name="fB"/>.</summary>
    void Scale(float fA, float fB);

    /// <summary>this += A·B for one step of 16 rows of B: A (a0 … a3) 16 columns, B 16 rows of a shared tile read by
    /// columns (<see cref="IColumnLoads"/>), this tile from column <paramref name="n"/>.</summary>
    void MmaByColumns<TB>(uint a0, uint a1, uint a2, uint a3, in TB b, int n) where TB : struct, IColumnLoads;

    /// <summary>Rows <paramref name="row"/> and + 8 (those below <paramref name="count"/>) into rows of
    /// <paramref name="stride"/> values from <paramref name="at"/>, this tile from column <paramref name="c"/>, times
    /// <paramref name="fA"/> and <paramref name="fB"/>; added atomically where <paramref name="add"/>.</summary>
    void Store(ArrayView<float> y, int at, int stride, int row, int count, int c, int t, float fA, float fB, bool add);

    /// <summary>As Store, unscaled.</summary>
    void Store(ArrayView<float> y, int at, int stride, int row, int count, int c, int t, bool add);
}

public struct NoDFragments : IDFragments
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly void Clear() { }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly void Scale(float fA, float fB) { }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly void MmaByColumns<TB>(uint a0, uint a1, uint a2, uint a3, in TB b, int n) where TB : struct, IColumnLoads { }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly void Store(ArrayView<float> y, int at, int stride, int row, int count, int c, int t, float fA, float fB, bool add) { }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly void Store(ArrayView<float> y, int at, int stride, int row, int count, int c, int t, bool add) { }
}

public struct DFragments<TRest> : IDFragments where TRest : struct, IDFragments
{
    float d0, d1, d2, d3;
    TRest rest;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Clear()
    {
        d0 = d1 = d2 = d3 = 0f;
        rest.Clear();
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Scale(float fA, float fB)
    {
        d0 *= fA; d1 *= fA; d2 *= fB; d3 *= fB;
        rest.Scale(fA, fB);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void MmaByColumns<TB>(uint a0, uint a1, uint a2, uint a3, in TB b, int n) where TB : struct, IColumnLoads
    {
        b.Pair(n, out uint b0, out uint b1);
        TensorCores.Mma(a0, a1, a2, a3, b0, b1, ref d0, ref d1, ref d2, ref d3);
        rest.MmaByColumns(a0, a1, a2, a3, b, n + 8);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly void Store(ArrayView<float> y, int at, int stride, int row, int count, int c, int t, float fA, float fB, bool add)
    {
        int col = c + 2 * t;
        if (row < count)
        {
            TensorCoreAttention.Put(y, at + row * stride + col, d0 * fA, add);
            TensorCoreAttention.Put(y, at + row * stride + col + 1, d1 * fA, add);
        }
        if (row + 8 < count)
        {
            TensorCoreAttention.Put(y, at + (row + 8) * stride + col, d2 * fB, add);
            TensorCoreAttention.Put(y, at + (row + 8) * stride + col + 1, d3 * fB, add);
        }
        rest.Store(y, at, stride, row, count, c + 8, t, fA, fB, add);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly void Store(ArrayView<float> y, int at, int stride, int row, int count, int c, int t, bool add) =>
        Store(y, at, stride, row, count, c, t, 1f, 1f, add);
}

/// <summary>Values read a pair at a time as one word of two bfloat16 (the even element in the low half, as
/// <see cref="TensorCores.Pack"/> packs them): float32 values rounded as they are read, or values stored in bfloat16
/// read as they are stored, through the view of their pairs' words (<see cref="GpuBuffer.NarrowPairs"/>). Both give the
/// same words: bfloat16 values are stored rounded to nearest, ties to even, as <see cref="TensorCores.Pack"/> rounds.</summary>
public readonly struct Pairs
{
    readonly ArrayView<float> values;
    readonly bool narrow;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public Pairs(ArrayView<float> values, bool narrow)
    {
        this.values = values;
        this.narrow = narrow;
    }

    /// <summary>Values <paramref name="i"/> (even) and <paramref name="i"/> + 1.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public uint At(int i) => narrow ? Interop.FloatAsInt(values[i >> 1]) : TensorCores.Pack(values[i], values[i + 1]);
}

/// <summary>A lane's words of rows r and r + 8 of a shared tile of rows of bfloat16 read by rows, from its column pair
/// t (2t, 2t + 1): step w's fragment words are Top[w], Top[w + 4] (columns + 8) and Bottom alike, so that in unrolled
/// code each is one load from an address fixed once (a view per row, each word at a constant offset of it).</summary>
public readonly struct RowWords
{
    public readonly ArrayView<uint> Top, Bottom;

    /// <summary>Rows <paramref name="row"/> and + 8 of <paramref name="tile"/> (rows of <paramref name="stride"/>
    /// values, even) for the lane at <paramref name="t"/> of its quad.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public RowWords(ArrayView<ushort> tile, int stride, int row, int t)
    {
        var words = tile.Cast<uint>();
        int at = row * (stride >> 1) + t;
        Top = words.SubView(at);
        Bottom = words.SubView(at + 4 * stride);
    }
}

/// <summary>How a lane reads the B fragments of a shared tile of rows of bfloat16 by columns (rows k … k + 15 of B are
/// the tile's rows, its column n + g): <see cref="ColumnHalves"/> a 16-bit load per value, <see cref="MatrixColumns"/>
/// one <c>ldmatrix</c> per fragment.</summary>
public interface IColumnLoads
{
    /// <summary>Fixes this lane's rows for one step of 16 rows from row <paramref name="k"/> of
    /// <paramref name="tile"/> (rows of <paramref name="stride"/> values), for the lane at <paramref name="t"/> of quad
    /// <paramref name="g"/>; <paramref name="sharedBase"/> is the tile's address in the shared window on CUDA
    /// (<see cref="TensorCoreAttention"/>'s SharedAddress), 0 elsewhere.</summary>
    void Start(ArrayView<ushort> tile, int stride, int k, int g, int t, long sharedBase);

    /// <summary>b0 (rows k + 2t and + 1) and b1 (rows k + 8 + 2t and + 9) of the tile of 8 columns from column
    /// <paramref name="n"/>, each two bfloat16 with the upper row in the high half.</summary>
    void Pair(int n, out uint b0, out uint b1);
}

/// <summary>A lane's bfloat16 of a shared tile read by columns, two 16-bit loads a word: rows k + 2t and + 1 (b0) and
/// k + 8 + 2t and + 9 (b1), from its column g; each row a view fixed once, so that the tiles of 8 columns an unrolled
/// product walks read at constant offsets.</summary>
public struct ColumnHalves : IColumnLoads
{
    ArrayView<ushort> r0, r1, r8, r9;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Start(ArrayView<ushort> tile, int stride, int k, int g, int t, long sharedBase)
    {
        int at = (k + 2 * t) * stride + g;
        r0 = tile.SubView(at);
        r1 = tile.SubView(at + stride);
        r8 = tile.SubView(at + 8 * stride);
        r9 = tile.SubView(at + 9 * stride);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly void Pair(int n, out uint b0, out uint b1)
    {
        b0 = r0[n] | (uint)r1[n] << 16;
        b1 = r8[n] | (uint)r9[n] << 16;
    }
}

/// <summary>A lane's B fragments of a shared tile read by columns through <c>ldmatrix.sync.aligned.m8n8.x2.trans</c>:
/// lanes 0 … 15 each give the address of one row of the 16 (lane 8m + r row r of matrix m, 16 bytes from column n),
/// and each lane receives from matrix m its rows 2t and 2t + 1 at column g, transposed into one word — b0 and b1 in one
/// instruction. The tile must start on 16 bytes with rows of a multiple of 16 bytes (a stride of 8 values more than a
/// multiple of 16 is). Elsewhere the same words are gathered through warp shuffles of the row each lane would give, so
/// the addresses are tested on every accelerator.</summary>
public struct MatrixColumns : IColumnLoads
{
    // on CUDA the shared-window address of this lane's row k + lane % 16 at column 0
    long row;
    // elsewhere the tile, and this lane's column g of the rows ldmatrix hands it: 2t, 2t + 1, 8 + 2t and 9 + 2t of
    // the 16, whose starts lanes 2t, 2t + 1, 8 + 2t and 9 + 2t give (gathered once a step)
    ArrayView<ushort> tile;
    int near, nearNext, far, farNext;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Start(ArrayView<ushort> tile, int stride, int k, int g, int t, long sharedBase)
    {
        int element = (k + ((4 * g + t) & 15)) * stride;
        // set on every accelerator: a view left at its default on CUDA would merge with the tile into a generic
        // pointer, and ILGPU would then read and write the tile through generic loads and stores everywhere
        this.tile = tile;
        if (CudaAsm.IsSupported)
        {
            row = sharedBase + 2L * element;
            return;
        }
        near = Warp.Shuffle(element, 2 * t) + g;
        nearNext = Warp.Shuffle(element, 2 * t + 1) + g;
        far = Warp.Shuffle(element, 8 + 2 * t) + g;
        farNext = Warp.Shuffle(element, 9 + 2 * t) + g;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly void Pair(int n, out uint b0, out uint b1)
    {
        if (CudaAsm.IsSupported)
        {
            Ref<uint> r0 = 0u, r1 = 0u;
            Input<long> at = row + 2 * n;
            CudaAsm.EmitRef("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0, %1}, [%2];", ref r0, ref r1, ref at);
            b0 = r0.Value;
            b1 = r1.Value;
            return;
        }
        b0 = tile[near + n] | (uint)tile[nearNext + n] << 16;
        b1 = tile[far + n] | (uint)tile[farNext + n] << 16;
    }
}

/// <summary>The nested fragment types of a head size.</summary>
public static class FragmentTypes
{
    /// <summary>A fragments of <paramref name="dim"/> columns (steps of 16).</summary>
    public static Type A(int dim) => Nest(typeof(AFragments<>), typeof(NoAFragments), dim / 16);

    /// <summary>D fragments of <paramref name="dim"/> columns (tiles of 8).</summary>
    public static Type D(int dim) => Nest(typeof(DFragments<>), typeof(NoDFragments), dim / 8);

    /// <summary>How B fragments are read by columns: through ldmatrix (<see cref="MatrixColumns"/>) or a 16-bit load
    /// a value (<see cref="ColumnHalves"/>).</summary>
    public static Type Columns(bool matrixLoads) => matrixLoads ? typeof(MatrixColumns) : typeof(ColumnHalves);

    static Type Nest(Type level, Type none, int count)
    {
        var type = none;
        for (int k = 0; k < count; k++) type = level.MakeGenericType(type);
        return type;
    }
}
