// The results of a perturbation run: curves and ABPC per sample and per method, and their JSON form.
using System.Text.Json;

namespace Lxt.Evaluation;

/// <summary>One sample's perturbation curves under one method.</summary>
public sealed class SampleEvaluation
{
    public required int Index { get; init; }
    public string? Id { get; init; }
    public required int Target { get; init; }
    public required double UnperturbedLogit { get; init; }
    /// <summary>Fraction of features removed at each point (0 first, 1 last).</summary>
    public required double[] Fractions { get; init; }
    /// <summary>Target logit (or its ratio to the unperturbed logit, when normalised) removing the most relevant first.</summary>
    public required double[] Morf { get; init; }
    /// <summary>The same, removing the least relevant first.</summary>
    public required double[] Lerf { get; init; }
    /// <summary>∫ (LeRF − MoRF) over the fraction removed.</summary>
    public required double Abpc { get; init; }
    /// <summary>The feature the method ranked first.</summary>
    public required int TopFeature { get; init; }
    public int? EvidencePosition { get; init; }
    public bool? EvidenceHit { get; init; }
}

/// <summary>One method over all samples.</summary>
public sealed class MethodEvaluation
{
    public required string MethodId { get; init; }
    public required string MethodName { get; init; }
    public required IReadOnlyList<SampleEvaluation> Samples { get; init; }
    public required double MeanAbpc { get; init; }
    /// <summary>Standard error of the mean ABPC (sample standard deviation / √n; 0 for one sample).</summary>
    public required double AbpcStandardError { get; init; }
    /// <summary>The grid of the mean curves.</summary>
    public required double[] Fractions { get; init; }
    public required double[] MeanMorf { get; init; }
    public required double[] MeanLerf { get; init; }
    public required double MeanAreaMorf { get; init; }
    public required double MeanAreaLerf { get; init; }
    /// <summary>Fraction of the samples with an evidence position whose top feature is it; null when none has one.</summary>
    public double? EvidenceHitRate { get; init; }
    /// <summary>Time spent computing attributions (not perturbing).</summary>
    public required TimeSpan AttributionTime { get; init; }
}

/// <summary>A perturbation run's results, one entry per method in the order they were given.</summary>
public sealed class EvaluationReport
{
    /// <summary>Whether curves were divided by each sample's unperturbed logit.</summary>
    public required bool Normalized { get; init; }
    public required IReadOnlyList<MethodEvaluation> Methods { get; init; }

    public MethodEvaluation this[string methodId] => Methods.FirstOrDefault(m => m.MethodId == methodId)
        ?? throw new KeyNotFoundException($"the report has no method '{methodId}' (methods: {string.Join(", ", Methods.Select(m => m.MethodId))})");

    /// <summary>A markdown table, one row per method: <c>| id | ABPC ± s.e. | hit rate or - | … |</c>.</summary>
    public string ToMarkdown() => ReportFormats.MarkdownTable(this);

    /// <summary>An SVG plot of each method's mean MoRF (solid) and LeRF (dashed) curves.</summary>
    public string ToSvg(int width = 640, int height = 400) => ReportFormats.Svg(this, width, height);

    /// <summary>The report as indented JSON (non-finite numbers as null).</summary>
    public string ToJson()
    {
        using var stream = new MemoryStream();
        using (var w = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true }))
            WriteJson(w);
        return System.Text.Encoding.UTF8.GetString(stream.ToArray());
    }

    /// <summary>Writes the JSON to <paramref name="path"/> atomically: a temporary file beside it, then a rename, so a
    /// reader never sees half a report.</summary>
    public void WriteJson(string path) => ReportFormats.WriteAtomically(path, ToJson());

    private void WriteJson(Utf8JsonWriter w)
    {
        static void Number(Utf8JsonWriter w, string name, double v)
        {
            if (double.IsFinite(v)) w.WriteNumber(name, v);
            else w.WriteNull(name);
        }
        static void Numbers(Utf8JsonWriter w, string name, double[] values)
        {
            w.WriteStartArray(name);
            foreach (var v in values)
                if (double.IsFinite(v)) w.WriteNumberValue(v);
                else w.WriteNullValue();
            w.WriteEndArray();
        }
        w.WriteStartObject();
        w.WriteString("metric", "abpc");
        w.WriteString("definition", "ABPC = integral over the fraction of features removed of (LeRF - MoRF), trapezoid rule");
        w.WriteBoolean("normalized", Normalized);
        w.WriteStartArray("methods");
        foreach (var m in Methods)
        {
            w.WriteStartObject();
            w.WriteString("id", m.MethodId);
            w.WriteString("name", m.MethodName);
            Number(w, "abpc", m.MeanAbpc);
            Number(w, "abpc_standard_error", m.AbpcStandardError);
            Number(w, "area_morf", m.MeanAreaMorf);
            Number(w, "area_lerf", m.MeanAreaLerf);
            if (m.EvidenceHitRate is double hit) Number(w, "evidence_hit_rate", hit);
            else w.WriteNull("evidence_hit_rate");
            w.WriteNumber("attribution_seconds", m.AttributionTime.TotalSeconds);
            Numbers(w, "fractions", m.Fractions);
            Numbers(w, "morf", m.MeanMorf);
            Numbers(w, "lerf", m.MeanLerf);
            w.WriteStartArray("samples");
            foreach (var s in m.Samples)
            {
                w.WriteStartObject();
                w.WriteNumber("index", s.Index);
                if (s.Id is not null) w.WriteString("id", s.Id);
                w.WriteNumber("target", s.Target);
                Number(w, "logit", s.UnperturbedLogit);
                Number(w, "abpc", s.Abpc);
                w.WriteNumber("top_feature", s.TopFeature);
                if (s.EvidencePosition is int e) w.WriteNumber("evidence_position", e);
                if (s.EvidenceHit is bool h) w.WriteBoolean("evidence_hit", h);
                Numbers(w, "fractions", s.Fractions);
                Numbers(w, "morf", s.Morf);
                Numbers(w, "lerf", s.Lerf);
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteEndObject();
        }
        w.WriteEndArray();
        w.WriteEndObject();
    }
}
