using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text.Json;

namespace Lxt.Import;

/// <summary>
/// Writes safetensors files from float32 data, stored as F32, F64, F16 or BF16 (the latter two rounded to
/// nearest even). The file is written atomically: to a temporary file in the same folder, flushed to disk,
/// then moved over <c>path</c>, so a reader never sees a half-written file.
/// </summary>
public static class SafetensorsWriter
{
    /// <summary>
    /// Writes <paramref name="tensors"/> (in the given order, packed contiguously) and optional metadata to
    /// <paramref name="path"/>. <c>Data.Length</c> must equal the product of <c>Shape</c>; names must be unique,
    /// non-empty and not "__metadata__"; <c>DType</c> must be F32, F64, F16 or BF16.
    /// </summary>
    public static void Write(
        string path,
        IEnumerable<(string Name, TensorDType DType, long[] Shape, float[] Data)> tensors,
        IReadOnlyDictionary<string, string>? metadata = null)
    {
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(tensors);

        var list = tensors.ToList();
        var names = new HashSet<string>(StringComparer.Ordinal);
        var offsets = new (long Begin, long End)[list.Count];
        long cursor = 0;
        for (int i = 0; i < list.Count; i++)
        {
            var (name, dtype, shape, data) = list[i];
            if (string.IsNullOrEmpty(name)) throw new ArgumentException($"Tensor #{i} has no name.", nameof(tensors));
            if (name == "__metadata__") throw new ArgumentException("\"__metadata__\" is reserved and cannot be a tensor name.", nameof(tensors));
            if (!names.Add(name)) throw new ArgumentException($"Tensor name '{name}' appears twice.", nameof(tensors));
            if (dtype is not (TensorDType.F32 or TensorDType.F64 or TensorDType.F16 or TensorDType.BF16))
                throw new ArgumentException($"Tensor '{name}': the writer stores float data as F32, F64, F16 or BF16, not {dtype}.", nameof(tensors));
            ArgumentNullException.ThrowIfNull(shape, $"shape of '{name}'");
            ArgumentNullException.ThrowIfNull(data, $"data of '{name}'");
            long count = 1;
            foreach (long d in shape)
            {
                if (d < 0) throw new ArgumentException($"Tensor '{name}' has a negative dimension in shape [{string.Join(", ", shape)}].", nameof(tensors));
                count = checked(count * d);
            }
            if (count != data.LongLength)
                throw new ArgumentException($"Tensor '{name}': shape [{string.Join(", ", shape)}] has {count} elements but {data.Length} values were given.", nameof(tensors));
            long bytes = checked(count * dtype.ElementSize());
            offsets[i] = (cursor, cursor + bytes);
            cursor = checked(cursor + bytes);
        }

        byte[] header = BuildHeader(list, offsets, metadata);

        AtomicFile.Write(path, fs =>
        {
            Span<byte> prefix = stackalloc byte[8];
            BinaryPrimitives.WriteUInt64LittleEndian(prefix, (ulong)header.Length);
            fs.Write(prefix);
            fs.Write(header);
            var buffer = new byte[1 << 16];
            foreach (var (_, dtype, _, data) in list)
                WriteData(fs, dtype, data, buffer);
        });
    }

    private static byte[] BuildHeader(
        List<(string Name, TensorDType DType, long[] Shape, float[] Data)> list,
        (long Begin, long End)[] offsets,
        IReadOnlyDictionary<string, string>? metadata)
    {
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms, new JsonWriterOptions { Indented = false, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
        {
            w.WriteStartObject();
            if (metadata is not null && metadata.Count > 0)
            {
                w.WriteStartObject("__metadata__");
                foreach (var kv in metadata.OrderBy(kv => kv.Key, StringComparer.Ordinal))
                    w.WriteString(kv.Key, kv.Value);
                w.WriteEndObject();
            }
            for (int i = 0; i < list.Count; i++)
            {
                var (name, dtype, shape, _) = list[i];
                w.WriteStartObject(name);
                w.WriteString("dtype", dtype.ToSafetensorsString());
                w.WriteStartArray("shape");
                foreach (long d in shape) w.WriteNumberValue(d);
                w.WriteEndArray();
                w.WriteStartArray("data_offsets");
                w.WriteNumberValue(offsets[i].Begin);
                w.WriteNumberValue(offsets[i].End);
                w.WriteEndArray();
                w.WriteEndObject();
            }
            w.WriteEndObject();
        }
        int len = (int)ms.Length;
        int padded = (len + 7) / 8 * 8;
        var header = new byte[padded];
        ms.GetBuffer().AsSpan(0, len).CopyTo(header);
        header.AsSpan(len).Fill((byte)' ');
        return header;
    }

    private static void WriteData(Stream fs, TensorDType dtype, float[] data, byte[] buffer)
    {
        int size = dtype.ElementSize();
        int perChunk = buffer.Length / size;
        for (int done = 0; done < data.Length; done += perChunk)
        {
            int count = Math.Min(perChunk, data.Length - done);
            var src = data.AsSpan(done, count);
            var dst = buffer.AsSpan(0, count * size);
            switch (dtype)
            {
                case TensorDType.F32:
                    if (BitConverter.IsLittleEndian) MemoryMarshal.AsBytes(src).CopyTo(dst);
                    else for (int i = 0; i < count; i++) BinaryPrimitives.WriteSingleLittleEndian(dst[(4 * i)..], src[i]);
                    break;
                case TensorDType.F64:
                    for (int i = 0; i < count; i++) BinaryPrimitives.WriteDoubleLittleEndian(dst[(8 * i)..], src[i]);
                    break;
                case TensorDType.F16:
                    for (int i = 0; i < count; i++) BinaryPrimitives.WriteHalfLittleEndian(dst[(2 * i)..], (Half)src[i]);
                    break;
                case TensorDType.BF16:
                    for (int i = 0; i < count; i++) BinaryPrimitives.WriteUInt16LittleEndian(dst[(2 * i)..], TensorConvert.SingleToBFloat16(src[i]));
                    break;
                default:
                    throw new InvalidOperationException();
            }
            fs.Write(dst);
        }
    }
}
