// Strided index walks passed to kernels by value: an output shape of at most six axes and up to three operands'
// strides over it, with each axis size's magic number for division by multiply-high and shift. The host merges axes
// that every operand walks contiguously, so most ops reach rank 1 or 2.
namespace Lxt.Backend.Gpu;

/// <summary>Offsets of one index in the (up to three) operands of a <see cref="Walk"/>.</summary>
public struct Offsets
{
    public int A, B, C;
}

/// <summary>A row-major walk over a shape (padded at the front with size-1 axes) with three operands' strides:
/// the offsets of linear output index i in operands A, B and C.</summary>
public struct Walk
{
    public const int MaxRank = 6;

    public int N0, N1, N2, N3, N4, N5;
    public int A0, A1, A2, A3, A4, A5;
    public int B0, B1, B2, B3, B4, B5;
    public int C0, C1, C2, C3, C4, C5;
    // the FastDivision magic numbers and shifts of N1..N5, by which an index is split into its multi-index
    public uint M1, M2, M3, M4, M5;
    public int S1, S2, S3, S4, S5;

    /// <summary>Offsets of linear index i in the three operands.</summary>
    public readonly Offsets At(int i)
    {
        if (N1 == 1 && N2 == 1 && N3 == 1 && N4 == 1)
        {
            // at most two axes after merging (most ops): one division instead of five
            int q0 = FastDivision.Quotient(i, M5, S5), r0 = i - q0 * N5;
            return new Offsets { A = r0 * A5 + q0 * A0, B = r0 * B5 + q0 * B0, C = r0 * C5 + q0 * C0 };
        }
        int a = 0, b = 0, c = 0;
        int q = FastDivision.Quotient(i, M5, S5), r = i - q * N5; a += r * A5; b += r * B5; c += r * C5; i = q;
        q = FastDivision.Quotient(i, M4, S4); r = i - q * N4; a += r * A4; b += r * B4; c += r * C4; i = q;
        q = FastDivision.Quotient(i, M3, S3); r = i - q * N3; a += r * A3; b += r * B3; c += r * C3; i = q;
        q = FastDivision.Quotient(i, M2, S2); r = i - q * N2; a += r * A2; b += r * B2; c += r * C2; i = q;
        q = FastDivision.Quotient(i, M1, S1); r = i - q * N1; a += r * A1; b += r * B1; c += r * C1; i = q;
        return new Offsets { A = a + i * A0, B = b + i * B0, C = c + i * C0 };
    }

    /// <summary>Offset of linear index i in operand A.</summary>
    public readonly int Offset(int i)
    {
        if (N1 == 1 && N2 == 1 && N3 == 1 && N4 == 1)
        {
            int q0 = FastDivision.Quotient(i, M5, S5);
            return (i - q0 * N5) * A5 + q0 * A0;
        }
        int a = 0;
        int q = FastDivision.Quotient(i, M5, S5), r = i - q * N5; a += r * A5; i = q;
        q = FastDivision.Quotient(i, M4, S4); r = i - q * N4; a += r * A4; i = q;
        q = FastDivision.Quotient(i, M3, S3); r = i - q * N3; a += r * A3; i = q;
        q = FastDivision.Quotient(i, M2, S2); r = i - q * N2; a += r * A2; i = q;
        q = FastDivision.Quotient(i, M1, S1); r = i - q * N1; a += r * A1; i = q;
        return a + i * A0;
    }

    /// <summary>Whether operands A and B can be walked two neighbouring elements at a time: the innermost axis has an
    /// even length and both walk it contiguously, and a side stored in 16-bit words (<paramref name="aWords"/>,
    /// <paramref name="bWords"/>) has an even base and even strides, so each pair is one 32-bit word.</summary>
    public readonly bool InPairs(int aBase, bool aWords, int bBase, bool bWords)
    {
        static bool Even(int v) => (v & 1) == 0;
        return Even(N5) && A5 == 1 && B5 == 1
            && (!aWords || Even(aBase) && Even(A0) && Even(A1) && Even(A2) && Even(A3) && Even(A4))
            && (!bWords || Even(bBase) && Even(B0) && Even(B1) && Even(B2) && Even(B3) && Even(B4));
    }

    /// <summary>The walk over <paramref name="shape"/> with up to three operands' strides (missing ones are 0).
    /// Size-1 axes are dropped and neighbours every operand walks as one run are merged.</summary>
    public static Walk Of(Lxt.Graph.Node what, int[] shape, int[] a, int[]? b = null, int[]? c = null)
    {
        var dims = new List<(int N, int A, int B, int C)>();
        for (int d = 0; d < shape.Length; d++)
        {
            if (shape[d] == 1) continue;
            var cur = (N: shape[d], A: a[d], B: b?[d] ?? 0, C: c?[d] ?? 0);
            if (dims.Count > 0)
            {
                var p = dims[^1];
                if (p.A == cur.A * cur.N && p.B == cur.B * cur.N && p.C == cur.C * cur.N)
                {
                    dims[^1] = (p.N * cur.N, cur.A, cur.B, cur.C);
                    continue;
                }
            }
            dims.Add(cur);
        }
        if (dims.Count > MaxRank)
            throw new NotSupportedException(
                $"gpu backend: {Lxt.Graph.Node.Describe(what)} walks {dims.Count} axes that cannot be merged; at most {MaxRank} are supported");
        while (dims.Count < MaxRank) dims.Insert(0, (1, 0, 0, 0));
        var (m1, s1) = FastDivision.Of(dims[1].N);
        var (m2, s2) = FastDivision.Of(dims[2].N);
        var (m3, s3) = FastDivision.Of(dims[3].N);
        var (m4, s4) = FastDivision.Of(dims[4].N);
        var (m5, s5) = FastDivision.Of(dims[5].N);
        return new Walk
        {
            M1 = m1, M2 = m2, M3 = m3, M4 = m4, M5 = m5,
            S1 = s1, S2 = s2, S3 = s3, S4 = s4, S5 = s5,
            N0 = dims[0].N, N1 = dims[1].N, N2 = dims[2].N, N3 = dims[3].N, N4 = dims[4].N, N5 = dims[5].N,
            A0 = dims[0].A, A1 = dims[1].A, A2 = dims[2].A, A3 = dims[3].A, A4 = dims[4].A, A5 = dims[5].A,
            B0 = dims[0].B, B1 = dims[1].B, B2 = dims[2].B, B3 = dims[3].B, B4 = dims[4].B, B5 = dims[5].B,
            C0 = dims[0].C, C1 = dims[1].C, C2 = dims[2].C, C3 = dims[3].C, C4 = dims[4].C, C5 = dims[5].C,
        };
    }

    /// <summary>Row-major strides of a contiguous shape.</summary>
    public static int[] Strides(int[] shape)
    {
        var st = new int[shape.Length];
        int acc = 1;
        for (int i = shape.Length - 1; i >= 0; i--) { st[i] = acc; acc *= shape[i]; }
        return st;
    }

    /// <summary>Strides of <paramref name="shape"/> seen from the broadcast shape <paramref name="target"/> (0 on broadcast axes).</summary>
    public static int[] BroadcastStrides(int[] shape, int[] target)
    {
        var st = new int[target.Length];
        int off = target.Length - shape.Length, acc = 1;
        for (int i = shape.Length - 1; i >= 0; i--)
        {
            st[i + off] = shape[i] == 1 ? 0 : acc;
            acc *= shape[i];
        }
        return st;
    }


}
