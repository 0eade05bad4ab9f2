// ColorMaps: diverging colour maps from signed, normalised relevance (−1 … 1, 0 = no relevance) to RGB.
namespace Lxt.Visualization;

/// <summary>An 8-bit RGB colour.</summary>
public readonly record struct Rgb(byte R, byte G, byte B)
{
    /// <summary>"#rrggbb".</summary>
    public string Hex => $"#{R:x2}{G:x2}{B:x2}";

    /// <summary>Relative luminance (Rec. 709 weights on the 8-bit values), 0 black … 1 white.</summary>
    public double Luminance => (0.2126 * R + 0.7152 * G + 0.0722 * B) / 255.0;

    /// <summary>Black or white, whichever reads better on this colour as a background.</summary>
    public Rgb Contrasting => Luminance > 0.45 ? new Rgb(0, 0, 0) : new Rgb(255, 255, 255);

    /// <summary>(1 − t)·this + t·other, per channel.</summary>
    public Rgb Mix(Rgb other, double t) => new(Lerp(R, other.R, t), Lerp(G, other.G, t), Lerp(B, other.B, t));

    private static byte Lerp(byte a, byte b, double t) => (byte)Math.Clamp(Math.Round(a + (b - a) * t), 0, 255);
}

/// <summary>The colour maps the renderers offer.</summary>
public enum ColorMap
{
    /// <summary>Blue (negative) – white (0) – red (positive), as matplotlib's and Zennit's "bwr".</summary>
    Bwr,
    /// <summary>Zennit's "coldnhot": cyan – blue (negative) – black (0) – red – yellow – white (positive).</summary>
    ColdNHot,
}

public static class ColorMaps
{
    /// <summary>The names <see cref="Parse"/> accepts (the command line's --colormap values).</summary>
    public static IReadOnlyList<string> Names { get; } = ["bwr", "coldnhot"];

    public static ColorMap Parse(string name) => name switch
    {
        "bwr" => ColorMap.Bwr,
        "coldnhot" => ColorMap.ColdNHot,
        _ => throw new ArgumentException($"unknown colour map '{name}' (known: {string.Join(", ", Names)})", nameof(name)),
    };

    public static string Name(ColorMap map) => map == ColorMap.Bwr ? "bwr" : "coldnhot";

    /// <summary>The colour of normalised relevance <paramref name="v"/> (clamped to −1 … 1; NaN counts as 0).</summary>
    public static Rgb Apply(ColorMap map, double v) => map == ColorMap.ColdNHot ? ColdNHot(v) : Bwr(v);

    /// <summary>bwr: −1 pure blue (0, 0, 255), 0 white, +1 pure red (255, 0, 0), linear in between.</summary>
    public static Rgb Bwr(double v)
    {
        v = Clamp(v);
        byte fade = (byte)Math.Round(255 * (1 - Math.Abs(v)));
        return v >= 0 ? new Rgb(255, fade, fade) : new Rgb(fade, fade, 255);
    }

    // Zennit's source '0ff,00f,80:000,f00,ff0,fff': anchors evenly spaced on each side of the black centre
    private static readonly Rgb[] Cold = [new(0, 0, 0), new(0, 0, 255), new(0, 255, 255)];
    private static readonly Rgb[] Hot = [new(0, 0, 0), new(255, 0, 0), new(255, 255, 0), new(255, 255, 255)];

    /// <summary>coldnhot: 0 black; negative runs black → blue (−½) → cyan (−1); positive black → red (+⅓) →
    /// yellow (+⅔) → white (+1). Brightness grows with |v| on both sides.</summary>
    public static Rgb ColdNHot(double v)
    {
        v = Clamp(v);
        var anchors = v >= 0 ? Hot : Cold;
        double position = Math.Abs(v) * (anchors.Length - 1);
        int i = Math.Min((int)position, anchors.Length - 2);
        return anchors[i].Mix(anchors[i + 1], position - i);
    }

    /// <summary>The scale that maps relevance to −1 … 1: the largest finite |value| (0 when there is none).</summary>
    public static double Scale(IEnumerable<double> values)
    {
        double max = 0;
        foreach (var v in values)
            if (double.IsFinite(v)) max = Math.Max(max, Math.Abs(v));
        return max;
    }

    /// <summary><paramref name="value"/> / <paramref name="scale"/>, clamped to −1 … 1; 0 when the scale is 0.</summary>
    public static double Normalize(double value, double scale) =>
        scale > 0 && double.IsFinite(value) ? Math.Clamp(value / scale, -1, 1) : 0;

    private static double Clamp(double v) => double.IsNaN(v) ? 0 : Math.Clamp(v, -1, 1);
}
