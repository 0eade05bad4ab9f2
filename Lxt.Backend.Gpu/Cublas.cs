// cuBLAS through P/Invoke on ILGPU's device pointers: the library is resolved at run time ($LXT_CUBLAS_PATH, then
// the CUDA 12 and 13 sonames), a handle is bound to the accelerator's one stream, and row-major products are
// computed as the column-major products of swapped operands.
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

    public const int OpN = 0;
    /// <summary>cublasMath_t: CUBLAS_DEFAULT_MATH (full float32) and CUBLAS_TF32_TENSOR_OP_MATH.</summary>
    public const int DefaultMath = 0, Tf32TensorOpMath = 3;

    [DllImport(Library, EntryPoint = "cublasCreate_v2", ExactSpelling = true)]
    public static extern int Create(out IntPtr handle);

    [DllImport(Library, EntryPoint = "cublasDestroy_v2", ExactSpelling = true)]
    public static extern int Destroy(IntPtr handle);

    [DllImport(Library, EntryPoint = "cublasSetStream_v2", ExactSpelling = true)]
    public static extern int SetStream(IntPtr handle, IntPtr stream);

    [DllImport(Library, EntryPoint = "cublasSetMathMode", ExactSpelling = true)]
    public static extern int SetMathMode(IntPtr handle, int mode);

    [DllImport(Library, EntryPoint = "cublasSgemmStridedBatched", ExactSpelling = true)]
    public static extern int SgemmStridedBatched(IntPtr handle, int transa, int transb, int m, int n, int k,
        float* alpha, IntPtr a, int lda, long strideA, IntPtr b, int ldb, long strideB,
        float* beta, IntPtr c, int ldc, long strideC, int batchCount);

    /// <summary>Row-major C[i] (m×n) = A[i] (m×k) · B[i] (k×n) for `count` products whose operands lie
    /// strideA, strideB and m·n floats apart (a stride of 0 reuses one matrix). Column-major cuBLAS computes
    /// Cᵀ = Bᵀ·Aᵀ, which is C in row-major order.</summary>
    public static void RowMajorBatched(IntPtr cublas, int m, int n, int k, IntPtr a, long strideA, IntPtr b, long strideB,
                                       IntPtr c, int count)
    {
        float alpha = 1f, beta = 0f;
        Check(SgemmStridedBatched(cublas, OpN, OpN, n, m, k, &alpha, b, n, strideB, a, k, strideA, &beta, c, n, (long)m * n, count),
              "cublasSgemmStridedBatched");
    }
}
