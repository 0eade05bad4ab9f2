using System.Text;

namespace Lxt.Import;

/// <summary>Base class of every error raised while importing model weights.</summary>
public class LxtImportException : Lxt.Graph.LxtException
{
    public LxtImportException(string message) : base(message) { }
    public LxtImportException(string message, Exception? innerException) : base(message, innerException) { }
}

/// <summary>
/// A safetensors file is malformed: its header or the layout of its data section breaks the format.
/// <see cref="FilePath"/>, <see cref="TensorName"/> and <see cref="Offset"/> locate the problem;
/// <see cref="Problem"/> is the bare description without the location.
/// </summary>
public sealed class SafetensorsFormatException : LxtImportException
{
    public SafetensorsFormatException(string problem, string filePath, string? tensorName = null, long? offset = null, Exception? innerException = null)
        : base(Compose(problem, filePath, tensorName, offset), innerException)
    {
        Problem = problem;
        FilePath = filePath;
        TensorName = tensorName;
        Offset = offset;
    }

    /// <summary>The file that is malformed (or the display name given to an in-memory buffer).</summary>
    public string FilePath { get; }

    /// <summary>The tensor whose header entry or data is at fault, when the problem concerns one tensor.</summary>
    public string? TensorName { get; }

    /// <summary>Byte offset from the start of the file where the problem was found, when known.</summary>
    public long? Offset { get; }

    /// <summary>The description of the problem, without file, tensor and offset.</summary>
    public string Problem { get; }

    private static string Compose(string problem, string filePath, string? tensorName, long? offset)
    {
        var sb = new StringBuilder();
        sb.Append("Invalid safetensors file '").Append(filePath).Append('\'');
        if (tensorName is not null) sb.Append(", tensor '").Append(tensorName).Append('\'');
        if (offset is not null) sb.Append(", at byte offset ").Append(offset.Value);
        sb.Append(": ").Append(problem);
        return sb.ToString();
    }
}

/// <summary>
/// A checkpoint (a folder, a single file, or a sharded index) is inconsistent or incomplete:
/// missing files, an index that names tensors its shards lack, a tensor stored in two shards, …
/// </summary>
public sealed class SafetensorsCheckpointException : LxtImportException
{
    public SafetensorsCheckpointException(string message, string filePath, string? tensorName = null, Exception? innerException = null)
        : base(message, innerException)
    {
        FilePath = filePath;
        TensorName = tensorName;
    }

    /// <summary>The file (index, shard or folder) the problem concerns.</summary>
    public string FilePath { get; }

    /// <summary>The tensor concerned, if any.</summary>
    public string? TensorName { get; }
}

/// <summary>A tensor name was requested that the file or checkpoint does not contain.</summary>
public sealed class TensorNotFoundException : LxtImportException
{
    public TensorNotFoundException(string tensorName, string filePath)
        : base($"Tensor '{tensorName}' is not in '{filePath}'.")
    {
        TensorName = tensorName;
        FilePath = filePath;
    }

    public string TensorName { get; }
    public string FilePath { get; }
}
