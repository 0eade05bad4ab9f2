// lxt evaluate: the perturbation (faithfulness) evaluation of attribution methods on a data file or on the demo task —
// a table per method on the terminal, and optionally JSON (curves and ABPC), an SVG plot and a markdown report.
using System.Globalization;
using System.Text;
using Lxt.Evaluation;
using Spectre.Console;

namespace Lxt.Cli.Commands;

public sealed class EvaluateCommand : ICommand
{
    public string Name => "evaluate";
    public string Summary => "score attribution methods by perturbation (ABPC, evidence hit rate) on a data file or the demo task";
    public string Synopsis => "(--model DIR --data FILE.jsonl | --demo [--samples N]) [--methods IDS] [OPTIONS]";

    public IReadOnlyList<OptionSpec> Options { get; } =
    [
        new("model", "DIR", "model folder (with --demo: default the shipped demo model)"),
        new("data", "FILE", "JSON lines: \"text\" | \"input_ids\" | \"pixels\", optional \"target\" and \"evidence\" (token position or patch)"),
        new("demo", null, "evaluate on the demo task (evidence = the animal's position)"),
        new("samples", "N", "demo samples (default 100)"),
        new("seed", "S", "seed of the demo samples, SmoothGrad's noise and the random baseline (default 7)"),
        new("methods", "IDS", $"comma-separated methods (default all): {string.Join(", ", AttributionMethods.Ids)}"),
        new("steps", "N", "perturbation steps per curve (default one per feature up to 64 features, else 32)"),
        new("ig-steps", "N", "Integrated Gradients quadrature points (default 32, Gauss–Legendre)"),
        new("ig-baseline", "B", "Integrated Gradients baseline of text: pad (the pad_token_id's embedding; zeros without one; default) or zero"),
        new("normalize", null, "divide each curve by the sample's unperturbed target logit"),
        new("limit", "N", "use the first N samples of the data file"),
        new("json", "FILE", "write curves and ABPC per method and sample as JSON"),
        new("plot", "FILE", "write the mean perturbation curves as SVG"),
        new("markdown", "FILE", "write the table as a markdown report"),
        .. DeviceOption.Specs,
    ];

    public int Execute(Arguments args, CommandContext context)
    {
        bool demo = args.ExactlyOne("data", "demo") == "demo";
        if (!demo && args.Has("samples")) throw new UsageException("--samples goes with --demo; use --limit with --data");
        if (demo && args.Has("limit")) throw new UsageException("--limit goes with --data; use --samples with --demo");
        string model = demo ? args.String("model") ?? Lxt.Demo.DemoModel.Locate() : args.RequiredString("model");
        int seed = args.Int("seed") ?? 7;
        int samples = args.Int("samples", min: 1) ?? 100;
        int? limit = args.Int("limit", min: 1);
        int? steps = args.Int("steps", min: 1);
        int igSteps = args.Int("ig-steps", min: 1) ?? 32;
        string igBaseline = args.Choice("ig-baseline", ["pad", "zero"], "pad");
        var device = DeviceOption.Parse(args);
        int threads = DeviceOption.Threads(args);
        var ids = args.List("methods") ?? AttributionMethods.Ids.ToArray();
        if (ids.Length == 0) throw new UsageException("option '--methods' names no method");
        foreach (var id in ids)
            if (!AttributionMethods.Ids.Contains(id))
                throw new UsageException($"unknown method '{id}' (known: {string.Join(", ", AttributionMethods.Ids)})");
        var duplicate = ids.GroupBy(i => i).FirstOrDefault(g => g.Count() > 1);
        if (duplicate is not null) throw new UsageException($"method '{duplicate.Key}' is listed twice");
        string? json = args.String("json"), plot = args.String("plot"), markdown = args.String("markdown");
        foreach (var path in new[] { json, plot, markdown }.OfType<string>()) CheckFolder(path);

        using var evaluation = EvaluationModel.Open(model, device, threads);
        var lines = demo ? EvaluationData.Demo(samples, seed) : EvaluationData.Read(args.RequiredString("data"), limit);
        string source = demo ? "demo" : args.RequiredString("data");
        var data = EvaluationData.Samples(evaluation, lines, source);
        var settings = new AttributionSettings { Seed = seed, IntegratedGradientsSteps = igSteps };
        var methods = ids.Select(id => id == "integrated-gradients" && !evaluation.IsImage
            ? new ContextBaselineIntegratedGradients(settings,
                igBaseline == "pad" ? evaluation.PadBaseline : _ => null,
                igBaseline == "pad" && evaluation.PadTokenId is int pad ? $"pad-token baseline (id {pad})" : "zero baseline")
            : AttributionMethods.Parse(id, settings)).ToArray();
        var report = PerturbationEvaluation.Run(null, data, methods, new PerturbationOptions { Steps = steps, Normalize = args.Has("normalize") });

        if (json is not null) report.WriteJson(json);
        if (plot is not null) ReportFormats.WriteSvg(report, plot);
        if (markdown is not null)
        {
            var description = Describe(demo ? "models/demo" : model, demo, source, data.Count, seed, steps, igSteps, device, report,
                CommandLine(args, demo, samples, seed));
            ReportFormats.WriteAtomically(markdown, description + "\n" + report.ToMarkdown());
        }
        Render(context, demo ? "models/demo" : model, demo ? $"demo task, {data.Count} samples, seed {seed}" : $"{source}, {data.Count} samples", report);
        return 0;
    }

    // fail before the run, not after it, when an output folder is missing
    private static void CheckFolder(string path)
    {
        var folder = Path.GetDirectoryName(Path.GetFullPath(path))!;
        if (!Directory.Exists(folder)) throw new DirectoryNotFoundException($"cannot write '{path}': folder '{folder}' does not exist");
    }

    private static string F(double v, string format = "0.####") =>
        double.IsFinite(v) ? v.ToString(format, CultureInfo.InvariantCulture) : "nan";

    private static void Render(CommandContext context, string model, string data, EvaluationReport report)
    {
        // plain lines (a console would wrap long paths), then the table
        var o = context.Out;
        o.WriteLine($"model    {model}");
        o.WriteLine($"data     {data}");
        o.WriteLine($"metric   ABPC = ∫ (LeRF − MoRF) d(fraction removed){(report.Normalized ? ", normalised" : ", logit units")}");
        o.WriteLine("         higher is more faithful; MoRF / LeRF: area under each curve;");
        o.WriteLine("         hit rate: how often the top feature is the evidence");
        o.WriteLine();
        // narrow enough for 80 columns: the longest id (integrated-gradients) and six numbers
        var table = new Table().Border(TableBorder.Simple)
            .AddColumn(new TableColumn("method").NoWrap())
            .AddColumn(new TableColumn("ABPC").RightAligned())
            .AddColumn(new TableColumn("± s.e.").RightAligned())
            .AddColumn(new TableColumn("hit rate").RightAligned())
            .AddColumn(new TableColumn("MoRF").RightAligned())
            .AddColumn(new TableColumn("LeRF").RightAligned())
            .AddColumn(new TableColumn("time").RightAligned().NoWrap());
        foreach (var m in report.Methods)
            table.AddRow(
                new Text(m.MethodId),
                new Text(F(m.MeanAbpc, "0.000")),
                new Text(F(m.AbpcStandardError, "0.000")),
                new Text(m.EvidenceHitRate is double h ? F(h, "0.000") : "-"),
                new Text(F(m.MeanAreaMorf, "0.000")),
                new Text(F(m.MeanAreaLerf, "0.000")),
                new Text($"{m.AttributionTime.TotalSeconds:F1} s"));
        context.Console.Write(table);
    }

    /// <summary>The options of this run as a command line (for the report's reader to rerun it).</summary>
    private static string CommandLine(Arguments args, bool demo, int samples, int seed)
    {
        var parts = new List<string> { "lxt evaluate" };
        if (demo)
        {
            parts.Add("--demo");
            if (args.String("model") is { } m) parts.Add($"--model {m}");
            parts.Add($"--samples {samples.ToString(CultureInfo.InvariantCulture)}");
        }
        else parts.Add($"--model {args.String("model")} --data {args.String("data")}");
        parts.Add($"--seed {seed.ToString(CultureInfo.InvariantCulture)}");
        foreach (var name in new[] { "methods", "steps", "ig-steps", "ig-baseline", "limit", "device" })
            if (args.String(name) is { } v) parts.Add($"--{name} {v}");
        if (args.Has("normalize")) parts.Add("--normalize");
        if (args.String("plot") is { } svg) parts.Add($"--plot {svg}");
        if (args.String("markdown") is { } md) parts.Add($"--markdown {md}");
        return string.Join(" ", parts);
    }

    private static string Describe(string model, bool demo, string source, int count, int seed, int? steps, int igSteps, Device device,
        EvaluationReport report, string commandLine)
    {
        var sb = new StringBuilder();
        sb.AppendLine("# Faithfulness of attribution methods");
        sb.AppendLine();
        sb.AppendLine($"Generated by `{commandLine}`.");
        sb.AppendLine();
        sb.Append($"Model `{model}`; ");
        sb.AppendLine(demo
            ? $"{count} samples of the demo task (seed {seed}): filler words with one animal, closed by `says`; the target is the animal's sound and the evidence the animal's position."
            : $"{count} samples of `{source}`.");
        sb.AppendLine($"Device {DeviceOption.NameOf(device)}; Integrated Gradients with {igSteps} Gauss–Legendre points; SmoothGrad and the random baseline seeded with {seed}.");
        sb.AppendLine();
        sb.AppendLine("Each sample's features (tokens; patches for images) are removed in the order of each method's relevance — most relevant first (MoRF) " +
                      "and least relevant first (LeRF), a removed token's embedding set to zero (an image patch filled with the channel means) — " +
                      (steps is int s ? $"in {s} steps per curve" : "one feature per step") +
                      ", recording the target logit. ABPC = ∫₀¹ (LeRF − MoRF) d(fraction removed), trapezoid rule, " +
                      (report.Normalized ? "each curve divided by the unperturbed logit" : "in logit units") +
                      ": higher is more faithful. The evidence hit rate is the fraction of samples whose most relevant feature is the evidence. " +
                      "AUC MoRF / LeRF are the mean areas under each curve.");
        return sb.ToString();
    }
}
