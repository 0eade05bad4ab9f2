using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;
using Lxt.Import;
using SharpFuzz;

namespace Lxt.Fuzz.Safetensors;

/// <summary>
/// Fuzz target for the safetensors reader. The contract under test: any byte string either loads (and then
/// every tensor can be read) or raises <see cref="SafetensorsFormatException"/>. Any other exception is a crash.
/// </summary>
public static class Program
{
    public static int Main(string[] args)
    {
        string mode = args.Length > 0 ? args[0] : "afl";
        switch (mode)
        {
            case "libfuzzer":
                // libfuzzer-dotnet --target_path=<this executable> --target_arg=libfuzzer <corpus dir>
                Fuzzer.LibFuzzer.Run(span => Target(span));
                return 0;
            case "afl":
                // afl-fuzz -i <seeds> -o <findings> -- dotnet Lxt.Fuzz.Safetensors.dll afl
                Fuzzer.OutOfProcess.Run(stream =>
                {
                    using var ms = new MemoryStream();
                    stream.CopyTo(ms);
                    Target(ms.ToArray());
                });
                return 0;
            case "replay":
                return Replay(args.Skip(1));
            case "random":
                return RandomFuzz.Run(args.Skip(1).ToArray());
            case "seeds":
                if (args.Length < 2) { Console.Error.WriteLine("usage: seeds <output dir>"); return 2; }
                SeedCorpus.Write(args[1]);
                return 0;
            default:
                Console.Error.WriteLine("usage: Lxt.Fuzz.Safetensors [afl | libfuzzer | replay <files or dirs>... | random <seconds> <corpus dir> [crash dir] | seeds <dir>]");
                return 2;
        }
    }

    /// <summary>Loads the input and reads every tensor; swallows only SafetensorsFormatException.</summary>
    public static void Target(ReadOnlySpan<byte> data)
    {
        var bytes = data.ToArray();
        try
        {
            using var file = SafetensorsFile.OpenFromBytes(bytes, "fuzz-input");
            foreach (var t in file.TensorsInFileOrder)
            {
                if (file.GetBytes(t.Name).Length != t.ByteLength) throw new InvalidOperationException("GetBytes length mismatch");
                if (file.ReadFloat32(t.Name).LongLength != t.ElementCount) throw new InvalidOperationException("ReadFloat32 count mismatch");
                if (file.ReadFloat64(t.Name).LongLength != t.ElementCount) throw new InvalidOperationException("ReadFloat64 count mismatch");
                if (!t.DType.IsFloatingPoint()) file.ReadInt64(t.Name);
            }
        }
        catch (SafetensorsFormatException)
        {
        }
    }

    private static int Replay(IEnumerable<string> paths)
    {
        int failures = 0, count = 0;
        foreach (var p in paths)
        {
            var files = Directory.Exists(p) ? Directory.GetFiles(p) : new[] { p };
            foreach (var f in files)
            {
                count++;
                try { Target(File.ReadAllBytes(f)); }
                catch (Exception e)
                {
                    failures++;
                    Console.WriteLine($"CRASH {f}: {e.GetType().Name}: {e.Message}");
                }
            }
        }
        Console.WriteLine($"{count} input(s), {failures} crash(es)");
        return failures == 0 ? 0 : 1;
    }
}

/// <summary>
/// A small built-in mutational fuzzer (no coverage feedback) for machines without AFL or libFuzzer:
/// mutates the corpus inputs at random for a given time and saves every crashing input.
/// </summary>
internal static class RandomFuzz
{
    private static readonly string[] Tokens =
    {
        "{", "}", "[", "]", ":", ",", "\"", "\\", "\"dtype\"", "\"shape\"", "\"data_offsets\"", "\"__metadata__\"",
        "\"F32\"", "\"BF16\"", "\"F16\"", "\"F64\"", "\"I64\"", "\"BOOL\"", "\"F8_E4M3\"", "0", "1", "-1", "8", "1e3", "0.5",
        "9223372036854775807", "9223372036854775808", "18446744073709551615", "4611686018427387904", "null", "true",
        "\"\\ud800\"", "\"\\u0000\"", " ", "\u00e9",
    };

    public static int Run(string[] args)
    {
        if (args.Length < 2 || !double.TryParse(args[0], out double seconds))
        {
            Console.Error.WriteLine("usage: random <seconds> <corpus dir> [crash dir]");
            return 2;
        }
        string corpusDir = args[1];
        string crashDir = args.Length > 2 ? args[2] : Path.Combine(Path.GetTempPath(), "lxt-fuzz-crashes");
        var corpus = Directory.GetFiles(corpusDir).Select(File.ReadAllBytes).ToList();
        if (corpus.Count == 0) corpus.Add(Encoding.ASCII.GetBytes("\u0002\0\0\0\0\0\0\0{}"));

        var rng = new Random();
        var deadline = DateTime.UtcNow.AddSeconds(seconds);
        long runs = 0, loaded = 0, crashes = 0;
        var seenCrashes = new HashSet<string>();
        while (DateTime.UtcNow < deadline)
        {
            var input = corpus[rng.Next(corpus.Count)];
            int rounds = 1 + rng.Next(4);
            for (int r = 0; r < rounds; r++) input = Mutate(input, corpus, rng);
            runs++;
            try
            {
                Program.Target(input);
                // Remember some loading inputs: they are the interesting ones to mutate further.
                if (input.Length < 4096 && corpus.Count < 5000 && IsLoadable(input))
                {
                    loaded++;
                    if (rng.Next(8) == 0) corpus.Add(input);
                }
            }
            catch (Exception e)
            {
                string key = e.GetType().FullName + "|" + e.StackTrace?.Split('\n').FirstOrDefault();
                crashes++;
                if (seenCrashes.Add(key))
                {
                    Directory.CreateDirectory(crashDir);
                    string name = Path.Combine(crashDir, "crash-" + Convert.ToHexString(SHA1.HashData(input)).ToLowerInvariant());
                    File.WriteAllBytes(name, input);
                    Console.WriteLine($"CRASH {e.GetType().Name}: {e.Message} -> {name}");
                }
            }
        }
        Console.WriteLine($"{runs} runs, {loaded} loadable mutants kept as candidates, {crashes} crash(es), {seenCrashes.Count} distinct");
        return crashes == 0 ? 0 : 1;
    }

    private static bool IsLoadable(byte[] input)
    {
        try { using var f = SafetensorsFile.OpenFromBytes(input); return true; }
        catch (SafetensorsFormatException) { return false; }
    }

    private static byte[] Mutate(byte[] input, List<byte[]> corpus, Random rng)
    {
        var b = new List<byte>(input);
        int headerEnd = 8;
        if (input.Length >= 8)
        {
            ulong n = BinaryPrimitives.ReadUInt64LittleEndian(input);
            if (n <= (ulong)(input.Length - 8)) headerEnd = 8 + (int)n;
        }
        switch (rng.Next(10))
        {
            case 0 when b.Count > 0: // bit flip
            {
                int i = rng.Next(b.Count);
                b[i] ^= (byte)(1 << rng.Next(8));
                break;
            }
            case 1 when b.Count > 0: // random byte
                b[rng.Next(b.Count)] = (byte)rng.Next(256);
                break;
            case 2 when b.Count > 0: // delete a run
            {
                int i = rng.Next(b.Count);
                b.RemoveRange(i, Math.Min(b.Count - i, 1 + rng.Next(8)));
                break;
            }
            case 3: // truncate
                b = b.Take(rng.Next(b.Count + 1)).ToList();
                break;
            case 4 when b.Count >= 8: // lie about the header length
            {
                ulong[] choices = { 0, 1, 2, (ulong)Math.Max(0, b.Count - 8), (ulong)(b.Count - 7), 100_000_001, ulong.MaxValue, 1UL << 63 };
                ulong v = rng.Next(3) == 0 ? choices[rng.Next(choices.Length)] : BinaryPrimitives.ReadUInt64LittleEndian(input) + (ulong)(rng.Next(17) - 8);
                var arr = b.ToArray();
                BinaryPrimitives.WriteUInt64LittleEndian(arr, v);
                b = arr.ToList();
                break;
            }
            case 5 or 6: // insert a JSON token inside the header, keeping the length prefix consistent
            {
                var tok = Encoding.UTF8.GetBytes(Tokens[rng.Next(Tokens.Length)]);
                int at = 8 + rng.Next(Math.Max(1, headerEnd - 8));
                if (at > b.Count) at = b.Count;
                b.InsertRange(at, tok);
                FixLength(b, headerEnd - 8 + tok.Length);
                break;
            }
            case 7 when input.Length >= 8: // change a number in the header
            {
                var text = Encoding.UTF8.GetString(input, 8, Math.Max(0, Math.Min(input.Length, headerEnd) - 8));
                var digits = Enumerable.Range(0, text.Length).Where(i => char.IsDigit(text[i])).ToList();
                if (digits.Count == 0) break;
                int pos = digits[rng.Next(digits.Count)];
                string replacement = rng.Next(3) switch { 0 => rng.Next(10).ToString(), 1 => rng.Next(100).ToString(), _ => "-" + rng.Next(10) };
                string newText = text[..pos] + replacement + text[(pos + 1)..];
                var header = Encoding.UTF8.GetBytes(newText);
                var rest = input.Skip(headerEnd).ToArray();
                b = new List<byte>(new byte[8]);
                b.AddRange(header);
                b.AddRange(rest);
                FixLength(b, header.Length);
                break;
            }
            case 8: // splice the data section of another input
            {
                var other = corpus[rng.Next(corpus.Count)];
                int take = rng.Next(other.Length + 1);
                b = b.Take(headerEnd).Concat(other.Skip(other.Length - take)).ToList();
                break;
            }
            default: // append / extend data
            {
                int k = rng.Next(1, 9);
                for (int i = 0; i < k; i++) b.Add((byte)rng.Next(256));
                break;
            }
        }
        return b.ToArray();
    }

    private static void FixLength(List<byte> b, int headerLength)
    {
        if (b.Count < 8) return;
        var len = new byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(len, (ulong)headerLength);
        for (int i = 0; i < 8; i++) b[i] = len[i];
    }
}
