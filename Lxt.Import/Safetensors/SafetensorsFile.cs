using System.Numerics;
using System.Buffers.Binary;
using System.IO.MemoryMappedFiles;
using System.Runtime.InteropServices;

namespace Lxt.Import;

/// <summary>
/// A safetensors file, memory-mapped read-only and validated strictly when opened
/// (see <see cref="Open"/> for the rules). Tensor data is read from the mapping without copying
/// (<see cref="GetBytes"/>) or converted once to float32 / float64 / int64.
/// </summary>
/// <remarks>
/// Spans returned by <see cref="GetBytes"/> point into the mapping and must not be used after
/// <see cref="Dispose"/>. Reading from several threads at once is safe; disposing while another
/// thread reads is not. The file must not be truncated by another process while it is open.
/// </remarks>
public sealed unsafe class SafetensorsFile : IDisposable
{
    private const int ChunkElements = 1 << 16;

    private readonly MemoryMappedFile? _mmf;
    private readonly MemoryMappedViewAccessor? _view;
    private byte* _base;          // start of the mapping (file offset 0); null for in-memory files
    private readonly byte[]? _bytes;
    private readonly long _dataStart;
    private readonly Dictionary<string, TensorInfo> _byName;
    private readonly List<TensorInfo> _ordered;
    private int _disposed;

    private SafetensorsFile(string path, long length, ParsedHeader header, MemoryMappedFile? mmf, MemoryMappedViewAccessor? view, byte* basePtr, byte[]? bytes)
    {
        Path = path;
        Length = length;
        HeaderLength = header.HeaderLength;
        _dataStart = 8 + header.HeaderLength;
        Metadata = header.Metadata;
        _ordered = header.Tensors;
        _byName = new Dictionary<string, TensorInfo>(_ordered.Count, StringComparer.Ordinal);
        foreach (var t in _ordered) _byName.Add(t.Name, t);
        _mmf = mmf;
        _view = view;
        _base = basePtr;
        _bytes = bytes;
    }

    /// <summary>
    /// Opens and memory-maps a safetensors file and validates it. Raises <see cref="SafetensorsFormatException"/>
    /// (with file, tensor and byte offset) when: the file is shorter than 8 bytes; the header length is larger than
    /// the rest of the file or than 100 MB; the header is not UTF-8 JSON or not an object; an entry lacks dtype, shape
    /// or data_offsets or has values of the wrong JSON type; a dtype is unsupported; a dimension is negative;
    /// data_offsets are not two non-negative integers with begin ≤ end; a tensor reaches past the data section;
    /// a byte size differs from product(shape) × element size (or overflows); tensors overlap, leave gaps or do not
    /// cover the data section; a name appears twice; "__metadata__" is not an object of strings.
    /// A missing or unreadable file raises <see cref="LxtImportException"/>. Nothing stays mapped after a failure.
    /// </summary>
    public static SafetensorsFile Open(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        string full = System.IO.Path.GetFullPath(path);
        FileStream fs;
        try
        {
            fs = new FileStream(full, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 1, FileOptions.None);
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
        {
            throw new LxtImportException($"Safetensors file '{full}' does not exist.", e);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new LxtImportException($"Safetensors file '{full}' cannot be opened for reading: {e.Message}", e);
        }

        MemoryMappedFile? mmf = null;
        MemoryMappedViewAccessor? view = null;
        byte* ptr = null;
        bool acquired = false;
        try
        {
            long length = fs.Length;
            if (length < 8)
                SafetensorsHeaderParser.ReadHeaderLength(ReadOnlySpan<byte>.Empty, length, full); // throws

            mmf = MemoryMappedFile.CreateFromFile(fs, mapName: null, capacity: 0, MemoryMappedFileAccess.Read, HandleInheritability.None, leaveOpen: false);
            fs = null!; // owned by the mapping now
            view = mmf.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
            view.SafeMemoryMappedViewHandle.AcquirePointer(ref ptr);
            acquired = true;
            byte* basePtr = ptr + view.PointerOffset;

            long n = SafetensorsHeaderParser.ReadHeaderLength(new ReadOnlySpan<byte>(basePtr, 8), length, full);
            var header = SafetensorsHeaderParser.Parse(new ReadOnlySpan<byte>(basePtr + 8, checked((int)n)), length, full);
            return new SafetensorsFile(full, length, header, mmf, view, basePtr, null);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            Release();
            throw new LxtImportException($"Safetensors file '{full}' cannot be memory-mapped: {e.Message}", e);
        }
        catch
        {
            Release();
            throw;
        }

        void Release()
        {
            if (acquired) view!.SafeMemoryMappedViewHandle.ReleasePointer();
            view?.Dispose();
            mmf?.Dispose();
            fs?.Dispose();
        }
    }

    /// <summary>
    /// Validates and wraps an in-memory safetensors image (same rules as <see cref="Open"/>). The array is
    /// used as is, not copied: do not modify it while the returned object is in use.
    /// </summary>
    public static SafetensorsFile OpenFromBytes(byte[] bytes, string displayName = "<memory>")
    {
        ArgumentNullException.ThrowIfNull(bytes);
        ArgumentNullException.ThrowIfNull(displayName);
        long n = SafetensorsHeaderParser.ReadHeaderLength(bytes, bytes.LongLength, displayName);
        var header = SafetensorsHeaderParser.Parse(bytes.AsSpan(8, (int)n), bytes.LongLength, displayName);
        return new SafetensorsFile(displayName, bytes.LongLength, header, null, null, null, bytes);
    }

    /// <summary>Full path of the file (or the display name of an in-memory image).</summary>
    public string Path { get; }

    /// <summary>Total length of the file in bytes.</summary>
    public long Length { get; }

    /// <summary>Length N of the JSON header; the data section starts at byte 8 + N.</summary>
    public long HeaderLength { get; }

    /// <summary>Byte offset in the file where the data section starts (8 + N).</summary>
    public long DataOffset => _dataStart;

    /// <summary>All tensors by name.</summary>
    public IReadOnlyDictionary<string, TensorInfo> Tensors { get { ThrowIfDisposed(); return _byName; } }

    /// <summary>All tensors in the order of the file's header.</summary>
    public IReadOnlyList<TensorInfo> TensorsInFileOrder { get { ThrowIfDisposed(); return _ordered; } }

    /// <summary>The "__metadata__" entry (empty when absent).</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    public bool Contains(string name)
    {
        ThrowIfDisposed();
        return _byName.ContainsKey(name);
    }

    public bool TryGetInfo(string name, out TensorInfo info)
    {
        ThrowIfDisposed();
        return _byName.TryGetValue(name, out info!);
    }

    /// <summary>The tensor's description; <see cref="TensorNotFoundException"/> if absent.</summary>
    public TensorInfo GetInfo(string name)
    {
        ThrowIfDisposed();
        ArgumentNullException.ThrowIfNull(name);
        if (!_byName.TryGetValue(name, out var info)) throw new TensorNotFoundException(name, Path);
        return info;
    }

    /// <summary>
    /// The raw little-endian bytes of a tensor, straight from the mapping (no copy). Valid until <see cref="Dispose"/>.
    /// </summary>
    public ReadOnlySpan<byte> GetBytes(string name)
    {
        var t = GetInfo(name);
        if (t.ByteLength > int.MaxValue)
            throw new LxtImportException($"Tensor '{name}' in '{Path}' is {t.ByteLength} bytes, too large for a single span; use the Read* methods.");
        return Data(t.Start, (int)t.ByteLength);
    }

    /// <summary>Reads a tensor of any dtype as float32 (F64 is rounded, integers converted, BOOL gives 0/1).</summary>
    public float[] ReadFloat32(string name)
    {
        var t = GetInfo(name);
        var result = new float[CheckedCount(t)];
        ReadFloat32(name, result);
        return result;
    }

    /// <summary>Reads a tensor as float32 into <paramref name="destination"/>, whose length must equal the element count.</summary>
    public void ReadFloat32(string name, Span<float> destination)
    {
        var t = GetInfo(name);
        Decode(t, destination);
    }

    /// <summary>Reads a tensor of any dtype as float64 (exact for every supported type except I64 beyond 2^53).</summary>
    public double[] ReadFloat64(string name)
    {
        var t = GetInfo(name);
        var result = new double[CheckedCount(t)];
        ReadFloat64(name, result);
        return result;
    }

    /// <summary>Reads a tensor as float64 into <paramref name="destination"/>, whose length must equal the element count.</summary>
    public void ReadFloat64(string name, Span<double> destination)
    {
        var t = GetInfo(name);
        Decode(t, destination);
    }

    /// <summary>Reads an integer or BOOL tensor as int64; a floating-point tensor raises <see cref="LxtImportException"/>.</summary>
    public long[] ReadInt64(string name)
    {
        var t = GetInfo(name);
        if (t.DType.IsFloatingPoint())
            throw new LxtImportException($"Tensor '{name}' in '{Path}' has dtype {t.DType.ToSafetensorsString()}, not an integer type; read it with ReadFloat32/ReadFloat64.");
        var result = new long[CheckedCount(t)];
        ReadInt64(name, result);
        return result;
    }

    /// <summary>Reads an integer or BOOL tensor as int64 into <paramref name="destination"/>.</summary>
    public void ReadInt64(string name, Span<long> destination)
    {
        var t = GetInfo(name);
        if (t.DType.IsFloatingPoint())
            throw new LxtImportException($"Tensor '{name}' in '{Path}' has dtype {t.DType.ToSafetensorsString()}, not an integer type; read it with ReadFloat32/ReadFloat64.");
        Decode(t, destination);
    }

    /// <summary>Converts a tensor's elements into <paramref name="destination"/> chunk by chunk (the mapped view is
    /// read through spans of at most <see cref="ChunkElements"/> elements).</summary>
    private void Decode<T>(TensorInfo t, Span<T> destination) where T : unmanaged, System.Numerics.INumberBase<T>
    {
        CheckDestination(t, destination.Length);
        int size = t.DType.ElementSize();
        for (int done = 0; done < destination.Length; done += ChunkElements)
        {
            int count = Math.Min(ChunkElements, destination.Length - done);
            TensorConvert.Convert(t.DType, Data(t.Start + (long)done * size, count * size), destination.Slice(done, count));
        }
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        if (_view is not null)
        {
            _base = null;
            _view.SafeMemoryMappedViewHandle.ReleasePointer();
            _view.Dispose();
        }
        _mmf?.Dispose();
    }

    private ReadOnlySpan<byte> Data(long offsetInData, int length)
    {
        ThrowIfDisposed();
        long at = _dataStart + offsetInData;
        if (_bytes is not null) return new ReadOnlySpan<byte>(_bytes, checked((int)at), length);
        return new ReadOnlySpan<byte>(_base + at, length);
    }

    private int CheckedCount(TensorInfo t)
    {
        long n = t.ElementCount;
        if (n > Array.MaxLength)
            throw new LxtImportException($"Tensor '{t.Name}' in '{Path}' has {n} elements, more than a .NET array can hold.");
        return (int)n;
    }

    private void CheckDestination(TensorInfo t, int length)
    {
        if (t.ElementCount != length)
            throw new ArgumentException(
                $"Destination has {length} elements but tensor '{t.Name}' in '{Path}' has {t.ElementCount} (shape [{string.Join(", ", t.Shape)}]).",
                "destination");
    }

    private void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
}

/// <summary>Element conversions from little-endian safetensors data.</summary>
internal static class TensorConvert
{
    public static float BFloat16ToSingle(ushort bits) => BitConverter.UInt32BitsToSingle((uint)bits << 16);

    /// <summary>float32 → bfloat16 bits, round to nearest even; NaN stays NaN (quiet), sign kept.</summary>
    public static ushort SingleToBFloat16(float value)
    {
        uint bits = BitConverter.SingleToUInt32Bits(value);
        if (float.IsNaN(value)) return (ushort)((bits >> 16) | 0x0040);
        uint roundingBias = 0x7FFFu + ((bits >> 16) & 1u);
        return (ushort)((bits + roundingBias) >> 16);
    }

    /// <summary>Decodes little-endian elements of <paramref name="dtype"/> into <typeparamref name="T"/> (a plain copy
    /// when the types agree on a little-endian machine).</summary>
    public static void Convert<T>(TensorDType dtype, ReadOnlySpan<byte> src, Span<T> dst) where T : unmanaged, INumberBase<T>
    {
        if (BitConverter.IsLittleEndian && SameType<T>(dtype))
        {
            src.CopyTo(MemoryMarshal.AsBytes(dst));
            return;
        }
        switch (dtype)
        {
            case TensorDType.F64: for (int i = 0; i < dst.Length; i++) dst[i] = T.CreateTruncating(BinaryPrimitives.ReadDoubleLittleEndian(src[(8 * i)..])); break;
            case TensorDType.F32: for (int i = 0; i < dst.Length; i++) dst[i] = T.CreateTruncating(BinaryPrimitives.ReadSingleLittleEndian(src[(4 * i)..])); break;
            case TensorDType.BF16: for (int i = 0; i < dst.Length; i++) dst[i] = T.CreateTruncating(BFloat16ToSingle(BinaryPrimitives.ReadUInt16LittleEndian(src[(2 * i)..]))); break;
            case TensorDType.F16: for (int i = 0; i < dst.Length; i++) dst[i] = T.CreateTruncating((float)BinaryPrimitives.ReadHalfLittleEndian(src[(2 * i)..])); break;
            case TensorDType.I64: for (int i = 0; i < dst.Length; i++) dst[i] = T.CreateTruncating(BinaryPrimitives.ReadInt64LittleEndian(src[(8 * i)..])); break;
            case TensorDType.I32: for (int i = 0; i < dst.Length; i++) dst[i] = T.CreateTruncating(BinaryPrimitives.ReadInt32LittleEndian(src[(4 * i)..])); break;
            case TensorDType.I16: for (int i = 0; i < dst.Length; i++) dst[i] = T.CreateTruncating(BinaryPrimitives.ReadInt16LittleEndian(src[(2 * i)..])); break;
            case TensorDType.I8: for (int i = 0; i < dst.Length; i++) dst[i] = T.CreateTruncating((sbyte)src[i]); break;
            case TensorDType.U8: for (int i = 0; i < dst.Length; i++) dst[i] = T.CreateTruncating(src[i]); break;
            case TensorDType.Bool: for (int i = 0; i < dst.Length; i++) dst[i] = src[i] != 0 ? T.One : T.Zero; break;
            default: throw new ArgumentOutOfRangeException(nameof(dtype), dtype, null);
        }
    }

    private static bool SameType<T>(TensorDType dtype) =>
        (typeof(T) == typeof(float) && dtype == TensorDType.F32)
        || (typeof(T) == typeof(double) && dtype == TensorDType.F64)
        || (typeof(T) == typeof(long) && dtype == TensorDType.I64);
}
