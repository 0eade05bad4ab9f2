// lxt demo: the committed demo model explains one of its predictions — a held-out "which animal says what" sentence,
// its token heatmap on the terminal and in heatmap.html, and whether AttnLRP's most relevant token is the animal,
// the only token that decides the answer.
using System.Globalization;
using Lxt.Demo;
using Lxt.Visualization;
using Spectre.Console;

namespace Lxt.Cli.Commands;

public sealed class DemoCommand : ICommand
{
    /// <summary>The default seed of the held-out sentence (the demo model was trained on seed 1's sequences).</summary>
    public const int DefaultSeed = 2024;

    public string Name => "demo";
    public string Summary => "explain the bundled demo model on a held-out sentence: heatmap, and is the evidence found?";
    public string Synopsis => "[--seed N | --text TEXT] [--rules RULES] [--html FILE]";

    public IReadOnlyList<OptionSpec> Options { get; } =
    [
        new("seed", "N", $"seed of the generated held-out sentence (default {DefaultSeed})"),
        new("text", "TEXT", "explain this sentence instead (words of the demo vocabulary, ending in 'says')"),
        new("rules", "RULES", $"rule set: {string.Join(", ", Method.Ids)} (default attnlrp)"),
        new("html", "FILE", "where to write the heatmap page (default heatmap.html in the current folder)"),
    ];

    public int Execute(Arguments args, CommandContext context)
    {
        if (args.Has("seed") && args.Has("text")) throw new UsageException("give only one of --seed, --text");
        int seed = args.Int("seed") ?? DefaultSeed;
        string rules = args.Choice("rules", Method.Ids, "attnlrp");
        string html = args.String("html") ?? "heatmap.html";
        string folder = DemoModel.Locate();
        int[] ids;
        string source;
        if (args.String("text") is { } text)
        {
            ids = text.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries).Select(w => DemoTask.Id(w.ToLowerInvariant())).ToArray();
            if (ids.Length == 0) throw new UsageException("--text is empty");
            source = "your sentence";
        }
        else
        {
            ids = DemoTask.Generate(1, seed)[0].Ids;
            source = $"held-out sentence, seed {seed.ToString(CultureInfo.InvariantCulture)}";
        }
        var request = new ExplainRequest(folder, new ExplainInput.TokenIds(ids)) { Method = Method.Parse(rules), Threads = 1 };
        var result = Terminal.WithStatus(context.Out, "loading the demo model and explaining", () => ExplainPipeline.Run(request));
        var tokens = result.Tokens!;
        var console = context.Console;

        console.WriteLine("Which animal says what? The demo model (models/demo, a 2-layer Llama decoder)");
        console.WriteLine("reads filler words with exactly one animal, closed by 'says', and predicts the");
        console.WriteLine("animal's sound. The animal is the only evidence for the answer.");
        console.WriteLine();
        console.WriteLine($"input ({source}):");
        console.WriteLine($"  {string.Join(' ', tokens)}");
        var answer = DemoTask.Answer(ids);
        string predicted = result.TargetText ?? result.Target.ToString(CultureInfo.InvariantCulture);
        string verdict = answer is var (label, _) ? (result.Target == label ? " — correct" : $" — wrong, the answer is '{DemoTask.Token(label)}'") : "";
        console.WriteLine($"prediction: '{predicted}' (logit {Terminal.Num(result.TargetLogit)}){verdict}");
        console.WriteLine();
        console.WriteLine($"{result.Rules} relevance per token (red positive, blue negative):");
        Terminal.RenderHeatmapLine(console, tokens, result.Relevance);
        console.WriteLine();

        int top = Enumerable.Range(0, result.Relevance.Length).MaxBy(i => result.Relevance[i]);
        var table = new Table().Border(TableBorder.Simple)
            .AddColumn(new TableColumn("#").RightAligned()).AddColumn("token").AddColumn(new TableColumn("relevance").RightAligned())
            .AddColumn(new TableColumn("").NoWrap()).AddColumn("");
        double scale = Terminal.MaxAbs(result.Relevance);
        for (int i = 0; i < tokens.Count; i++)
        {
            var notes = new List<string>();
            if (answer is var (_, at) && at == i) notes.Add("evidence");
            if (i == top) notes.Add("most relevant");
            table.AddRow(new Text(i.ToString(CultureInfo.InvariantCulture)), new Text(Terminal.Quote(tokens[i])),
                Terminal.Value(result.Relevance[i]), Terminal.Bar(result.Relevance[i], scale), new Text(string.Join(", ", notes)));
        }
        console.Write(table);

        string name = result.Rules == "attnlrp" ? "AttnLRP" : result.Rules;
        double share = result.RelevanceSum != 0 ? result.Relevance[top] / result.RelevanceSum * 100 : double.NaN;
        string topText = $"{name}'s most relevant token: '{tokens[top]}' (position {top}, " +
                         (double.IsFinite(share) ? $"{share:0}% of the relevance)" : $"relevance {Terminal.Num(result.Relevance[top])})");
        if (answer is var (_, evidence))
        {
            console.WriteLine($"evidence: '{tokens[evidence]}' at position {evidence} (the animal decides the sound)");
            console.WriteLine(topText);
            console.WriteLine(top == evidence
                ? $"{name} found the evidence: its top token is the animal."
                : $"{name} missed the evidence: its top token is not the animal.");
        }
        else
        {
            console.WriteLine("evidence: none known — the sentence does not hold exactly one animal (" +
                              string.Join(", ", DemoTask.Animals.Select(a => a.Animal)) + ")");
            console.WriteLine(topText);
        }
        if (tokens.Contains(DemoTask.UnknownToken)) console.WriteLine($"note: words outside the demo vocabulary became '{DemoTask.UnknownToken}'");

        var info = HeatmapFiles.Info(request, result, ColorMap.Bwr, "Which animal says what? — Lxt demo") with
        {
            Notes = [$"input: {source}",
                     answer is var (_, e) ? $"evidence: '{tokens[e]}' at position {e}; most relevant: '{tokens[top]}' at position {top}" : "evidence: none known"],
        };
        TokenHeatmap.WriteHtml(html, tokens, result.Relevance, info);
        console.WriteLine();
        console.WriteLine($"wrote {html} (open it in a browser; hover for values)");
        return 0;
    }
}
