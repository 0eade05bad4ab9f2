// A compact cache-blocked single-precision GEMM (packed panels, 6-row register micro-kernel on Vector512 or Vector256),
// parallel over row or column stripes. Reached only through Kernels.Gemm.
using System.Buffers;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Lxt.Backend.Cpu;

internal static unsafe class SimpleGemm
{
    const int MR = 6;     // rows of the micro-kernel
    const int KC = 256;   // depth of a packed block: an A panel (MR×KC) and a B panel (KC×NR) stay in L1
    const int MC = 96;    // rows of A packed at once (L2)
    const int NC = 1024;  // columns of B packed at once (L2/L3)
    static readonly int NR = Vector512.IsHardwareAccelerated ? 32 : 16; // columns of the micro-kernel: two vectors

    public static void Multiply(bool transA, bool transB, int m, int n, int k, ReadOnlySpan<float> a, int lda,
                                ReadOnlySpan<float> b, int ldb, Span<float> c, int ldc, bool accumulate = false, int maxThreads = 0)
    {
        if (m < 0 || n < 0 || k < 0) throw new ArgumentException($"gemm: negative size {m}×{n}×{k}");
        if (m == 0 || n == 0) return;
        Require(a.Length, transA ? k : m, transA ? m : k, lda, "A");
        Require(b.Length, transB ? n : k, transB ? k : n, ldb, "B");
        Require(c.Length, m, n, ldc, "C");
        if (k == 0)
        {
            if (!accumulate) for (int i = 0; i < m; i++) c.Slice(i * ldc, n).Clear();
            return;
        }
        int threads = maxThreads <= 0 ? Environment.ProcessorCount : maxThreads;
        long work = (long)m * n * k;
        int parts = (int)Math.Max(1, Math.Min(threads, work / (1L << 20)));
        fixed (float* pa = a, pb = b, pc = c)
        {
            if (parts == 1) { Serial(transA, transB, m, n, k, pa, lda, pb, ldb, pc, ldc, accumulate); return; }
            float* ap = pa, bp = pb, cp = pc; // fixed locals cannot be captured
            bool byRows = m >= n || m >= parts * MC;
            int unit = byRows ? MR : NR;
            int units = ((byRows ? m : n) + unit - 1) / unit;
            parts = Math.Min(parts, units);
            Parallel.For(0, parts, new ParallelOptions { MaxDegreeOfParallelism = parts }, p =>
            {
                int s = (int)((long)units * p / parts) * unit, e = Math.Min((int)((long)units * (p + 1) / parts) * unit, byRows ? m : n);
                if (e <= s) return;
                if (byRows)
                    Serial(transA, transB, e - s, n, k, ap + (long)s * (transA ? 1 : lda), lda, bp, ldb, cp + (long)s * ldc, ldc, accumulate);
                else
                    Serial(transA, transB, m, e - s, k, ap, lda, bp + (long)s * (transB ? ldb : 1), ldb, cp + s, ldc, accumulate);
            });
        }
    }

    static void Require(int length, int rows, int cols, int ld, string what)
    {
        if (ld < cols || (long)(rows - 1) * ld + cols > length)
            throw new ArgumentException($"gemm: {what} ({rows}×{cols}, leading dimension {ld}) does not fit in {length} elements");
    }

    static void Serial(bool transA, bool transB, int m, int n, int k, float* a, int lda, float* b, int ldb, float* c, int ldc, bool accumulate)
    {
        // A(i,p) = a[i*aRow + p*aCol], B(p,j) = b[p*bRow + j*bCol]
        int aRow = transA ? 1 : lda, aCol = transA ? lda : 1;
        int bRow = transB ? 1 : ldb, bCol = transB ? ldb : 1;
        int nr = NR;
        int ncMax = Math.Min(NC, n), kcMax = Math.Min(KC, k), mcMax = Math.Min(MC, m);
        var bArr = ArrayPool<float>.Shared.Rent(kcMax * ((ncMax + nr - 1) / nr * nr) + 16);
        var aArr = ArrayPool<float>.Shared.Rent(kcMax * ((mcMax + MR - 1) / MR * MR) + 16);
        try
        {
            fixed (float* bpack = bArr, apack = aArr)
            {
                for (int jc = 0; jc < n; jc += NC)
                {
                    int nc = Math.Min(NC, n - jc);
                    for (int pc = 0; pc < k; pc += KC)
                    {
                        int kc = Math.Min(KC, k - pc);
                        PackB(b + (long)pc * bRow + (long)jc * bCol, bRow, bCol, kc, nc, nr, bpack);
                        bool acc = accumulate || pc > 0;
                        for (int ic = 0; ic < m; ic += MC)
                        {
                            int mc = Math.Min(MC, m - ic);
                            PackA(a + (long)ic * aRow + (long)pc * aCol, aRow, aCol, mc, kc, apack);
                            for (int jr = 0; jr < nc; jr += nr)
                            {
                                int cols = Math.Min(nr, nc - jr);
                                for (int ir = 0; ir < mc; ir += MR)
                                {
                                    float* ct = c + (long)(ic + ir) * ldc + jc + jr;
                                    int rows = Math.Min(MR, mc - ir);
                                    if (nr == 32) Kernel512(kc, apack + ir * kc, bpack + jr * kc, ct, ldc, rows, cols, acc);
                                    else Kernel256(kc, apack + ir * kc, bpack + jr * kc, ct, ldc, rows, cols, acc);
                                }
                            }
                        }
                    }
                }
            }
        }
        finally
        {
            ArrayPool<float>.Shared.Return(bArr);
            ArrayPool<float>.Shared.Return(aArr);
        }
    }

    /// Packs an mc×kc block of A into panels of MR rows, each stored depth-major: panel[p*MR + r]; short panels are zero-padded.
    static void PackA(float* a, int aRow, int aCol, int mc, int kc, float* dst)
    {
        for (int ir = 0; ir < mc; ir += MR)
        {
            int rows = Math.Min(MR, mc - ir);
            float* panel = dst + ir * kc;
            for (int r = 0; r < MR; r++)
            {
                if (r < rows)
                {
                    float* src = a + (long)(ir + r) * aRow;
                    for (int p = 0; p < kc; p++) panel[p * MR + r] = src[(long)p * aCol];
                }
                else
                    for (int p = 0; p < kc; p++) panel[p * MR + r] = 0f;
            }
        }
    }

    /// Packs a kc×nc block of B into panels of nr columns, each stored depth-major: panel[p*nr + j]; zero-padded.
    static void PackB(float* b, int bRow, int bCol, int kc, int nc, int nr, float* dst)
    {
        for (int jr = 0; jr < nc; jr += nr)
        {
            int cols = Math.Min(nr, nc - jr);
            float* panel = dst + jr * kc;
            if (bCol == 1)
            {
                for (int p = 0; p < kc; p++)
                {
                    float* src = b + (long)p * bRow + jr;
                    float* d = panel + p * nr;
                    Buffer.MemoryCopy(src, d, cols * sizeof(float), cols * sizeof(float));
                    for (int j = cols; j < nr; j++) d[j] = 0f;
                }
            }
            else
            {
                for (int j = 0; j < nr; j++)
                {
                    if (j < cols)
                    {
                        float* src = b + (long)(jr + j) * bCol;
                        for (int p = 0; p < kc; p++) panel[p * nr + j] = src[(long)p * bRow];
                    }
                    else
                        for (int p = 0; p < kc; p++) panel[p * nr + j] = 0f;
                }
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void Kernel512(int kc, float* ap, float* bp, float* c, int ldc, int rows, int cols, bool acc)
    {
        Vector512<float> c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default;
        Vector512<float> c30 = default, c31 = default, c40 = default, c41 = default, c50 = default, c51 = default;
        for (int p = 0; p < kc; p++)
        {
            var b0 = Vector512.Load(bp);
            var b1 = Vector512.Load(bp + 16);
            var a = Vector512.Create(ap[0]); c00 = Vector512.FusedMultiplyAdd(a, b0, c00); c01 = Vector512.FusedMultiplyAdd(a, b1, c01);
            a = Vector512.Create(ap[1]); c10 = Vector512.FusedMultiplyAdd(a, b0, c10); c11 = Vector512.FusedMultiplyAdd(a, b1, c11);
            a = Vector512.Create(ap[2]); c20 = Vector512.FusedMultiplyAdd(a, b0, c20); c21 = Vector512.FusedMultiplyAdd(a, b1, c21);
            a = Vector512.Create(ap[3]); c30 = Vector512.FusedMultiplyAdd(a, b0, c30); c31 = Vector512.FusedMultiplyAdd(a, b1, c31);
            a = Vector512.Create(ap[4]); c40 = Vector512.FusedMultiplyAdd(a, b0, c40); c41 = Vector512.FusedMultiplyAdd(a, b1, c41);
            a = Vector512.Create(ap[5]); c50 = Vector512.FusedMultiplyAdd(a, b0, c50); c51 = Vector512.FusedMultiplyAdd(a, b1, c51);
            ap += MR; bp += 32;
        }
        if (rows == MR && cols == 32)
        {
            Store(c, c00, c01, acc); Store(c + ldc, c10, c11, acc); Store(c + 2 * ldc, c20, c21, acc);
            Store(c + 3 * ldc, c30, c31, acc); Store(c + 4 * ldc, c40, c41, acc); Store(c + 5 * ldc, c50, c51, acc);
            return;
        }
        float* t = stackalloc float[MR * 32];
        c00.Store(t); c01.Store(t + 16); c10.Store(t + 32); c11.Store(t + 48); c20.Store(t + 64); c21.Store(t + 80);
        c30.Store(t + 96); c31.Store(t + 112); c40.Store(t + 128); c41.Store(t + 144); c50.Store(t + 160); c51.Store(t + 176);
        StorePartial(t, 32, c, ldc, rows, cols, acc);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Store(float* c, Vector512<float> v0, Vector512<float> v1, bool acc)
    {
        if (acc) { v0 += Vector512.Load(c); v1 += Vector512.Load(c + 16); }
        v0.Store(c); v1.Store(c + 16);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void Kernel256(int kc, float* ap, float* bp, float* c, int ldc, int rows, int cols, bool acc)
    {
        Vector256<float> c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default;
        Vector256<float> c30 = default, c31 = default, c40 = default, c41 = default, c50 = default, c51 = default;
        for (int p = 0; p < kc; p++)
        {
            var b0 = Vector256.Load(bp);
            var b1 = Vector256.Load(bp + 8);
            var a = Vector256.Create(ap[0]); c00 = Vector256.FusedMultiplyAdd(a, b0, c00); c01 = Vector256.FusedMultiplyAdd(a, b1, c01);
            a = Vector256.Create(ap[1]); c10 = Vector256.FusedMultiplyAdd(a, b0, c10); c11 = Vector256.FusedMultiplyAdd(a, b1, c11);
            a = Vector256.Create(ap[2]); c20 = Vector256.FusedMultiplyAdd(a, b0, c20); c21 = Vector256.FusedMultiplyAdd(a, b1, c21);
            a = Vector256.Create(ap[3]); c30 = Vector256.FusedMultiplyAdd(a, b0, c30); c31 = Vector256.FusedMultiplyAdd(a, b1, c31);
            a = Vector256.Create(ap[4]); c40 = Vector256.FusedMultiplyAdd(a, b0, c40); c41 = Vector256.FusedMultiplyAdd(a, b1, c41);
            a = Vector256.Create(ap[5]); c50 = Vector256.FusedMultiplyAdd(a, b0, c50); c51 = Vector256.FusedMultiplyAdd(a, b1, c51);
            ap += MR; bp += 16;
        }
        float* t = stackalloc float[MR * 16];
        c00.Store(t); c01.Store(t + 8); c10.Store(t + 16); c11.Store(t + 24); c20.Store(t + 32); c21.Store(t + 40);
        c30.Store(t + 48); c31.Store(t + 56); c40.Store(t + 64); c41.Store(t + 72); c50.Store(t + 80); c51.Store(t + 88);
        StorePartial(t, 16, c, ldc, rows, cols, acc);
    }

    static void StorePartial(float* t, int nr, float* c, int ldc, int rows, int cols, bool acc)
    {
        for (int r = 0; r < rows; r++)
        {
            float* src = t + r * nr, dst = c + (long)r * ldc;
            if (acc) for (int j = 0; j < cols; j++) dst[j] += src[j];
            else for (int j = 0; j < cols; j++) dst[j] = src[j];
        }
    }
}
