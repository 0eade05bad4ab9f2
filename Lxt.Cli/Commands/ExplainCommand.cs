// lxt explain: relevance of one prediction of a model folder, on the terminal and optionally as JSON.
namespace Lxt.Cli.Commands;

public sealed class ExplainCommand : ICommand
{
    public string Name => "explain";
    public string Summary => "explain a model's prediction: relevance of every input token or pixel";
    public string Synopsis => "--model DIR (--text TEXT | --input-ids 1,2,3 | --image FILE | --pixels FILE.json) [OPTIONS]";

    public IReadOnlyList<OptionSpec> Options { get; } =
    [
        new("model", "DIR", "model folder: config.json, *.safetensors, optional tokenizer.json / preprocessor_config.json"),
        new("text", "TEXT", "text to explain (needs the folder's tokenizer.json)"),
        new("input-ids", "IDS", "comma-separated token ids"),
        new("image", "FILE", "PNG / JPEG, resized to the model's image size and normalised"),
        new("pixels", "FILE", "JSON [C][H][W] of normalised pixels, bare or under the key \"image\""),
        new("rules", "RULES", $"rule set: {string.Join(", ", Method.Ids)} (default attnlrp)"),
        new("gamma-conv", "G", "Gamma rule on Conv2d layers (with cp-lrp)"),
        new("gamma-linear", "G", "Gamma rule on Linear layers (with cp-lrp)"),
        new("target", "N", "output index to explain (default: the arg-max of the logits)"),
        new("precision", "P", "float32 (CPU, default) or float64 (reference interpreter)"),
        new("json", "FILE", "also write the result as JSON"),
        DeviceOption.DeviceSpec,
        new("threads", "N", "CPU threads (default: all cores)"),
        new("nodes", "NAMES", "comma-separated named nodes for latent relevance (see 'lxt nodes')"),
    ];

    public int Execute(Arguments args, CommandContext context)
    {
        var request = Request(args);
        var json = args.String("json");
        var result = ExplainPipeline.Run(request);
        if (json is not null) ResultJson.WriteFile(json, result);
        Terminal.Render(context.Console, request, result);
        return 0;
    }

    /// <summary>The request the options describe; wrong options raise <see cref="UsageException"/>.</summary>
    public static ExplainRequest Request(Arguments args)
    {
        string model = args.RequiredString("model");
        ExplainInput input = args.ExactlyOne("text", "input-ids", "image", "pixels") switch
        {
            "text" => new ExplainInput.Text(args.RequiredString("text")),
            "input-ids" => new ExplainInput.TokenIds(args.IntList("input-ids")!),
            "image" => new ExplainInput.ImageFile(args.RequiredString("image")),
            _ => new ExplainInput.PixelsFile(args.RequiredString("pixels")),
        };
        string rules = args.Choice("rules", Method.Ids, "attnlrp");
        Method method;
        try { method = Method.Parse(rules, args.Double("gamma-conv"), args.Double("gamma-linear")); }
        catch (ArgumentException e) { throw new UsageException(e.Message); }
        string precision = args.Choice("precision", ["float32", "float64"], "float32");
        var device = DeviceOption.Parse(args, precision == "float64" ? Device.Reference : Device.Cpu);
        if (args.Has("precision") && args.Has("device") && (precision == "float64") != (device == Device.Reference))
            throw new UsageException($"--precision {precision} contradicts --device {args.String("device")}");
        return new ExplainRequest(model, input)
        {
            Method = method,
            Target = args.Int("target", min: 0),
            Device = device,
            Threads = args.Int("threads", min: 0) ?? 0,
            Nodes = args.List("nodes") ?? [],
        };
    }
}
