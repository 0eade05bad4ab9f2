// lxt check: layer-by-layer conservation of relevance for one prediction — the per-boundary table, the first leak and
// the first NaN by name. A report: it exits 0 whether or not relevance leaks.
using Lxt.Import;
using Lxt.Models;

namespace Lxt.Cli.Commands;

public sealed class CheckCommand : ICommand
{
    public string Name => "check";
    public string Summary => "check where a rule set conserves relevance, layer by layer: first leak, first NaN";
    public string Synopsis => "--model DIR (--text TEXT | --input-ids 1,2,3 | --image FILE | --pixels FILE.json) [--rules R] [--boundaries layers|GLOB] [OPTIONS]";

    public IReadOnlyList<OptionSpec> Options { get; } =
    [
        new("model", "DIR", "model folder"),
        new("text", "TEXT", "input text (needs the folder's tokenizer.json)"),
        new("input-ids", "IDS", "input token ids, comma-separated"),
        new("image", "FILE", "PNG / JPEG for an image model"),
        new("pixels", "FILE", "JSON [C][H][W] of normalised pixels for an image model"),
        new("rules", "RULES", $"rule set: {string.Join(", ", Method.Ids)} (default attnlrp)"),
        new("gamma-conv", "G", "Gamma rule on Conv2d layers (with cp-lrp)"),
        new("gamma-linear", "G", "Gamma rule on Linear layers (with cp-lrp)"),
        new("boundaries", "B", "where relevance is summed: layers (the layer outputs, default) or a glob of node names (model.layers.*.mlp.act_fn)"),
        new("tolerance", "T", "allowed |Σ out − Σ in| as a fraction of max(1, |target logit|) (default 1e-6 on reference, 1e-4 on cpu)"),
        new("target", "N", "output index to explain (default: the arg-max)"),
        .. DeviceOption.Specs,
    ];

    public int Execute(Arguments args, CommandContext context)
    {
        string dir = args.RequiredString("model");
        string input = args.ExactlyOne("text", "input-ids", "image", "pixels");
        Method method;
        try { method = Method.Parse(args.Choice("rules", Method.Ids, "attnlrp"), args.Double("gamma-conv"), args.Double("gamma-linear")); }
        catch (ArgumentException e) { throw new UsageException(e.Message); }
        string boundaries = args.String("boundaries") ?? "layers";
        if (boundaries.Length == 0) throw new UsageException("option '--boundaries' takes 'layers' or a glob, not an empty string");
        var device = DeviceOption.Parse(args);
        // float32 sums of relevance over a layer carry rounding of about 1e-6 relative: a tighter default would call it a leak
        double tolerance = args.Double("tolerance") ?? (device == Device.Reference ? 1e-6 : 1e-4);
        if (tolerance < 0) throw new UsageException("option '--tolerance' must be at least 0");
        int? target = args.Int("target", min: 0);

        using var model = PretrainedModel.Open(dir);
        bool image = input is "image" or "pixels";
        TransformerGraph graph;
        float[] x;
        if (image)
        {
            graph = model.BuildGraph();
            if (graph.InputShape.Count != 3) throw new InputException($"'{dir}' holds a text model: give it text or token ids, not pixels");
            x = input == "pixels"
                ? PixelInput.ReadJson(args.RequiredString("pixels"), graph.InputShape)
                : PixelInput.ReadImage(args.RequiredString("image"), graph.InputShape, Normalization.For(dir));
        }
        else
        {
            int[] ids;
            if (input == "text")
            {
                var path = Path.Combine(dir, "tokenizer.json");
                if (!File.Exists(path)) throw new InputException($"model folder '{dir}' has no tokenizer.json to turn text into token ids; give token ids instead");
                using var tokenizer = TextTokenizer.Open(path);
                ids = tokenizer.Encode(args.RequiredString("text"));
            }
            else ids = args.IntList("input-ids")!;
            if (ids.Length == 0) throw new InputException("the input has no tokens");
            graph = model.BuildGraph(ids.Length);
            if (graph.TokenEmbedding is null) throw new InputException($"'{dir}' holds an image model: give it pixels, not text or token ids");
            x = model.Embed(graph, ids);
        }
        if (target is int t && t >= graph.Logits.Shape[0]) throw new InputException($"target {t} is outside the model's {graph.Logits.Shape[0]} outputs");

        using var explainer = new Explainer(graph.Model, graph.InputName, model.WeightsFor(graph), device, DeviceOption.Threads(args));
        ConservationResult result;
        if (boundaries == "layers") result = explainer.CheckConservation(x, method, graph.LayerOutputs, target, tolerance);
        else
        {
            if (!graph.Model.NodeNames().Any(n => GlobMatches(boundaries, n)))
                throw new InputException($"no named node matches '{boundaries}' (see 'lxt nodes')");
            result = explainer.CheckConservation(x, method, boundaries, target, tolerance);
        }
        var o = context.Out;
        o.WriteLine($"model      {dir}");
        o.WriteLine($"rules      {method.Id}");
        o.WriteLine($"device     {DeviceOption.NameOf(device)}");
        o.WriteLine($"boundaries {(boundaries == "layers" ? $"the {graph.LayerOutputs.Count} layer outputs" : boundaries)}");
        o.WriteLine();
        o.Write(result.Report);
        if (result.FirstNonFinite is null) o.WriteLine("no NaN/∞");
        return 0;
    }

    /// <summary>A glob with * (any run of characters) and ? (one character) over a whole name.</summary>
    private static bool GlobMatches(string glob, string name) =>
        System.Text.RegularExpressions.Regex.IsMatch(name,
            "^" + System.Text.RegularExpressions.Regex.Escape(glob).Replace("\\*", ".*").Replace("\\?", ".") + "$");
}
