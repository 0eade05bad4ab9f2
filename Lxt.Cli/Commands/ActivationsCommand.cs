// lxt activations: one neuron's top-activating and top-relevant corpus windows, as an HTML report and a summary.
using System.Globalization;
using Lxt.Generation;

namespace Lxt.Cli.Commands;

public sealed class ActivationsCommand : ICommand
{
    public string Name => "activations";
    public string Summary => "report the corpus windows where one neuron activates most and is most relevant (HTML)";
    public string Synopsis => "--model DIR --corpus FILE --node NAME --index I --html OUT.html [OPTIONS]";

    public IReadOnlyList<OptionSpec> Options { get; } =
    [
        new("model", "DIR", "model folder of a causal LM"),
        new("corpus", "FILE", "plain text, one example a line, or JSON lines (.jsonl) with \"text\" or \"input_ids\" and optional \"target\""),
        new("node", "NAME", "named node, e.g. model.layers.0.mlp.act_fn (see 'lxt nodes')"),
        new("index", "I", "the neuron (or head, for attention weights)"),
        new("html", "FILE", "where to write the report"),
        new("window", "N", "tokens shown on each side of the peak (default 8)"),
        new("top", "K", "windows per list (default 10)"),
        new("max-tokens", "N", "cut examples to their first N tokens (default 128)"),
        new("rules", "RULES", $"rule set of the relevance: {string.Join(", ", Method.Ids)} (default attnlrp)"),
        .. DeviceOption.Specs,
    ];

    public int Execute(Arguments args, CommandContext context)
    {
        string dir = args.RequiredString("model"), corpus = args.RequiredString("corpus"), node = args.RequiredString("node");
        int index = args.Int("index", min: 0) ?? throw new UsageException("option '--index' is required");
        string html = args.RequiredString("html");
        var options = new ActivationReportOptions
        {
            Window = args.Int("window", min: 0) ?? 8,
            Top = args.Int("top", min: 1) ?? 10,
            MaxTokens = args.Int("max-tokens", min: 1) ?? 128,
            Method = Method.Parse(args.Choice("rules", Method.Ids, "attnlrp")),
        };
        var folder = Path.GetDirectoryName(Path.GetFullPath(html))!;
        if (!Directory.Exists(folder)) throw new DirectoryNotFoundException($"cannot write '{html}': folder '{folder}' does not exist");

        using var lm = LanguageModel.Open(dir, DeviceOption.Parse(args), DeviceOption.Threads(args));
        NeuronsCommand.CheckNode(lm, node);
        ActivationReport report;
        try { report = ActivationReport.Build(lm, Corpus.Read(corpus), node, index, options); }
        catch (ArgumentOutOfRangeException e) when (e.ParamName == "index") { throw new InputException(e.Message.Split(" (Parameter")[0]); }
        report.WriteHtml(html);

        var o = context.Out;
        o.WriteLine($"neuron     {node} [{index}]");
        o.WriteLine($"corpus     {corpus}, {report.Examples} examples; relevance by {report.Method}");
        o.WriteLine("top-activating windows (peak, line, tokens):");
        foreach (var w in report.TopActivating.Take(5)) o.WriteLine($"  {F(w.Peak)}  line {w.Line}  {Window(w)}");
        o.WriteLine("top-relevant windows (peak, line, tokens):");
        foreach (var w in report.TopRelevant.Take(5)) o.WriteLine($"  {F(w.Peak)}  line {w.Line}  {Window(w)}");
        o.WriteLine($"report     {html}");
        return 0;
    }

    private static string F(double v) => v.ToString("0.0000", CultureInfo.InvariantCulture).PadLeft(9);

    /// <summary>The window's tokens with the peak in brackets.</summary>
    private static string Window(TextWindow w) =>
        string.Join(" ", w.Tokens.Select((t, i) => i == w.PeakIndex ? $"[{t.Trim()}]" : t.Trim()));
}
