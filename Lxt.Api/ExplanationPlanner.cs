// Planned device memory and kernels of an explanation, from a dry run (Lxt.Graph.DryRunBackend): the backend a device
// would run on decides fusion, prologues, in-place steps, lazy transposes and narrow weights, and nothing is allocated,
// read or computed — so whether a model, an input length and a checkpointing choice fit a GPU is known on any machine.
using Lxt.Backend.Gpu;
using Lxt.Graph;

namespace Lxt;

/// <summary>What one explanation would hold on its device and launch.</summary>
/// <param name="Checkpointing">The checkpointing choice planned.</param>
/// <param name="PeakBytes">The most bytes held at once: weights (narrow ones at their stored width), activations,
/// inputs and outputs; no GEMM workspace or scratch of the backend's own.</param>
/// <param name="Kernels">Ops computed (plain, fused, with a prologue, products): the kernels launched, besides the
/// copies of inputs and outputs.</param>
public sealed record PlannedExplanation(Checkpointing Checkpointing, long PeakBytes, long Kernels)
{
    public double PeakGiB => PeakBytes / (double)(1L << 30);
}

/// <summary>Plans explanations without running them.</summary>
public static class ExplanationPlanner
{
    /// <summary>The backend whose decisions a dry run for <paramref name="device"/> mirrors: for cuda the GPU backend
    /// on ILGPU's CPU accelerator, which plans as on a GPU and needs none.</summary>
    public static IBackend DecisionsFor(Device device, GemmPrecision precision = GemmPrecision.Float32) => device switch
    {
        Device.Cuda or Device.IlgpuCpu => GpuBackend.Create(GpuKind.CpuAccelerator, precision),
        Device.Cpu => Backends.Create(Device.Cpu, 1, precision), // refuses products in other than float32
        _ => throw new ArgumentException($"a dry run plans device memory for cpu, cuda or ilgpu-cpu, not {Backends.IdOf(device)}", nameof(device)),
    };

    /// <summary>The planned peak memory and kernels of explaining output 0 of <paramref name="model"/> (any input
    /// gives the same plan) with <paramref name="method"/> (AttnLRP by default), for each checkpointing choice, masked
    /// attention in blocks of <paramref name="attentionBlockRows"/> query rows (<see cref="ExplainOptions.AttentionBlockRows"/>),
    /// every value at every position when <paramref name="allPositions"/> (<see cref="ExplainOptions.AllPositions"/>),
    /// attention as one op when <paramref name="fusedAttention"/> (<see cref="ExplainOptions.FusedAttention"/>; null:
    /// as the device's backend chooses). <paramref name="decisions"/>, when given, is the backend whose decisions the
    /// dry run mirrors instead of <see cref="DecisionsFor"/>'s (a GPU backend with other kernel choices); the caller
    /// keeps and disposes it.</summary>
    public static IReadOnlyList<PlannedExplanation> Plan(Model model, string inputName, IReadOnlyList<string> layerOutputs,
        Device device, GemmPrecision precision, IReadOnlyList<Checkpointing> choices, Method? method = null,
        int attentionBlockRows = ExplainOptions.DefaultAttentionBlockRows, bool allPositions = false, bool? fusedAttention = null,
        IBackend? decisions = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(choices);
        var input = model.Inputs.FirstOrDefault(i => i.Name == inputName)
            ?? throw new KeyNotFoundException($"the model has no input named '{inputName}'");
        using var owned = decisions is null ? DecisionsFor(device, precision) : null;
        var dry = new DryRunBackend(decisions ?? owned!);
        using var session = new Session(model, new ZeroWeights(model), dry);
        var values = new float[ShapeModule.numel(input.Node.Shape)];
        var plans = new List<PlannedExplanation>();
        foreach (var checkpointing in choices)
        {
            session.ReleasePlans(); // each choice's peak is its own; weights stay
            dry.ResetPeak();
            long launched = dry.Launches;
            var explainer = new Explainer(model, inputName, session) { LayerOutputs = layerOutputs };
            explainer.Explain(values, new ExplainOptions { Method = method ?? Method.AttnLrp, Target = 0, Checkpointing = checkpointing, AttentionBlockRows = attentionBlockRows, AllPositions = allPositions, FusedAttention = fusedAttention });
            plans.Add(new PlannedExplanation(checkpointing, dry.PeakBytes, dry.Launches - launched));
        }
        return plans;
    }

    /// <summary>Zeros of every parameter's shape: a dry run reads no weight.</summary>
    private sealed class ZeroWeights(Model model) : IWeightSource
    {
        public bool Contains(string name) => model.Parameters.ContainsKey(name);

        public float[] Read(string name, IReadOnlyList<int> expectedShape) => new float[expectedShape.Aggregate(1L, (a, d) => a * d)];
    }
}
