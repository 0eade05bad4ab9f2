// Latex: compiles a LaTeX document to PDF with whichever engine is installed (pdflatex, lualatex, tectonic), in a
// scratch folder, and moves the PDF into place atomically.
using System.Diagnostics;

namespace Lxt.Visualization;

/// <summary>No LaTeX engine is installed, or the engine failed on the document.</summary>
public sealed class LatexException(string message) : Exception(message);

public static class Latex
{
    /// <summary>The engines tried, in order.</summary>
    public static IReadOnlyList<string> Engines { get; } = ["pdflatex", "lualatex", "tectonic"];

    public const string NotFoundMessage = "no LaTeX engine found (install texlive-latex-base)";

    /// <summary>The full path of the first engine on PATH, or null.</summary>
    public static string? FindEngine()
    {
        var folders = (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries);
        foreach (var engine in Engines)
            foreach (var folder in folders)
                foreach (var name in OperatingSystem.IsWindows() ? [engine + ".exe"] : new[] { engine })
                {
                    var candidate = Path.Combine(folder, name);
                    if (File.Exists(candidate)) return candidate;
                }
        return null;
    }

    /// <summary>Compiles <paramref name="tex"/> and writes the PDF to <paramref name="pdfPath"/> atomically.</summary>
    public static void CompileTo(string pdfPath, string tex, CancellationToken cancellation = default)
    {
        var engine = FindEngine() ?? throw new LatexException(NotFoundMessage);
        var scratch = Path.Combine(Path.GetTempPath(), $"lxt-latex-{Guid.NewGuid():N}");
        Directory.CreateDirectory(scratch);
        try
        {
            File.WriteAllText(Path.Combine(scratch, "heatmap.tex"), tex);
            bool tectonic = Path.GetFileNameWithoutExtension(engine) == "tectonic";
            var start = new ProcessStartInfo(engine)
            {
                WorkingDirectory = scratch,
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                RedirectStandardInput = true,
                UseShellExecute = false,
            };
            if (tectonic) start.ArgumentList.Add("heatmap.tex");
            else foreach (var a in new[] { "-interaction=nonstopmode", "-halt-on-error", "heatmap.tex" }) start.ArgumentList.Add(a);
            using var process = Process.Start(start) ?? throw new LatexException($"could not start {engine}");
            process.StandardInput.Close();
            var output = process.StandardOutput.ReadToEndAsync(cancellation);
            var errors = process.StandardError.ReadToEndAsync(cancellation);
            try { process.WaitForExitAsync(cancellation).GetAwaiter().GetResult(); }
            catch (OperationCanceledException)
            {
                process.Kill(entireProcessTree: true);
                throw;
            }
            var pdf = Path.Combine(scratch, "heatmap.pdf");
            if (process.ExitCode != 0 || !File.Exists(pdf))
            {
                var log = (output.Result + "\n" + errors.Result).Split('\n').Where(l => l.StartsWith('!')).FirstOrDefault() ?? $"exit code {process.ExitCode}";
                throw new LatexException($"{Path.GetFileName(engine)} failed on the heatmap document: {log.Trim()}");
            }
            AtomicFile.CopyInto(pdf, pdfPath);
        }
        finally
        {
            try { Directory.Delete(scratch, recursive: true); } catch (IOException) { }
        }
    }
}
