using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Lxt.Backend.Cpu;

/// <summary>
/// Single-precision general matrix multiply for row-major matrices.
/// C[m×n] (= or +=) op(A)[m×k] · op(B)[k×n], where op(X) is X or Xᵀ.
/// Cache-blocked (packed panels of A and B), register-tiled AVX-512 / AVX2 micro-kernels, multi-threaded over blocks of C.
/// </summary>
public static unsafe partial class Sgemm
{
    // ---- kernel selection and blocking parameters (chosen once per process) ----
    private static readonly int MR;          // rows of the register tile
    private static readonly int NR;          // columns of the register tile
    private static readonly int KC;          // depth of a packed block
    private static readonly int MC;          // rows of a packed A block (multiple of MR)
    private static readonly int NC;          // columns of a packed B block (multiple of NR)
    private static readonly bool JrOuter;    // loop order inside a packed A block
    private static readonly delegate*<int, float*, float*, float*, nint, bool, void> Kernel;

    /// <summary>Name of the micro-kernel in use, e.g. "avx512 14x32".</summary>
    public static string KernelName { get; }

    // problems with fewer multiply-adds than this take the unpacked simple path
    private const long SmallWork = 16 * 16 * 16;
    // minimum multiply-adds per thread before we split a single product across threads
    private const long MinWorkPerThread = 48L * 48 * 48;

    static Sgemm()
    {
        if (Vector512.IsHardwareAccelerated && Avx512F.IsSupported)
        {
            MR = 14; NR = 32; Kernel = &Kernel512_14x32; KernelName = "avx512 14x32";
            KC = 256; MC = 14 * 12; NC = 32 * 64;
        }
        else if (Vector256.IsHardwareAccelerated && Fma.IsSupported && Avx.IsSupported)
        {
            MR = 6; NR = 16; Kernel = &Kernel256_6x16; KernelName = "avx2 6x16";
            KC = 256; MC = 6 * 24; NC = 1024;
        }
        else
        {
            MR = 4; NR = 8; Kernel = &KernelScalar_4x8; KernelName = "scalar 4x8";
            KC = 256; MC = 4 * 32; NC = 1024;
        }
        // tuning overrides: LXT_SGEMM_KC (depth), LXT_SGEMM_MC / LXT_SGEMM_NC (in units of MR / NR), LXT_SGEMM_ORDER (1: jr outer)
        KC = EnvInt("LXT_SGEMM_KC", KC);
        JrOuter = EnvInt("LXT_SGEMM_ORDER", JrOuter ? 1 : 2) == 1;
        MC = EnvInt("LXT_SGEMM_MC", MC / MR) * MR;
        NC = EnvInt("LXT_SGEMM_NC", NC / NR) * NR;
    }

    private static int EnvInt(string name, int dflt)
        => int.TryParse(Environment.GetEnvironmentVariable(name), out int v) && v > 0 ? v : dflt;

    // ---- public API ----

    /// <summary>
    /// C[m×n] (= or +=) op(A)[m×k] · op(B)[k×n]. All matrices row-major; <paramref name="lda"/>, <paramref name="ldb"/>,
    /// <paramref name="ldc"/> are the row strides of the stored matrices (A is stored k×m when <paramref name="transA"/>,
    /// B is stored n×k when <paramref name="transB"/>).
    /// </summary>
    /// <param name="accumulate">false: C = op(A)·op(B); true: C += op(A)·op(B).</param>
    /// <param name="maxThreads">0 = Environment.ProcessorCount.</param>
    public static void Multiply(bool transA, bool transB, int m, int n, int k,
        ReadOnlySpan<float> a, int lda, ReadOnlySpan<float> b, int ldb, Span<float> c, int ldc,
        bool accumulate = false, int maxThreads = 0)
    {
        Validate(transA, transB, m, n, k, 1, a.Length, lda, 0, b.Length, ldb, 0, c.Length, ldc, 0, maxThreads);
        if (m == 0 || n == 0) return;
        int threads = ResolveThreads(maxThreads);
        fixed (float* pa = a)
        fixed (float* pb = b)
        fixed (float* pc = c)
        {
            MultiplyCore(transA, transB, m, n, k, pa, lda, pb, ldb, pc, ldc, accumulate, threads);
        }
    }

    /// <summary>
    /// <paramref name="batch"/> independent products C_i (= or +=) op(A_i)·op(B_i), where X_i starts at element i·strideX.
    /// A stride of 0 for A or B reuses the same matrix for every product. Output matrices must not overlap.
    /// Runs in parallel over the batch when the batch is large enough, otherwise parallel within each product.
    /// </summary>
    public static void MultiplyBatched(bool transA, bool transB, int m, int n, int k, int batch,
        ReadOnlySpan<float> a, int lda, long strideA, ReadOnlySpan<float> b, int ldb, long strideB,
        Span<float> c, int ldc, long strideC, bool accumulate = false, int maxThreads = 0)
    {
        if (batch < 0) throw new ArgumentException($"batch must be non-negative (got {batch}).", nameof(batch));
        Validate(transA, transB, m, n, k, batch, a.Length, lda, strideA, b.Length, ldb, strideB, c.Length, ldc, strideC, maxThreads);
        if (m == 0 || n == 0 || batch == 0) return;
        int threads = ResolveThreads(maxThreads);
        fixed (float* pa0 = a)
        fixed (float* pb0 = b)
        fixed (float* pc0 = c)
        {
            float* pa = pa0, pb = pb0, pc = pc0;
            long work = (long)m * n * Math.Max(k, 1);
            // Parallel over the batch when there are enough products and each one alone would not use all threads well.
            if (threads > 1 && batch >= 2 && work * batch >= 2 * MinWorkPerThread
                && (batch >= 2 * threads || work < MinWorkPerThread * threads))
            {
                int chunks = Math.Min(threads, batch);
                var opts = new ParallelOptions { MaxDegreeOfParallelism = chunks };
                nint ia = (nint)pa, ib = (nint)pb, ic = (nint)pc;
                Parallel.For(0, chunks, opts, t =>
                {
                    int lo = (int)((long)batch * t / chunks), hi = (int)((long)batch * (t + 1) / chunks);
                    for (int i = lo; i < hi; i++)
                        MultiplyCore(transA, transB, m, n, k, (float*)ia + i * strideA, lda, (float*)ib + i * strideB, ldb,
                            (float*)ic + i * strideC, ldc, accumulate, 1);
                });
            }
            else
            {
                for (int i = 0; i < batch; i++)
                    MultiplyCore(transA, transB, m, n, k, pa + i * strideA, lda, pb + i * strideB, ldb,
                        pc + i * strideC, ldc, accumulate, threads);
            }
        }
    }

    // ---- validation ----

    private static int ResolveThreads(int maxThreads) => maxThreads == 0 ? Environment.ProcessorCount : maxThreads;

    private static void Validate(bool transA, bool transB, int m, int n, int k, int batch,
        int aLen, int lda, long strideA, int bLen, int ldb, long strideB, int cLen, int ldc, long strideC, int maxThreads)
    {
        if (m < 0) throw new ArgumentException($"m must be non-negative (got {m}).", nameof(m));
        if (n < 0) throw new ArgumentException($"n must be non-negative (got {n}).", nameof(n));
        if (k < 0) throw new ArgumentException($"k must be non-negative (got {k}).", nameof(k));
        if (maxThreads < 0) throw new ArgumentException($"maxThreads must be non-negative (got {maxThreads}).", nameof(maxThreads));
        // stored shapes: A is (transA ? k×m : m×k), B is (transB ? n×k : k×n), C is m×n
        int aRows = transA ? k : m, aCols = transA ? m : k;
        int bRows = transB ? n : k, bCols = transB ? k : n;
        CheckMatrix("lda", "a", "strideA", aRows, aCols, lda, aLen, batch, strideA, allowZeroStride: true);
        CheckMatrix("ldb", "b", "strideB", bRows, bCols, ldb, bLen, batch, strideB, allowZeroStride: true);
        CheckMatrix("ldc", "c", "strideC", m, n, ldc, cLen, batch, strideC, allowZeroStride: false);
    }

    private static void CheckMatrix(string ldName, string spanName, string strideName, int rows, int cols, int ld, int len,
        int batch, long stride, bool allowZeroStride)
    {
        if (ld < Math.Max(1, cols))
            throw new ArgumentException($"{ldName} must be at least max(1, {cols}) (got {ld}).", ldName);
        long footprint = rows == 0 || cols == 0 ? 0 : (long)(rows - 1) * ld + cols;
        if (batch > 1 && footprint > 0)
        {
            if (stride < 0)
                throw new ArgumentException($"{strideName} must be non-negative (got {stride}).", strideName);
            if (!allowZeroStride && stride < footprint)
                throw new ArgumentException($"{strideName} ({stride}) is smaller than one output matrix ({footprint} elements); outputs would overlap.", strideName);
        }
        long need = footprint == 0 || batch == 0 ? 0 : (batch - 1) * stride + footprint;
        if (need > len)
            throw new ArgumentException($"{spanName} is too short: {len} elements, need {need}.", spanName);
    }

    // ---- driver ----

    private static void MultiplyCore(bool transA, bool transB, int m, int n, int k,
        float* a, int lda, float* b, int ldb, float* c, int ldc, bool accumulate, int threads)
    {
        if (k == 0)
        {
            if (!accumulate)
                for (int i = 0; i < m; i++) new Span<float>(c + (long)i * ldc, n).Clear();
            return;
        }
        long work = (long)m * n * k;
        if (m == 1 && work > SmallWork)
        {
            // a row vector times a matrix (the last position's lm_head): bound by reading B once, so no packing
            Gemv(transA, transB, n, k, a, lda, b, ldb, c, accumulate, threads);
            return;
        }
        if (work <= SmallWork)
        {
            SmallGemm(transA, transB, m, n, k, a, lda, b, ldb, c, ldc, accumulate);
            return;
        }
        int parts = (int)Math.Min(threads, Math.Max(1, work / MinWorkPerThread));
        if (parts <= 1)
        {
            Blocked(transA, transB, 0, m, 0, n, k, a, lda, b, ldb, c, ldc, accumulate);
            return;
        }
        // split C into `parts` stripes along the dimension that gives the most tiles per stripe
        bool splitN = (n + NR - 1) / NR >= (m + MR - 1) / MR * NR / MR || (m + MR - 1) / MR < parts;
        int unit = splitN ? NR : MR, extent = splitN ? n : m;
        int tiles = (extent + unit - 1) / unit;
        parts = Math.Min(parts, tiles);
        if (parts <= 1)
        {
            Blocked(transA, transB, 0, m, 0, n, k, a, lda, b, ldb, c, ldc, accumulate);
            return;
        }
        nint ia = (nint)a, ib = (nint)b, ic = (nint)c;
        var opts = new ParallelOptions { MaxDegreeOfParallelism = parts };
        Parallel.For(0, parts, opts, t =>
        {
            int lo = (int)((long)tiles * t / parts) * unit, hi = Math.Min(extent, (int)((long)tiles * (t + 1) / parts) * unit);
            if (splitN) Blocked(transA, transB, 0, m, lo, hi, k, (float*)ia, lda, (float*)ib, ldb, (float*)ic, ldc, accumulate);
            else Blocked(transA, transB, lo, hi, 0, n, k, (float*)ia, lda, (float*)ib, ldb, (float*)ic, ldc, accumulate);
        });
    }

    // Computes rows [m0,m1) × columns [n0,n1) of C, single-threaded, with packed blocks.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Blocked(bool transA, bool transB, int m0, int m1, int n0, int n1, int k,
        float* a, int lda, float* b, int ldb, float* c, int ldc, bool accumulate)
    {
        Scratch s = Scratch.Get();
        float* packA = s.A, packB = s.B, tile = s.Tile;
        int mr = MR, nr = NR;
        var kernel = Kernel;
        for (int jc = n0; jc < n1; jc += NC)
        {
            int nc = Math.Min(NC, n1 - jc);
            for (int pc = 0; pc < k; pc += KC)
            {
                int kc = Math.Min(KC, k - pc);
                bool acc = accumulate || pc > 0;
                PackB(transB, b, ldb, pc, kc, jc, nc, packB);
                for (int ic = m0; ic < m1; ic += MC)
                {
                    int mc = Math.Min(MC, m1 - ic);
                    PackA(transA, a, lda, ic, mc, pc, kc, packA);
                    if (JrOuter)
                    {
                        for (int jr = 0; jr < nc; jr += nr)
                        {
                            int nrr = Math.Min(nr, nc - jr);
                            float* bp = packB + (nint)jr * kc;
                            for (int ir = 0; ir < mc; ir += mr)
                            {
                                int mrr = Math.Min(mr, mc - ir);
                                float* ap = packA + (nint)ir * kc;
                                float* cc = c + (nint)(ic + ir) * ldc + jc + jr;
                                if (mrr == mr && nrr == nr) kernel(kc, ap, bp, cc, ldc, acc);
                                else EdgeTile(kernel, kc, ap, bp, cc, ldc, acc, mrr, nrr, tile);
                            }
                        }
                    }
                    else
                    {
                        for (int ir = 0; ir < mc; ir += mr)
                        {
                            int mrr = Math.Min(mr, mc - ir);
                            float* ap = packA + (nint)ir * kc;
                            float* crow = c + (nint)(ic + ir) * ldc + jc;
                            for (int jr = 0; jr < nc; jr += nr)
                            {
                                int nrr = Math.Min(nr, nc - jr);
                                float* bp = packB + (nint)jr * kc;
                                if (mrr == mr && nrr == nr) kernel(kc, ap, bp, crow + jr, ldc, acc);
                                else EdgeTile(kernel, kc, ap, bp, crow + jr, ldc, acc, mrr, nrr, tile);
                            }
                        }
                    }
                }
            }
        }
    }

    // Partial register tile: compute into the scratch tile, then store/add the valid mrr×nrr part.
    private static void EdgeTile(delegate*<int, float*, float*, float*, nint, bool, void> kernel, int kc, float* ap, float* bp,
        float* cc, int ldc, bool acc, int mrr, int nrr, float* tile)
    {
        int nr = NR;
        kernel(kc, ap, bp, tile, nr, false);
        for (int i = 0; i < mrr; i++)
        {
            float* src = tile + i * nr, dst = cc + (nint)i * ldc;
            if (acc) for (int j = 0; j < nrr; j++) dst[j] += src[j];
            else for (int j = 0; j < nrr; j++) dst[j] = src[j];
        }
    }

    // Packs op(A)[i0..i0+mc, p0..p0+kc] into micro-panels of MR rows: panel[p*MR + r], zero-padded rows.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void PackA(bool transA, float* a, int lda, int i0, int mc, int p0, int kc, float* dst)
    {
        int mr = MR;
        for (int ir = 0; ir < mc; ir += mr)
        {
            int rows = Math.Min(mr, mc - ir);
            float* d = dst + (nint)ir * kc;
            if (!transA && Avx.IsSupported && kc >= 8)
            {
                PackATransposed8(a + (nint)(i0 + ir) * lda + p0, lda, rows, kc, d);
            }
            else if (!transA)
            {
                // op(A)[i][p] = a[i*lda + p]
                for (int r = 0; r < rows; r++)
                {
                    float* src = a + (nint)(i0 + ir + r) * lda + p0;
                    float* dd = d + r;
                    int p = 0;
                    for (; p + 4 <= kc; p += 4)
                    {
                        dd[0] = src[p]; dd[mr] = src[p + 1]; dd[2 * mr] = src[p + 2]; dd[3 * mr] = src[p + 3];
                        dd += 4 * mr;
                    }
                    for (; p < kc; p++) { *dd = src[p]; dd += mr; }
                }
                for (int r = rows; r < mr; r++)
                    for (int p = 0; p < kc; p++) d[p * mr + r] = 0f;
            }
            else
            {
                // op(A)[i][p] = a[p*lda + i]: each p contributes `rows` contiguous values
                float* src = a + (nint)p0 * lda + i0 + ir;
                for (int p = 0; p < kc; p++)
                {
                    float* s = src + (nint)p * lda;
                    float* dd = d + p * mr;
                    int r = 0;
                    for (; r < rows; r++) dd[r] = s[r];
                    for (; r < mr; r++) dd[r] = 0f;
                }
            }
        }
    }

    // Packs `rows` (≤ MR) rows of row-major A (stride lda), columns 0..kc, into one micro-panel d[p*MR + r] using 8×8
    // transposes. Every store writes 8 floats; when MR is not a multiple of 8, the last row group of column p spills into
    // the first slots of column p+1. Groups are therefore stored last-to-first and columns in increasing order, so every
    // spill is overwritten afterwards; the final spill lands in the next panel (packed later) or in the scratch slack.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void PackATransposed8(float* src, int lda, int rows, int kc, float* d)
    {
        int mr = MR;
        int groups = (mr + 7) >> 3;
        int p = 0;
        for (; p + 8 <= kc; p += 8)
        {
            float* dp = d + (nint)p * mr;
            for (int g = groups - 1; g >= 0; g--)
            {
                int r0 = g * 8;
                Vector256<float> x0 = Row(src, lda, r0 + 0, rows, p), x1 = Row(src, lda, r0 + 1, rows, p);
                Vector256<float> x2 = Row(src, lda, r0 + 2, rows, p), x3 = Row(src, lda, r0 + 3, rows, p);
                Vector256<float> x4 = Row(src, lda, r0 + 4, rows, p), x5 = Row(src, lda, r0 + 5, rows, p);
                Vector256<float> x6 = Row(src, lda, r0 + 6, rows, p), x7 = Row(src, lda, r0 + 7, rows, p);
                var t0 = Avx.UnpackLow(x0, x1); var t1 = Avx.UnpackHigh(x0, x1);
                var t2 = Avx.UnpackLow(x2, x3); var t3 = Avx.UnpackHigh(x2, x3);
                var t4 = Avx.UnpackLow(x4, x5); var t5 = Avx.UnpackHigh(x4, x5);
                var t6 = Avx.UnpackLow(x6, x7); var t7 = Avx.UnpackHigh(x6, x7);
                var s0 = Avx.Shuffle(t0, t2, 0x44); var s1 = Avx.Shuffle(t0, t2, 0xEE);
                var s2 = Avx.Shuffle(t1, t3, 0x44); var s3 = Avx.Shuffle(t1, t3, 0xEE);
                var s4 = Avx.Shuffle(t4, t6, 0x44); var s5 = Avx.Shuffle(t4, t6, 0xEE);
                var s6 = Avx.Shuffle(t5, t7, 0x44); var s7 = Avx.Shuffle(t5, t7, 0xEE);
                float* o = dp + r0;
                Avx.Store(o, Avx.Permute2x128(s0, s4, 0x20));
                Avx.Store(o + mr, Avx.Permute2x128(s1, s5, 0x20));
                Avx.Store(o + 2 * mr, Avx.Permute2x128(s2, s6, 0x20));
                Avx.Store(o + 3 * mr, Avx.Permute2x128(s3, s7, 0x20));
                Avx.Store(o + 4 * mr, Avx.Permute2x128(s0, s4, 0x31));
                Avx.Store(o + 5 * mr, Avx.Permute2x128(s1, s5, 0x31));
                Avx.Store(o + 6 * mr, Avx.Permute2x128(s2, s6, 0x31));
                Avx.Store(o + 7 * mr, Avx.Permute2x128(s3, s7, 0x31));
            }
        }
        for (; p < kc; p++)
        {
            float* dd = d + (nint)p * mr;
            int r = 0;
            for (; r < rows; r++) dd[r] = src[(nint)r * lda + p];
            for (; r < mr; r++) dd[r] = 0f;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Row(float* src, int lda, int r, int rows, int p)
        => r < rows ? Avx.LoadVector256(src + (nint)r * lda + p) : Vector256<float>.Zero;

    // Packs op(B)[p0..p0+kc, j0..j0+nc] into micro-panels of NR columns: panel[p*NR + j], zero-padded columns.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void PackB(bool transB, float* b, int ldb, int p0, int kc, int j0, int nc, float* dst)
    {
        int nr = NR;
        for (int jr = 0; jr < nc; jr += nr)
        {
            int cols = Math.Min(nr, nc - jr);
            float* d = dst + (nint)jr * kc;
            if (!transB)
            {
                // op(B)[p][j] = b[p*ldb + j]: each p contributes `cols` contiguous values
                float* src = b + (nint)p0 * ldb + j0 + jr;
                if (cols == nr && nr % 16 == 0 && Vector512.IsHardwareAccelerated)
                {
                    for (int p = 0; p < kc; p++)
                    {
                        float* s = src + (nint)p * ldb;
                        float* dd = d + p * nr;
                        for (int j = 0; j < nr; j += 16) Vector512.Store(Vector512.Load(s + j), dd + j);
                    }
                }
                else if (cols == nr && nr % 8 == 0 && Vector256.IsHardwareAccelerated)
                {
                    for (int p = 0; p < kc; p++)
                    {
                        float* s = src + (nint)p * ldb;
                        float* dd = d + p * nr;
                        for (int j = 0; j < nr; j += 8) Vector256.Store(Vector256.Load(s + j), dd + j);
                    }
                }
                else
                {
                    for (int p = 0; p < kc; p++)
                    {
                        float* s = src + (nint)p * ldb;
                        float* dd = d + p * nr;
                        int j = 0;
                        for (; j < cols; j++) dd[j] = s[j];
                        for (; j < nr; j++) dd[j] = 0f;
                    }
                }
            }
            else if (cols == nr && nr % 8 == 0 && Avx.IsSupported && kc >= 8)
            {
                PackBTransposed8(b + (nint)(j0 + jr) * ldb + p0, ldb, kc, d);
            }
            else
            {
                // op(B)[p][j] = b[j*ldb + p]
                for (int j = 0; j < cols; j++)
                {
                    float* s = b + (nint)(j0 + jr + j) * ldb + p0;
                    float* dd = d + j;
                    int p = 0;
                    for (; p + 4 <= kc; p += 4)
                    {
                        dd[0] = s[p]; dd[nr] = s[p + 1]; dd[2 * nr] = s[p + 2]; dd[3 * nr] = s[p + 3];
                        dd += 4 * nr;
                    }
                    for (; p < kc; p++) { *dd = s[p]; dd += nr; }
                }
                for (int j = cols; j < nr; j++)
                    for (int p = 0; p < kc; p++) d[p * nr + j] = 0f;
            }
        }
    }

    // Packs NR full columns of op(B) from B stored transposed (row j of the storage is column j of op(B)) into one
    // micro-panel d[p*NR + j], with 8×8 register transposes: eight stored rows by eight depths at a time.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void PackBTransposed8(float* src, int ldb, int kc, float* d)
    {
        int nr = NR;
        int p = 0;
        for (; p + 8 <= kc; p += 8)
        {
            float* dp = d + (nint)p * nr;
            for (int j0 = 0; j0 < nr; j0 += 8)
            {
                float* s = src + (nint)j0 * ldb + p;
                var x0 = Avx.LoadVector256(s); var x1 = Avx.LoadVector256(s + ldb);
                var x2 = Avx.LoadVector256(s + 2L * ldb); var x3 = Avx.LoadVector256(s + 3L * ldb);
                var x4 = Avx.LoadVector256(s + 4L * ldb); var x5 = Avx.LoadVector256(s + 5L * ldb);
                var x6 = Avx.LoadVector256(s + 6L * ldb); var x7 = Avx.LoadVector256(s + 7L * ldb);
                var t0 = Avx.UnpackLow(x0, x1); var t1 = Avx.UnpackHigh(x0, x1);
                var t2 = Avx.UnpackLow(x2, x3); var t3 = Avx.UnpackHigh(x2, x3);
                var t4 = Avx.UnpackLow(x4, x5); var t5 = Avx.UnpackHigh(x4, x5);
                var t6 = Avx.UnpackLow(x6, x7); var t7 = Avx.UnpackHigh(x6, x7);
                var s0 = Avx.Shuffle(t0, t2, 0x44); var s1 = Avx.Shuffle(t0, t2, 0xEE);
                var s2 = Avx.Shuffle(t1, t3, 0x44); var s3 = Avx.Shuffle(t1, t3, 0xEE);
                var s4 = Avx.Shuffle(t4, t6, 0x44); var s5 = Avx.Shuffle(t4, t6, 0xEE);
                var s6 = Avx.Shuffle(t5, t7, 0x44); var s7 = Avx.Shuffle(t5, t7, 0xEE);
                float* o = dp + j0;
                Avx.Store(o, Avx.Permute2x128(s0, s4, 0x20));
                Avx.Store(o + nr, Avx.Permute2x128(s1, s5, 0x20));
                Avx.Store(o + 2 * nr, Avx.Permute2x128(s2, s6, 0x20));
                Avx.Store(o + 3 * nr, Avx.Permute2x128(s3, s7, 0x20));
                Avx.Store(o + 4 * nr, Avx.Permute2x128(s0, s4, 0x31));
                Avx.Store(o + 5 * nr, Avx.Permute2x128(s1, s5, 0x31));
                Avx.Store(o + 6 * nr, Avx.Permute2x128(s2, s6, 0x31));
                Avx.Store(o + 7 * nr, Avx.Permute2x128(s3, s7, 0x31));
            }
        }
        for (; p < kc; p++)
        {
            float* dd = d + (nint)p * nr;
            for (int j = 0; j < nr; j++) dd[j] = src[(nint)j * ldb + p];
        }
    }

    // c[0..n) (= or +=) a · op(B) for one row a: rows of B scaled and added (B stored k×n), or one dot product per
    // stored row (B stored n×k). Columns are split across threads when there are enough of them.
    private static void Gemv(bool transA, bool transB, int n, int k, float* a, int lda, float* b, int ldb, float* c,
        bool accumulate, int threads)
    {
        // the row of op(A): contiguous, or strided by lda when A is stored transposed (k×1)
        var row = new float[k];
        for (int p = 0; p < k; p++) row[p] = transA ? a[(nint)p * lda] : a[p];
        int parts = (int)Math.Min(threads, Math.Max(1, (long)n * k / (MinWorkPerThread * 4)));
        nint ib = (nint)b, ic = (nint)c;
        void Columns(int j0, int j1)
        {
            float* bb = (float*)ib, cc = (float*)ic;
            var y = new Span<float>(cc + j0, j1 - j0);
            if (transB)
            {
                for (int j = j0; j < j1; j++)
                {
                    float dot = System.Numerics.Tensors.TensorPrimitives.Dot(row, new ReadOnlySpan<float>(bb + (nint)j * ldb, k));
                    cc[j] = accumulate ? cc[j] + dot : dot;
                }
            }
            else
            {
                if (!accumulate) y.Clear();
                for (int p = 0; p < k; p++)
                    System.Numerics.Tensors.TensorPrimitives.MultiplyAdd(new ReadOnlySpan<float>(bb + (nint)p * ldb + j0, j1 - j0), row[p], y, y);
            }
        }
        if (parts <= 1) { Columns(0, n); return; }
        Parallel.For(0, parts, new ParallelOptions { MaxDegreeOfParallelism = parts }, t =>
            Columns((int)((long)n * t / parts), (int)((long)n * (t + 1) / parts)));
    }

    // Unpacked path for tiny products.
    private static void SmallGemm(bool transA, bool transB, int m, int n, int k,
        float* a, int lda, float* b, int ldb, float* c, int ldc, bool accumulate)
    {
        for (int i = 0; i < m; i++)
        {
            float* crow = c + (nint)i * ldc;
            for (int j = 0; j < n; j++)
            {
                float sum = 0f;
                for (int p = 0; p < k; p++)
                {
                    float av = transA ? a[(nint)p * lda + i] : a[(nint)i * lda + p];
                    float bv = transB ? b[(nint)j * ldb + p] : b[(nint)p * ldb + j];
                    sum = MathF.FusedMultiplyAdd(av, bv, sum);
                }
                crow[j] = accumulate ? crow[j] + sum : sum;
            }
        }
    }

    // Portable fallback micro-kernel (no SIMD requirements).
    private static void KernelScalar_4x8(int kc, float* a, float* b, float* c, nint ldc, bool acc)
    {
        float* t = stackalloc float[32];
        for (int i = 0; i < 32; i++) t[i] = 0f;
        for (int p = 0; p < kc; p++)
        {
            for (int r = 0; r < 4; r++)
            {
                float av = a[r];
                float* tr = t + r * 8;
                for (int j = 0; j < 8; j++) tr[j] += av * b[j];
            }
            a += 4; b += 8;
        }
        for (int r = 0; r < 4; r++)
        {
            float* q = c + r * ldc;
            for (int j = 0; j < 8; j++) q[j] = acc ? q[j] + t[r * 8 + j] : t[r * 8 + j];
        }
    }

    // ---- per-thread, 64-byte aligned scratch (pinned arrays, reused across calls) ----
    private sealed class Scratch
    {
        [ThreadStatic] private static Scratch? t_current;
        private readonly float[] _storage;
        public readonly float* A, B, Tile;

        private Scratch()
        {
            long aLen = Round16((long)MC * KC + 16), bLen = Round16((long)NC * KC), tLen = Round16((long)MR * NR);
            _storage = GC.AllocateUninitializedArray<float>((int)(aLen + bLen + tLen + 16), pinned: true);
            float* p = (float*)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(_storage));
            p = (float*)(((nint)p + 63) & ~(nint)63);
            A = p; B = A + aLen; Tile = B + bLen;
        }

        private static long Round16(long x) => (x + 15) & ~15L;

        public static Scratch Get() => t_current ??= new Scratch();
    }
}
