// lxt plan: the device memory and kernels an explanation would take, from a dry run that reads no weight and needs no
// GPU — whether a model, an input length and a checkpointing choice fit a device, before running it there.
using Lxt.Backend.Gpu;
using Lxt.Import;

namespace Lxt.Cli.Commands;

public sealed class PlanCommand : ICommand
{
    public string Name => "plan";
    public string Summary => "plan an explanation's device memory and kernels without running it (no GPU needed)";
    public string Synopsis => "--model DIR [--tokens N] [--device cuda] [--precision bf16] [--checkpointing none,products]";

    public IReadOnlyList<OptionSpec> Options { get; } =
    [
        new("model", "DIR", "model folder: config.json, and a checkpoint if there is one, which the graph is checked against (weights are not read)"),
        new("tokens", "N", "input length in tokens (text models; default 128)"),
        new("device", "DEVICE", "the device planned for: cuda (default, planned as the GPU backend plans, on any machine), ilgpu-cpu or cpu"),
        new("precision", "P", "matrix products on cuda / ilgpu-cpu: f32 (default), tf32 or bf16 (bfloat16 weights, at 2 bytes)"),
        new("checkpointing", "LIST", $"comma-separated choices to plan (default all): {Checkpointing.NamesInWords}"),
        new("rules", "RULES", $"rule set: {string.Join(", ", Method.Ids)} (default attnlrp)"),
        ExplainCommand.AttentionBlocksSpec,
        ExplainCommand.AllPositionsSpec,
        ExplainCommand.FusedAttentionSpec,
        ExplainCommand.NoFusedAttentionSpec,
    ];

    public int Execute(Arguments args, CommandContext context)
    {
        string dir = args.RequiredString("model");
        int tokens = args.Int("tokens", min: 1) ?? 128;
        var device = DeviceOption.Parse(args, Device.Cuda);
        if (device == Device.Reference) throw new UsageException("--device reference plans no device memory; plan for cuda, ilgpu-cpu or cpu");
        var precision = ExplainCommand.GemmOf(args.Choice("precision", ["f32", "float32", "tf32", "bf16"], "f32"));
        if (!Backends.SupportsPrecision(device, precision))
            throw new UsageException($"--precision {GpuBackend.IdOf(precision)} sets the matrix products of --device cuda or ilgpu-cpu; cpu computes in float32");
        var choices = (args.List("checkpointing") ?? []).Select(ExplainCommand.CheckpointingOf).ToArray();
        if (choices.Length == 0) choices = Checkpointing.Named.ToArray();
        var method = Method.Parse(args.Choice("rules", Method.Ids, "attnlrp"));
        var graph = PretrainedModel.GraphOf(dir, tokens);
        var plans = ExplanationPlanner.Plan(graph.Model, graph.InputName, graph.LayerOutputs, device, precision, choices, method,
            ExplainCommand.AttentionBlocksOf(args), args.Has("all-positions"), ExplainCommand.FusedAttentionOf(args));
        var w = context.Out;
        w.WriteLine($"{method.Id} explanation of {dir}, input [{string.Join(", ", graph.InputShape)}], planned for {DeviceOption.NameOf(device)}"
                    + (device == Device.Cpu ? "" : $" with {GpuBackend.IdOf(precision)} products")
                    + (precision == GemmPrecision.BFloat16 ? NarrowValues(GpuBackend.NarrowValuesFromEnvironment()) : "")
                    + ": device memory at the peak (weights, activations, inputs and outputs; no GEMM workspace) and kernels launched");
        w.WriteLine($"{"checkpointing",-14} {"peak MiB",10} {"kernels",8}");
        foreach (var p in plans) w.WriteLine($"{p.Checkpointing.Id,-14} {p.PeakBytes / 1048576.0,10:F1} {p.Kernels,8}");
        return 0;
    }

    /// <summary>How bfloat16 mode stores computed values, as the header says it ($LXT_NARROW_VALUES_FROM).</summary>
    static string NarrowValues(int from) => from == int.MaxValue
        ? " (every computed value in float32)"
        : $" (computed values of {from} elements or more in bfloat16 where their kernels allow, and smaller ones only products read)";
}
