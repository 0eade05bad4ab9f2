// The GPU backend: an ILGPU accelerator (CUDA, or ILGPU's CPU accelerator for tests), its buffers and transfers.
// Op dispatch lives in GpuBackend.Ops.cs and matrix products in GpuBackend.MatMul.cs.
using System.Buffers;
using System.Runtime.InteropServices;
using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;
using ILGPU.Runtime.Cuda;
using Lxt.Graph;

namespace Lxt.Backend.Gpu;

/// <summary>Which accelerator a <see cref="GpuBackend"/> runs on.</summary>
public enum GpuKind
{
    /// <summary>The first CUDA device, with cuBLAS for matrix products.</summary>
    Cuda,
    /// <summary>ILGPU's CPU accelerator: the same kernels, emulated on CPU threads (slow; for tests and machines without a GPU).</summary>
    CpuAccelerator,
}

/// <summary>A CUDA device or the cuBLAS library was asked for and is not there.</summary>
public sealed class GpuUnavailableException(string message, Exception? inner = null) : LxtException(message, inner!);

/// <summary>Runs plans in float32 on an ILGPU accelerator: one kernel per op on the accelerator's single stream,
/// cuBLAS strided-batched SGEMM for products on CUDA and a shared-memory tiled kernel elsewhere. Not thread-safe.</summary>
public sealed partial class GpuBackend : IBackend
{
    readonly Context context;
    readonly Accelerator accelerator;
    readonly IntPtr cublas;
    long allocatedBytes, peakBytes;
    bool disposed;

    GpuBackend(GpuKind kind, Context context, Accelerator accelerator, IntPtr cublas)
    {
        Kind = kind;
        this.context = context;
        this.accelerator = accelerator;
        this.cublas = cublas;
        Tile = Math.Min(Kernels.MaxTile, (int)Math.Sqrt(accelerator.MaxNumThreadsPerGroup));
        useCublas = cublas != IntPtr.Zero && Environment.GetEnvironmentVariable("LXT_GPU_GEMM") != "ilgpu";
    }

    /// <summary>A backend on <paramref name="kind"/>. For <see cref="GpuKind.Cuda"/>, throws
    /// <see cref="GpuUnavailableException"/> when there is no CUDA device or cuBLAS cannot be loaded.
    /// <paramref name="tf32"/> lets cuBLAS round products' operands to TF32 on tensor cores (faster, ~1e-3 relative).</param></summary>
    public static GpuBackend Create(GpuKind kind, bool tf32 = false) => kind switch
    {
        GpuKind.CpuAccelerator => CreateCpu(),
        GpuKind.Cuda => CreateCuda(tf32),
        _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, "unknown GPU kind"),
    };

    static GpuBackend CreateCpu()
    {
        var context = Context.Create(b => b.CPU().EnableAlgorithms());
        try { return new GpuBackend(GpuKind.CpuAccelerator, context, context.CreateCPUAccelerator(0), IntPtr.Zero); }
        catch { context.Dispose(); throw; }
    }

    static GpuBackend CreateCuda(bool tf32)
    {
        const string advice = "run on the CPU (--device cpu) instead";
        Context? context = null;
        Accelerator? accelerator = null;
        IntPtr handle = IntPtr.Zero;
        try
        {
            context = Context.Create(b => b.Cuda().EnableAlgorithms());
            if (context.GetCudaDevices().Count == 0)
                throw new GpuUnavailableException($"no CUDA device was found (no NVIDIA GPU, or its driver is not installed); {advice}");
            if (!Cublas.TryLoad(out var description))
                throw new GpuUnavailableException($"a CUDA device was found but {description}; {advice}");
            accelerator = context.CreateCudaAccelerator(0);
            accelerator.Bind();
            Cublas.Check(Cublas.Create(out handle), "cublasCreate");
            var stream = accelerator.DefaultStream is CudaStream cs ? cs.StreamPtr : IntPtr.Zero;
            Cublas.Check(Cublas.SetStream(handle, stream), "cublasSetStream");
            Cublas.Check(Cublas.SetMathMode(handle, tf32 ? Cublas.Tf32TensorOpMath : Cublas.DefaultMath), "cublasSetMathMode");
            return new GpuBackend(GpuKind.Cuda, context, accelerator, handle);
        }
        catch (Exception e)
        {
            if (handle != IntPtr.Zero) Cublas.Destroy(handle);
            accelerator?.Dispose();
            context?.Dispose();
            if (e is GpuUnavailableException) throw;
            throw new GpuUnavailableException($"CUDA could not be initialised ({e.GetType().Name}: {e.Message}); {advice}", e);
        }
    }

    /// <summary>The accelerator kind.</summary>
    public GpuKind Kind { get; }

    /// <summary>The accelerator's name as ILGPU reports it (e.g. "NVIDIA H100 80GB HBM3").</summary>
    public string DeviceName => accelerator.Name;

    bool useCublas;

    /// <summary>True when matrix products go to cuBLAS: on CUDA unless $LXT_GPU_GEMM=ilgpu or set to false here
    /// (the ILGPU tiled kernel then runs them, e.g. to cross-check cuBLAS). Never true without cuBLAS.</summary>
    public bool UsesCublas
    {
        get => useCublas;
        set => useCublas = value && cublas != IntPtr.Zero;
    }

    /// <summary>Edge of the tiles of the ILGPU matrix-product kernel (16 on GPUs, 4 on the CPU accelerator).</summary>
    internal int Tile { get; }

    /// <summary>Bytes of device memory held by this backend's live buffers, and the most held at once.</summary>
    public long AllocatedBytes => Interlocked.Read(ref allocatedBytes);
    public long PeakAllocatedBytes => Interlocked.Read(ref peakBytes);

    /// <summary>Starts a new peak: <see cref="PeakAllocatedBytes"/> becomes the bytes held now.</summary>
    public void ResetPeak() => Interlocked.Exchange(ref peakBytes, Interlocked.Read(ref allocatedBytes));

    public string Name => Kind == GpuKind.Cuda ? "cuda-f32" : "ilgpu-cpu-f32";
    public bool IsDoublePrecision => false;

    /// <summary>A zeroed buffer of <paramref name="length"/> float32 values in device memory.</summary>
    public GpuBuffer Allocate(int length)
    {
        if (length < 0) throw new ArgumentOutOfRangeException(nameof(length), length, "a buffer length cannot be negative");
        ObjectDisposedException.ThrowIf(disposed, this);
        accelerator.Bind();
        var memory = accelerator.Allocate1D<float>(Math.Max(1, length));
        memory.MemSetToZero();
        long now = Interlocked.Add(ref allocatedBytes, memory.LengthInBytes);
        long peak;
        while (now > (peak = Interlocked.Read(ref peakBytes)) && Interlocked.CompareExchange(ref peakBytes, now, peak) != peak) { }
        return new GpuBuffer(this, memory, length);
    }
    IBuffer IBackend.Allocate(int length) => Allocate(length);

    internal void Released(long bytes) => Interlocked.Add(ref allocatedBytes, -bytes);

    GpuBuffer Own(IBuffer buffer, string role) => buffer switch
    {
        GpuBuffer g when ReferenceEquals(g.Owner, this) => g,
        GpuBuffer => throw new ArgumentException($"the {role} buffer belongs to another GPU backend instance", role),
        null => throw new ArgumentNullException(role),
        _ => throw new ArgumentException($"the {role} buffer ({buffer.GetType().Name}) belongs to another backend, not {Name}", role),
    };

    static void Fits(int source, int destination, string what)
    {
        if (source > destination) throw new ArgumentException($"{what}: {source} values do not fit in {destination}");
    }

    public void Upload(ReadOnlySpan<float> source, IBuffer destination)
    {
        var d = Own(destination, nameof(destination));
        Fits(source.Length, d.Length, "upload");
        if (source.Length == 0) return;
        accelerator.Bind();
        d.Memory.View.SubView(0, source.Length).CopyFromCPU(ref MemoryMarshal.GetReference(source), source.Length);
    }

    public void UploadDouble(ReadOnlySpan<double> source, IBuffer destination)
    {
        var rented = ArrayPool<float>.Shared.Rent(source.Length);
        try
        {
            for (int i = 0; i < source.Length; i++) rented[i] = (float)source[i];
            Upload(rented.AsSpan(0, source.Length), destination);
        }
        finally { ArrayPool<float>.Shared.Return(rented); }
    }

    public void Download(IBuffer source, Span<float> destination)
    {
        var s = Own(source, nameof(source));
        Fits(destination.Length, s.Length, "download");
        if (destination.Length == 0) return;
        accelerator.Bind();
        s.Memory.View.SubView(0, destination.Length).CopyToCPU(ref MemoryMarshal.GetReference(destination), destination.Length);
        accelerator.Synchronize();
    }

    public void DownloadDouble(IBuffer source, Span<double> destination)
    {
        var rented = ArrayPool<float>.Shared.Rent(destination.Length);
        try
        {
            Download(source, rented.AsSpan(0, destination.Length));
            for (int i = 0; i < destination.Length; i++) destination[i] = rented[i];
        }
        finally { ArrayPool<float>.Shared.Return(rented); }
    }

    public void Copy(IBuffer source, IBuffer destination)
    {
        var s = Own(source, nameof(source));
        var d = Own(destination, nameof(destination));
        Fits(s.Length, d.Length, "copy");
        if (s.Length == 0) return;
        accelerator.Bind();
        s.Memory.View.SubView(0, s.Length).CopyTo(d.Memory.View.SubView(0, s.Length));
    }

    /// <summary>Makes this backend's accelerator current on the calling thread.</summary>
    internal void Bind() => accelerator.Bind();

    /// <summary>Waits until every queued kernel and copy has finished (for timing).</summary>
    public void Synchronize()
    {
        accelerator.Bind();
        accelerator.Synchronize();
    }

    public void Dispose()
    {
        if (disposed) return;
        disposed = true;
        accelerator.Bind();
        DisposeFusedTables();
        if (cublas != IntPtr.Zero) Cublas.Destroy(cublas);
        accelerator.Dispose();
        context.Dispose();
    }
}
