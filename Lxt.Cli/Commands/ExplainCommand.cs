// lxt explain: relevance of one prediction of a model folder, on the terminal and optionally as JSON and heatmap files;
// or, with --batch, of every line of a JSON-lines file, resumably.
using Lxt.Backend.Gpu;
using Lxt.Visualization;
using Spectre.Console;

namespace Lxt.Cli.Commands;

public sealed class ExplainCommand : ICommand
{
    public string Name => "explain";
    public string Summary => "explain a model's prediction: relevance of every input token or pixel";
    public string Synopsis => "--model DIR (--text TEXT | --input-ids 1,2,3 | --image FILE | --pixels FILE.json | --batch FILE.jsonl --out FILE.jsonl) [OPTIONS]";

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
        new("precision", "P", "float32 or f32 (default), float64 (reference interpreter), or with --device cuda / ilgpu-cpu the matrix products' tf32 or bf16 (bfloat16 operands and weights, float32 sums)"),
        new("json", "FILE", "also write the result as JSON"),
        DeviceOption.DeviceSpec,
        new("threads", "N", "CPU threads (default: all cores)"),
        new("nodes", "NAMES", "comma-separated named nodes for latent relevance (see 'lxt nodes')"),
        new("html", "FILE", "write a token heatmap page (text models)"),
        new("svg", "FILE", "write a token heatmap image as SVG (text models)"),
        new("png", "FILE", "write a token heatmap image (text) or the relevance over the image (image models)"),
        new("tex", "FILE", "write a LaTeX standalone token heatmap (text models)"),
        new("pdf", "FILE", "compile that LaTeX heatmap to PDF (needs pdflatex, lualatex or tectonic)"),
        new("colormap", "MAP", "image heatmap colours: bwr (default) or coldnhot"),
        new("checkpointing", "none|layers|sqrt|products|products:GiB", "recompute activations in the relevance pass: none (default), layer interiors from every layer or every √L-th layer, or the pointwise ops between matrix products (less memory, same relevance); products:GiB also keeps the attention probabilities of as many layers as fit in that many GiB of intermediates (faster)"),
        AttentionBlocksSpec,
        AllPositionsSpec,
        FusedAttentionSpec,
        NoFusedAttentionSpec,
        new("trace", "FILE.png", "write a token × layer image of relevance at every layer output (text models)"),
        new("batch", "FILE", "explain every line of a JSON-lines file ({\"text\"|\"input_ids\"|\"pixels\", \"id\"?, \"target\"?})"),
        new("out", "FILE", "with --batch: append one JSON result per line here; a rerun resumes where it stopped"),
    ];

    /// <summary>The exit code of a batch stopped by Ctrl-C (128 + SIGINT, as shells report it).</summary>
    public const int Interrupted = 130;

    public int Execute(Arguments args, CommandContext context)
    {
        if (args.Has("batch")) return ExecuteBatch(args, context);
        if (args.Has("out")) throw new UsageException("--out goes with --batch; for one input use --json");
        var request = Request(args);
        var files = Heatmaps(args, request.Input.IsImage);
        request = request with { Trace = files.Trace is not null };
        HeatmapFiles.CheckTools(files);
        var json = args.String("json");
        var result = Terminal.WithStatus(context.Out, $"explaining with {request.Method.Id} ({request.ModelDir})", () => ExplainPipeline.Run(request));
        if (json is not null) ResultJson.WriteFile(json, result);
        HeatmapFiles.Write(files, request, result);
        Terminal.Render(context.Console, request, result);
        foreach (var (kind, path) in files.Files()) context.Console.WriteLine($"wrote {kind} {path}");
        return 0;
    }

    /// <summary>The heatmap files the options ask for; those that do not fit the input raise <see cref="UsageException"/>.</summary>
    public static HeatmapRequest Heatmaps(Arguments args, bool image)
    {
        var map = ColorMaps.Parse(args.Choice("colormap", ColorMaps.Names, "bwr"));
        if (image)
            foreach (var name in new[] { "html", "svg", "tex", "pdf", "trace" })
                if (args.Has(name)) throw new UsageException($"--{name} is for text models; for an image use --png (with --colormap)");
        return new HeatmapRequest
        {
            Html = args.String("html"),
            Svg = args.String("svg"),
            Png = args.String("png"),
            Tex = args.String("tex"),
            Pdf = args.String("pdf"),
            Trace = args.String("trace"),
            ColorMap = map,
        };
    }

    private int ExecuteBatch(Arguments args, CommandContext context)
    {
        foreach (var name in new[] { "text", "input-ids", "image", "pixels", "json", "html", "svg", "png", "tex", "pdf", "trace", "colormap" })
            if (args.Has(name)) throw new UsageException($"--{name} does not go with --batch: the inputs are the file's lines, the results go to --out");
        string input = args.RequiredString("batch");
        string output = args.String("out") ?? throw new UsageException("--batch needs --out FILE.jsonl for the results");
        var settings = Settings(args, new ExplainInput.TokenIds([]));
        if (!File.Exists(input)) throw new FileNotFoundException($"batch input '{input}' does not exist", input);

        using var interrupt = new CancellationTokenSource();
        ConsoleCancelEventHandler onCancel = (_, e) =>
        {
            if (interrupt.IsCancellationRequested) return; // a second Ctrl-C stops at once
            e.Cancel = true;
            interrupt.Cancel();
            context.Error.WriteLine("stopping after the current line (Ctrl-C again to stop at once)");
        };
        Console.CancelKeyPress += onCancel;
        try
        {
            using var session = Terminal.WithStatus(context.Out, $"loading {settings.ModelDir}",
                () => ExplainSession.Open(settings.ModelDir, settings.Device, settings.Threads, precision: settings.Precision));
            var summary = Terminal.IsInteractive(context.Out)
                ? WithProgressBar(session, settings, input, output, interrupt.Token)
                : WithProgressLines(session, settings, input, output, context.Out, interrupt.Token);
            string counts = $"{summary.Explained} explained, {summary.Failed} failed, {summary.Skipped} already in {output}";
            if (summary.Cancelled)
            {
                context.Error.WriteLine($"interrupted: {counts}, {summary.Remaining} left; run the same command again to resume");
                return Interrupted;
            }
            context.Out.WriteLine($"{summary.Lines} lines: {counts}");
            return 0;
        }
        finally
        {
            Console.CancelKeyPress -= onCancel;
        }
    }

    private static BatchSummary WithProgressBar(ExplainSession session, ExplainRequest settings, string input, string output, CancellationToken cancellation)
    {
        BatchSummary summary = null!;
        Terminal.CreateInteractive().Progress().AutoClear(false)
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn(), new SpinnerColumn())
            .Start(ctx =>
            {
                var task = ctx.AddTask($"explaining {Markup.Escape(Path.GetFileName(input))}", maxValue: 1);
                summary = BatchRun.Run(session, settings, input, output, new InlineProgress<BatchProgress>(p =>
                {
                    task.MaxValue = Math.Max(1, p.Total);
                    task.Value = p.Done;
                }), cancellation);
                task.StopTask();
            });
        return summary;
    }

    private static BatchSummary WithProgressLines(ExplainSession session, ExplainRequest settings, string input, string output,
        TextWriter writer, CancellationToken cancellation)
    {
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var last = TimeSpan.FromSeconds(-1);
        int skipped = 0;
        var summary = BatchRun.Run(session, settings, input, output, new InlineProgress<BatchProgress>(p =>
        {
            if (p.Skipped)
            {
                skipped++;
                return;
            }
            // every line of small batches; about one a second for long ones, and every error
            if (p.Total > 100 && p.Error is null && p.Done < p.Total && clock.Elapsed - last < TimeSpan.FromSeconds(1)) return;
            last = clock.Elapsed;
            string resumed = skipped > 0 ? $" ({skipped} from an earlier run)" : "";
            writer.WriteLine($"[{p.Done}/{p.Total}] line {p.Line}: {(p.Error is null ? "explained" : "error: " + p.Error)}{resumed}");
            skipped = 0;
        }), cancellation);
        return summary;
    }

    /// <summary>The request the options describe; wrong options raise <see cref="UsageException"/>.</summary>
    public static ExplainRequest Request(Arguments args)
    {
        ExplainInput input = args.ExactlyOne("text", "input-ids", "image", "pixels") switch
        {
            "text" => new ExplainInput.Text(args.RequiredString("text")),
            "input-ids" => new ExplainInput.TokenIds(args.IntList("input-ids")!),
            "image" => new ExplainInput.ImageFile(args.RequiredString("image")),
            _ => new ExplainInput.PixelsFile(args.RequiredString("pixels")),
        };
        return Settings(args, input);
    }

    /// <summary>The request of the options besides the input (model, rules, target, precision, threads, nodes).</summary>
    public static ExplainRequest Settings(Arguments args, ExplainInput input)
    {
        string model = args.RequiredString("model");
        string rules = args.Choice("rules", Method.Ids, "attnlrp");
        Method method;
        try { method = Method.Parse(rules, args.Double("gamma-conv"), args.Double("gamma-linear")); }
        catch (ArgumentException e) { throw new UsageException(e.Message); }
        string precision = args.Choice("precision", ["float32", "f32", "float64", "tf32", "bf16"], "float32");
        var device = DeviceOption.Parse(args, precision == "float64" ? Device.Reference : Device.Cpu);
        if (args.Has("precision") && args.Has("device") && (precision == "float64") != (device == Device.Reference))
            throw new UsageException($"--precision {precision} contradicts --device {args.String("device")}");
        var gemm = GemmOf(precision);
        if (!Backends.SupportsPrecision(device, gemm))
            throw new UsageException($"--precision {precision} sets the matrix-product precision of --device cuda or ilgpu-cpu; --device {DeviceOption.NameOf(device)} computes in {(device == Device.Reference ? "float64" : "float32")} only");
        var checkpointing = args.String("checkpointing") is { } id ? CheckpointingOf(id) : Checkpointing.None;
        if (checkpointing.IntermediateBudget is not null && device == Device.Reference)
            throw new UsageException($"--checkpointing {checkpointing.Id} plans its memory budget with dry runs of the device's backend, which the float64 reference cannot be planned by; use --checkpointing products there");
        return new ExplainRequest(model, input)
        {
            Method = method,
            Target = args.Int("target", min: 0),
            Device = device,
            Precision = gemm,
            Threads = args.Int("threads", min: 0) ?? 0,
            Nodes = args.List("nodes") ?? [],
            Checkpointing = checkpointing,
            AttentionBlockRows = AttentionBlocksOf(args),
            AllPositions = args.Has("all-positions"),
            FusedAttention = FusedAttentionOf(args),
        };
    }

    /// <summary>The <c>--attention-blocks</c> option of the commands that explain or plan explanations.</summary>
    public static OptionSpec AttentionBlocksSpec { get; } = new("attention-blocks", "N",
        $"compute masked attention over more than N tokens in blocks of N query rows, each over only the keys its rows keep (causal: 5/8 of the scores in four blocks; same relevance); 0 computes it whole (default {ExplainOptions.DefaultAttentionBlockRows})");

    /// <summary>The <c>--all-positions</c> flag of the commands that explain or plan explanations.</summary>
    public static OptionSpec AllPositionsSpec { get; } = new("all-positions", null,
        "compute every value at every position (by default each is computed only at the positions the explained output reads, so the last layer runs at one position; same relevance)");

    /// <summary>The <c>--fused-attention</c> flag of the commands that explain or plan explanations.</summary>
    public static OptionSpec FusedAttentionSpec { get; } = new("fused-attention", null,
        "compute each attention as one op whose backward pass recomputes the probabilities from the queries, keys and one log-sum-exp per row, storing no [heads, tokens, keys] scores (causal, windowed or unmasked attention whose weights are not asked for; same relevance; --attention-blocks does not apply); the default on the cpu");

    /// <summary>The <c>--no-fused-attention</c> flag of the commands that explain or plan explanations.</summary>
    public static OptionSpec NoFusedAttentionSpec { get; } = new("no-fused-attention", null,
        "compute attention as products and a softmax (the default on cuda and the float64 reference)");

    /// <summary>What <c>--fused-attention</c> or <c>--no-fused-attention</c> asks for; null, the device's choice, without either.</summary>
    public static bool? FusedAttentionOf(Arguments args) => (args.Has("fused-attention"), args.Has("no-fused-attention")) switch
    {
        (true, true) => throw new UsageException("--fused-attention and --no-fused-attention contradict each other: give one"),
        (true, false) => true,
        (false, true) => false,
        _ => null,
    };

    /// <summary>The query rows of an attention block <c>--attention-blocks</c> asks for (the default without it).</summary>
    public static int AttentionBlocksOf(Arguments args) => args.Int("attention-blocks", min: 0) ?? ExplainOptions.DefaultAttentionBlockRows;

    /// <summary>The matrix-product precision a <c>--precision</c> value names (float32 for float32, f32 and float64).</summary>
    public static GemmPrecision GemmOf(string precision) => precision switch
    {
        "tf32" => GemmPrecision.TensorFloat32,
        "bf16" => GemmPrecision.BFloat16,
        _ => GemmPrecision.Float32,
    };

    /// <summary>The checkpointing choice <c>--checkpointing</c> names.</summary>
    public static Checkpointing CheckpointingOf(string id) =>
        Checkpointing.TryParse(id, out var c) ? c
        : throw new UsageException($"option '--checkpointing' takes {Checkpointing.NamesInWords}, not '{id}'");
}
