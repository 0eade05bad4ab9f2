namespace Lxt.Import;

/// <summary>
/// One tensor of a safetensors file. <see cref="Start"/> and <see cref="End"/> are byte offsets relative to
/// the start of the data section (as in the header's <c>data_offsets</c>), so End − Start is the byte size.
/// </summary>
public sealed record TensorInfo(string Name, TensorDType DType, IReadOnlyList<long> Shape, long Start, long End)
{
    /// <summary>Number of elements (product of the shape; 1 for a scalar).</summary>
    public long ElementCount
    {
        get
        {
            long n = 1;
            foreach (var d in Shape) n = checked(n * d);
            return n;
        }
    }

    /// <summary>Size of the tensor's data in bytes.</summary>
    public long ByteLength => End - Start;
}
