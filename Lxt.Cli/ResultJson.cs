// ResultJson: an explanation as a JSON file, written atomically (a temporary file in the same folder, then moved
// over the destination) so that no reader ever sees a half-written file.
using System.Text.Json;

namespace Lxt.Cli;

public static class ResultJson
{
    /// <summary>
    /// <c>{"rules", "target", "target_label"?, "target_logit", "logits", "tokens", "token_ids"?, "relevance",
    /// "relevance_sum", "nodes"?, "timing_ms": {"load", "forward", "relevance"}}</c>; relevance is per token (text) or
    /// [H][W] (images, where "tokens" is null).
    /// </summary>
    public static void Write(Utf8JsonWriter w, ExplainResult r) => Write(w, r, null);

    /// <summary>As <see cref="Write(Utf8JsonWriter, ExplainResult)"/>, with <paramref name="head"/> writing the first
    /// properties (a batch line's "line" and "id").</summary>
    public static void Write(Utf8JsonWriter w, ExplainResult r, Action<Utf8JsonWriter>? head)
    {
        w.WriteStartObject();
        head?.Invoke(w);
        w.WriteString("rules", r.Rules);
        w.WriteString("rule_set", r.RuleSetName);
        w.WriteNumber("target", r.Target);
        if (r.TargetText is { } label) w.WriteString("target_label", label);
        w.WritePropertyName("target_logit");
        Number(w, r.TargetLogit);
        w.WritePropertyName("logits");
        Numbers(w, r.Logits);
        w.WritePropertyName("tokens");
        if (r.Tokens is { } tokens)
        {
            w.WriteStartArray();
            foreach (var t in tokens) w.WriteStringValue(t);
            w.WriteEndArray();
        }
        else w.WriteNullValue();
        if (r.TokenIds is { } ids)
        {
            w.WriteStartArray("token_ids");
            foreach (var i in ids) w.WriteNumberValue(i);
            w.WriteEndArray();
        }
        w.WritePropertyName("relevance");
        if (r.ImageSize is var (height, width))
        {
            w.WriteStartArray();
            for (int y = 0; y < height; y++) Numbers(w, r.Relevance.AsSpan(y * width, width));
            w.WriteEndArray();
        }
        else Numbers(w, r.Relevance);
        w.WritePropertyName("relevance_sum");
        Number(w, r.RelevanceSum);
        if (r.Nodes.Count > 0)
        {
            w.WriteStartObject("nodes");
            foreach (var (name, values) in r.Nodes)
            {
                w.WritePropertyName(name);
                Numbers(w, values);
            }
            w.WriteEndObject();
        }
        if (r.Trace is { } trace)
        {
            // the relevance trace: per-token relevance at the input embedding and at each layer output
            w.WriteStartObject("layers");
            w.WritePropertyName("input");
            Numbers(w, r.Relevance);
            foreach (var layer in trace)
            {
                w.WritePropertyName(layer.Layer);
                Numbers(w, layer.Relevance);
            }
            w.WriteEndObject();
        }
        w.WriteStartObject("timing_ms");
        w.WriteNumber("load", Math.Round(r.LoadTime.TotalMilliseconds, 3));
        w.WriteNumber("forward", Math.Round(r.ForwardTime.TotalMilliseconds, 3));
        w.WriteNumber("relevance", Math.Round(r.RelevanceTime.TotalMilliseconds, 3));
        w.WriteEndObject();
        w.WriteEndObject();
    }

    public static string ToJson(ExplainResult r)
    {
        using var stream = new MemoryStream();
        using (var w = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true })) Write(w, r);
        return System.Text.Encoding.UTF8.GetString(stream.ToArray());
    }

    /// <summary>Writes the result to <paramref name="path"/> atomically; on failure the destination is untouched
    /// and the temporary file is removed.</summary>
    public static void WriteFile(string path, ExplainResult r)
    {
        // compact: logits of a real vocabulary are 10⁵ numbers
        AtomicFile.Write(path, stream =>
        {
            using var w = new Utf8JsonWriter(stream);
            Write(w, r);
        });
    }

    // JSON has no NaN or infinities: they are written as null
    private static void Number(Utf8JsonWriter w, double v)
    {
        if (double.IsFinite(v)) w.WriteNumberValue(v);
        else w.WriteNullValue();
    }

    private static void Numbers(Utf8JsonWriter w, ReadOnlySpan<double> values)
    {
        w.WriteStartArray();
        foreach (var v in values) Number(w, v);
        w.WriteEndArray();
    }
}
