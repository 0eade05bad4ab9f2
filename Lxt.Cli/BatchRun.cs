// BatchRun: lxt explain --batch — one explanation per JSON line of an input file, one JSON result per line appended to
// an output file. Resumable (lines already answered are skipped, a torn last line is cut off and redone), per-line
// errors recorded as {"line", "error"}, cancellation honoured between lines so that no partial line is ever left.
using System.Globalization;
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;

namespace Lxt.Cli;

/// <summary>Where a batch stands after one line: <paramref name="Done"/> of <paramref name="Total"/> input lines answered
/// (this run or an earlier one); <paramref name="Line"/> the 1-based line just handled; <paramref name="Error"/> its error.</summary>
public sealed record BatchProgress(int Done, int Total, int Line, bool Skipped, string? Error);

/// <summary>How a batch ended: input lines, answered in this run (explained / failed), skipped as answered before.</summary>
public sealed record BatchSummary(int Lines, int Explained, int Failed, int Skipped, bool Cancelled)
{
    public int Remaining => Lines - Explained - Failed - Skipped;
}

public static class BatchRun
{
    // quotes and non-ASCII token texts as themselves (still valid JSON; each record stays on one line)
    private static readonly JsonWriterOptions Readable = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    /// <summary>
    /// Explains every non-blank line of <paramref name="inputPath"/> — a JSON object with "text" or "input_ids" (text
    /// models) or "pixels" ([C][H][W], image models), optional "id" and "target" — with the method and nodes of
    /// <paramref name="settings"/> (its input is ignored), appending one line per input to <paramref name="outputPath"/>:
    /// the fields of <c>--json</c> after "line" (1-based) and "id", or <c>{"line", "id"?, "error"}</c>. Lines whose line
    /// number or id already has a result in the output are skipped. Each result is written with one write and a flush;
    /// <paramref name="cancellation"/> is checked between lines, so a cancelled run leaves only whole lines.
    /// </summary>
    public static BatchSummary Run(ExplainSession session, ExplainRequest settings, string inputPath, string outputPath,
        IProgress<BatchProgress>? progress = null, CancellationToken cancellation = default)
    {
        if (!File.Exists(inputPath)) throw new FileNotFoundException($"batch input '{inputPath}' does not exist", inputPath);
        string output = Path.GetFullPath(outputPath);
        string folder = Path.GetDirectoryName(output)!;
        if (!Directory.Exists(folder)) throw new DirectoryNotFoundException($"cannot write '{outputPath}': folder '{folder}' does not exist");
        var lines = File.ReadAllLines(inputPath);
        var inputs = Enumerable.Range(0, lines.Length).Where(i => !string.IsNullOrWhiteSpace(lines[i])).ToArray();
        var (doneLines, doneIds) = Answered(output);
        int explained = 0, failed = 0, skipped = 0;
        using var stream = new FileStream(output, FileMode.Append, FileAccess.Write, FileShare.Read);
        foreach (int index in inputs)
        {
            int line = index + 1;
            string? id = IdOf(lines[index]);
            if (doneLines.Contains(line) || (id is not null && doneIds.Contains(id)))
            {
                skipped++;
                progress?.Report(new BatchProgress(explained + failed + skipped, inputs.Length, line, true, null));
                continue;
            }
            if (cancellation.IsCancellationRequested) return new BatchSummary(inputs.Length, explained, failed, skipped, true);
            string? error = null;
            byte[] record;
            try
            {
                record = Explain(session, settings, lines[index], line, inputPath);
                explained++;
            }
            catch (Exception e) when (e is not (OperationCanceledException or OutOfMemoryException))
            {
                error = e is Lxt.Graph.LxtException or JsonException or InputException ? e.Message : $"{e.Message} ({e.GetType().Name})";
                record = ErrorRecord(line, lines[index], error);
                failed++;
            }
            // the whole line in one write, then to disk: a crash leaves whole lines or one torn last line (cut on resume)
            stream.Write(record);
            stream.Flush(flushToDisk: true);
            progress?.Report(new BatchProgress(explained + failed + skipped, inputs.Length, line, false, error));
        }
        return new BatchSummary(inputs.Length, explained, failed, skipped, false);
    }

    private static byte[] Explain(ExplainSession session, ExplainRequest settings, string text, int line, string inputPath)
    {
        using var doc = ParseLine(text, line, inputPath);
        var root = doc.RootElement;
        string where = $"{inputPath}:{line}";
        int? target = settings.Target;
        if (root.TryGetProperty("target", out var t))
            target = t.ValueKind == JsonValueKind.Number && t.TryGetInt32(out int n) && n >= 0 ? n
                : throw new InputException($"{where}: \"target\" should be a whole number ≥ 0, found {t.GetRawText()}");
        var keys = new[] { "text", "input_ids", "pixels" }.Where(k => root.TryGetProperty(k, out _)).ToArray();
        if (keys.Length != 1)
            throw new InputException($"{where}: give exactly one of \"text\", \"input_ids\", \"pixels\"{(keys.Length > 1 ? $" (found {string.Join(", ", keys)})" : "")}");
        var value = root.GetProperty(keys[0]);
        ExplainInput input = keys[0] switch
        {
            "text" => value.ValueKind == JsonValueKind.String ? new ExplainInput.Text(value.GetString()!)
                : throw new InputException($"{where}: \"text\" should be a string"),
            "input_ids" => new ExplainInput.TokenIds(Ids(value, where)),
            _ => new ExplainInput.Pixels(PixelInput.FromJson(value, where, session.ImageShape
                ?? throw new InputException($"{where}: the model is a text model; give \"text\" or \"input_ids\""))),
        };
        var result = session.Explain(settings with { Target = target }, input);
        using var buffer = new MemoryStream();
        using (var w = new Utf8JsonWriter(buffer, Readable))
            ResultJson.Write(w, result, head =>
            {
                head.WriteNumber("line", line);
                if (root.TryGetProperty("id", out var id))
                {
                    head.WritePropertyName("id");
                    id.WriteTo(head);
                }
            });
        buffer.WriteByte((byte)'\n');
        return buffer.ToArray();
    }

    private static int[] Ids(JsonElement value, string where)
    {
        if (value.ValueKind != JsonValueKind.Array || value.GetArrayLength() == 0)
            throw new InputException($"{where}: \"input_ids\" should be a non-empty array of whole numbers");
        return value.EnumerateArray().Select(e => e.ValueKind == JsonValueKind.Number && e.TryGetInt32(out int i) ? i
            : throw new InputException($"{where}: \"input_ids\" holds {e.GetRawText()}, not a whole number")).ToArray();
    }

    private static JsonDocument ParseLine(string text, int line, string inputPath)
    {
        JsonDocument doc;
        try { doc = JsonDocument.Parse(text); }
        catch (JsonException e) { throw new InputException($"{inputPath}:{line}: not a JSON object ({e.Message})"); }
        if (doc.RootElement.ValueKind != JsonValueKind.Object)
        {
            doc.Dispose();
            throw new InputException($"{inputPath}:{line}: not a JSON object");
        }
        return doc;
    }

    private static byte[] ErrorRecord(int line, string text, string error)
    {
        using var buffer = new MemoryStream();
        using (var w = new Utf8JsonWriter(buffer, Readable))
        {
            w.WriteStartObject();
            w.WriteNumber("line", line);
            if (IdElement(text) is { } id)
            {
                w.WritePropertyName("id");
                id.WriteTo(w);
            }
            w.WriteString("error", error);
            w.WriteEndObject();
        }
        buffer.WriteByte((byte)'\n');
        return buffer.ToArray();
    }

    /// <summary>A line's "id" as raw JSON (so 7 and "7" stay different), or null.</summary>
    private static string? IdOf(string text) => IdElement(text)?.GetRawText();

    private static JsonElement? IdElement(string text)
    {
        try
        {
            using var doc = JsonDocument.Parse(text);
            return doc.RootElement.ValueKind == JsonValueKind.Object && doc.RootElement.TryGetProperty("id", out var id) ? id.Clone() : null;
        }
        catch (JsonException) { return null; }
    }

    /// <summary>The line numbers and ids already answered in <paramref name="output"/>. A torn last line (no newline at
    /// its end: the run that wrote it was killed mid-write) is cut off so that it is written again.</summary>
    public static (HashSet<int> Lines, HashSet<string> Ids) Answered(string output)
    {
        var lines = new HashSet<int>();
        var ids = new HashSet<string>(StringComparer.Ordinal);
        if (!File.Exists(output)) return (lines, ids);
        var bytes = File.ReadAllBytes(output);
        int end = Array.LastIndexOf(bytes, (byte)'\n') + 1;
        if (end < bytes.Length)
            using (var truncate = new FileStream(output, FileMode.Open, FileAccess.Write)) truncate.SetLength(end);
        int number = 0;
        foreach (var text in Encoding.UTF8.GetString(bytes, 0, end).Split('\n'))
        {
            number++;
            if (text.Length == 0) continue;
            try
            {
                using var doc = JsonDocument.Parse(text);
                var root = doc.RootElement;
                if (root.ValueKind != JsonValueKind.Object || !root.TryGetProperty("line", out var l) || !l.TryGetInt32(out int n))
                    throw new JsonException("no \"line\"");
                lines.Add(n);
                if (root.TryGetProperty("id", out var id)) ids.Add(id.GetRawText());
            }
            catch (JsonException)
            {
                throw new OutputException($"{output}: line {number.ToString(CultureInfo.InvariantCulture)} is not a batch result; " +
                                          "give another --out file or remove that line to resume");
            }
        }
        return (lines, ids);
    }
}

/// <summary>An <see cref="IProgress{T}"/> that calls back on the reporting thread (Progress&lt;T&gt; posts to the thread pool).</summary>
public sealed class InlineProgress<T>(Action<T> report) : IProgress<T>
{
    public void Report(T value) => report(value);
}
