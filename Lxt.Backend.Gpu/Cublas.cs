// cuBLAS through P/Invoke on ILGPU's device pointers: the library is resolved at run time ($LXT_CUBLAS_PATH, then
// the CUDA 12 and 13 sonames), a handle is bound to the accelerator's one stream, and row-major products (operands
// possibly transposed) are computed as the column-major products of swapped operands, in float32, TF32 or bfloat16.
using System.Reflection;
using System.Runtime.InteropServices;
using Lxt.Graph;

namespace Lxt.Backend.Gpu;

internal static unsafe class Cublas
{
    const string Library = "lxt-cublas";
    /// <summary>Environment variable naming the cuBLAS library file to load instead of the default sonames.</summary>
    public const string PathVariable = "LXT_CUBLAS_PATH";

    static readonly object Gate = new();
    static bool resolverSet;
    static IntPtr handle;
    static string? loadedFrom;

    static string[] Candidates()
    {
        var list = new List<string>();
        var overridden = Environment.GetEnvironmentVariable(PathVariable);
        if (!string.IsNullOrWhiteSpace(overridden)) list.Add(overridden);
        if (OperatingSystem.IsWindows()) list.AddRange(["cublas64_12.dll", "cublas64_13.dll", "cublas64_11.dll"]);
        else
            list.AddRange(["libcublas.so.12", "libcublas.so.13", "libcublas.so",
                           "/usr/local/cuda/lib64/libcublas.so.12", "/usr/local/cuda/lib64/libcublas.so.13"]);
        return list.ToArray();
    }

    /// <summary>Loads cuBLAS once per process; on failure says which names were tried.</summary>
    public static bool TryLoad(out string description)
    {
        lock (Gate)
        {
            if (handle == IntPtr.Zero)
            {
                foreach (var name in Candidates())
                    if (NativeLibrary.TryLoad(name, out handle)) { loadedFrom = name; break; }
                if (!resolverSet && handle != IntPtr.Zero)
                {
                    NativeLibrary.SetDllImportResolver(typeof(Cublas).Assembly, Resolve);
                    resolverSet = true;
                }
            }
            description = handle != IntPtr.Zero
                ? loadedFrom!
                : $"cuBLAS could not be loaded (tried {string.Join(", ", Candidates())}; set {PathVariable} to the library file)";
            return handle != IntPtr.Zero;
        }
    }

    static IntPtr Resolve(string name, Assembly assembly, DllImportSearchPath? path) =>
        name == Library ? handle : IntPtr.Zero;

    public static void Check(int status, string function)
    {
        if (status != 0) throw new LxtException($"cuBLAS {function} failed with status {status} ({StatusName(status)})");
    }

    static string StatusName(int status) => status switch
    {
        1 => "CUBLAS_STATUS_NOT_INITIALIZED",
        3 => "CUBLAS_STATUS_ALLOC_FAILED",
        7 => "CUBLAS_STATUS_INVALID_VALUE",
        8 => "CUBLAS_STATUS_ARCH_MISMATCH",
        11 => "CUBLAS_STATUS_MAPPING_ERROR",
        13 => "CUBLAS_STATUS_EXECUTION_FAILED",
        14 => "CUBLAS_STATUS_INTERNAL_ERROR",
        15 => "CUBLAS_STATUS_NOT_SUPPORTED",
        16 => "CUBLAS_STATUS_LICENSE_ERROR",
        _ => "unknown status",
    };

    /// <summary>cublasOperation_t: CUBLAS_OP_N and CUBLAS_OP_T.</summary>
    public const int OpN = 0, OpT = 1;
    /// <summary>cublasMath_t: CUBLAS_DEFAULT_MATH (SGEMM in full float32; GemmEx follows its compute type).</summary>
    public const int DefaultMath = 0;
    /// <summary>cudaDataType_t (library_types.h): CUDA_R_32F and CUDA_R_16BF.</summary>
    public const int R32F = 0, R16BF = 14;
    /// <summary>cublasComputeType_t: CUBLAS_COMPUTE_32F and CUBLAS_COMPUTE_32F_FAST_TF32.</summary>
    public const int Compute32F = 68, Compute32FFastTf32 = 77;
    /// <summary>CUBLAS_COMPUTE_32F_FAST_16BF: float32 operands and results, products on bfloat16 tensor cores (cuBLAS
    /// rounds the operands as it loads them, so no bfloat16 copies are written).</summary>
    public const int Compute32FFast16BF = 75;
    /// <summary>cublasGemmAlgo_t: CUBLAS_GEMM_DEFAULT.</summary>
    public const int GemmDefault = -1;

    [DllImport(Library, EntryPoint = "cublasCreate_v2", ExactSpelling = true)]
    public static extern int Create(out IntPtr handle);

    [DllImport(Library, EntryPoint = "cublasDestroy_v2", ExactSpelling = true)]
    public static extern int Destroy(IntPtr handle);

    [DllImport(Library, EntryPoint = "cublasSetStream_v2", ExactSpelling = true)]
    public static extern int SetStream(IntPtr handle, IntPtr stream);

    /// <summary>Bytes of the workspace each handle is given (cuBLAS asks for up to 32 MiB on Hopper).</summary>
    public const int WorkspaceBytes = 32 << 20;

    [DllImport(Library, EntryPoint = "cublasSetWorkspace_v2", ExactSpelling = true)]
    public static extern int SetWorkspace(IntPtr handle, IntPtr workspace, nuint bytes);

    [DllImport(Library, EntryPoint = "cublasSetMathMode", ExactSpelling = true)]
    public static extern int SetMathMode(IntPtr handle, int mode);

    [DllImport(Library, EntryPoint = "cublasSgemmStridedBatched", ExactSpelling = true)]
    public static extern int SgemmStridedBatched(IntPtr handle, int transa, int transb, int m, int n, int k,
        float* alpha, IntPtr a, int lda, long strideA, IntPtr b, int ldb, long strideB,
        float* beta, IntPtr c, int ldc, long strideC, int batchCount);

    /// <summary>cublasGemmStridedBatchedEx(handle, transa, transb, m, n, k, const void* alpha, const void* A,
    /// cudaDataType Atype, int lda, long long strideA, const void* B, cudaDataType Btype, int ldb, long long strideB,
    /// const void* beta, void* C, cudaDataType Ctype, int ldc, long long strideC, int batchCount,
    /// cublasComputeType_t computeType, cublasGemmAlgo_t algo); alpha and beta are float for CUBLAS_COMPUTE_32F*.</summary>
    [DllImport(Library, EntryPoint = "cublasGemmStridedBatchedEx", ExactSpelling = true)]
    public static extern int GemmStridedBatchedEx(IntPtr handle, int transa, int transb, int m, int n, int k,
        float* alpha, IntPtr a, int aType, int lda, long strideA, IntPtr b, int bType, int ldb, long strideB,
        float* beta, IntPtr c, int cType, int ldc, long strideC, int batchCount, int computeType, int algo);

    /// <summary>The column-major GEMM that computes a row-major product C (m×n) = op(A)·op(B), A stored m×k (k×m when
    /// transA), B stored k×n (n×k when transB). A row-major matrix is its transpose in column-major order, so cuBLAS
    /// computes Cᵀ (n×m, ldc = n) = op(B)ᵀ·op(A)ᵀ: its first operand is B, read with OpFirst (T when transB, whose
    /// column-major view is then n×k with leading dimension k, else N with leading dimension n), its second is A (T with
    /// leading dimension m when transA, else N with leading dimension k).</summary>
    public readonly record struct ColumnMajorGemm(int OpFirst, int OpSecond, int M, int N, int K, int LdFirst, int LdSecond, int Ldc)
    {
        public static ColumnMajorGemm Of(int m, int n, int k, bool transA, bool transB) =>
            new(transB ? OpT : OpN, transA ? OpT : OpN, n, m, k, transB ? k : n, transA ? m : k, n);
    }

    /// <summary>`count` row-major products C[i] = op(A[i])·op(B[i]) (see <see cref="ColumnMajorGemm"/>) whose operands lie
    /// strideA and strideB values apart (0 reuses one matrix) and results strideC floats apart. Float32: SGEMM with the
    /// default math. TensorFloat32: GemmEx on float32 with CUBLAS_COMPUTE_32F_FAST_TF32. BFloat16: GemmEx on bfloat16
    /// operands (CUDA_R_16BF) into float32 results with CUBLAS_COMPUTE_32F, or into bfloat16 results when
    /// `narrowResult` (float32 sums rounded once), or, when `narrowOperands` is false, float32 operands with
    /// CUBLAS_COMPUTE_32F_FAST_16BF.</summary>
    public static void StridedBatched(IntPtr cublas, GemmPrecision precision, ColumnMajorGemm g, IntPtr a, long strideA,
                                      IntPtr b, long strideB, IntPtr c, long strideC, int count, bool narrowOperands = true,
                                      bool narrowResult = false)
    {
        if (narrowResult && (precision != GemmPrecision.BFloat16 || !narrowOperands))
            throw new ArgumentException("bfloat16 results come from products of bfloat16 operands only", nameof(narrowResult));
        float alpha = 1f, beta = 0f;
        // GemmEx with operands of one type into float32 (or bfloat16) results
        void Ex(int operandType, int compute, string what)
        {
            float one = 1f, zero = 0f;
            Check(GemmStridedBatchedEx(cublas, g.OpFirst, g.OpSecond, g.M, g.N, g.K, &one, b, operandType, g.LdFirst, strideB,
                                       a, operandType, g.LdSecond, strideA, &zero, c, narrowResult ? R16BF : R32F, g.Ldc, strideC, count,
                                       compute, GemmDefault), "cublasGemmStridedBatchedEx (" + what + ")");
        }
        switch (precision)
        {
            case GemmPrecision.Float32:
                Check(SgemmStridedBatched(cublas, g.OpFirst, g.OpSecond, g.M, g.N, g.K, &alpha, b, g.LdFirst, strideB,
                                          a, g.LdSecond, strideA, &beta, c, g.Ldc, strideC, count), "cublasSgemmStridedBatched");
                break;
            case GemmPrecision.TensorFloat32:
                Ex(R32F, Compute32FFastTf32, "TF32");
                break;
            case GemmPrecision.BFloat16 when !narrowOperands:
                Ex(R32F, Compute32FFast16BF, "float32 on BF16 tensor cores");
                break;
            case GemmPrecision.BFloat16:
                Ex(R16BF, Compute32F, "BF16");
                break;
            default:
                throw new ArgumentOutOfRangeException(nameof(precision), precision, "unknown GEMM precision");
        }
    }
}
