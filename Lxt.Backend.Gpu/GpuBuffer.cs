// Device memory of the GPU backend: one ILGPU buffer of exactly the requested length, of float32 values or, for
// weights read only by matrix products and large computed values in bfloat16 mode, of bfloat16 values (16-bit words).
using ILGPU;
using ILGPU.Runtime;
using Lxt.Graph;

namespace Lxt.Backend.Gpu;

/// <summary>The element type of a <see cref="GpuBuffer"/>.</summary>
public enum GpuElementType
{
    /// <summary>IEEE float32 values (every buffer the plan computes into).</summary>
    Float32,
    /// <summary>bfloat16 values (the high 16 bits of a float32), stored as 16-bit words: weights read only as
    /// matrix-product operands and large computed values (see <see cref="GpuBackend.NarrowValuesFrom"/>), in
    /// <see cref="GemmPrecision.BFloat16"/> mode.</summary>
    BFloat16,
}

/// <summary>A buffer of <see cref="GpuBackend"/> in its accelerator's memory: float32, or bfloat16 for matrix weights.</summary>
public sealed class GpuBuffer : IBuffer
{
    MemoryBuffer1D<float, Stride1D.Dense>? memory;
    MemoryBuffer1D<ushort, Stride1D.Dense>? narrow;

    internal GpuBuffer(GpuBackend owner, MemoryBuffer1D<float, Stride1D.Dense> memory, int length)
    {
        Owner = owner;
        this.memory = memory;
        Length = length;
        ElementType = GpuElementType.Float32;
    }

    internal GpuBuffer(GpuBackend owner, MemoryBuffer1D<ushort, Stride1D.Dense> narrow, int length)
    {
        Owner = owner;
        this.narrow = narrow;
        Length = length;
        ElementType = GpuElementType.BFloat16;
    }

    internal GpuBackend Owner { get; }

    /// <summary>Number of values the buffer holds (float32 or bfloat16, see <see cref="ElementType"/>).</summary>
    public int Length { get; }

    /// <summary>Whether the values are float32 or bfloat16.</summary>
    public GpuElementType ElementType { get; }

    /// <summary>True for a bfloat16 buffer.</summary>
    public bool IsBFloat16 => ElementType == GpuElementType.BFloat16;

    // the allocation, whichever its element type (null once disposed)
    MemoryBuffer? Allocation => (MemoryBuffer?)memory ?? narrow;

    /// <summary>Bytes of device memory the buffer holds.</summary>
    public long LengthInBytes => Allocation?.LengthInBytes ?? 0;

    /// <summary>The ILGPU float32 buffer (at least one element long, so empty tensors still own a valid allocation).
    /// A bfloat16 buffer has none: its values are in <see cref="BFloat16Memory"/>.</summary>
    public MemoryBuffer1D<float, Stride1D.Dense> Memory =>
        memory ?? (narrow is not null
            ? throw new InvalidOperationException("the GPU buffer holds bfloat16 values, not float32")
            : throw new ObjectDisposedException(nameof(GpuBuffer), "the GPU buffer was disposed"));

    /// <summary>The ILGPU buffer of bfloat16 words of a bfloat16 buffer.</summary>
    public MemoryBuffer1D<ushort, Stride1D.Dense> BFloat16Memory =>
        narrow ?? (memory is not null
            ? throw new InvalidOperationException("the GPU buffer holds float32 values, not bfloat16")
            : throw new ObjectDisposedException(nameof(GpuBuffer), "the GPU buffer was disposed"));

    /// <summary>The first <see cref="Length"/> float32 values as a view for kernels.</summary>
    internal ArrayView<float> View => Memory.View.SubView(0, Length);

    /// <summary>The first <see cref="Length"/> bfloat16 words as a view for kernels.</summary>
    internal ArrayView<ushort> NarrowView => BFloat16Memory.View.SubView(0, Length);

    /// <summary>The bfloat16 words of a bfloat16 buffer as float32 pairs (its allocation holds an even number of
    /// words), for kernels taking float32 views (see <see cref="BFloat16Conversion.FromPairs"/>).</summary>
    internal ArrayView<float> NarrowPairs => ((ArrayView<ushort>)BFloat16Memory.View).Cast<float>();

    /// <summary>Device address of the first value (for cuBLAS).</summary>
    internal IntPtr Pointer => memory?.NativePtr ?? BFloat16Memory.NativePtr;

    public void Dispose()
    {
        if (Allocation is not { } allocation) return;
        Owner.Released(allocation.LengthInBytes);
        allocation.Dispose();
        memory = null;
        narrow = null;
    }
}
