using System.Text.Json;

namespace Lxt.Import;

/// <summary>
/// A model checkpoint in safetensors form: a single <c>model.safetensors</c> or shards listed by
/// <c>model.safetensors.index.json</c> (<c>{"weight_map": {"tensor": "shard file", ...}}</c>).
/// Exposes the union of the tensors of all shards.
/// </summary>
public sealed class SafetensorsCheckpoint : IDisposable
{
    public const string SingleFileName = "model.safetensors";
    public const string IndexFileName = "model.safetensors.index.json";

    private readonly List<SafetensorsFile> _files;
    private readonly Dictionary<string, SafetensorsFile> _owner;
    private readonly List<string> _names;
    private int _disposed;

    private SafetensorsCheckpoint(string path, string? indexPath, List<SafetensorsFile> files, Dictionary<string, SafetensorsFile> owner, List<string> names, IReadOnlyDictionary<string, string> metadata)
    {
        Path = path;
        IndexPath = indexPath;
        _files = files;
        _owner = owner;
        _names = names;
        Metadata = metadata;
    }

    /// <summary>Whether <paramref name="folder"/> holds a checkpoint <see cref="Open"/> opens (a single file or an index).</summary>
    public static bool IsIn(string folder) =>
        File.Exists(System.IO.Path.Combine(folder, SingleFileName)) || File.Exists(System.IO.Path.Combine(folder, IndexFileName));

    /// <summary>
    /// Opens a checkpoint. <paramref name="path"/> may be a folder (holding <c>model.safetensors</c> or, failing that,
    /// <c>model.safetensors.index.json</c>), a <c>*.safetensors</c> file, or a <c>*.index.json</c> file.
    /// For a sharded checkpoint it checks that every shard exists, that every tensor the index names is in the
    /// shard the index names, that the shards hold no tensor the index does not list, and that no tensor is in
    /// two shards; violations raise <see cref="SafetensorsCheckpointException"/>. A malformed shard raises
    /// <see cref="SafetensorsFormatException"/>. On failure every shard opened so far is disposed.
    /// </summary>
    public static SafetensorsCheckpoint Open(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        string full = System.IO.Path.GetFullPath(path);
        if (Directory.Exists(full))
        {
            string single = System.IO.Path.Combine(full, SingleFileName);
            string index = System.IO.Path.Combine(full, IndexFileName);
            if (File.Exists(single)) return OpenSingle(single);
            if (File.Exists(index)) return OpenSharded(index);
            throw new SafetensorsCheckpointException(
                $"Folder '{full}' holds no safetensors checkpoint: expected '{SingleFileName}' (single file) or '{IndexFileName}' (sharded).",
                full);
        }
        if (!File.Exists(full))
            throw new SafetensorsCheckpointException(
                $"Checkpoint '{full}' does not exist: expected a folder with '{SingleFileName}' or '{IndexFileName}', or one of those files.",
                full);
        return full.EndsWith(".json", StringComparison.OrdinalIgnoreCase) ? OpenSharded(full) : OpenSingle(full);
    }

    private static SafetensorsCheckpoint OpenSingle(string file)
    {
        var f = SafetensorsFile.Open(file);
        var owner = new Dictionary<string, SafetensorsFile>(StringComparer.Ordinal);
        var names = new List<string>();
        foreach (var t in f.TensorsInFileOrder)
        {
            owner.Add(t.Name, f);
            names.Add(t.Name);
        }
        return new SafetensorsCheckpoint(file, null, new List<SafetensorsFile> { f }, owner, names, f.Metadata);
    }

    private static SafetensorsCheckpoint OpenSharded(string indexPath)
    {
        var (weightMap, metadata) = ReadIndex(indexPath);
        string folder = System.IO.Path.GetDirectoryName(indexPath)!;

        // Shards in order of first appearance in the index.
        var placed = weightMap.ToDictionary(kv => kv.Key, kv => kv.Value, StringComparer.Ordinal);
        var shardOrder = new List<string>();
        var expected = new Dictionary<string, HashSet<string>>(StringComparer.Ordinal);
        foreach (var (tensor, shard) in weightMap)
        {
            if (!expected.TryGetValue(shard, out var set))
            {
                set = new HashSet<string>(StringComparer.Ordinal);
                expected.Add(shard, set);
                shardOrder.Add(shard);
            }
            set.Add(tensor);
        }

        var files = new List<SafetensorsFile>();
        try
        {
            var owner = new Dictionary<string, SafetensorsFile>(StringComparer.Ordinal);
            var names = new List<string>();
            foreach (var shard in shardOrder)
            {
                string shardPath = System.IO.Path.Combine(folder, shard);
                if (!File.Exists(shardPath))
                    throw new SafetensorsCheckpointException(
                        $"Shard '{shardPath}' listed in index '{indexPath}' does not exist.", shardPath);
                var f = SafetensorsFile.Open(shardPath);
                files.Add(f);

                foreach (var t in f.TensorsInFileOrder)
                {
                    if (owner.TryGetValue(t.Name, out var other))
                        throw new SafetensorsCheckpointException(
                            $"Tensor '{t.Name}' is stored in two shards, '{other.Path}' and '{f.Path}' (index '{indexPath}').",
                            f.Path, t.Name);
                    if (!expected[shard].Contains(t.Name))
                        throw new SafetensorsCheckpointException(
                            placed.TryGetValue(t.Name, out var listed)
                                ? $"Tensor '{t.Name}' is in shard '{f.Path}' but index '{indexPath}' places it in '{listed}'."
                                : $"Tensor '{t.Name}' is in shard '{f.Path}' but index '{indexPath}' does not list it.",
                            f.Path, t.Name);
                    owner.Add(t.Name, f);
                }
                foreach (var name in expected[shard])
                    if (!f.Contains(name))
                        throw new SafetensorsCheckpointException(
                            $"Index '{indexPath}' places tensor '{name}' in shard '{f.Path}', but that shard does not contain it.",
                            f.Path, name);
            }
            foreach (var (tensor, _) in weightMap) names.Add(tensor);
            return new SafetensorsCheckpoint(indexPath, indexPath, files, owner, names, metadata);
        }
        catch
        {
            foreach (var f in files) f.Dispose();
            throw;
        }
    }

    /// <summary>Reads the index: weight_map in file order (duplicates rejected) and "metadata" values rendered as text.</summary>
    private static (List<KeyValuePair<string, string>> Map, Dictionary<string, string> Metadata) ReadIndex(string indexPath)
    {
        byte[] bytes;
        try
        {
            bytes = File.ReadAllBytes(indexPath);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new SafetensorsCheckpointException($"Index '{indexPath}' cannot be read: {e.Message}", indexPath, null, e);
        }

        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(bytes, new JsonDocumentOptions { AllowTrailingCommas = false, CommentHandling = JsonCommentHandling.Disallow });
        }
        catch (JsonException e)
        {
            throw new SafetensorsCheckpointException($"Index '{indexPath}' is not valid JSON: {e.Message}", indexPath, null, e);
        }
        using (doc)
        {
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
                throw new SafetensorsCheckpointException($"Index '{indexPath}' must be a JSON object with a \"weight_map\".", indexPath);

            JsonElement? weightMap = null;
            var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
            var topKeys = new HashSet<string>(StringComparer.Ordinal);
            foreach (var prop in root.EnumerateObject())
            {
                if (!topKeys.Add(prop.Name))
                    throw new SafetensorsCheckpointException($"Index '{indexPath}' has the key \"{prop.Name}\" twice.", indexPath);
                if (prop.Name == "weight_map") weightMap = prop.Value;
                else if (prop.Name == "metadata" && prop.Value.ValueKind == JsonValueKind.Object)
                    foreach (var m in prop.Value.EnumerateObject())
                        metadata[m.Name] = m.Value.ValueKind == JsonValueKind.String ? m.Value.GetString()! : m.Value.GetRawText();
            }
            if (weightMap is null || weightMap.Value.ValueKind != JsonValueKind.Object)
                throw new SafetensorsCheckpointException(
                    $"Index '{indexPath}' has no \"weight_map\" object mapping tensor names to shard files.", indexPath);

            var map = new List<KeyValuePair<string, string>>();
            var seen = new HashSet<string>(StringComparer.Ordinal);
            foreach (var prop in weightMap.Value.EnumerateObject())
            {
                if (!seen.Add(prop.Name))
                    throw new SafetensorsCheckpointException(
                        $"Index '{indexPath}' lists tensor '{prop.Name}' twice in \"weight_map\".", indexPath, prop.Name);
                if (prop.Value.ValueKind != JsonValueKind.String)
                    throw new SafetensorsCheckpointException(
                        $"Index '{indexPath}': the shard of tensor '{prop.Name}' must be a file name string.", indexPath, prop.Name);
                string shard = prop.Value.GetString()!;
                if (shard.Length == 0 || shard != System.IO.Path.GetFileName(shard) || shard is "." or "..")
                    throw new SafetensorsCheckpointException(
                        $"Index '{indexPath}': shard '{shard}' of tensor '{prop.Name}' must be a plain file name in the index's folder.",
                        indexPath, prop.Name);
                map.Add(new(prop.Name, shard));
            }
            return (map, metadata);
        }
    }

    /// <summary>The checkpoint's file: the single safetensors file, or the index of a sharded one.</summary>
    public string Path { get; }

    /// <summary>The index file for a sharded checkpoint; null for a single file.</summary>
    public string? IndexPath { get; }

    /// <summary>The file's "__metadata__" (single file) or the index's "metadata" (sharded).</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    /// <summary>The opened shard files (one for a single-file checkpoint).</summary>
    public IReadOnlyList<SafetensorsFile> Files { get { ThrowIfDisposed(); return _files; } }

    /// <summary>All tensor names (file order for a single file, index order for shards).</summary>
    public IReadOnlyList<string> Names { get { ThrowIfDisposed(); return _names; } }

    public bool Contains(string name)
    {
        ThrowIfDisposed();
        return _owner.ContainsKey(name);
    }

    public bool TryGetInfo(string name, out TensorInfo info)
    {
        ThrowIfDisposed();
        if (_owner.TryGetValue(name, out var f)) return f.TryGetInfo(name, out info);
        info = null!;
        return false;
    }

    public TensorInfo GetInfo(string name) => FileOf(name).GetInfo(name);

    /// <summary>The shard that holds <paramref name="name"/>; <see cref="TensorNotFoundException"/> if none does.</summary>
    public SafetensorsFile FileOf(string name)
    {
        ThrowIfDisposed();
        ArgumentNullException.ThrowIfNull(name);
        if (!_owner.TryGetValue(name, out var f)) throw new TensorNotFoundException(name, Path);
        return f;
    }

    public IReadOnlyList<long> Shape(string name) => GetInfo(name).Shape;
    public TensorDType DType(string name) => GetInfo(name).DType;
    public float[] ReadFloat32(string name) => FileOf(name).ReadFloat32(name);
    public void ReadFloat32(string name, Span<float> destination) => FileOf(name).ReadFloat32(name, destination);
    public double[] ReadFloat64(string name) => FileOf(name).ReadFloat64(name);
    public void ReadFloat64(string name, Span<double> destination) => FileOf(name).ReadFloat64(name, destination);
    public long[] ReadInt64(string name) => FileOf(name).ReadInt64(name);
    public ReadOnlySpan<byte> GetBytes(string name) => FileOf(name).GetBytes(name);

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        foreach (var f in _files) f.Dispose();
    }

    private void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
}
