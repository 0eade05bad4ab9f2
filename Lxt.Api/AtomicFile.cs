// AtomicFile: files written whole or not at all — a temporary file in the destination's folder, then a move over the
// destination — so a reader (or a crash) never sees a half-written file.
namespace Lxt;

public static class AtomicFile
{
    public static void WriteAllText(string path, string text) =>
        Write(path, stream => { using var w = new StreamWriter(stream, new System.Text.UTF8Encoding(false), leaveOpen: true); w.Write(text); });

    public static void WriteAllBytes(string path, byte[] bytes) => Write(path, stream => stream.Write(bytes));

    /// <summary>Writes through <paramref name="write"/> to a temporary file beside <paramref name="path"/> and moves it
    /// over <paramref name="path"/>; on failure the destination is untouched and the temporary file removed.</summary>
    public static void Write(string path, Action<Stream> write)
    {
        string full = Path.GetFullPath(path);
        string folder = Path.GetDirectoryName(full)!;
        if (!Directory.Exists(folder)) throw new DirectoryNotFoundException($"cannot write '{path}': folder '{folder}' does not exist");
        string temp = TempPath(full);
        try
        {
            using (var stream = new FileStream(temp, FileMode.CreateNew, FileAccess.Write))
            {
                write(stream);
                stream.Flush(flushToDisk: true);
            }
            File.Move(temp, full, overwrite: true);
        }
        finally
        {
            if (File.Exists(temp)) File.Delete(temp);
        }
    }

    /// <summary>Moves an existing file over <paramref name="path"/> through a temporary copy in its folder.</summary>
    public static void CopyInto(string source, string path) => Write(path, stream => { using var s = File.OpenRead(source); s.CopyTo(stream); });

    /// <summary>A hidden, unique temporary name in the folder of <paramref name="fullPath"/>.</summary>
    public static string TempPath(string fullPath) =>
        Path.Combine(Path.GetDirectoryName(fullPath)!, $".{Path.GetFileName(fullPath)}.{Guid.NewGuid():N}.tmp");
}
