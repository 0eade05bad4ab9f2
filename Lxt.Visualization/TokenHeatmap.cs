// TokenHeatmap: per-token relevance as a heatmap — an HTML page, an SVG or PNG image of token boxes, a LaTeX
// standalone document (\colorbox per token, as the reference LXT's PDF heatmaps) and its PDF. All scale by the
// largest |relevance|, so the most relevant token gets the colour map's extreme and 0 its centre.
using System.Globalization;
using System.Net;
using System.Text;
using SkiaSharp;

namespace Lxt.Visualization;

/// <summary>One token's box in a token heatmap image, in pixels.</summary>
public readonly record struct TokenBox(int Index, float X, float Y, float Width, float Height);

/// <summary>The token boxes of a token heatmap image and the image's size in pixels.</summary>
public sealed record TokenLayout(IReadOnlyList<TokenBox> Boxes, int Width, int Height);

public static class TokenHeatmap
{
    private static readonly CultureInfo Invariant = CultureInfo.InvariantCulture;

    // ───────────────────────────── HTML ─────────────────────────────

    /// <summary>A self-contained HTML page: tokens as coloured spans (value, index and share on hover), the rule set
    /// and target, and a colour bar from −max|R| to +max|R|.</summary>
    public static string Html(IReadOnlyList<string> tokens, IReadOnlyList<double> relevance, HeatmapInfo? info = null)
    {
        TokenText.Check(tokens, relevance);
        info ??= new HeatmapInfo();
        double scale = ColorMaps.Scale(relevance);
        double total = relevance.Where(double.IsFinite).Sum();
        bool separate = TokenText.Separate(tokens, info);
        var h = new StringBuilder();
        string title = info.Title ?? "Relevance heatmap";
        h.Append("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
        h.Append($"<title>{Escape(title)}</title>\n<style>\n");
        h.Append("""
            body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 60em; color: #222; background: #fff; padding: 0 1em; }
            h1 { font-size: 1.3em; margin-bottom: 0.3em; }
            .meta { color: #555; margin: 0.1em 0; }
            .text { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, monospace; font-size: 1.05em; line-height: 2.1; white-space: pre-wrap; border: 1px solid #ddd; border-radius: 6px; padding: 0.8em 1em; margin: 1em 0; }
            .tok { padding: 0.15em 0.05em; border-radius: 3px; outline: 1px solid rgba(0,0,0,0.06); }
            .tok:hover { outline: 2px solid #222; }
            .ws { opacity: 0.55; }
            .legend { display: flex; align-items: center; gap: 0.6em; font-size: 0.9em; color: #444; }
            .bar { display: inline-block; width: 18em; height: 1em; border: 1px solid #aaa; border-radius: 2px; }
            table { border-collapse: collapse; font-size: 0.9em; margin-top: 1.5em; }
            td, th { padding: 0.15em 0.8em; text-align: right; border-bottom: 1px solid #eee; }
            td.t { text-align: left; font-family: ui-monospace, monospace; white-space: pre; }
            """);
        h.Append("\n</style>\n</head>\n<body>\n");
        h.Append($"<h1>{Escape(title)}</h1>\n");
        foreach (var line in info.HeaderLines()) h.Append($"<p class=\"meta\">{Escape(line)}</p>\n");
        h.Append($"<p class=\"meta\">{tokens.Count} tokens, Σ relevance = {Num(total)}, max |relevance| = {Num(scale)} (colour scale)</p>\n");
        h.Append("<div class=\"text\" id=\"tokens\">");
        for (int i = 0; i < tokens.Count; i++)
        {
            double v = relevance[i];
            var colour = ColorMaps.Apply(info.ColorMap, ColorMaps.Normalize(v, scale));
            string share = total != 0 && double.IsFinite(v) ? $", {v / total * 100:0.#}% of Σ" : "";
            string hover = $"#{i} {Quoted(tokens[i])}: R = {Num(v)}{share}";
            if (separate && i > 0) h.Append(' ');
            h.Append($"<span class=\"tok\" data-index=\"{i}\" data-relevance=\"{Num(v)}\" title=\"{Escape(hover)}\" ");
            h.Append($"style=\"background-color: rgb({colour.R}, {colour.G}, {colour.B}); color: {colour.Contrasting.Hex}\">");
            h.Append(HtmlToken(tokens[i]));
            h.Append("</span>");
            if (tokens[i].EndsWith('\n')) h.Append('\n');
        }
        h.Append("</div>\n");
        string lo = ColorMaps.Apply(info.ColorMap, -1).Hex, mid = ColorMaps.Apply(info.ColorMap, 0).Hex, hi = ColorMaps.Apply(info.ColorMap, 1).Hex;
        h.Append("<div class=\"legend\">");
        h.Append($"<span>{Num(-scale)}</span><span class=\"bar\" style=\"background: linear-gradient(to right, {lo}, {mid}, {hi})\"></span><span>+{Num(scale)}</span>");
        h.Append($"<span>({ColorMaps.Name(info.ColorMap)}: negative, 0, positive relevance)</span></div>\n");
        h.Append("<table>\n<tr><th>#</th><th style=\"text-align:left\">token</th><th>relevance</th></tr>\n");
        for (int i = 0; i < tokens.Count; i++)
            h.Append($"<tr><td>{i}</td><td class=\"t\">{Escape(Quoted(tokens[i]))}</td><td>{Num(relevance[i])}</td></tr>\n");
        h.Append("</table>\n</body>\n</html>\n");
        return h.ToString();
    }

    // whitespace stays real (the page keeps it with white-space: pre-wrap) but is shown: a newline as ↵ before the
    // line break, a tab as ⇥, a token of spaces only as ␣
    private static string HtmlToken(string token)
    {
        if (token.Length == 0 || token.All(c => c == ' '))
            return $"<span class=\"ws\">{Escape(TokenText.Visible(token))}</span>";
        var b = new StringBuilder();
        foreach (var c in token)
            b.Append(c switch
            {
                '\n' => "<span class=\"ws\">↵</span>",
                '\t' => "<span class=\"ws\">⇥</span>",
                '\r' => "<span class=\"ws\">␍</span>",
                _ when char.IsControl(c) => Escape($"\\u{(int)c:x4}"),
                _ => Escape(c.ToString()),
            });
        return b.ToString();
    }

    public static void WriteHtml(string path, IReadOnlyList<string> tokens, IReadOnlyList<double> relevance, HeatmapInfo? info = null) =>
        AtomicFile.WriteAllText(path, Html(tokens, relevance, info));

    // ───────────────────────────── image layout ─────────────────────────────

    private const float FontSize = 15, PadX = 5, BoxHeight = 24, Gap = 4, Margin = 14, LineHeight = 19;

    /// <summary>Where each token's box lies in the SVG / PNG image of <see cref="Svg"/> and <see cref="Png"/>, and the
    /// image's size: boxes flow left to right in rows of at most <paramref name="width"/> pixels.</summary>
    public static TokenLayout Layout(IReadOnlyList<string> tokens, HeatmapInfo? info = null, int width = 800)
    {
        info ??= new HeatmapInfo();
        using var font = Fonts.Create(FontSize);
        var boxes = new List<TokenBox>(tokens.Count);
        float x = Margin, top = Margin + info.HeaderLines().Count() * LineHeight + (info.Title is null ? 0 : LineHeight + 4) + 4;
        float y = top;
        for (int i = 0; i < tokens.Count; i++)
        {
            string text = TokenText.Visible(tokens[i].Trim(' ') is { Length: > 0 } trimmed ? trimmed : tokens[i]);
            float w = Fonts.Measure(font, text, FontSize) + 2 * PadX;
            if (x + w > width - Margin && x > Margin)
            {
                x = Margin;
                y += BoxHeight + Gap;
            }
            boxes.Add(new TokenBox(i, x, y, w, BoxHeight));
            x += w + Gap;
        }
        float bottom = (tokens.Count == 0 ? y : y + BoxHeight) + Gap + 10 + LegendHeight + Margin;
        return new TokenLayout(boxes, width, (int)Math.Ceiling(bottom));
    }

    private const float LegendHeight = 30;

    private static string BoxText(string token) => TokenText.Visible(token.Trim(' ') is { Length: > 0 } trimmed ? trimmed : token);

    // ───────────────────────────── SVG ─────────────────────────────

    /// <summary>An SVG image: one <c>&lt;rect&gt;</c> per token (in order, with its value in a <c>&lt;title&gt;</c>),
    /// the header as text and a colour bar (a gradient-filled path, so the rects are exactly the tokens).</summary>
    public static string Svg(IReadOnlyList<string> tokens, IReadOnlyList<double> relevance, HeatmapInfo? info = null, int width = 800)
    {
        TokenText.Check(tokens, relevance);
        info ??= new HeatmapInfo();
        double scale = ColorMaps.Scale(relevance);
        var (boxes, w, height) = Layout(tokens, info, width);
        var s = new StringBuilder();
        s.Append($"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{height}\" viewBox=\"0 0 {w} {height}\" font-family=\"DejaVu Sans, sans-serif\" font-size=\"{F(FontSize)}\">\n");
        s.Append("<defs><linearGradient id=\"colourbar\" x1=\"0\" x2=\"1\" y1=\"0\" y2=\"0\">");
        for (int k = 0; k <= 8; k++)
            s.Append($"<stop offset=\"{F(k / 8f)}\" stop-color=\"{ColorMaps.Apply(info.ColorMap, k / 4.0 - 1).Hex}\"/>");
        s.Append("</linearGradient></defs>\n");
        s.Append($"<path d=\"M0 0H{w}V{height}H0Z\" fill=\"#ffffff\"/>\n");
        float y = Margin;
        if (info.Title is { } title)
        {
            s.Append($"<text x=\"{F(Margin)}\" y=\"{F(y + 15)}\" font-size=\"17\" font-weight=\"bold\">{Escape(title)}</text>\n");
            y += LineHeight + 4;
        }
        foreach (var line in info.HeaderLines())
        {
            s.Append($"<text x=\"{F(Margin)}\" y=\"{F(y + 14)}\" fill=\"#444\">{Escape(line)}</text>\n");
            y += LineHeight;
        }
        foreach (var b in boxes)
        {
            var colour = ColorMaps.Apply(info.ColorMap, ColorMaps.Normalize(relevance[b.Index], scale));
            s.Append($"<g><title>{Escape($"#{b.Index} {Quoted(tokens[b.Index])}: R = {Num(relevance[b.Index])}")}</title>");
            s.Append($"<rect x=\"{F(b.X)}\" y=\"{F(b.Y)}\" width=\"{F(b.Width)}\" height=\"{F(b.Height)}\" rx=\"3\" fill=\"{colour.Hex}\" stroke=\"#00000018\"/>");
            s.Append($"<text x=\"{F(b.X + PadX)}\" y=\"{F(b.Y + 17)}\" fill=\"{colour.Contrasting.Hex}\" xml:space=\"preserve\">{Escape(BoxText(tokens[b.Index]))}</text></g>\n");
        }
        float ly = height - Margin - LegendHeight + 6;
        s.Append($"<text x=\"{F(Margin)}\" y=\"{F(ly + 12)}\" fill=\"#444\">{Escape(Num(-scale))}</text>\n");
        s.Append($"<path d=\"M{F(Margin + 90)} {F(ly)}h240v14h-240Z\" fill=\"url(#colourbar)\" stroke=\"#999\"/>\n");
        s.Append($"<text x=\"{F(Margin + 340)}\" y=\"{F(ly + 12)}\" fill=\"#444\">{Escape("+" + Num(scale))} ({ColorMaps.Name(info.ColorMap)})</text>\n");
        s.Append("</svg>\n");
        return s.ToString();
    }

    public static void WriteSvg(string path, IReadOnlyList<string> tokens, IReadOnlyList<double> relevance, HeatmapInfo? info = null) =>
        AtomicFile.WriteAllText(path, Svg(tokens, relevance, info));

    // ───────────────────────────── PNG ─────────────────────────────

    /// <summary>A PNG image of the same layout as <see cref="Svg"/> (see <see cref="Layout"/>), drawn with SkiaSharp.</summary>
    public static byte[] Png(IReadOnlyList<string> tokens, IReadOnlyList<double> relevance, HeatmapInfo? info = null, int width = 800)
    {
        TokenText.Check(tokens, relevance);
        info ??= new HeatmapInfo();
        double scale = ColorMaps.Scale(relevance);
        var (boxes, w, height) = Layout(tokens, info, width);
        using var surface = SKSurface.Create(new SKImageInfo(w, height, SKColorType.Rgba8888, SKAlphaType.Premul));
        var canvas = surface.Canvas;
        canvas.Clear(SKColors.White);
        using var font = Fonts.Create(FontSize);
        using var bold = Fonts.Create(17);
        using var paint = new SKPaint { IsAntialias = true };
        float y = Margin;
        if (info.Title is { } title)
        {
            paint.Color = SKColors.Black;
            canvas.DrawText(title, Margin, y + 15, SKTextAlign.Left, bold, paint);
            y += LineHeight + 4;
        }
        paint.Color = new SKColor(0x44, 0x44, 0x44);
        foreach (var line in info.HeaderLines())
        {
            canvas.DrawText(line, Margin, y + 14, SKTextAlign.Left, font, paint);
            y += LineHeight;
        }
        foreach (var b in boxes)
        {
            var colour = ColorMaps.Apply(info.ColorMap, ColorMaps.Normalize(relevance[b.Index], scale));
            // boxes are drawn without anti-aliasing so that their fill is exactly the colour map's colour
            using var fill = new SKPaint { Color = Sk(colour), IsAntialias = false, Style = SKPaintStyle.Fill };
            canvas.DrawRect(b.X, b.Y, b.Width, b.Height, fill);
            paint.Color = Sk(colour.Contrasting);
            canvas.DrawText(BoxText(tokens[b.Index]), b.X + PadX, b.Y + 17, SKTextAlign.Left, font, paint);
        }
        float ly = height - Margin - LegendHeight + 6;
        paint.Color = new SKColor(0x44, 0x44, 0x44);
        canvas.DrawText(Num(-scale), Margin, ly + 12, SKTextAlign.Left, font, paint);
        using (var bar = new SKPaint
        {
            Shader = SKShader.CreateLinearGradient(new SKPoint(Margin + 90, 0), new SKPoint(Margin + 330, 0),
                Enumerable.Range(0, 9).Select(k => Sk(ColorMaps.Apply(info.ColorMap, k / 4.0 - 1))).ToArray(), SKShaderTileMode.Clamp),
        })
            canvas.DrawRect(Margin + 90, ly, 240, 14, bar);
        canvas.DrawText($"+{Num(scale)} ({ColorMaps.Name(info.ColorMap)})", Margin + 340, ly + 12, SKTextAlign.Left, font, paint);
        using var image = surface.Snapshot();
        using var data = image.Encode(SKEncodedImageFormat.Png, 100);
        return data.ToArray();
    }

    public static void WritePng(string path, IReadOnlyList<string> tokens, IReadOnlyList<double> relevance, HeatmapInfo? info = null) =>
        AtomicFile.WriteAllBytes(path, Png(tokens, relevance, info));

    // ───────────────────────────── LaTeX ─────────────────────────────

    /// <summary>A LaTeX standalone document: one <c>\colorbox[RGB]{r,g,b}{\strut token}</c> per token in the same
    /// colour map, special characters escaped; compiles with pdflatex, lualatex or tectonic.</summary>
    public static string Tex(IReadOnlyList<string> tokens, IReadOnlyList<double> relevance, HeatmapInfo? info = null)
    {
        TokenText.Check(tokens, relevance);
        info ??= new HeatmapInfo();
        double scale = ColorMaps.Scale(relevance);
        var t = new StringBuilder();
        t.Append("% token relevance heatmap written by Lxt\n");
        t.Append("\\documentclass[border=4pt,varwidth=160mm]{standalone}\n");
        t.Append("\\usepackage[T1]{fontenc}\n\\usepackage[utf8]{inputenc}\n\\usepackage{xcolor}\n\\setlength{\\fboxsep}{1.5pt}\n");
        t.Append("\\begin{document}\n");
        if (info.Title is { } title) t.Append($"\\textbf{{{TexEscape(title)}}}\\par\\smallskip\n");
        foreach (var line in info.HeaderLines()) t.Append($"{{\\small {TexEscape(line)}}}\\par\n");
        t.Append("\\smallskip\\noindent\n");
        for (int i = 0; i < tokens.Count; i++)
        {
            var c = ColorMaps.Apply(info.ColorMap, ColorMaps.Normalize(relevance[i], scale));
            string text = TexEscape(BoxText(tokens[i]));
            string fg = c.Contrasting.R == 255 ? "\\color{white}" : "";
            t.Append($"\\colorbox[RGB]{{{c.R},{c.G},{c.B}}}{{\\strut{{}}{fg}{text}}}\\allowbreak\n");
        }
        t.Append($"\\par\\medskip{{\\small colour scale: {TexEscape(ColorMaps.Name(info.ColorMap))}, $\\pm${TexEscape(Num(scale))} (max $|R|$)}}\n");
        t.Append("\\end{document}\n");
        return t.ToString();
    }

    public static void WriteTex(string path, IReadOnlyList<string> tokens, IReadOnlyList<double> relevance, HeatmapInfo? info = null) =>
        AtomicFile.WriteAllText(path, Tex(tokens, relevance, info));

    /// <summary>Compiles <see cref="Tex"/> to <paramref name="path"/> with the first LaTeX engine found (see
    /// <see cref="Latex.FindEngine"/>); raises <see cref="LatexException"/> when there is none or it fails.</summary>
    public static void WritePdf(string path, IReadOnlyList<string> tokens, IReadOnlyList<double> relevance, HeatmapInfo? info = null,
        CancellationToken cancellation = default) =>
        Latex.CompileTo(path, Tex(tokens, relevance, info), cancellation);

    /// <summary>Text with LaTeX's special characters escaped (<c># $ % &amp; _ { } ~ ^ \</c>, and <c>&lt; &gt; |</c>
    /// which T1 fonts print wrongly in text mode otherwise); ␣ ↵ ⇥ become their LaTeX forms.</summary>
    public static string TexEscape(string text)
    {
        var b = new StringBuilder(text.Length);
        foreach (var c in text)
            b.Append(c switch
            {
                '\\' => "\\textbackslash{}",
                '{' => "\\{",
                '}' => "\\}",
                '#' => "\\#",
                '$' => "\\$",
                '%' => "\\%",
                '&' => "\\&",
                '_' => "\\_",
                '~' => "\\textasciitilde{}",
                '^' => "\\textasciicircum{}",
                '<' => "\\textless{}",
                '>' => "\\textgreater{}",
                '|' => "\\textbar{}",
                '␣' => "\\textvisiblespace{}",
                '↵' => "\\textbackslash{}n",
                '⇥' => "\\textbackslash{}t",
                '\n' or '\r' or '\t' => " ",
                _ => c.ToString(),
            });
        return b.ToString();
    }

    // ───────────────────────────── helpers ─────────────────────────────

    internal static SKColor Sk(Rgb c) => new(c.R, c.G, c.B);

    internal static string Num(double v) =>
        !double.IsFinite(v) ? v.ToString(Invariant) : v.ToString(Math.Abs(v) is > 0 and < 1e-3 ? "0.###e+0" : "0.####", Invariant);

    private static string F(float v) => v.ToString("0.##", Invariant);

    internal static string Quoted(string token) => "'" + TokenText.Visible(token) + "'";

    internal static string Escape(string s) => WebUtility.HtmlEncode(s);
}
