using System.Buffers.Binary;
using System.Text;

namespace Lxt.Fuzz.Safetensors;

/// <summary>Small valid and malformed safetensors images used to seed fuzzing (and kept as regression inputs).</summary>
internal static class SeedCorpus
{
    public static void Write(string dir)
    {
        Directory.CreateDirectory(dir);
        foreach (var (name, bytes) in All())
            File.WriteAllBytes(Path.Combine(dir, name), bytes);
        Console.WriteLine($"wrote {All().Count()} seed inputs to {dir}");
    }

    private static byte[] Image(string header, byte[] data)
    {
        var h = Encoding.UTF8.GetBytes(header);
        var result = new byte[8 + h.Length + data.Length];
        BinaryPrimitives.WriteUInt64LittleEndian(result, (ulong)h.Length);
        h.CopyTo(result, 8);
        data.CopyTo(result, 8 + h.Length);
        return result;
    }

    private static byte[] WithLength(ulong n, string rest)
    {
        var r = Encoding.UTF8.GetBytes(rest);
        var result = new byte[8 + r.Length];
        BinaryPrimitives.WriteUInt64LittleEndian(result, n);
        r.CopyTo(result, 8);
        return result;
    }

    private static byte[] Seq(int n) => Enumerable.Range(0, n).Select(i => (byte)(i * 13 + 1)).ToArray();

    private static string E(string name, string dtype, string shape, long b, long e) =>
        $"\"{name}\":{{\"dtype\":\"{dtype}\",\"shape\":{shape},\"data_offsets\":[{b},{e}]}}";

    public static IEnumerable<(string Name, byte[] Bytes)> All()
    {
        // valid
        yield return ("valid-empty", Image("{}", Array.Empty<byte>()));
        yield return ("valid-f32", Image("{" + E("w", "F32", "[2,2]", 0, 16) + "}", Seq(16)));
        yield return ("valid-all-dtypes", Image("{\"__metadata__\":{\"format\":\"pt\"}," + string.Join(",",
            E("f64", "F64", "[1]", 0, 8), E("f32", "F32", "[1]", 8, 12), E("f16", "F16", "[2]", 12, 16), E("bf16", "BF16", "[2]", 16, 20),
            E("i64", "I64", "[1]", 20, 28), E("i32", "I32", "[1]", 28, 32), E("i16", "I16", "[1]", 32, 34), E("i8", "I8", "[1]", 34, 35),
            E("u8", "U8", "[1]", 35, 36), E("b", "BOOL", "[1]", 36, 37), E("zero", "F32", "[0,3]", 37, 37), E("scalar", "U8", "[]", 37, 38)) + "}  ", Seq(38)));
        // malformed
        yield return ("bad-empty-file", Array.Empty<byte>());
        yield return ("bad-short-prefix", new byte[] { 2, 0, 0 });
        yield return ("bad-lying-length", WithLength(1000, "{}"));
        yield return ("bad-absurd-length", WithLength(1UL << 40, "{}"));
        yield return ("bad-max-length", WithLength(ulong.MaxValue, "{}"));
        yield return ("bad-truncated-header", Image("{" + E("w", "F32", "[2]", 0, 8) + "}", Seq(8))[..30]);
        yield return ("bad-not-json", Image("{\"w\": {\"dtype\": ", Array.Empty<byte>()));
        yield return ("bad-array-root", Image("[1,2,3]", Array.Empty<byte>()));
        yield return ("bad-invalid-utf8", new byte[] { 4, 0, 0, 0, 0, 0, 0, 0, (byte)'{', (byte)'"', 0xC3, (byte)'"' });
        yield return ("bad-entry-not-object", Image("{\"w\":5}", Array.Empty<byte>()));
        yield return ("bad-missing-dtype", Image("{\"w\":{\"shape\":[2],\"data_offsets\":[0,8]}}", Seq(8)));
        yield return ("bad-shape-string", Image("{\"w\":{\"dtype\":\"F32\",\"shape\":\"2\",\"data_offsets\":[0,8]}}", Seq(8)));
        yield return ("bad-negative-dim", Image("{" + E("w", "F32", "[-2]", 0, 8) + "}", Seq(8)));
        yield return ("bad-unknown-dtype", Image("{" + E("w", "XYZ", "[2]", 0, 8) + "}", Seq(8)));
        yield return ("bad-f8-dtype", Image("{" + E("w", "F8_E4M3", "[8]", 0, 8) + "}", Seq(8)));
        yield return ("bad-offsets-past-end", Image("{" + E("w", "F32", "[4]", 0, 16) + "}", Seq(8)));
        yield return ("bad-offsets-reversed", Image("{" + E("w", "F32", "[2]", 8, 0) + "}", Seq(8)));
        yield return ("bad-size-mismatch", Image("{" + E("w", "F32", "[3]", 0, 8) + "}", Seq(8)));
        yield return ("bad-size-overflow", Image("{" + E("w", "F32", "[4611686018427387904,4]", 0, 8) + "}", Seq(8)));
        yield return ("bad-overlap", Image("{" + E("a", "F32", "[2]", 0, 8) + "," + E("b", "F32", "[2]", 4, 12) + "}", Seq(12)));
        yield return ("bad-gap", Image("{" + E("a", "F32", "[1]", 0, 4) + "," + E("b", "F32", "[1]", 8, 12) + "}", Seq(12)));
        yield return ("bad-trailing-data", Image("{" + E("a", "F32", "[1]", 0, 4) + "}", Seq(12)));
        yield return ("bad-duplicate-name", Image("{" + E("a", "F32", "[1]", 0, 4) + "," + E("a", "F32", "[1]", 4, 8) + "}", Seq(8)));
        yield return ("bad-metadata-value", Image("{\"__metadata__\":{\"a\":1}}", Array.Empty<byte>()));
        yield return ("bad-lone-surrogate", Image("{\"\\ud800\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", Seq(4)));
        yield return ("bad-deep-nesting", Image("{\"x\":{\"extra\":" + new string('[', 200) + new string(']', 200) + "}}", Array.Empty<byte>()));
    }
}
