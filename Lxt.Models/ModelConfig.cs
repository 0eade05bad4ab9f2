// ModelConfig: typed reading of a config.json with errors that name the file and the key.
using System.Text.Json;
using Lxt.Graph;

namespace Lxt.Models;

/// <summary>A config.json (or the same data from elsewhere) that is missing a key or holds a wrong value.</summary>
public sealed class ModelConfigException(string message) : LxtException(message);

/// <summary>Read-only access to a model's config.json; every failure names the file and the key.</summary>
public sealed class ModelConfig
{
    private readonly JsonElement _root;

    public ModelConfig(JsonElement root, string source)
    {
        if (root.ValueKind != JsonValueKind.Object) throw new ModelConfigException($"{source}: the config is not a JSON object");
        _root = root;
        Source = source;
    }

    /// <summary>Where the config came from (a path), for messages.</summary>
    public string Source { get; }

    public static ModelConfig Load(string path)
    {
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllBytes(path));
            return new ModelConfig(doc.RootElement.Clone(), path);
        }
        catch (JsonException e) { throw new ModelConfigException($"{path}: not valid JSON ({e.Message})"); }
    }

    public static ModelConfig Parse(string json, string source = "config") =>
        new(JsonDocument.Parse(json).RootElement.Clone(), source);

    public bool Has(string key) => _root.TryGetProperty(key, out var v) && v.ValueKind != JsonValueKind.Null;

    public JsonElement? Element(string key) => _root.TryGetProperty(key, out var v) && v.ValueKind != JsonValueKind.Null ? v : null;

    public string? Architecture =>
        _root.TryGetProperty("architectures", out var a) && a.ValueKind == JsonValueKind.Array && a.GetArrayLength() > 0
            ? a[0].GetString() : null;

    public string? ModelType => Has("model_type") ? String("model_type") : null;

    public int Int(string key) => Get(key, v => v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out var i) ? i : (int?)null, "an integer");
    public int Int(string key, int fallback) => Has(key) ? Int(key) : fallback;
    public double Double(string key) => Get(key, v => v.ValueKind == JsonValueKind.Number ? v.GetDouble() : (double?)null, "a number");
    public double Double(string key, double fallback) => Has(key) ? Double(key) : fallback;
    public bool Bool(string key, bool fallback) => Has(key) ? Get(key, v => v.ValueKind is JsonValueKind.True or JsonValueKind.False ? v.GetBoolean() : (bool?)null, "true or false") : fallback;
    public string String(string key) => Get(key, v => v.ValueKind == JsonValueKind.String ? v.GetString() : null, "a string");
    public string String(string key, string fallback) => Has(key) ? String(key) : fallback;

    /// <summary>A nested object as a config of its own (rope_parameters, text_config, ...).</summary>
    public ModelConfig? Section(string key) => Element(key) is { ValueKind: JsonValueKind.Object } e ? new ModelConfig(e, $"{Source}:{key}") : null;

    public IReadOnlyList<string> Strings(string key) =>
        Element(key) is { ValueKind: JsonValueKind.Array } a ? a.EnumerateArray().Select(x => x.GetString() ?? "").ToArray() : Array.Empty<string>();

    private T Get<T>(string key, Func<JsonElement, T?> read, string what) where T : struct
    {
        if (!_root.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null)
            throw new ModelConfigException($"{Source}: missing key '{key}'");
        return read(v) ?? throw new ModelConfigException($"{Source}: '{key}' should be {what}, found {v}");
    }

    private string Get(string key, Func<JsonElement, string?> read, string what)
    {
        if (!_root.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null)
            throw new ModelConfigException($"{Source}: missing key '{key}'");
        return read(v) ?? throw new ModelConfigException($"{Source}: '{key}' should be {what}, found {v}");
    }
}
