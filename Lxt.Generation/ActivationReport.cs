// Activation reports: for one neuron, the corpus windows where it activates most and where it is most relevant,
// as data and as a small self-contained HTML page. The label is the reader's; the evidence is this report.
using System.Globalization;
using System.Net;
using System.Text;

namespace Lxt.Generation;

/// <summary>What an activation report looks at.</summary>
public sealed record ActivationReportOptions
{
    /// <summary>Tokens shown on each side of the peak position.</summary>
    public int Window { get; init; } = 8;
    /// <summary>How many windows each list keeps.</summary>
    public int Top { get; init; } = 10;
    /// <summary>Examples longer than this are cut to their first MaxTokens tokens.</summary>
    public int MaxTokens { get; init; } = 128;
    /// <summary>The method relevance is computed with (each example explains its target or its arg-max after it).</summary>
    public Method Method { get; init; } = Method.AttnLrp;
}

/// <summary>A corpus window around the position where a neuron peaked.</summary>
public sealed record TextWindow(
    int Line, int Position, double Peak, IReadOnlyList<string> Tokens, IReadOnlyList<double> Values, int PeakIndex);

/// <summary>Top-activating and top-relevant windows of one neuron over a corpus.</summary>
public sealed class ActivationReport
{
    public required string Node { get; init; }
    public required int Index { get; init; }
    public required int Examples { get; init; }
    public required string Method { get; init; }
    /// <summary>Windows around each example's highest activation, highest first.</summary>
    public required IReadOnlyList<TextWindow> TopActivating { get; init; }
    /// <summary>Windows around each example's highest relevance, highest first.</summary>
    public required IReadOnlyList<TextWindow> TopRelevant { get; init; }

    /// <summary>
    /// Runs every corpus example: one forward pass for the neuron's activation per token and one explanation for its
    /// relevance per token; keeps the examples with the highest peaks.
    /// </summary>
    public static ActivationReport Build(LanguageModel model, IEnumerable<CorpusExample> corpus, string node, int index,
        ActivationReportOptions? options = null, IProgress<int>? progress = null, CancellationToken cancellation = default)
    {
        options ??= new ActivationReportOptions();
        var activating = new List<TextWindow>();
        var relevant = new List<TextWindow>();
        int count = 0;
        foreach (var example in corpus)
        {
            cancellation.ThrowIfCancellationRequested();
            var ids = example.Ids(model, options.MaxTokens);
            var act = model.Activations(ids, [node], cancellation: cancellation)[node];
            CheckIndex(node, act, index);
            var e = model.Explain(ids, new ExplainOptions { Method = options.Method, Target = example.Target, Nodes = [node] }, cancellation: cancellation);
            activating.Add(WindowOf(model, ids, example.Line, PerToken(node, act, index), options.Window));
            relevant.Add(WindowOf(model, ids, example.Line, PerToken(node, e.Nodes[node], index), options.Window));
            count++;
            progress?.Report(count);
        }
        if (count == 0) throw new CorpusException("the corpus holds no examples");
        return new ActivationReport
        {
            Node = node,
            Index = index,
            Examples = count,
            Method = options.Method.Id,
            TopActivating = activating.OrderByDescending(w => w.Peak).Take(options.Top).ToArray(),
            TopRelevant = relevant.OrderByDescending(w => w.Peak).Take(options.Top).ToArray(),
        };
    }

    private static void CheckIndex(string node, TensorValue v, int index)
    {
        int n = Neurons.Count(node, v.Shape);
        if (index < 0 || index >= n)
            throw new ArgumentOutOfRangeException(nameof(index), $"index {index} is outside the {n} neurons of '{node}' [{string.Join(", ", v.Shape)}]");
    }

    /// <summary>The neuron's value at every token (for attention weights: the head's row of each query, summed).</summary>
    private static double[] PerToken(string node, TensorValue v, int index)
    {
        int tokens = v.Shape[Neurons.TokenAxis(node, v.Shape) ?? throw new ArgumentException($"node '{node}' has no token axis")];
        return Enumerable.Range(0, tokens).Select(t => Neurons.PerNeuron(node, v, t)[index]).ToArray();
    }

    private static TextWindow WindowOf(LanguageModel model, int[] ids, int line, double[] values, int window)
    {
        int peak = 0;
        for (int t = 1; t < values.Length; t++) if (values[t] > values[peak]) peak = t;
        int from = Math.Max(0, peak - window), to = Math.Min(ids.Length, peak + window + 1);
        return new TextWindow(line, peak, values[peak], ids[from..to].Select(model.TokenText).ToArray(), values[from..to], peak - from);
    }

    /// <summary>A self-contained HTML page (no scripts, no external files): both lists, tokens shaded by value, the
    /// value of every token in its tooltip and of every peak beside it. All corpus text is escaped.</summary>
    public string ToHtml()
    {
        var h = new StringBuilder();
        string E(string s) => WebUtility.HtmlEncode(s);
        string F(double v) => v.ToString("G5", CultureInfo.InvariantCulture);
        h.Append("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>")
         .Append(E($"{Node}[{Index}]")).Append("</title>\n<style>body{font-family:sans-serif;margin:2em;max-width:70em}")
         .Append("table{border-collapse:collapse}td{padding:.3em .6em;border-bottom:1px solid #ddd;vertical-align:top}")
         .Append(".t{font-family:monospace;white-space:pre-wrap;padding:0 1px}.peak{outline:2px solid #333}.v{text-align:right;font-family:monospace}</style></head><body>\n")
         .Append("<h1>Neuron ").Append(E(Node)).Append(" [").Append(Index).Append("]</h1>\n<p>")
         .Append(Examples).Append(" examples; relevance by ").Append(E(Method)).Append(". The label is yours to give; these windows are the evidence.</p>\n");
        Section(h, "Top-activating windows", TopActivating, E, F);
        Section(h, "Top-relevant windows", TopRelevant, E, F);
        h.Append("</body></html>\n");
        return h.ToString();
    }

    private static void Section(StringBuilder h, string title, IReadOnlyList<TextWindow> windows, Func<string, string> E, Func<double, string> F)
    {
        h.Append("<h2>").Append(E(title)).Append("</h2>\n<table><tr><th>peak</th><th>line</th><th>pos</th><th>window</th></tr>\n");
        foreach (var w in windows)
        {
            double scale = w.Values.Select(Math.Abs).DefaultIfEmpty(0).Max();
            h.Append("<tr><td class=\"v\">").Append(F(w.Peak)).Append("</td><td class=\"v\">").Append(w.Line)
             .Append("</td><td class=\"v\">").Append(w.Position).Append("</td><td>");
            for (int i = 0; i < w.Tokens.Count; i++)
            {
                double a = scale > 0 ? w.Values[i] / scale : 0;
                string colour = a >= 0 ? $"rgba(220,40,40,{Math.Round(a, 3).ToString(CultureInfo.InvariantCulture)})" : $"rgba(40,80,220,{Math.Round(-a, 3).ToString(CultureInfo.InvariantCulture)})";
                h.Append("<span class=\"t").Append(i == w.PeakIndex ? " peak" : "").Append("\" style=\"background:").Append(colour)
                 .Append("\" title=\"").Append(F(w.Values[i])).Append("\">").Append(E(w.Tokens[i])).Append("</span>");
            }
            h.Append("</td></tr>\n");
        }
        h.Append("</table>\n");
    }

    /// <summary>Writes <see cref="ToHtml"/> to <paramref name="path"/> atomically (a temporary file beside it, then a rename).</summary>
    public void WriteHtml(string path)
    {
        AtomicFile.WriteAllText(path, ToHtml());
    }
}
