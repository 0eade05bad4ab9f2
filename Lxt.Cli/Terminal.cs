// Terminal: an explanation as text for a reader — header, per-token relevance table (or, for images, the most
// relevant patches and pixels). Colour (red positive, blue negative) only on an interactive terminal without NO_COLOR;
// the signs of the numbers and the bar glyphs carry the same information without it.
using System.Globalization;
using Spectre.Console;
using Spectre.Console.Rendering;

namespace Lxt.Cli;

public static class Terminal
{
    private const int BarWidth = 24;

    /// <summary>A console writing to <paramref name="writer"/>, with colour only when it is an interactive terminal
    /// and NO_COLOR is not set.</summary>
    public static IAnsiConsole Create(TextWriter writer)
    {
        bool interactive = ReferenceEquals(writer, Console.Out) && !Console.IsOutputRedirected
                           && string.IsNullOrEmpty(Environment.GetEnvironmentVariable("NO_COLOR"));
        return AnsiConsole.Create(new AnsiConsoleSettings
        {
            Out = new AnsiConsoleOutput(writer),
            Ansi = interactive ? AnsiSupport.Detect : AnsiSupport.No,
            ColorSystem = interactive ? ColorSystemSupport.Detect : ColorSystemSupport.NoColors,
            Interactive = InteractionSupport.No,
        });
    }

    /// <summary>Whether <paramref name="writer"/> is the process's stdout on a terminal: spinners and progress bars
    /// are drawn only there; elsewhere progress is plain lines.</summary>
    public static bool IsInteractive(TextWriter writer) => ReferenceEquals(writer, Console.Out) && !Console.IsOutputRedirected;

    /// <summary>A console on stdout that may redraw lines (status spinner, progress bar).</summary>
    public static IAnsiConsole CreateInteractive()
    {
        bool colour = string.IsNullOrEmpty(Environment.GetEnvironmentVariable("NO_COLOR"));
        return AnsiConsole.Create(new AnsiConsoleSettings
        {
            Out = new AnsiConsoleOutput(Console.Out),
            Ansi = AnsiSupport.Detect,
            ColorSystem = colour ? ColorSystemSupport.Detect : ColorSystemSupport.NoColors,
            Interactive = InteractionSupport.Yes,
        });
    }

    /// <summary>Runs <paramref name="work"/> under a status spinner saying <paramref name="message"/> when
    /// <paramref name="writer"/> is an interactive terminal; otherwise just runs it.</summary>
    public static T WithStatus<T>(TextWriter writer, string message, Func<T> work)
    {
        if (!IsInteractive(writer)) return work();
        T result = default!;
        CreateInteractive().Status().Spinner(Spinner.Known.Dots).Start(Markup.Escape(message), _ => result = work());
        return result;
    }

    /// <summary>The tokens as one wrapped line, each on its relevance colour (bwr, scaled by max |R|); on a console
    /// without colour the plain tokens, with the most relevant one in »«.</summary>
    public static void RenderHeatmapLine(IAnsiConsole console, IReadOnlyList<string> tokens, IReadOnlyList<double> relevance)
    {
        double scale = Lxt.Visualization.ColorMaps.Scale(relevance);
        bool separate = !tokens.Any(t => t.Any(char.IsWhiteSpace));
        bool colour = console.Profile.Capabilities.ColorSystem != ColorSystem.NoColors;
        int top = relevance.Count == 0 ? -1 : Enumerable.Range(0, relevance.Count).MaxBy(i => relevance[i]);
        var line = new Paragraph();
        for (int i = 0; i < tokens.Count; i++)
        {
            if (separate && i > 0) line.Append(" ");
            var c = Lxt.Visualization.ColorMaps.Bwr(Lxt.Visualization.ColorMaps.Normalize(relevance[i], scale));
            var fg = c.Contrasting;
            string text = Lxt.Visualization.TokenText.Visible(tokens[i]);
            if (!colour && i == top) text = $"»{text}«";
            line.Append(text, new Style(new Color(fg.R, fg.G, fg.B), new Color(c.R, c.G, c.B)));
        }
        console.Write(line);
        console.WriteLine();
    }

    /// <summary>How the request computes: float64 on the reference, else float32 with the products' precision.</summary>
    static string PrecisionOf(ExplainRequest request) =>
        request.Device == Device.Reference ? "float64"
        : request.Precision == Lxt.Backend.Gpu.GemmPrecision.Float32 ? "float32"
        : $"float32, {Lxt.Backend.Gpu.GpuBackend.IdOf(request.Precision)} products";

    public static void Render(IAnsiConsole console, ExplainRequest request, ExplainResult r)
    {
        var header = new Grid().AddColumn(new GridColumn().NoWrap()).AddColumn();
        header.AddRow(new Text("model"), new Text(request.ModelDir));
        header.AddRow(new Text("rules"), new Text($"{r.Rules} ({r.RuleSetName})"));
        header.AddRow(new Text("device"), new Text($"{DeviceOption.NameOf(request.Device)} ({PrecisionOf(request)})"));
        string label = r.TargetText is { } t ? $" {Quote(t)}" : "";
        header.AddRow(new Text("target"), new Text($"{r.Target}{label}, logit {Num(r.TargetLogit)}"));
        header.AddRow(new Text("relevance"), new Text($"sum {Num(r.RelevanceSum)}"));
        header.AddRow(new Text("time"), new Text(
            $"load {r.LoadTime.TotalMilliseconds:F0} ms, forward and relevance {r.RelevanceTime.TotalMilliseconds:F0} ms (one pass)"));
        console.Write(header);
        console.WriteLine();
        if (r.ImageSize is var (height, width)) RenderImage(console, r, height, width);
        else
        {
            if (r.Tokens is { } tokens) RenderHeatmapLine(console, tokens, r.Relevance);
            RenderTokens(console, r);
        }
        if (r.Nodes.Count > 0) RenderNodes(console, r);
    }

    private static void RenderTokens(IAnsiConsole console, ExplainResult r)
    {
        double scale = MaxAbs(r.Relevance);
        var table = new Table().Border(TableBorder.Simple)
            .AddColumn(new TableColumn("#").RightAligned())
            .AddColumn("token")
            .AddColumn(new TableColumn("id").RightAligned())
            .AddColumn(new TableColumn("relevance").RightAligned())
            .AddColumn(new TableColumn("").NoWrap());
        for (int i = 0; i < r.Relevance.Length; i++)
            table.AddRow(
                new Text(i.ToString(CultureInfo.InvariantCulture)),
                new Text(Quote(r.Tokens?[i] ?? "")),
                new Text(r.TokenIds?[i].ToString(CultureInfo.InvariantCulture) ?? ""),
                Value(r.Relevance[i]),
                Bar(r.Relevance[i], scale));
        console.Write(table);
    }

    private static void RenderImage(IAnsiConsole console, ExplainResult r, int height, int width)
    {
        double scale = MaxAbs(r.Relevance);
        if (r.PatchSize is int p && height % p == 0 && width % p == 0)
        {
            int rows = height / p, cols = width / p;
            var patches = new double[rows * cols];
            for (int y = 0; y < height; y++)
                for (int x = 0; x < width; x++) patches[y / p * cols + x / p] += r.Relevance[y * width + x];
            var top = Ranked(patches, 8);
            double patchScale = MaxAbs(patches);
            var table = new Table().Border(TableBorder.Simple).Title($"most relevant of {rows}×{cols} patches ({p}×{p} pixels)")
                .AddColumn(new TableColumn("patch").RightAligned()).AddColumn("row, col").AddColumn("pixels (y, x)")
                .AddColumn(new TableColumn("relevance").RightAligned()).AddColumn(new TableColumn("").NoWrap());
            foreach (int i in top)
            {
                int row = i / cols, col = i % cols;
                table.AddRow(new Text(i.ToString(CultureInfo.InvariantCulture)), new Text($"{row}, {col}"),
                    new Text($"{row * p}–{row * p + p - 1}, {col * p}–{col * p + p - 1}"), Value(patches[i]), Bar(patches[i], patchScale));
            }
            console.Write(table);
        }
        var pixels = new Table().Border(TableBorder.Simple).Title($"most relevant pixels (of {height}×{width}, Σ channels)")
            .AddColumn("y, x").AddColumn(new TableColumn("relevance").RightAligned()).AddColumn(new TableColumn("").NoWrap());
        foreach (int i in Ranked(r.Relevance, 8))
            pixels.AddRow(new Text($"{i / width}, {i % width}"), Value(r.Relevance[i]), Bar(r.Relevance[i], scale));
        console.Write(pixels);
    }

    private static void RenderNodes(IAnsiConsole console, ExplainResult r)
    {
        var table = new Table().Border(TableBorder.Simple).Title("relevance at named nodes")
            .AddColumn("node").AddColumn(new TableColumn("sum").RightAligned()).AddColumn("most relevant position");
        foreach (var (name, values) in r.Nodes)
        {
            int best = values.Length == 0 ? -1 : Array.IndexOf(values, values.Max());
            string where = best < 0 ? "" : r.Tokens is { } t && best < t.Count ? $"{best} {Quote(t[best])} ({Num(values[best])})" : $"{best} ({Num(values[best])})";
            table.AddRow(new Text(name), Value(values.Sum()), new Text(where));
        }
        console.Write(table);
    }

    /// <summary>The <paramref name="count"/> indices of largest relevance, then the most negative ones (by value).</summary>
    private static int[] Ranked(double[] values, int count)
    {
        var order = Enumerable.Range(0, values.Length).OrderByDescending(i => values[i]).ToArray();
        var mostNegative = order.Reverse().Where(i => values[i] < 0).Take(count / 2).Reverse();
        return order.Take(count).Concat(mostNegative).Distinct().ToArray();
    }

    internal static double MaxAbs(double[] v) => v.Length == 0 ? 0 : v.Max(Math.Abs);

    internal static string Num(double v) => v.ToString(Math.Abs(v) is > 0 and < 1e-4 ? "0.000e+0" : "0.000000", CultureInfo.InvariantCulture);

    internal static IRenderable Value(double v) => new Text(Num(v), new Style(v > 0 ? Color.Red : v < 0 ? Color.Blue : Color.Default));

    /// <summary>|v| / scale as a bar: █ for positive, ░ for negative relevance, so the sign reads without colour.</summary>
    internal static IRenderable Bar(double v, double scale)
    {
        int n = scale > 0 ? (int)Math.Round(Math.Abs(v) / scale * BarWidth) : 0;
        return n == 0 ? new Text("") : new Text(new string(v > 0 ? '█' : '░', n), new Style(v > 0 ? Color.Red : Color.Blue));
    }

    internal static string Quote(string token) =>
        "'" + token.Replace("\n", "\\n").Replace("\r", "\\r").Replace("\t", "\\t") + "'";
}
