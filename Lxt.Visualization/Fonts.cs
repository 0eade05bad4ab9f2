// Fonts: the typeface the PNG renderers draw with. SkiaSharp's dependency-free native build has no font manager, so
// a common TrueType font is loaded from the usual folders; without one, text is drawn with Skia's default and widths
// are estimated so that the layout stays the same.
using SkiaSharp;

namespace Lxt.Visualization;

internal static class Fonts
{
    private static readonly string[] Candidates =
    [
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/TTF/DejaVuSans.ttf",
        "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
        "/System/Library/Fonts/Supplemental/Arial.ttf",
        "/Library/Fonts/Arial.ttf",
        @"C:\Windows\Fonts\arial.ttf",
    ];

    private static readonly Lazy<SKTypeface> Typeface = new(() =>
    {
        foreach (var path in Candidates)
            if (File.Exists(path) && SKTypeface.FromFile(path) is { } face) return face;
        return SKTypeface.Default;
    });

    public static SKFont Create(float size) => new(Typeface.Value, size);

    /// <summary>The advance width of <paramref name="text"/>; at least an estimate when the typeface has no glyphs.</summary>
    public static float Measure(SKFont font, string text, float size)
    {
        float measured = font.MeasureText(text);
        return measured > 0 ? measured : text.Length * size * 0.6f;
    }
}
