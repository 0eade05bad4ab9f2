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

/// <summary>How an operand is stored, fixed per kernel: in bfloat16 or in float32 (<see cref="Pairs"/>).</summary>
public interface IStorage
{
    bool Narrow { get; }
}

public struct BFloat16Storage : IStorage
{
    public readonly bool Narrow => true;
}

public struct Float32Storage : IStorage
{
    public readonly bool Narrow => false;
}

/// <summary>How the attention kernels' operands 0 to 2 (Q, K and V) are stored (<see cref="AttentionShape.Narrow"/>),
/// as types, so that each kernel reads each operand with one kind of load and no test.</summary>
public interface IOperandStorage
{
    bool Narrow(int operand);
}

public struct OperandStorage<TQ, TK, TV> : IOperandStorage where TQ : struct, IStorage where TK : struct, IStorage where TV : struct, IStorage
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly bool Narrow(int operand) =>
        operand == 0 ? default(TQ).Narrow : operand == 1 ? default(TK).Narrow : default(TV).Narrow;
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

    /// <summary>The values from <paramref name="i"/> (even) on.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public Pairs From(int i) => new(narrow ? values.SubView(i >> 1) : values.SubView(i), narrow);

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

/// <summary>How a group's threads share a shared tile of <c>rows</c> rows of bfloat16: the first <c>width</c> values
/// (even) of rows from … of a [count, stride] slab at rowBase, a pair of values a word, zero past the slab. Thread i
/// takes words i, i + Threads, … of the tile's rows · pairs (consecutive threads, consecutive words of a row, so that a
/// warp reads 128 contiguous bytes of a bfloat16 slab). Its j-th word lies a fixed distance from its first: with the
/// width and stride constants of a kernel (<see cref="IStagedWords.Words"/>), every load and store of a tile is one
/// address plus a constant. Only a tile that runs past the slab's rows tests rows.</summary>
public readonly struct TileWalk
{
    readonly Pairs slab, first;
    readonly ArrayView<uint> tile;
    readonly int rowBase, from, count, row, pair, stride, pairs, rowStep, pairStep, rowWords;

    /// <summary>Whether every row of the tile lies within the slab.</summary>
    public readonly bool Whole;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public TileWalk(in Pairs x, ArrayView<uint> tile, int rows, int rowBase, int from, int count, int stride, int width, int thread)
    {
        slab = x;
        this.rowBase = rowBase;
        this.from = from;
        this.count = count;
        this.stride = stride;
        pairs = width / 2;
        rowStep = TensorCoreAttention.Threads / pairs;
        pairStep = TensorCoreAttention.Threads - rowStep * pairs;
        rowWords = TensorCoreAttention.Stride(width) / 2;
        row = thread / pairs;
        pair = thread - row * pairs;
        Whole = from + rows <= count;
        first = x.From(Whole ? (rowBase + from + row) * stride + 2 * pair : 0);
        this.tile = tile.SubView(row * rowWords + pair);
    }

    // the j-th word's rows and pairs past the thread's first (constants where pairs divide Threads)
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    void Offset(int j, out int rows, out int pairsOn)
    {
        if (pairStep == 0)
        {
            rows = j * rowStep;
            pairsOn = 0;
            return;
        }
        int q = pair + j * pairStep, wrap = q / pairs;
        rows = j * rowStep + wrap;
        pairsOn = j * pairStep - wrap * pairs;
    }

    /// <summary>The thread's j-th word of a tile within the slab.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public uint ReadWhole(int j)
    {
        Offset(j, out int rows, out int pairsOn);
        return first.At(rows * stride + 2 * pairsOn);
    }

    /// <summary>The thread's j-th word of a tile that runs past the slab, 0 there. The load is made whatever the row
    /// (from the slab's last row past it; a row from ≤ count − 1 holds), so that a thread's loads carry no branch.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public uint ReadEdge(int j)
    {
        Offset(j, out int rows, out int pairsOn);
        int r = from + row + rows;
        uint w = slab.At((rowBase + Math.Min(r, count - 1)) * stride + 2 * (pair + pairsOn));
        return r < count ? w : 0u;
    }

    /// <summary>Stores the thread's j-th word into the tile.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Write(int j, uint w)
    {
        Offset(j, out int rows, out int pairsOn);
        tile[rows * rowWords + pairsOn] = w;
    }
}

/// <summary>A thread's words of a shared tile (<see cref="TileWalk"/>) held in registers between device memory and the
/// tile, two a level: every load of the tile goes out before the first store waits on one, and before the barrier
/// that frees the tile, so that a tile costs one trip to memory, not one a word.</summary>
public interface IStagedWords
{
    /// <summary>The words a thread holds: a tile's rows · width / 2 over the group's threads.</summary>
    int Words { get; }

    /// <summary>Reads this level's words, the thread's <paramref name="j"/>-th and the next, of a tile within the slab
    /// (<see cref="TileWalk.Whole"/>): the walk's branch is taken once a tile, not once a level.</summary>
    void ReadWhole(in TileWalk walk, int j);

    /// <summary>As ReadWhole, of a tile that runs past the slab.</summary>
    void ReadEdge(in TileWalk walk, int j);

    /// <summary>Writes them into the tile.</summary>
    void Write(in TileWalk walk, int j);
}

public struct NoStagedWords : IStagedWords
{
    public readonly int Words => 0;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly void ReadWhole(in TileWalk walk, int j) { }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly void ReadEdge(in TileWalk walk, int j) { }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly void Write(in TileWalk walk, int j) { }
}

public struct StagedWords<TRest> : IStagedWords where TRest : struct, IStagedWords
{
    uint w0, w1;
    TRest rest;

    public readonly int Words => 2 + default(TRest).Words;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void ReadWhole(in TileWalk walk, int j)
    {
        w0 = walk.ReadWhole(j);
        w1 = walk.ReadWhole(j + 1);
        rest.ReadWhole(walk, j + 2);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void ReadEdge(in TileWalk walk, int j)
    {
        w0 = walk.ReadEdge(j);
        w1 = walk.ReadEdge(j + 1);
        rest.ReadEdge(walk, j + 2);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly void Write(in TileWalk walk, int j)
    {
        walk.Write(j, w0);
        walk.Write(j + 1, w1);
        rest.Write(walk, j + 2);
    }
}

/// <summary>The nested fragment types of a head size.</summary>
public static class FragmentTypes
{
    /// <summary>A fragments of <paramref name="dim"/> columns (steps of 16).</summary>
    public static Type A(int dim) => Nest(typeof(AFragments<>), typeof(NoAFragments), dim / 16);

    /// <summary>D fragments of <paramref name="dim"/> columns (tiles of 8).</summary>
    public static Type D(int dim) => Nest(typeof(DFragments<>), typeof(NoDFragments), dim / 8);

    /// <summary>A thread's words of a shared tile of <paramref name="rows"/> rows of <paramref name="width"/> values
    /// (<see cref="TileWalk"/>): rows · width / 2 words over the group's threads, two a level.</summary>
    public static Type Staged(int rows, int width) =>
        Nest(typeof(StagedWords<>), typeof(NoStagedWords), rows * width / (4 * TensorCoreAttention.Threads));

    /// <summary>How B fragments are read by columns: through ldmatrix (<see cref="MatrixColumns"/>) or a 16-bit load
    /// a value (<see cref="ColumnHalves"/>).</summary>
    public static Type Columns(bool matrixLoads) => matrixLoads ? typeof(MatrixColumns) : typeof(ColumnHalves);

    /// <summary>The storage of Q, K and V: bit i of <paramref name="narrow"/> set, operand i in bfloat16
    /// (<see cref="AttentionShape.Narrow"/>).</summary>
    public static Type Storage(int narrow) =>
        typeof(OperandStorage<,,>).MakeGenericType(StorageOf(narrow, 0), StorageOf(narrow, 1), StorageOf(narrow, 2));

    static Type StorageOf(int narrow, int operand) => (narrow >> operand & 1) != 0 ? typeof(BFloat16Storage) : typeof(Float32Storage);

    static Type Nest(Type level, Type none, int count)
    {
        var type = none;
        for (int k = 0; k < count; k++) type = level.MakeGenericType(type);
        return type;
    }
}
