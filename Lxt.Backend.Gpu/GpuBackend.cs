// The GPU backend: an ILGPU accelerator (CUDA, or ILGPU's CPU accelerator for tests), its buffers and transfers.
// Op dispatch lives in GpuBackend.Ops.cs and matrix products in GpuBackend.MatMul.cs.
using System.Buffers;
using System.Runtime.CompilerServices;
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

/// <summary>How a <see cref="GpuBackend"/> computes matrix products. Every other op is float32 in every mode.</summary>
public enum GemmPrecision
{
    /// <summary>float32 operands, products and sums (cuBLAS SGEMM with its default math).</summary>
    Float32,
    /// <summary>Operands rounded to TF32 (10-bit mantissa) on tensor cores, float32 sums and results (~1e-3 relative).
    /// On ILGPU's CPU accelerator the operands are rounded to TF32 (to nearest, ties to even) as they are read.</summary>
    TensorFloat32,
    /// <summary>Operands rounded to bfloat16 (to nearest, ties to even), float32 sums and results (~1e-2 relative);
    /// weights read only by products are kept in bfloat16 on the device (half the memory).</summary>
    BFloat16,
}

/// <summary>A CUDA device or the cuBLAS library was asked for and is not there.</summary>
public sealed class GpuUnavailableException(string message, Exception? inner = null) : LxtException(message, inner!);

/// <summary>An op whose kernel reads and writes float32 only was given a bfloat16 buffer (a weight stored narrow for
/// products, or a narrow value); <see cref="Op"/> names the op.</summary>
public sealed class NarrowOperandException(string op, string message) : LxtException(message)
{
    /// <summary>The node (op and name) that was refused.</summary>
    public string Op { get; } = op;
}

/// <summary>Runs plans in float32 on an ILGPU accelerator: one kernel per op on the accelerator's single stream,
/// cuBLAS strided-batched GEMM for products on CUDA (float32, TF32 or bfloat16 operands, see <see cref="GemmPrecision"/>)
/// and a shared-memory tiled kernel elsewhere. Not thread-safe.</summary>
public sealed partial class GpuBackend : IBackend, ITransposedMatMul, ISlicedConcat, ILowPrecisionWeights, IRunCapture
{
    readonly Context context;
    readonly Accelerator accelerator;
    // every kernel, copy and product goes to this one stream: on CUDA a stream of its own (CUDA graphs cannot
    // capture the legacy default stream), on the CPU accelerator its default stream
    readonly AcceleratorStream stream;
    readonly IntPtr cublas;
    readonly MemoryBuffer1D<byte, Stride1D.Dense>? cublasWorkspace;
    long allocatedBytes, peakBytes;
    bool disposed;

    GpuBackend(GpuKind kind, GemmPrecision precision, Context context, Accelerator accelerator, IntPtr cublas)
    {
        Kind = kind;
        Precision = precision;
        this.context = context;
        this.accelerator = accelerator;
        this.cublas = cublas;
        stream = kind == GpuKind.Cuda ? accelerator.CreateStream() : accelerator.DefaultStream;
        if (cublas != IntPtr.Zero)
        {
            Cublas.Check(Cublas.SetStream(cublas, ((CudaStream)stream).StreamPtr), "cublasSetStream");
            // a workspace of its own, so products recorded into a CUDA graph never make cuBLAS allocate
            cublasWorkspace = accelerator.Allocate1D<byte>(Cublas.WorkspaceBytes);
            try { Cublas.Check(Cublas.SetWorkspace(cublas, cublasWorkspace.NativePtr, (nuint)Cublas.WorkspaceBytes), "cublasSetWorkspace"); }
            catch (EntryPointNotFoundException) { } // an older cuBLAS: it keeps its own workspace
        }
        graphsEnabled = kind == GpuKind.Cuda && Environment.GetEnvironmentVariable("LXT_CUDA_GRAPHS") != "0";
        tile = kind == GpuKind.Cuda ? LargestTile : 1;
        useCublas = cublas != IntPtr.Zero && Environment.GetEnvironmentVariable("LXT_GPU_GEMM") != "ilgpu";
    }

    /// <summary>A backend on <paramref name="kind"/> computing matrix products in <paramref name="precision"/>.
    /// For <see cref="GpuKind.Cuda"/>, throws <see cref="GpuUnavailableException"/> when there is no CUDA device or
    /// cuBLAS cannot be loaded.</summary>
    public static GpuBackend Create(GpuKind kind, GemmPrecision precision = GemmPrecision.Float32)
    {
        if (!Enum.IsDefined(precision)) throw new ArgumentOutOfRangeException(nameof(precision), precision, "unknown GEMM precision");
        return kind switch
        {
            GpuKind.CpuAccelerator => CreateCpu(precision),
            GpuKind.Cuda => CreateCuda(precision),
            _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, "unknown GPU kind"),
        };
    }

    /// <summary>The short name of a precision as command lines spell it: f32, tf32, bf16.</summary>
    public static string IdOf(GemmPrecision precision) => precision switch
    {
        GemmPrecision.Float32 => "f32",
        GemmPrecision.TensorFloat32 => "tf32",
        GemmPrecision.BFloat16 => "bf16",
        _ => throw new ArgumentOutOfRangeException(nameof(precision), precision, "unknown GEMM precision"),
    };

    /// <summary>The precision whose id (see <see cref="IdOf"/>) is <paramref name="id"/>, ignoring case.</summary>
    public static bool TryParsePrecision(string? id, out GemmPrecision precision)
    {
        foreach (var p in Enum.GetValues<GemmPrecision>())
            if (string.Equals(IdOf(p), id?.Trim(), StringComparison.OrdinalIgnoreCase)) { precision = p; return true; }
        precision = GemmPrecision.Float32;
        return false;
    }

    /// <summary>A backend on ILGPU's CPU accelerator simulating a CUDA device's warps of 32 lanes, where kernels written
    /// for them (<see cref="AttentionOnTensorCores"/>) run as laid out on the device.</summary>
    public static GpuBackend CreateCpuWithCudaWarps(GemmPrecision precision = GemmPrecision.Float32) => CreateCpu(precision, CPUDeviceKind.Nvidia);

    static GpuBackend CreateCpu(GemmPrecision precision, CPUDeviceKind device = CPUDeviceKind.Default)
    {
        var context = Context.Create(b => b.CPU(device).EnableAlgorithms());
        try { return new GpuBackend(GpuKind.CpuAccelerator, precision, context, context.CreateCPUAccelerator(0), IntPtr.Zero); }
        catch { context.Dispose(); throw; }
    }

    static GpuBackend CreateCuda(GemmPrecision precision)
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
            // the precision is chosen per call (SGEMM or GemmEx with a compute type); the math mode stays the default
            Cublas.Check(Cublas.SetMathMode(handle, Cublas.DefaultMath), "cublasSetMathMode");
            return new GpuBackend(GpuKind.Cuda, precision, context, accelerator, handle);
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

    /// <summary>How matrix products are computed (see <see cref="GemmPrecision"/>).</summary>
    public GemmPrecision Precision { get; }

    /// <summary>The accelerator's name as ILGPU reports it (e.g. "NVIDIA H100 80GB HBM3").</summary>
    public string DeviceName => accelerator.Name;

    /// <summary>Lanes of a warp on this device (32 on CUDA; fewer on the CPU accelerator).</summary>
    internal int WarpSize => accelerator.WarpSize;

    bool useCublas;

    /// <summary>True when matrix products go to cuBLAS: on CUDA unless $LXT_GPU_GEMM=ilgpu or set to false here
    /// (the ILGPU tiled kernel then runs them, e.g. to cross-check cuBLAS). Never true without cuBLAS.</summary>
    public bool UsesCublas
    {
        get => useCublas;
        set => useCublas = value && cublas != IntPtr.Zero;
    }

    /// <summary>Edge of the tiles of the ILGPU matrix-product kernel: 16 on GPUs; 1 on the CPU accelerator, whose group
    /// barriers cost more than tiles save (a 2-layer model's explanation took 13 s with 4×4 tiles, 2.3 s without).
    /// The sums run in the same order for every edge. Tests set other edges up to the group size allowed.</summary>
    internal int Tile
    {
        get => tile;
        set => tile = value >= 1 && value <= LargestTile
            ? value
            : throw new ArgumentOutOfRangeException(nameof(value), $"tiles of 1 to {LargestTile} fit a group of this accelerator");
    }
    int tile;

    /// <summary>The largest tile edge whose square fits one group of this accelerator (and the kernel's tiles).</summary>
    int LargestTile => Math.Min(Kernels.MaxTile, (int)Math.Sqrt(accelerator.MaxNumThreadsPerGroup));

    /// <summary>Bytes of device memory held by this backend's live buffers, and the most held at once.</summary>
    public long AllocatedBytes => Interlocked.Read(ref allocatedBytes);
    public long PeakAllocatedBytes => Interlocked.Read(ref peakBytes);

    /// <summary>Starts a new peak: <see cref="PeakAllocatedBytes"/> becomes the bytes held now.</summary>
    public void ResetPeak() => Interlocked.Exchange(ref peakBytes, Interlocked.Read(ref allocatedBytes));

    /// <summary>The accelerator and the products' precision, e.g. "cuda-f32", "cuda-bf16", "ilgpu-cpu-tf32".</summary>
    public string Name => (Kind == GpuKind.Cuda ? "cuda-" : "ilgpu-cpu-") + IdOf(Precision);
    public bool IsDoublePrecision => false;

    /// <summary>A zeroed buffer of <paramref name="length"/> float32 values in device memory.</summary>
    public GpuBuffer Allocate(int length)
    {
        CheckLength(length);
        var memory = AllocateMemory<float>(length);
        memory.View.MemSetToZero(stream);
        return new GpuBuffer(this, memory, length);
    }
    IBuffer IBackend.Allocate(int length) => Allocate(length);

    /// <summary>A zeroed buffer of <paramref name="length"/> bfloat16 values in device memory (2 bytes each). Matrix
    /// products, layout copies, fused groups and prologues read it, and write it as a narrow value (see
    /// <see cref="NarrowValuesFrom"/>); every other op refuses it with <see cref="NarrowOperandException"/>.</summary>
    public GpuBuffer AllocateBFloat16(int length)
    {
        CheckLength(length);
        var memory = AllocateMemory<ushort>(length + (length & 1)); // whole pairs, for NarrowPairs
        memory.View.MemSetToZero(stream);
        return new GpuBuffer(this, memory, length);
    }

    /// <summary>True in <see cref="GemmPrecision.BFloat16"/> mode: matrix weights are then stored in bfloat16.</summary>
    public bool NarrowsMatrixWeights => Precision == GemmPrecision.BFloat16;

    /// <summary>A buffer of <paramref name="values"/> read only by matrix products: bfloat16 (rounded to nearest) in
    /// <see cref="GemmPrecision.BFloat16"/> mode, float32 otherwise.</summary>
    public GpuBuffer AllocateMatrixWeight(ReadOnlySpan<float> values)
    {
        var buffer = NarrowsMatrixWeights ? AllocateBFloat16(values.Length) : Allocate(values.Length);
        try { Upload(values, buffer); }
        catch { buffer.Dispose(); throw; }
        return buffer;
    }
    IBuffer ILowPrecisionWeights.AllocateMatrixWeight(ReadOnlySpan<float> values) => AllocateMatrixWeight(values);

    void CheckLength(int length)
    {
        if (length < 0) throw new ArgumentOutOfRangeException(nameof(length), length, "a buffer length cannot be negative");
        ObjectDisposedException.ThrowIf(disposed, this);
    }

    /// <summary>Device memory of at least one element, counted in <see cref="AllocatedBytes"/>.</summary>
    MemoryBuffer1D<T, Stride1D.Dense> AllocateMemory<T>(int length) where T : unmanaged
    {
        accelerator.Bind();
        var memory = accelerator.Allocate1D<T>(Math.Max(1, length));
        long now = Interlocked.Add(ref allocatedBytes, memory.LengthInBytes);
        long peak;
        while (now > (peak = Interlocked.Read(ref peakBytes)) && Interlocked.CompareExchange(ref peakBytes, now, peak) != peak) { }
        return memory;
    }

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

    /// <summary>Copies host values into a buffer; a bfloat16 buffer receives them rounded to nearest (ties to even).</summary>
    public void Upload(ReadOnlySpan<float> source, IBuffer destination)
    {
        var d = Own(destination, nameof(destination));
        Fits(source.Length, d.Length, "upload");
        if (source.Length == 0) return;
        accelerator.Bind();
        if (d.IsBFloat16)
        {
            var words = ToBFloat16Words(source);
            CopyIn<ushort>(words, d.BFloat16Memory.View);
            return;
        }
        if (source.Length < StagedTransferLength)
        {
            CopyIn(source, d.Memory.View);
            return;
        }
        var pinned = Staging();
        for (int at = 0; at < source.Length; at += StagingLength)
        {
            int n = Math.Min(StagingLength, source.Length - at);
            HostCopy(source.Slice(at, n), pinned.Span);
            d.Memory.View.SubView(at, n).CopyFrom(stream, pinned.ArrayView.SubView(0, n));
            stream.Synchronize(); // the staging buffer is refilled next
        }
    }

    /// <summary>Copies host values into the start of a view, in order on the stream. ILGPU copies from the address it
    /// is given, so the values stay pinned while it reads them: a garbage collection in between would move a managed
    /// array away from that address, and the copy would read freed memory. A copy from pageable host memory has read
    /// its source when it returns (CUDA stages it; the CPU accelerator copies at once), so the copy need not be
    /// waited for.</summary>
    internal unsafe void CopyIn<T>(ReadOnlySpan<T> from, ArrayView<T> to) where T : unmanaged
    {
        fixed (T* p = from) to.SubView(0, from.Length).CopyFromCPU(stream, ref Unsafe.AsRef<T>(p), from.Length);
    }

    /// <summary>Copies the start of a view into host memory and waits for the copy, the memory pinned until it is done
    /// (see <see cref="CopyIn{T}"/>: unpinned, the copy could write into whatever the collector moved there).</summary>
    internal unsafe void CopyOut<T>(ArrayView<T> from, Span<T> to) where T : unmanaged
    {
        fixed (T* p = to)
        {
            from.SubView(0, to.Length).CopyToCPU(stream, ref Unsafe.AsRef<T>(p), to.Length);
            stream.Synchronize();
        }
    }

    /// <summary>Values at or above which transfers go through page-locked host memory, which the copy engine reads
    /// and writes directly, instead of memory the driver must stage itself.</summary>
    public const int StagedTransferLength = 1 << 14;

    /// <summary>Values of the page-locked staging buffer; longer transfers go in chunks of this many.</summary>
    public const int StagingLength = 1 << 22;

    PageLockedArray1D<float>? staging;

    /// <summary>Copies host values, in parallel blocks from 1M values on (the staging copy of a large input or
    /// relevance is otherwise bound by one core's copy rate).</summary>
    static unsafe void HostCopy(ReadOnlySpan<float> from, Span<float> to)
    {
        if (from.Length < 4 * HostBlock) { from.CopyTo(to); return; }
        fixed (float* f = from)
        fixed (float* t = to)
        {
            nint source = (nint)f, target = (nint)t;
            InHostBlocks(from.Length, (start, length) =>
                new ReadOnlySpan<float>((float*)source + start, length).CopyTo(new Span<float>((float*)target + start, length)));
        }
    }

    /// <summary>Values each parallel task of a host-side pass over a large array handles.</summary>
    const int HostBlock = 1 << 18;

    /// <summary>Runs <paramref name="block"/>(start, length) over blocks of <see cref="HostBlock"/> of n values in parallel.</summary>
    static void InHostBlocks(int n, Action<int, int> block) =>
        Parallel.For(0, (n + HostBlock - 1) / HostBlock, b => block(b * HostBlock, Math.Min(HostBlock, n - b * HostBlock)));

    PageLockedArray1D<float> Staging() => staging ??= accelerator.AllocatePageLocked1D<float>(StagingLength);

    /// <summary>Host values rounded to bfloat16 words, in parallel blocks (weight matrices hold up to billions).</summary>
    static unsafe ushort[] ToBFloat16Words(ReadOnlySpan<float> source)
    {
        var words = new ushort[source.Length];
        fixed (float* pinned = source)
        {
            var values = (nint)pinned;
            InHostBlocks(words.Length, (start, length) =>
            {
                for (int i = start; i < start + length; i++) words[i] = BFloat16Conversion.FromFloat(((float*)values)[i]);
            });
        }
        return words;
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

    /// <summary>Copies a buffer's values to the host; a bfloat16 buffer's values are widened to float32 exactly.</summary>
    public void Download(IBuffer source, Span<float> destination)
    {
        var s = Own(source, nameof(source));
        Fits(destination.Length, s.Length, "download");
        if (destination.Length == 0) return;
        accelerator.Bind();
        if (s.IsBFloat16)
        {
            var words = new ushort[destination.Length];
            CopyOut<ushort>(s.BFloat16Memory.View, words);
            for (int i = 0; i < words.Length; i++) destination[i] = BFloat16Conversion.ToFloat(words[i]);
            return;
        }
        if (destination.Length < StagedTransferLength)
        {
            CopyOut(s.Memory.View, destination);
            return;
        }
        var pinned = Staging();
        for (int at = 0; at < destination.Length; at += StagingLength)
        {
            int n = Math.Min(StagingLength, destination.Length - at);
            s.Memory.View.SubView(at, n).CopyTo(stream, pinned.ArrayView.SubView(0, n));
            stream.Synchronize();
            HostCopy(pinned.Span[..n], destination.Slice(at, n));
        }
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
        if (s.ElementType != d.ElementType)
            throw new NarrowOperandException("copy", $"copy: a {s.ElementType} buffer cannot be copied into a {d.ElementType} buffer; only buffers of one element type are copied");
        if (s.Length == 0) return;
        accelerator.Bind();
        if (s.IsBFloat16) s.BFloat16Memory.View.SubView(0, s.Length).CopyTo(stream, d.BFloat16Memory.View.SubView(0, s.Length));
        else s.Memory.View.SubView(0, s.Length).CopyTo(stream, d.Memory.View.SubView(0, s.Length));
    }

    /// <summary>Makes this backend's accelerator current on the calling thread.</summary>
    internal void Bind() => accelerator.Bind();

    bool graphsEnabled;

    /// <summary>True when plans on this backend record their second run as a CUDA graph and replay it (CUDA only;
    /// on by default, off with $LXT_CUDA_GRAPHS=0 or here). Replays skip the host's cost per op.</summary>
    public bool UsesGraphs
    {
        get => graphsEnabled;
        set => graphsEnabled = value && Kind == GpuKind.Cuda;
    }

    bool IRunCapture.CanCapture => graphsEnabled && !SynchronizeEveryStep && !disposed;

    void IRunCapture.BeginCapture()
    {
        accelerator.Bind();
        CudaDriver.Check(CudaDriver.StreamBeginCapture(((CudaStream)stream).StreamPtr, CudaDriver.CaptureModeRelaxed), "cuStreamBeginCapture");
    }

    IRecordedRun IRunCapture.EndCapture()
    {
        accelerator.Bind();
        var ptr = ((CudaStream)stream).StreamPtr;
        CudaDriver.Check(CudaDriver.StreamEndCapture(ptr, out var graph), "cuStreamEndCapture");
        int status = CudaDriver.GraphInstantiate(out var exec, graph, 0);
        if (status != 0)
        {
            CudaDriver.GraphDestroy(graph);
            CudaDriver.Check(status, "cuGraphInstantiateWithFlags");
        }
        return new CudaRecording(this, graph, exec, ptr);
    }

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
        staging?.Dispose();
        if (cublas != IntPtr.Zero) Cublas.Destroy(cublas);
        cublasWorkspace?.Dispose();
        DisposeScratch();
        if (!ReferenceEquals(stream, accelerator.DefaultStream)) stream.Dispose();
        accelerator.Dispose();
        context.Dispose();
    }
}
