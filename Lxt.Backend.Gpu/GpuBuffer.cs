// Device memory of the GPU backend: one ILGPU float32 buffer of exactly the requested length.
using ILGPU;
using ILGPU.Runtime;
using Lxt.Graph;

namespace Lxt.Backend.Gpu;

/// <summary>A float32 buffer of <see cref="GpuBackend"/> in its accelerator's memory.</summary>
public sealed class GpuBuffer : IBuffer
{
    MemoryBuffer1D<float, Stride1D.Dense>? memory;

    internal GpuBuffer(GpuBackend owner, MemoryBuffer1D<float, Stride1D.Dense> memory, int length)
    {
        Owner = owner;
        this.memory = memory;
        Length = length;
    }

    internal GpuBackend Owner { get; }

    /// <summary>Number of float32 values the buffer holds.</summary>
    public int Length { get; }

    /// <summary>The ILGPU buffer (at least one element long, so empty tensors still own a valid allocation).</summary>
    public MemoryBuffer1D<float, Stride1D.Dense> Memory =>
        memory ?? throw new ObjectDisposedException(nameof(GpuBuffer), "the GPU buffer was disposed");

    /// <summary>The first <see cref="Length"/> values as a view for kernels.</summary>
    internal ArrayView<float> View => Memory.View.SubView(0, Length);

    /// <summary>Device address of the first value (for cuBLAS).</summary>
    internal IntPtr Pointer => Memory.NativePtr;

    public void Dispose()
    {
        if (memory is null) return;
        Owner.Released(memory.LengthInBytes);
        memory.Dispose();
        memory = null;
    }
}
