using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using System.Text.Unicode;

namespace Lxt.Import;

/// <summary>The validated content of a safetensors header.</summary>
internal sealed class ParsedHeader
{
    public ParsedHeader(long headerLength, List<TensorInfo> tensors, IReadOnlyDictionary<string, string> metadata)
    {
        HeaderLength = headerLength;
        Tensors = tensors;
        Metadata = metadata;
    }

    /// <summary>N, the length of the JSON header in bytes. The data section starts at 8 + N.</summary>
    public long HeaderLength { get; }

    /// <summary>Tensors in the order of the header.</summary>
    public List<TensorInfo> Tensors { get; }

    public IReadOnlyDictionary<string, string> Metadata { get; }
}

/// <summary>
/// Strict parser and validator of the safetensors header. Works on spans so that it serves both the
/// memory-mapped reader and the in-memory path (<see cref="SafetensorsFile.OpenFromBytes"/>, fuzzing).
/// Every failure is a <see cref="SafetensorsFormatException"/>.
/// </summary>
internal static class SafetensorsHeaderParser
{
    /// <summary>Headers larger than this are refused (the reference implementation uses the same bound).</summary>
    public const long MaxHeaderLength = 100_000_000;

    private const int MaxJsonDepth = 64;
    private const string MetadataKey = "__metadata__";

    /// <summary>Reads and checks the 8-byte little-endian header length. <paramref name="prefix"/> may be shorter than 8 bytes.</summary>
    public static long ReadHeaderLength(ReadOnlySpan<byte> prefix, long fileLength, string path)
    {
        if (fileLength < 8 || prefix.Length < 8)
            throw new SafetensorsFormatException(
                $"the file is {fileLength} byte(s) long, shorter than the 8-byte header-length prefix every safetensors file starts with (empty or truncated file?)",
                path, null, 0);

        ulong n = BinaryPrimitives.ReadUInt64LittleEndian(prefix);
        if (n > MaxHeaderLength)
            throw new SafetensorsFormatException(
                $"the header length in the first 8 bytes is {n} bytes, more than the {MaxHeaderLength}-byte limit; the file is not a safetensors file or its first bytes are corrupt",
                path, null, 0);
        if ((long)n > fileLength - 8)
            throw new SafetensorsFormatException(
                $"the header length in the first 8 bytes is {n} bytes but only {fileLength - 8} byte(s) follow the prefix; the file is truncated or not a safetensors file",
                path, null, 0);
        if (n < 2)
            throw new SafetensorsFormatException(
                $"the header length in the first 8 bytes is {n}, too short for a JSON object (at least \"{{}}\" is required)",
                path, null, 0);
        return (long)n;
    }

    /// <summary>Parses and validates the JSON header (<paramref name="header"/> = the N bytes after the prefix).</summary>
    public static ParsedHeader Parse(ReadOnlySpan<byte> header, long fileLength, string path)
    {
        long n = header.Length;
        long dataLength = fileLength - 8 - n;
        if (dataLength < 0)
            throw new SafetensorsFormatException("the header extends past the end of the file", path, null, 0);

        if (!Utf8.IsValid(header))
        {
            long bad = FirstInvalidUtf8(header);
            throw new SafetensorsFormatException("the JSON header is not valid UTF-8", path, null, 8 + bad);
        }

        var tensors = new List<TensorInfo>();
        var entryOffsets = new List<long>();
        Dictionary<string, string>? metadata = null;
        var seen = new HashSet<string>(StringComparer.Ordinal);

        var reader = new Utf8JsonReader(header, new JsonReaderOptions
        {
            AllowTrailingCommas = false,
            CommentHandling = JsonCommentHandling.Disallow,
            MaxDepth = MaxJsonDepth,
        });
        string? currentName = null;
        try
        {
            if (!reader.Read())
                throw new SafetensorsFormatException("the JSON header is empty or only whitespace", path, null, 8);
            if (reader.TokenType != JsonTokenType.StartObject)
                throw new SafetensorsFormatException(
                    $"the JSON header must be an object {{\"tensor name\": {{...}}, ...}} but it starts with {Describe(reader.TokenType)}",
                    path, null, 8 + reader.TokenStartIndex);

            while (true)
            {
                Next(ref reader, path, currentName);
                if (reader.TokenType == JsonTokenType.EndObject) break;
                // Inside an object the reader only yields property names here.
                long keyOffset = 8 + reader.TokenStartIndex;
                string name = reader.GetString()!;
                currentName = name;
                if (!seen.Add(name))
                    throw new SafetensorsFormatException(
                        name == MetadataKey
                            ? "the header has two \"__metadata__\" entries"
                            : "the header has two entries with this tensor name (a JSON parser would silently keep only the last one)",
                        path, name == MetadataKey ? null : name, keyOffset);

                Next(ref reader, path, currentName);
                if (name == MetadataKey)
                {
                    metadata = ReadMetadata(ref reader, path);
                }
                else
                {
                    tensors.Add(ReadTensor(ref reader, name, path));
                    entryOffsets.Add(keyOffset);
                }
                currentName = null;
            }

            // Anything but whitespace after the root object is an error (the reader throws on a second value).
            if (reader.Read())
                throw new SafetensorsFormatException("unexpected content after the JSON header object", path, null, 8 + reader.TokenStartIndex);
        }
        catch (JsonException e)
        {
            throw new SafetensorsFormatException(
                $"the header is not valid JSON ({e.Message})", path, currentName, 8 + reader.BytesConsumed, e);
        }
        catch (InvalidOperationException e)
        {
            // GetString on a string with an escape that does not transcode (e.g. a lone surrogate \ud800).
            throw new SafetensorsFormatException(
                $"the header contains a JSON string that cannot be decoded ({e.Message})", path, currentName, 8 + reader.TokenStartIndex, e);
        }

        ValidateLayout(tensors, entryOffsets, dataLength, 8 + n, path);
        return new ParsedHeader(n, tensors, metadata ?? new Dictionary<string, string>());
    }

    private static void Next(ref Utf8JsonReader reader, string path, string? tensor)
    {
        if (!reader.Read())
            throw new SafetensorsFormatException("the JSON header ends in the middle of an object", path, tensor, 8 + reader.BytesConsumed);
    }

    private static Dictionary<string, string> ReadMetadata(ref Utf8JsonReader reader, string path)
    {
        if (reader.TokenType != JsonTokenType.StartObject)
            throw new SafetensorsFormatException(
                $"\"__metadata__\" must be an object of string values but it is {Describe(reader.TokenType)}",
                path, null, 8 + reader.TokenStartIndex);
        var result = new Dictionary<string, string>(StringComparer.Ordinal);
        while (true)
        {
            Next(ref reader, path, null);
            if (reader.TokenType == JsonTokenType.EndObject) return result;
            long keyOffset = 8 + reader.TokenStartIndex;
            string key = reader.GetString()!;
            Next(ref reader, path, null);
            if (reader.TokenType != JsonTokenType.String)
                throw new SafetensorsFormatException(
                    $"\"__metadata__\" value of key '{key}' must be a string but it is {Describe(reader.TokenType)}",
                    path, null, 8 + reader.TokenStartIndex);
            if (!result.TryAdd(key, reader.GetString()!))
                throw new SafetensorsFormatException($"\"__metadata__\" has the key '{key}' twice", path, null, keyOffset);
        }
    }

    private static TensorInfo ReadTensor(ref Utf8JsonReader reader, string name, string path)
    {
        long entryOffset = 8 + reader.TokenStartIndex;
        if (reader.TokenType != JsonTokenType.StartObject)
            throw new SafetensorsFormatException(
                $"the entry must be an object {{\"dtype\", \"shape\", \"data_offsets\"}} but it is {Describe(reader.TokenType)}",
                path, name, entryOffset);

        TensorDType? dtype = null;
        List<long>? shape = null;
        long begin = -1, end = -1;
        bool haveOffsets = false;

        while (true)
        {
            Next(ref reader, path, name);
            if (reader.TokenType == JsonTokenType.EndObject) break;
            long keyOffset = 8 + reader.TokenStartIndex;
            string key = reader.GetString()!;
            Next(ref reader, path, name);
            long valueOffset = 8 + reader.TokenStartIndex;
            switch (key)
            {
                case "dtype":
                    if (dtype is not null) throw Dup(key);
                    if (reader.TokenType != JsonTokenType.String)
                        throw new SafetensorsFormatException(
                            $"\"dtype\" must be a string such as \"F32\" but it is {Describe(reader.TokenType)}", path, name, valueOffset);
                    string text = reader.GetString()!;
                    if (!TensorDTypeExtensions.TryParseSafetensors(text, out var dt))
                        throw new SafetensorsFormatException(
                            $"unsupported dtype \"{Truncate(text)}\" (supported: F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL)",
                            path, name, valueOffset);
                    dtype = dt;
                    break;

                case "shape":
                    if (shape is not null) throw Dup(key);
                    if (reader.TokenType != JsonTokenType.StartArray)
                        throw new SafetensorsFormatException(
                            $"\"shape\" must be an array of non-negative integers but it is {Describe(reader.TokenType)}", path, name, valueOffset);
                    shape = new List<long>();
                    while (true)
                    {
                        Next(ref reader, path, name);
                        if (reader.TokenType == JsonTokenType.EndArray) break;
                        long dimOffset = 8 + reader.TokenStartIndex;
                        if (reader.TokenType != JsonTokenType.Number || !reader.TryGetInt64(out long d))
                            throw new SafetensorsFormatException(
                                $"dimension {shape.Count} of \"shape\" is not an integer (found {Describe(reader.TokenType)})", path, name, dimOffset);
                        if (d < 0)
                            throw new SafetensorsFormatException($"dimension {shape.Count} of \"shape\" is negative ({d})", path, name, dimOffset);
                        shape.Add(d);
                    }
                    break;

                case "data_offsets":
                    if (haveOffsets) throw Dup(key);
                    if (reader.TokenType != JsonTokenType.StartArray)
                        throw new SafetensorsFormatException(
                            $"\"data_offsets\" must be an array [begin, end] but it is {Describe(reader.TokenType)}", path, name, valueOffset);
                    var offs = new List<long>(2);
                    while (true)
                    {
                        Next(ref reader, path, name);
                        if (reader.TokenType == JsonTokenType.EndArray) break;
                        long oOffset = 8 + reader.TokenStartIndex;
                        if (offs.Count >= 2)
                            throw new SafetensorsFormatException("\"data_offsets\" has more than two elements", path, name, oOffset);
                        if (reader.TokenType != JsonTokenType.Number || !reader.TryGetInt64(out long o) || o < 0)
                            throw new SafetensorsFormatException(
                                "\"data_offsets\" elements must be non-negative integers", path, name, oOffset);
                        offs.Add(o);
                    }
                    if (offs.Count != 2)
                        throw new SafetensorsFormatException(
                            $"\"data_offsets\" must have exactly two elements [begin, end] but it has {offs.Count}", path, name, valueOffset);
                    (begin, end) = (offs[0], offs[1]);
                    if (begin > end)
                        throw new SafetensorsFormatException(
                            $"\"data_offsets\" begin ({begin}) is greater than end ({end})", path, name, valueOffset);
                    haveOffsets = true;
                    break;

                default:
                    // Unknown keys are tolerated (as in the reference implementation) but their value must be well-formed JSON.
                    reader.Skip();
                    break;
            }

            SafetensorsFormatException Dup(string k) =>
                new($"the entry has the key \"{k}\" twice", path, name, keyOffset);
        }

        if (dtype is null) throw new SafetensorsFormatException("the entry has no \"dtype\"", path, name, entryOffset);
        if (shape is null) throw new SafetensorsFormatException("the entry has no \"shape\"", path, name, entryOffset);
        if (!haveOffsets) throw new SafetensorsFormatException("the entry has no \"data_offsets\"", path, name, entryOffset);
        return new TensorInfo(name, dtype.Value, shape.AsReadOnly(), begin, end);
    }

    private static void ValidateLayout(List<TensorInfo> tensors, List<long> entryOffsets, long dataLength, long dataStart, string path)
    {
        for (int i = 0; i < tensors.Count; i++)
        {
            var t = tensors[i];
            if (t.End > dataLength)
                throw new SafetensorsFormatException(
                    $"\"data_offsets\" [{t.Start}, {t.End}] reach past the end of the data section, which is {dataLength} byte(s) long (file truncated?)",
                    path, t.Name, entryOffsets[i]);

            long expected;
            try
            {
                expected = checked(t.DType.ElementSize() * t.ElementCount);
            }
            catch (OverflowException e)
            {
                throw new SafetensorsFormatException(
                    $"the shape [{string.Join(", ", t.Shape)}] is too large: its byte size overflows a 64-bit integer",
                    path, t.Name, entryOffsets[i], e);
            }
            if (expected != t.End - t.Start)
                throw new SafetensorsFormatException(
                    $"\"data_offsets\" [{t.Start}, {t.End}] span {t.End - t.Start} byte(s) but shape [{string.Join(", ", t.Shape)}] of {t.DType.ToSafetensorsString()} needs {expected} byte(s)",
                    path, t.Name, entryOffsets[i]);
        }

        // The reference implementation requires the tensors to tile the data section exactly:
        // no overlap, no gap, no trailing bytes.
        var order = new int[tensors.Count];
        for (int i = 0; i < order.Length; i++) order[i] = i;
        Array.Sort(order, (a, b) =>
        {
            int c = tensors[a].Start.CompareTo(tensors[b].Start);
            if (c != 0) return c;
            c = tensors[a].End.CompareTo(tensors[b].End);
            return c != 0 ? c : a.CompareTo(b);
        });

        long covered = 0;
        TensorInfo? previous = null;
        foreach (int i in order)
        {
            var t = tensors[i];
            if (t.Start < covered)
                throw new SafetensorsFormatException(
                    $"the data [{t.Start}, {t.End}) overlaps tensor '{previous!.Name}' [{previous.Start}, {previous.End})",
                    path, t.Name, dataStart + t.Start);
            if (t.Start > covered)
                throw new SafetensorsFormatException(
                    $"there is a gap of {t.Start - covered} unused byte(s) before this tensor's data (the format requires tensors to be packed contiguously)",
                    path, t.Name, dataStart + covered);
            covered = t.End;
            previous = t;
        }
        if (covered != dataLength)
            throw new SafetensorsFormatException(
                $"the data section is {dataLength} byte(s) long but the tensors cover only {covered}; {dataLength - covered} trailing byte(s) belong to no tensor",
                path, null, dataStart + covered);
    }

    private static long FirstInvalidUtf8(ReadOnlySpan<byte> bytes)
    {
        int i = 0;
        while (i < bytes.Length)
        {
            var status = Rune.DecodeFromUtf8(bytes[i..], out _, out int consumed);
            if (status != System.Buffers.OperationStatus.Done) return i;
            i += consumed;
        }
        return bytes.Length;
    }

    private static string Describe(JsonTokenType t) => t switch
    {
        JsonTokenType.StartObject => "an object",
        JsonTokenType.StartArray => "an array",
        JsonTokenType.String => "a string",
        JsonTokenType.Number => "a number",
        JsonTokenType.True or JsonTokenType.False => "a boolean",
        JsonTokenType.Null => "null",
        _ => t.ToString(),
    };

    private static string Truncate(string s) => s.Length <= 64 ? s : s[..64] + "…";
}
