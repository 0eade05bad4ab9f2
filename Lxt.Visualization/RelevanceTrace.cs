// RelevanceTrace: latent relevance through the network — a token × layer heatmap image, one row per layer output
// (the input embedding at the bottom, the last layer on top), one column per token, each row scaled by its own
// max |relevance| so that where relevance sits is visible at every depth.
using SkiaSharp;

namespace Lxt.Visualization;

/// <summary>Where the cells of a relevance trace image lie: cell (row, column) spans
/// [<see cref="X"/>(column), +<see cref="CellWidth"/>) × [<see cref="Y"/>(row), +<see cref="CellHeight"/>); row 0 is the
/// bottom row.</summary>
public sealed record TraceLayout(int Width, int Height, int Rows, int Columns, float Left, float Top, float CellWidth, float CellHeight)
{
    public float X(int column) => Left + column * CellWidth;
    public float Y(int row) => Top + (Rows - 1 - row) * CellHeight;
}

public static class RelevanceTrace
{
    private const float FontSize = 12, Margin = 12, CellHeight = 22, MinCellWidth = 22;

    /// <summary>The image's size and cell positions for <paramref name="tokens"/> and <paramref name="layers"/>.</summary>
    public static TraceLayout Layout(IReadOnlyList<string> tokens, IReadOnlyList<string> layers, HeatmapInfo? info = null)
    {
        info ??= new HeatmapInfo();
        using var font = Fonts.Create(FontSize);
        float labelWidth = layers.Count == 0 ? 0 : layers.Max(l => Fonts.Measure(font, l, FontSize)) + 10;
        float tokenLabel = tokens.Count == 0 ? 0 : Math.Min(160, tokens.Max(t => Fonts.Measure(font, Label(t), FontSize))) + 10;
        float top = Margin + (info.Title is null ? 0 : 22) + info.HeaderLines().Count() * 17 + 6;
        float width = Margin + labelWidth + tokens.Count * MinCellWidth + Margin;
        width = Math.Max(width, 420);
        float height = top + layers.Count * CellHeight + tokenLabel + 40 + Margin;
        return new TraceLayout((int)Math.Ceiling(width), (int)Math.Ceiling(height), layers.Count, tokens.Count,
            Margin + labelWidth, top, MinCellWidth, CellHeight);
    }

    /// <summary>
    /// A PNG: <paramref name="relevance"/>[row][token] for each of <paramref name="layers"/> (row 0 — the input
    /// embedding — drawn at the bottom), tokens as vertical labels under the columns, layer names on the left.
    /// </summary>
    public static byte[] Png(IReadOnlyList<string> tokens, IReadOnlyList<string> layers, IReadOnlyList<IReadOnlyList<double>> relevance,
        HeatmapInfo? info = null)
    {
        ArgumentNullException.ThrowIfNull(tokens);
        ArgumentNullException.ThrowIfNull(layers);
        ArgumentNullException.ThrowIfNull(relevance);
        if (relevance.Count != layers.Count) throw new ArgumentException($"{layers.Count} layers but {relevance.Count} rows of relevance");
        for (int r = 0; r < relevance.Count; r++)
            if (relevance[r].Count != tokens.Count)
                throw new ArgumentException($"layer '{layers[r]}' has {relevance[r].Count} relevance values for {tokens.Count} tokens");
        info ??= new HeatmapInfo();
        var layout = Layout(tokens, layers, info);
        using var surface = SKSurface.Create(new SKImageInfo(layout.Width, layout.Height, SKColorType.Rgba8888, SKAlphaType.Premul));
        var canvas = surface.Canvas;
        canvas.Clear(SKColors.White);
        using var font = Fonts.Create(FontSize);
        using var bold = Fonts.Create(15);
        using var text = new SKPaint { IsAntialias = true, Color = new SKColor(0x33, 0x33, 0x33) };
        float y = Margin;
        if (info.Title is { } title)
        {
            canvas.DrawText(title, Margin, y + 14, SKTextAlign.Left, bold, text);
            y += 22;
        }
        foreach (var line in info.HeaderLines())
        {
            canvas.DrawText(line, Margin, y + 12, SKTextAlign.Left, font, text);
            y += 17;
        }
        for (int r = 0; r < layers.Count; r++)
        {
            double scale = ColorMaps.Scale(relevance[r]);
            float cy = layout.Y(r);
            canvas.DrawText(layers[r], layout.Left - 6, cy + CellHeight / 2 + 4, SKTextAlign.Right, font, text);
            for (int c = 0; c < tokens.Count; c++)
            {
                var colour = ColorMaps.Apply(info.ColorMap, ColorMaps.Normalize(relevance[r][c], scale));
                using var fill = new SKPaint { Color = TokenHeatmap.Sk(colour), IsAntialias = false };
                canvas.DrawRect(layout.X(c), cy, layout.CellWidth, layout.CellHeight, fill);
            }
        }
        using (var grid = new SKPaint { Color = new SKColor(0, 0, 0, 40), Style = SKPaintStyle.Stroke, StrokeWidth = 1, IsAntialias = false })
            canvas.DrawRect(layout.Left, layout.Top, layout.Columns * layout.CellWidth, layout.Rows * layout.CellHeight, grid);
        float labelsTop = layout.Top + layout.Rows * layout.CellHeight + 6;
        for (int c = 0; c < tokens.Count; c++)
        {
            canvas.Save();
            canvas.Translate(layout.X(c) + layout.CellWidth / 2 + 4, labelsTop);
            canvas.RotateDegrees(90);
            canvas.DrawText(Label(tokens[c]), 0, 0, SKTextAlign.Left, font, text);
            canvas.Restore();
        }
        float ly = layout.Height - Margin - 14;
        canvas.DrawText("−max", Margin, ly + 11, SKTextAlign.Left, font, text);
        using (var bar = new SKPaint
        {
            Shader = SKShader.CreateLinearGradient(new SKPoint(Margin + 40, 0), new SKPoint(Margin + 240, 0),
                Enumerable.Range(0, 9).Select(k => TokenHeatmap.Sk(ColorMaps.Apply(info.ColorMap, k / 4.0 - 1))).ToArray(), SKShaderTileMode.Clamp),
        })
            canvas.DrawRect(Margin + 40, ly, 200, 12, bar);
        canvas.DrawText("+max (per layer)", Margin + 248, ly + 11, SKTextAlign.Left, font, text);
        using var image = surface.Snapshot();
        using var data = image.Encode(SKEncodedImageFormat.Png, 100);
        return data.ToArray();
    }

    public static void WritePng(string path, IReadOnlyList<string> tokens, IReadOnlyList<string> layers,
        IReadOnlyList<IReadOnlyList<double>> relevance, HeatmapInfo? info = null) =>
        AtomicFile.WriteAllBytes(path, Png(tokens, layers, relevance, info));

    private static string Label(string token)
    {
        var visible = TokenText.Visible(token);
        return visible.Length > 24 ? visible[..23] + "…" : visible;
    }
}
