// DemoModel: the demo checkpoint folder (config.json, model.safetensors, tokenizer.json) — where it is, what it holds,
// and how it is written.
using System.Diagnostics.CodeAnalysis;
using System.Text.Json;
using System.Text.Json.Nodes;
using Lxt.Import;

namespace Lxt.Demo;

/// <summary>The size of the demo's Llama-architecture decoder.</summary>
public sealed record DemoArchitecture
{
    public int Hidden { get; init; } = 32;
    public int Layers { get; init; } = 2;
    public int Heads { get; init; } = 4;
    public int Intermediate { get; init; } = 64;
    public double RopeTheta { get; init; } = 10000;
    public double RmsNormEps { get; init; } = 1e-6;
}

/// <summary>
/// The demo model: a small Llama decoder trained on <see cref="DemoTask"/>, committed at <c>models/demo</c> in the
/// repository. It is a plain Hugging Face folder, so <see cref="PretrainedModel.Open"/>, every architecture path and
/// every rule set apply to it unchanged.
/// </summary>
public static class DemoModel
{
    /// <summary>Overrides where <see cref="Locate"/> looks: a folder holding the demo model.</summary>
    public const string EnvironmentVariable = "LXT_DEMO_MODEL";

    /// <summary>The folder below the repository root.</summary>
    public static readonly string RelativePath = Path.Combine("models", "demo");

    /// <summary>The demo model folder: <c>$LXT_DEMO_MODEL</c> if set, else the first <c>models/demo</c> holding a
    /// config.json in a folder at or above the application's base directory.</summary>
    public static string Locate() => TryLocate(out var folder) ? folder : throw new LxtImportException(
        $"the demo model was not found: no {RelativePath} with a config.json above '{AppContext.BaseDirectory}'. " +
        $"Set {EnvironmentVariable} to its folder, or create it with `dotnet run -c Release --project examples/TrainDemo`");

    public static bool TryLocate([NotNullWhen(true)] out string? folder)
    {
        folder = null;
        if (Environment.GetEnvironmentVariable(EnvironmentVariable) is { Length: > 0 } configured)
        {
            if (!File.Exists(Path.Combine(configured, "config.json")))
                throw new LxtImportException($"{EnvironmentVariable}='{configured}' is not a model folder (no config.json)");
            folder = Path.GetFullPath(configured);
            return true;
        }
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            var candidate = Path.Combine(dir.FullName, RelativePath);
            if (File.Exists(Path.Combine(candidate, "config.json")))
            {
                folder = candidate;
                return true;
            }
        }
        return false;
    }

    /// <summary>Opens the located demo model.</summary>
    public static PretrainedModel Open() => PretrainedModel.Open(Locate());

    /// <summary>The Hugging Face config.json of a demo decoder.</summary>
    public static string ConfigJson(DemoArchitecture architecture)
    {
        var a = architecture;
        if (a.Hidden % a.Heads != 0) throw new ArgumentException($"hidden size {a.Hidden} is not a multiple of {a.Heads} heads", nameof(architecture));
        var config = new JsonObject
        {
            ["architectures"] = new JsonArray("LlamaForCausalLM"),
            ["model_type"] = "llama",
            ["vocab_size"] = DemoTask.VocabularySize,
            ["hidden_size"] = a.Hidden,
            ["intermediate_size"] = a.Intermediate,
            ["num_hidden_layers"] = a.Layers,
            ["num_attention_heads"] = a.Heads,
            ["num_key_value_heads"] = a.Heads,
            ["head_dim"] = a.Hidden / a.Heads,
            ["hidden_act"] = "silu",
            ["max_position_embeddings"] = 64,
            ["rms_norm_eps"] = a.RmsNormEps,
            ["rope_theta"] = a.RopeTheta,
            ["attention_bias"] = false,
            ["mlp_bias"] = false,
            ["tie_word_embeddings"] = false,
            ["torch_dtype"] = "float32",
        };
        return config.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n";
    }

    /// <summary>A word-level tokenizer.json over <see cref="DemoTask.Vocabulary"/>: lower-cased text split at whitespace,
    /// unknown words mapped to <c>&lt;unk&gt;</c>.</summary>
    public static string TokenizerJson()
    {
        var vocab = new JsonObject();
        for (int i = 0; i < DemoTask.Vocabulary.Count; i++) vocab[DemoTask.Vocabulary[i]] = i;
        var tokenizer = new JsonObject
        {
            ["version"] = "1.0",
            ["truncation"] = null,
            ["padding"] = null,
            ["added_tokens"] = new JsonArray(new JsonObject
            {
                ["id"] = 0, ["content"] = DemoTask.UnknownToken, ["single_word"] = false, ["lstrip"] = false,
                ["rstrip"] = false, ["normalized"] = false, ["special"] = true,
            }),
            ["normalizer"] = new JsonObject { ["type"] = "Lowercase" },
            ["pre_tokenizer"] = new JsonObject { ["type"] = "WhitespaceSplit" },
            ["post_processor"] = null,
            ["decoder"] = null,
            ["model"] = new JsonObject { ["type"] = "WordLevel", ["vocab"] = vocab, ["unk_token"] = DemoTask.UnknownToken },
        };
        return tokenizer.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n";
    }

    /// <summary>
    /// Writes a demo model folder: config.json, model.safetensors (float32, tensors in name order), tokenizer.json and an
    /// optional README.md. The folder is assembled beside <paramref name="folder"/> and then moved into place, so
    /// readers see the old model or the new one, never a half-written one.
    /// </summary>
    public static void Save(string folder, DemoArchitecture architecture, IWeightSource weights,
        IReadOnlyDictionary<string, IReadOnlyList<int>> shapes, string? readme = null)
    {
        ArgumentNullException.ThrowIfNull(weights);
        ArgumentNullException.ThrowIfNull(shapes);
        var full = Path.GetFullPath(folder.TrimEnd(Path.DirectorySeparatorChar, Path.AltDirectorySeparatorChar));
        var parent = Path.GetDirectoryName(full) ?? throw new ArgumentException($"'{folder}' has no parent folder", nameof(folder));
        Directory.CreateDirectory(parent);
        var name = Path.GetFileName(full);
        var temp = Path.Combine(parent, $".{name}.{Guid.NewGuid():N}.tmp");
        var old = Path.Combine(parent, $".{name}.{Guid.NewGuid():N}.old");
        Directory.CreateDirectory(temp);
        try
        {
            File.WriteAllText(Path.Combine(temp, "config.json"), ConfigJson(architecture));
            File.WriteAllText(Path.Combine(temp, "tokenizer.json"), TokenizerJson());
            if (readme is not null) File.WriteAllText(Path.Combine(temp, "README.md"), readme);
            var tensors = shapes.OrderBy(kv => kv.Key, StringComparer.Ordinal).Select(kv =>
                (kv.Key, TensorDType.F32, kv.Value.Select(d => (long)d).ToArray(), weights.Read(kv.Key, kv.Value)));
            SafetensorsWriter.Write(Path.Combine(temp, "model.safetensors"), tensors,
                new Dictionary<string, string> { ["format"] = "pt" });
            if (Directory.Exists(full))
            {
                Directory.Move(full, old);
                Directory.Move(temp, full);
                Directory.Delete(old, recursive: true);
            }
            else Directory.Move(temp, full);
        }
        catch
        {
            if (Directory.Exists(temp)) Directory.Delete(temp, recursive: true);
            if (Directory.Exists(old) && !Directory.Exists(full)) Directory.Move(old, full);
            throw;
        }
    }
}
