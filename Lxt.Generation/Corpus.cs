// Corpus: examples for neuron statistics and activation reports — JSON lines with "text" or "input_ids" (and
// optionally "target"), or plain text, one example per line.
using System.Text.Json;

namespace Lxt.Generation;

/// <summary>A corpus line that is not a usable example.</summary>
public sealed class CorpusException(string message) : Lxt.Graph.LxtException(message);

/// <summary>One example: token ids or a text (tokenized by the model's tokenizer), and an optional target token.</summary>
public sealed record CorpusExample(int Line, string? Text, IReadOnlyList<int>? InputIds, int? Target)
{
    /// <summary>The example's token ids, at most <paramref name="maxTokens"/> (the first ones).</summary>
    public int[] Ids(LanguageModel model, int maxTokens = int.MaxValue)
    {
        var ids = InputIds?.ToArray() ?? model.Encode(Text!);
        return ids.Length > maxTokens ? ids[..maxTokens] : ids;
    }
}

public static class Corpus
{
    /// <summary>
    /// Reads a corpus file: <c>.jsonl</c> / <c>.json</c> files hold one JSON object per line with "text" or
    /// "input_ids" and optionally "target" (a token id); any other file is plain text, one example per non-empty line.
    /// </summary>
    public static IEnumerable<CorpusExample> Read(string path)
    {
        if (!File.Exists(path)) throw new CorpusException($"corpus file '{path}' does not exist");
        bool json = path.EndsWith(".jsonl", StringComparison.OrdinalIgnoreCase) || path.EndsWith(".json", StringComparison.OrdinalIgnoreCase);
        int line = 0;
        foreach (var text in File.ReadLines(path))
        {
            line++;
            if (string.IsNullOrWhiteSpace(text)) continue;
            yield return json ? ParseJson(text, path, line) : new CorpusExample(line, text, null, null);
        }
    }

    /// <summary>One JSON line as an example (see <see cref="Read"/>).</summary>
    public static CorpusExample ParseJson(string json, string source, int line)
    {
        JsonElement root;
        try { root = JsonDocument.Parse(json).RootElement.Clone(); }
        catch (JsonException e) { throw new CorpusException($"{source}:{line}: not valid JSON ({e.Message})"); }
        if (root.ValueKind != JsonValueKind.Object) throw new CorpusException($"{source}:{line}: expected a JSON object with \"text\" or \"input_ids\"");
        string? text = root.TryGetProperty("text", out var t) && t.ValueKind == JsonValueKind.String ? t.GetString() : null;
        int[]? ids = null;
        if (root.TryGetProperty("input_ids", out var a))
        {
            if (a.ValueKind != JsonValueKind.Array || a.GetArrayLength() == 0 || a.EnumerateArray().Any(v => v.ValueKind != JsonValueKind.Number || !v.TryGetInt32(out _)))
                throw new CorpusException($"{source}:{line}: \"input_ids\" should be a non-empty list of integers");
            ids = a.EnumerateArray().Select(v => v.GetInt32()).ToArray();
        }
        if (text is null && ids is null) throw new CorpusException($"{source}:{line}: the object has neither \"text\" nor \"input_ids\"");
        int? target = null;
        if (root.TryGetProperty("target", out var g) && g.ValueKind != JsonValueKind.Null)
        {
            if (g.ValueKind != JsonValueKind.Number || !g.TryGetInt32(out int tg)) throw new CorpusException($"{source}:{line}: \"target\" should be a token id");
            target = tg;
        }
        return new CorpusExample(line, text, ids, target);
    }
}
