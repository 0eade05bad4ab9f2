// PixelInput: pixel tensors [C, H, W] for image models, from a JSON array or from a PNG / JPEG file (SkiaSharp),
// resized to the model's image size and normalised like the model's image processor.
using System.Text.Json;
using SkiaSharp;

namespace Lxt.Cli;

/// <summary>An input file given to a command cannot be read or does not fit the model.</summary>
public sealed class InputException(string message) : Lxt.Graph.LxtException(message);

/// <summary>Per-channel normalisation: (value / 255 − mean) / std.</summary>
public sealed record Normalization(double[] Mean, double[] Std)
{
    /// <summary>ImageNet's mean and std, which torchvision and Hugging Face ViT processors use by default.</summary>
    public static Normalization ImageNet { get; } = new([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]);

    /// <summary>The image_mean / image_std of the folder's preprocessor_config.json, else ImageNet's.</summary>
    public static Normalization For(string modelDir)
    {
        var path = Path.Combine(modelDir, "preprocessor_config.json");
        if (!File.Exists(path)) return ImageNet;
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllBytes(path));
            var root = doc.RootElement;
            if (root.TryGetProperty("do_normalize", out var n) && n.ValueKind == JsonValueKind.False)
                return new Normalization([0, 0, 0], [1, 1, 1]);
            return new Normalization(
                root.TryGetProperty("image_mean", out var m) ? Triple(m, path, "image_mean") : ImageNet.Mean,
                root.TryGetProperty("image_std", out var s) ? Triple(s, path, "image_std") : ImageNet.Std);
        }
        catch (JsonException e) { throw new InputException($"{path}: not valid JSON ({e.Message})"); }
    }

    private static double[] Triple(JsonElement e, string path, string key)
    {
        if (e.ValueKind == JsonValueKind.Number) return [e.GetDouble(), e.GetDouble(), e.GetDouble()];
        if (e.ValueKind == JsonValueKind.Array && e.GetArrayLength() == 3 && e.EnumerateArray().All(x => x.ValueKind == JsonValueKind.Number))
            return e.EnumerateArray().Select(x => x.GetDouble()).ToArray();
        throw new InputException($"{path}: '{key}' should be a number or three numbers, found {e}");
    }
}

public static class PixelInput
{
    /// <summary>Reads a JSON [C][H][W] array of numbers, bare or under the key "image", and checks it against
    /// <paramref name="shape"/> [C, H, W].</summary>
    public static float[] ReadJson(string path, IReadOnlyList<int> shape)
    {
        JsonDocument doc;
        try { doc = JsonDocument.Parse(File.ReadAllBytes(path)); }
        catch (JsonException e) { throw new InputException($"{path}: not valid JSON ({e.Message})"); }
        using (doc) return FromJson(doc.RootElement, path, shape);
    }

    /// <summary>Pixels from a JSON [C][H][W] array, or an object holding it under "image", checked against
    /// <paramref name="shape"/>; <paramref name="source"/> names it in errors (a file, or a file and line).</summary>
    public static float[] FromJson(JsonElement root, string source, IReadOnlyList<int> shape)
    {
        if (root.ValueKind == JsonValueKind.Object)
            root = root.TryGetProperty("image", out var image) ? image
                : throw new InputException($"{source}: a JSON object needs the pixels under the key \"image\"");
        var values = new List<float>();
        var found = new List<int>();
        Flatten(root, 0, found, values, source);
        if (found.Count != 3 || !found.SequenceEqual(shape))
            throw new InputException($"{source}: the pixels have shape [{string.Join(", ", found)}], the model takes [{string.Join(", ", shape)}] (channels, height, width)");
        return values.ToArray();
    }

    // depth-first, checking that the nesting is rectangular: dims[d] is fixed by the first array met at depth d
    private static void Flatten(JsonElement e, int depth, List<int> dims, List<float> values, string path)
    {
        if (e.ValueKind == JsonValueKind.Number)
        {
            if (depth != dims.Count) throw new InputException($"{path}: the pixel array is not rectangular (a number at depth {depth})");
            double v = e.GetDouble();
            if (!double.IsFinite(v)) throw new InputException($"{path}: pixel value {v} is not finite");
            values.Add((float)v);
            return;
        }
        if (e.ValueKind != JsonValueKind.Array) throw new InputException($"{path}: the pixels must be numbers in nested arrays, found {e.ValueKind}");
        int length = e.GetArrayLength();
        if (depth == dims.Count && values.Count == 0) dims.Add(length);
        else if (depth >= dims.Count || dims[depth] != length)
            throw new InputException($"{path}: the pixel array is not rectangular (an array of {length} at depth {depth})");
        foreach (var item in e.EnumerateArray()) Flatten(item, depth + 1, dims, values, path);
    }

    /// <summary>Decodes a PNG / JPEG (or another format SkiaSharp reads), resizes it to [H, W] of
    /// <paramref name="shape"/> (bilinear) and normalises each RGB channel.</summary>
    public static float[] ReadImage(string path, IReadOnlyList<int> shape, Normalization normalization)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"image '{path}' does not exist", path);
        int channels = shape[0], height = shape[1], width = shape[2];
        if (channels != 3) throw new InputException($"the model takes {channels} channels; images are read as RGB (3)");
        using var decoded = SKBitmap.Decode(path) ?? throw new InputException($"{path}: not an image SkiaSharp can decode (PNG, JPEG, ...)");
        var info = new SKImageInfo(width, height, SKColorType.Rgba8888, SKAlphaType.Unpremul);
        using var resized = decoded.Resize(info, new SKSamplingOptions(SKFilterMode.Linear, SKMipmapMode.None))
                            ?? throw new InputException($"{path}: could not resize the image to {width}×{height}");
        var bytes = resized.GetPixelSpan();
        int stride = resized.RowBytes;
        var pixels = new float[channels * height * width];
        for (int y = 0; y < height; y++)
            for (int x = 0; x < width; x++)
                for (int c = 0; c < 3; c++)
                {
                    double v = bytes[y * stride + x * 4 + c] / 255.0;
                    pixels[(c * height + y) * width + x] = (float)((v - normalization.Mean[c]) / normalization.Std[c]);
                }
        return pixels;
    }
}
