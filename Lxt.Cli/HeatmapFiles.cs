// HeatmapFiles: the heatmap files lxt explain and lxt demo write (--html, --svg, --png, --tex, --pdf, --trace) from one
// result, through Lxt.Visualization; each file is written atomically.
using System.Globalization;
using Lxt.Visualization;

namespace Lxt.Cli;

/// <summary>A heatmap file cannot be written (no LaTeX engine, the engine failed): exit code 1 with its message.</summary>
public sealed class OutputException(string message) : Lxt.Graph.LxtException(message);

/// <summary>Which heatmap files to write; null paths are skipped.</summary>
public sealed record HeatmapRequest
{
    public string? Html { get; init; }
    public string? Svg { get; init; }
    public string? Png { get; init; }
    public string? Tex { get; init; }
    public string? Pdf { get; init; }
    /// <summary>The token × layer relevance trace image (text models).</summary>
    public string? Trace { get; init; }
    public ColorMap ColorMap { get; init; } = ColorMap.Bwr;

    public bool Any => new[] { Html, Svg, Png, Tex, Pdf, Trace }.Any(p => p is not null);

    /// <summary>The files written, as (kind, path), in the order they are written.</summary>
    public IEnumerable<(string Kind, string Path)> Files() =>
        new (string, string?)[] { ("HTML", Html), ("SVG", Svg), ("PNG", Png), ("LaTeX", Tex), ("PDF", Pdf), ("trace", Trace) }
            .Where(f => f.Item2 is not null).Select(f => (f.Item1, f.Item2!));
}

public static class HeatmapFiles
{
    /// <summary>Raises <see cref="OutputException"/> before any work when a PDF is asked for and no engine is installed.</summary>
    public static void CheckTools(HeatmapRequest files)
    {
        if (files.Pdf is not null && Latex.FindEngine() is null) throw new OutputException(Latex.NotFoundMessage);
    }

    /// <summary>What the heatmap header says about <paramref name="r"/>.</summary>
    public static HeatmapInfo Info(ExplainRequest request, ExplainResult r, ColorMap map, string? title = null) => new()
    {
        Title = title ?? "Lxt relevance heatmap",
        Rules = $"{r.Rules} ({r.RuleSetName})",
        Target = $"{r.Target}{(r.TargetText is { } t ? $" '{TokenText.Visible(t)}'" : "")}, logit {r.TargetLogit.ToString("0.####", CultureInfo.InvariantCulture)}",
        Notes = [$"model: {Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(request.ModelDir)))}"],
        ColorMap = map,
    };

    /// <summary>Writes every file <paramref name="files"/> names for <paramref name="r"/>.</summary>
    public static void Write(HeatmapRequest files, ExplainRequest request, ExplainResult r, string? title = null, CancellationToken cancellation = default)
    {
        var info = Info(request, r, files.ColorMap, title);
        if (r.ImageSize is var (height, width))
        {
            if (files.Png is { } png)
            {
                byte[]? picture = request.Input is ExplainInput.ImageFile image ? File.ReadAllBytes(image.Path) : null;
                ImageHeatmap.WritePng(png, r.Relevance, height, width, files.ColorMap, picture);
            }
            return;
        }
        var tokens = r.Tokens ?? r.Relevance.Select((_, i) => i.ToString(CultureInfo.InvariantCulture)).ToArray();
        if (files.Html is { } html) TokenHeatmap.WriteHtml(html, tokens, r.Relevance, info);
        if (files.Svg is { } svg) TokenHeatmap.WriteSvg(svg, tokens, r.Relevance, info);
        if (files.Png is { } tokenPng) TokenHeatmap.WritePng(tokenPng, tokens, r.Relevance, info);
        if (files.Tex is { } tex) TokenHeatmap.WriteTex(tex, tokens, r.Relevance, info);
        if (files.Trace is { } trace)
        {
            var layers = r.Trace ?? throw new InvalidOperationException("the result holds no relevance trace (ExplainRequest.Trace)");
            var names = new[] { "input embedding" }.Concat(layers.Select(l => l.Layer)).ToArray();
            var rows = new IReadOnlyList<double>[] { r.Relevance }.Concat(layers.Select(l => (IReadOnlyList<double>)l.Relevance)).ToArray();
            RelevanceTrace.WritePng(trace, tokens, names, rows, info with { Title = "Relevance per token at each layer" });
        }
        if (files.Pdf is { } pdf)
        {
            try { TokenHeatmap.WritePdf(pdf, tokens, r.Relevance, info, cancellation); }
            catch (LatexException e) { throw new OutputException(e.Message); }
        }
    }
}
