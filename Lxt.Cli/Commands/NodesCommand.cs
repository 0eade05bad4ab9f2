// lxt nodes: the named nodes of a model folder's graph — the names --nodes accepts for latent relevance.
using Lxt.Import;

namespace Lxt.Cli.Commands;

public sealed class NodesCommand : ICommand
{
    public string Name => "nodes";
    public string Summary => "list the named nodes of a model's graph (for explain --nodes)";
    public string Synopsis => "--model DIR [--input-ids 1,2,3 | --text TEXT]";

    public IReadOnlyList<OptionSpec> Options { get; } =
    [
        new("model", "DIR", "model folder"),
        new("input-ids", "IDS", "token ids: the graph is built for their number (default: one token)"),
        new("text", "TEXT", "text: the graph is built for its number of tokens (needs tokenizer.json)"),
    ];

    public int Execute(Arguments args, CommandContext context)
    {
        string dir = args.RequiredString("model");
        if (args.Has("input-ids") && args.Has("text")) throw new UsageException("give only one of --input-ids, --text");
        var ids = args.IntList("input-ids");
        using var model = PretrainedModel.Open(dir);
        int tokens = 1;
        if (args.String("text") is { } text)
        {
            using var lxt = TextExplainer.Open(dir);
            tokens = lxt.Encode(text).Length;
        }
        else if (ids is not null) tokens = ids.Length;
        var graph = model.BuildGraph(tokens);
        var layers = graph.LayerOutputs.ToHashSet();
        // parameters and inputs are named too; the latent nodes are the computed ones
        var leaves = graph.Model.Parameters.Keys.Concat(graph.Model.Inputs.Select(i => i.Name ?? "")).ToHashSet();
        foreach (var name in graph.Model.NodeNames().Where(n => !leaves.Contains(n)))
        {
            var node = graph.Model.FindNode(name)!;
            context.Out.WriteLine($"{name}\t[{string.Join(", ", node.Shape)}]{(layers.Contains(name) ? "\tlayer output" : "")}");
        }
        return 0;
    }
}
