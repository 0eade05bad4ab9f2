// lxt neurons: the most relevant neurons (or attention heads) of a named node, for one prediction or averaged over
// a data file.
using System.Globalization;
using Lxt.Generation;
using Spectre.Console;

namespace Lxt.Cli.Commands;

public sealed class NeuronsCommand : ICommand
{
    public string Name => "neurons";
    public string Summary => "rank the neurons (or heads) of a named node by relevance, for one input or over a data file";
    public string Synopsis => "--model DIR (--text TEXT | --input-ids 1,2,3 | --data FILE.jsonl) --node NAME [--top K] [OPTIONS]";

    public IReadOnlyList<OptionSpec> Options { get; } =
    [
        new("model", "DIR", "model folder of a causal LM"),
        new("text", "TEXT", "input text (needs the folder's tokenizer.json)"),
        new("input-ids", "IDS", "input token ids, comma-separated"),
        new("data", "FILE", "JSON lines with \"text\" or \"input_ids\" and optional \"target\" (or plain text, one example a line): mean relevance per neuron"),
        new("node", "NAME", "named node, e.g. model.layers.0.mlp.act_fn, model.layers.0.self_attn.attn_weights (heads), model.layers.0 (see 'lxt nodes')"),
        new("top", "K", "how many neurons to list (default 10)"),
        new("ranking", "R", "positive (largest relevance first, default) or absolute (largest |relevance| first)"),
        new("token", "T", "only the relevance at token position T (one input)"),
        new("target", "N", "output token to explain (one input; default the arg-max)"),
        new("rules", "RULES", $"rule set: {string.Join(", ", Method.Ids)} (default attnlrp)"),
        new("max-tokens", "N", "cut data examples to their first N tokens (default 128)"),
        .. DeviceOption.Specs,
    ];

    public int Execute(Arguments args, CommandContext context)
    {
        string dir = args.RequiredString("model");
        string source = args.ExactlyOne("text", "input-ids", "data");
        string node = args.RequiredString("node");
        int k = args.Int("top", min: 1) ?? 10;
        var ranking = args.Choice("ranking", ["positive", "absolute"], "positive") == "absolute" ? NeuronRanking.Absolute : NeuronRanking.Positive;
        var method = Method.Parse(args.Choice("rules", Method.Ids, "attnlrp"));
        int? token = args.Int("token", min: 0), target = args.Int("target", min: 0);
        if (source == "data" && (token is not null || target is not null))
            throw new UsageException("--token and --target go with one input (--text / --input-ids); data lines carry their own \"target\"");
        if (source != "data" && args.Has("max-tokens")) throw new UsageException("--max-tokens goes with --data");
        int maxTokens = args.Int("max-tokens", min: 1) ?? 128;

        using var lm = LanguageModel.Open(dir, DeviceOption.Parse(args), DeviceOption.Threads(args));
        CheckNode(lm, node);
        var o = context.Out;
        o.WriteLine($"model      {dir}");
        o.WriteLine($"node       {node}");
        o.WriteLine($"rules      {method.Id} ({method.Name})");
        IReadOnlyList<NeuronScore> top;
        string valueHeader;
        if (source == "data")
        {
            string path = args.RequiredString("data");
            var stats = NeuronAnalysis.Aggregate(lm, Corpus.Read(path), [node], new NeuronAnalysisOptions { Method = method, MaxTokens = maxTokens })[node];
            o.WriteLine($"data       {path}, {stats.Examples} examples (mean over examples of the relevance summed over tokens)");
            top = stats.TopK(k, ranking);
            valueHeader = ranking == NeuronRanking.Absolute ? "mean |relevance|" : "mean relevance";
        }
        else
        {
            var ids = source == "text" ? lm.Encode(args.RequiredString("text")) : args.IntList("input-ids")!;
            if (ids.Length == 0) throw new InputException("the input has no tokens");
            if (target is int t && t >= lm.VocabularySize) throw new InputException($"target {t} is outside the model's {lm.VocabularySize} outputs");
            var e = lm.Explain(ids, new ExplainOptions { Method = method, Target = target, Nodes = [node] });
            if (token is int position && position >= ids.Length) throw new InputException($"token {position} is outside the input's {ids.Length} tokens");
            o.WriteLine($"input      '{lm.Decode(ids)}' ({string.Join(",", ids)})");
            o.WriteLine($"target     {e.Target} '{lm.TokenText(e.Target)}', logit {e.TargetLogit.ToString("0.000000", CultureInfo.InvariantCulture)}");
            o.WriteLine($"relevance  {(token is int p ? $"at token {p}" : "summed over tokens")}");
            top = e.TopNeurons(node, k, token, ranking);
            valueHeader = "relevance";
        }
        o.WriteLine();
        bool heads = node.EndsWith("attn_weights", StringComparison.Ordinal);
        double scale = top.Select(s => Math.Abs(s.Value)).Where(double.IsFinite).DefaultIfEmpty(0).Max();
        var table = new Table().Border(TableBorder.Simple)
            .AddColumn(new TableColumn("#").RightAligned())
            .AddColumn(new TableColumn(heads ? "head" : "neuron").RightAligned())
            .AddColumn(new TableColumn(valueHeader).RightAligned())
            .AddColumn(new TableColumn("").NoWrap());
        for (int i = 0; i < top.Count; i++)
        {
            var s = top[i];
            int bar = scale > 0 && double.IsFinite(s.Value) ? (int)Math.Round(Math.Abs(s.Value) / scale * 24) : 0;
            table.AddRow(
                new Text((i + 1).ToString(CultureInfo.InvariantCulture)),
                new Text(s.Index.ToString(CultureInfo.InvariantCulture)),
                new Text(double.IsFinite(s.Value) ? s.Value.ToString("0.000000", CultureInfo.InvariantCulture) : "nan"),
                new Text(new string(s.Value >= 0 ? '█' : '░', bar)));
        }
        context.Console.Write(table);
        return 0;
    }

    /// <summary>An unknown node is the user's input error, named with the nodes the model does have.</summary>
    internal static void CheckNode(LanguageModel lm, string node)
    {
        var names = lm.NodeNames();
        if (!names.Contains(node))
            throw new InputException($"the model has no node named '{node}' (named nodes include: {string.Join(", ", names.Where(n => !n.EndsWith(".weight", StringComparison.Ordinal)).Take(12))}, ...; see 'lxt nodes')");
    }
}
