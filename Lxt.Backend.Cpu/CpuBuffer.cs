// Host memory of the CPU backend: an exact-length float[] exposed as an array and a span for zero-copy use.
using Lxt.Graph;

namespace Lxt.Backend.Cpu;

/// <summary>A float32 buffer of <see cref="CpuBackend"/>, backed by an array of exactly <see cref="Length"/> values.</summary>
/// <remarks>Arrays are not rented from a pool: the plan already reuses buffers by length, and pool buckets round
/// sizes up to powers of two, which would nearly double the peak memory of large activations.</remarks>
public sealed class CpuBuffer : IBuffer
{
    float[]? array;

    internal CpuBuffer(int length)
    {
        if (length < 0) throw new ArgumentOutOfRangeException(nameof(length), length, "a buffer length cannot be negative");
        array = new float[length];
        Length = length;
    }

    /// <summary>A buffer over an existing array (no copy): the array is the buffer's storage.</summary>
    internal CpuBuffer(float[] values)
    {
        array = values ?? throw new ArgumentNullException(nameof(values));
        Length = values.Length;
    }

    /// <summary>Number of float32 values the buffer holds.</summary>
    public int Length { get; }

    /// <summary>The backing array (of length <see cref="Length"/>).</summary>
    public float[] Array => array ?? throw new ObjectDisposedException(nameof(CpuBuffer), "the CPU buffer was disposed");

    /// <summary>The buffer's values.</summary>
    public Span<float> Span => Array.AsSpan();

    /// <summary>Drops the array; later use of the buffer throws <see cref="ObjectDisposedException"/>.</summary>
    public void Dispose() => array = null;
}
