// Report formats for the command line: a markdown table and a small hand-written SVG of the perturbation curves.
using System.Globalization;
using System.Text;

namespace Lxt.Evaluation;

public static class ReportFormats
{
    private static string F(double v, string format = "0.####") =>
        double.IsFinite(v) ? v.ToString(format, CultureInfo.InvariantCulture) : "nan";

    /// <summary>
    /// One row per method, the id first and the mean ABPC the first number:
    /// <c>| attnlrp | 1.2345 ± 0.0678 | 0.8 | 0.1 | 1.3 | 20 |</c>; the hit-rate cell is <c>-</c> without evidence positions.
    /// </summary>
    public static string MarkdownTable(EvaluationReport report)
    {
        var sb = new StringBuilder();
        sb.Append("| method | ABPC").Append(report.Normalized ? " (normalised)" : "").AppendLine(" ± s.e. | evidence hit rate | AUC MoRF | AUC LeRF | samples |");
        sb.AppendLine("|---|---|---|---|---|---|");
        foreach (var m in report.Methods)
            sb.Append("| ").Append(m.MethodId)
              .Append(" | ").Append(F(m.MeanAbpc)).Append(" ± ").Append(F(m.AbpcStandardError))
              .Append(" | ").Append(m.EvidenceHitRate is double h ? F(h, "0.###") : "-")
              .Append(" | ").Append(F(m.MeanAreaMorf))
              .Append(" | ").Append(F(m.MeanAreaLerf))
              .Append(" | ").Append(m.Samples.Count.ToString(CultureInfo.InvariantCulture))
              .AppendLine(" |");
        return sb.ToString();
    }

    private static readonly string[] Colours = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];

    /// <summary>The mean MoRF (solid) and LeRF (dashed) curve of every method against the fraction removed.</summary>
    public static string Svg(EvaluationReport report, int width = 640, int height = 400)
    {
        const int left = 60, right = 190, top = 30, bottom = 45;
        double plotW = width - left - right, plotH = height - top - bottom;
        var all = report.Methods.SelectMany(m => m.MeanMorf.Concat(m.MeanLerf)).Where(double.IsFinite).DefaultIfEmpty(0).ToArray();
        double yMin = all.Min(), yMax = all.Max();
        if (yMax - yMin < 1e-12) { yMin -= 1; yMax += 1; }
        double pad = 0.05 * (yMax - yMin);
        yMin -= pad;
        yMax += pad;
        string X(double f) => F(left + f * plotW, "0.##");
        string Y(double v) => F(top + (yMax - v) / (yMax - yMin) * plotH, "0.##");
        var sb = new StringBuilder();
        sb.Append($"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" font-family=\"sans-serif\" font-size=\"12\">\n");
        sb.Append($"<rect width=\"{width}\" height=\"{height}\" fill=\"white\"/>\n");
        sb.Append($"<text x=\"{left + plotW / 2:0}\" y=\"18\" text-anchor=\"middle\" font-size=\"14\">Perturbation curves (MoRF solid, LeRF dashed)</text>\n");
        // axes, ticks and labels
        sb.Append($"<g stroke=\"black\" stroke-width=\"1\"><line x1=\"{left}\" y1=\"{top + plotH}\" x2=\"{left + plotW}\" y2=\"{top + plotH}\"/>");
        sb.Append($"<line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{top + plotH}\"/></g>\n");
        for (int k = 0; k <= 4; k++)
        {
            double f = k / 4.0, v = yMin + (yMax - yMin) * k / 4.0;
            sb.Append($"<line x1=\"{X(f)}\" y1=\"{top + plotH}\" x2=\"{X(f)}\" y2=\"{top + plotH + 4}\" stroke=\"black\"/>");
            sb.Append($"<text x=\"{X(f)}\" y=\"{top + plotH + 17}\" text-anchor=\"middle\">{F(f, "0.##")}</text>\n");
            sb.Append($"<line x1=\"{left - 4}\" y1=\"{Y(v)}\" x2=\"{left}\" y2=\"{Y(v)}\" stroke=\"black\"/>");
            sb.Append($"<text x=\"{left - 7}\" y=\"{Y(v)}\" text-anchor=\"end\" dominant-baseline=\"middle\">{F(v, "0.###")}</text>\n");
        }
        sb.Append($"<text x=\"{left + plotW / 2:0}\" y=\"{height - 8}\" text-anchor=\"middle\">fraction of features removed</text>\n");
        sb.Append($"<text transform=\"translate(14 {top + plotH / 2:0}) rotate(-90)\" text-anchor=\"middle\">target logit{(report.Normalized ? " / unperturbed" : "")}</text>\n");
        for (int i = 0; i < report.Methods.Count; i++)
        {
            var m = report.Methods[i];
            string colour = Colours[i % Colours.Length], id = Escape(m.MethodId);
            string Points(double[] ys) => string.Join(" ", m.Fractions.Select((f, k) => $"{X(f)},{Y(ys[k])}"));
            sb.Append($"<polyline data-method=\"{id}\" data-curve=\"morf\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\" points=\"{Points(m.MeanMorf)}\"/>\n");
            sb.Append($"<polyline data-method=\"{id}\" data-curve=\"lerf\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\" stroke-dasharray=\"5 3\" points=\"{Points(m.MeanLerf)}\"/>\n");
            double ly = top + 10 + 18 * i;
            sb.Append($"<line x1=\"{width - right + 12}\" y1=\"{F(ly)}\" x2=\"{width - right + 36}\" y2=\"{F(ly)}\" stroke=\"{colour}\" stroke-width=\"2\"/>");
            sb.Append($"<text x=\"{width - right + 42}\" y=\"{F(ly)}\" dominant-baseline=\"middle\">{id} ({F(m.MeanAbpc, "0.###")})</text>\n");
        }
        sb.Append("</svg>\n");
        return sb.ToString();
    }

    private static string Escape(string s) => s.Replace("&", "&amp;").Replace("<", "&lt;").Replace(">", "&gt;").Replace("\"", "&quot;");

    /// <summary>Writes <paramref name="text"/> to a temporary file in the target's folder, then renames it over the target.</summary>
    public static void WriteAtomically(string path, string text)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        AtomicFile.WriteAllText(path, text);
    }

    /// <summary>Writes the markdown table atomically.</summary>
    public static void WriteMarkdown(EvaluationReport report, string path) => WriteAtomically(path, MarkdownTable(report));

    /// <summary>Writes the SVG plot atomically.</summary>
    public static void WriteSvg(EvaluationReport report, string path) => WriteAtomically(path, Svg(report));
}
