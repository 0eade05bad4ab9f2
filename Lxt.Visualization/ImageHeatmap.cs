// ImageHeatmap: per-pixel relevance as an image — alone, or upsampled and laid over the input picture — in a
// diverging colour map scaled by the largest |relevance|.
using SkiaSharp;

namespace Lxt.Visualization;

public static class ImageHeatmap
{
    /// <summary>How much of the colour map covers the picture where relevance is 0; it grows linearly to all of it at
    /// max |relevance|, so the most relevant pixel shows the colour map's extreme exactly.</summary>
    public const double MinimumOpacity = 0.35;

    /// <summary>
    /// A PNG of relevance <paramref name="relevance"/> (row-major <paramref name="height"/> × <paramref name="width"/>).
    /// Without <paramref name="background"/> it is the colour-mapped relevance at that size; with an encoded picture
    /// (PNG / JPEG) it has the picture's size: the relevance is bilinearly upsampled and laid over the picture in grey.
    /// </summary>
    public static byte[] Png(IReadOnlyList<double> relevance, int height, int width, ColorMap map = ColorMap.Bwr, byte[]? background = null)
    {
        ArgumentNullException.ThrowIfNull(relevance);
        if (height <= 0 || width <= 0 || relevance.Count != height * width)
            throw new ArgumentException($"{relevance.Count} relevance values do not fill {height}×{width} pixels");
        double scale = ColorMaps.Scale(relevance);
        SKBitmap? picture = null;
        if (background is not null)
            picture = SKBitmap.Decode(background) ?? throw new ArgumentException("the background is not an image SkiaSharp can decode");
        try
        {
            int outHeight = picture?.Height ?? height, outWidth = picture?.Width ?? width;
            var values = outHeight == height && outWidth == width ? relevance.ToArray() : Upsample(relevance, height, width, outHeight, outWidth);
            using var grey = picture is null ? null : picture.Copy(SKColorType.Rgba8888);
            using var bitmap = new SKBitmap(new SKImageInfo(outWidth, outHeight, SKColorType.Rgba8888, SKAlphaType.Unpremul));
            var pixels = bitmap.GetPixelSpan();
            var under = grey is null ? default : grey.GetPixelSpan();
            for (int y = 0; y < outHeight; y++)
                for (int x = 0; x < outWidth; x++)
                {
                    double v = ColorMaps.Normalize(values[y * outWidth + x], scale);
                    var colour = ColorMaps.Apply(map, v);
                    if (grey is not null)
                    {
                        int o = y * grey.RowBytes + x * 4;
                        byte l = (byte)Math.Round(new Rgb(under[o], under[o + 1], under[o + 2]).Luminance * 255);
                        colour = new Rgb(l, l, l).Mix(colour, MinimumOpacity + (1 - MinimumOpacity) * Math.Abs(v));
                    }
                    int p = y * bitmap.RowBytes + x * 4;
                    pixels[p] = colour.R;
                    pixels[p + 1] = colour.G;
                    pixels[p + 2] = colour.B;
                    pixels[p + 3] = 255;
                }
            using var data = bitmap.Encode(SKEncodedImageFormat.Png, 100);
            return data.ToArray();
        }
        finally
        {
            picture?.Dispose();
        }
    }

    public static void WritePng(string path, IReadOnlyList<double> relevance, int height, int width, ColorMap map = ColorMap.Bwr, byte[]? background = null) =>
        AtomicFile.WriteAllBytes(path, Png(relevance, height, width, map, background));

    /// <summary>Bilinear resampling of a row-major grid, pixel centres aligned (edge values repeated).</summary>
    public static double[] Upsample(IReadOnlyList<double> values, int height, int width, int outHeight, int outWidth)
    {
        var result = new double[outHeight * outWidth];
        for (int y = 0; y < outHeight; y++)
        {
            double sy = Math.Clamp((y + 0.5) * height / outHeight - 0.5, 0, height - 1);
            int y0 = (int)sy, y1 = Math.Min(y0 + 1, height - 1);
            double fy = sy - y0;
            for (int x = 0; x < outWidth; x++)
            {
                double sx = Math.Clamp((x + 0.5) * width / outWidth - 0.5, 0, width - 1);
                int x0 = (int)sx, x1 = Math.Min(x0 + 1, width - 1);
                double fx = sx - x0;
                double top = Finite(values[y0 * width + x0]) * (1 - fx) + Finite(values[y0 * width + x1]) * fx;
                double bottom = Finite(values[y1 * width + x0]) * (1 - fx) + Finite(values[y1 * width + x1]) * fx;
                result[y * outWidth + x] = top * (1 - fy) + bottom * fy;
            }
        }
        return result;
    }

    private static double Finite(double v) => double.IsFinite(v) ? v : 0;
}
