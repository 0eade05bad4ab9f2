// Trainer: gradient descent on a model's scalar loss — the loss graph differentiated by Lxt's own VJP, run on a
// backend, the weights updated by Adam and written back into the session between steps.
using Lxt.Graph;

namespace Lxt.Training;

/// <summary>What one training step measured: the loss and the model's other scalar outputs before the update.</summary>
public sealed record TrainingStep(int Step, double Loss, double GradientNorm, IReadOnlyDictionary<string, double> Metrics);

/// <summary>
/// Trains the parameters of a model whose output <c>loss</c> is a scalar. Gradients come from
/// <see cref="Gradients.Of"/> (Lxt's VJP) on the loss graph (built and compiled once); each <see cref="Step"/> runs loss and
/// gradients on the backend, updates the arrays of <see cref="Weights"/> in place with <see cref="Adam"/> and uploads
/// them. Other scalar outputs of the model are reported as metrics. For minibatches build a loss that averages the
/// per-example losses of a batch (hash-consing shares the parameters). With one CPU thread (the default) runs are
/// bit-for-bit reproducible.
/// </summary>
public sealed class Trainer : IDisposable
{
    private readonly Expr[] _outputs;
    private readonly string[] _metrics;
    private readonly (string Name, int[] Shape)[] _parameters;

    public Trainer(Model model, Weights weights, AdamOptions? options = null, Device device = Device.Cpu, int threads = 1,
        string loss = "loss", IEnumerable<string>? trainable = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        Weights = weights ?? throw new ArgumentNullException(nameof(weights));
        var lossExpr = model[loss];
        if (lossExpr.Rank != 0) throw new GraphShapeException($"the training loss '{loss}' must be a scalar, it is {lossExpr}");
        var names = (trainable ?? model.Parameters.Keys).OrderBy(n => n, StringComparer.Ordinal).ToArray();
        _parameters = names.Select(n => model.Parameters.TryGetValue(n, out var s)
            ? (n, s.ToArray()) : throw new KeyNotFoundException($"the model has no parameter '{n}'")).ToArray();
        _metrics = model.Outputs.Where(kv => kv.Key != loss && kv.Value.Rank == 0).Select(kv => kv.Key).Order(StringComparer.Ordinal).ToArray();

        var gradients = Gradients.Of(lossExpr, _parameters.Select(p => new Expr(Ops.parameter(p.Name, p.Shape))));
        _outputs = new[] { lossExpr }.Concat(_metrics.Select(m => model[m])).Concat(gradients).ToArray();
        Optimizer = new Adam(options);
        Session = new Session(model, weights, device, threads);
    }

    /// <summary>The weights being trained; their arrays are updated in place.</summary>
    public Weights Weights { get; }
    public Adam Optimizer { get; }
    /// <summary>The session the steps run in; it holds the current weights, so it also evaluates the model mid-training.</summary>
    public Session Session { get; }
    /// <summary>The trained parameters, in the (ordinal) order updates are applied.</summary>
    public IReadOnlyList<string> Parameters => _parameters.Select(p => p.Name).ToArray();

    /// <summary>One step on one batch: loss and gradients at the current weights, then one Adam update.</summary>
    public TrainingStep Step(IReadOnlyDictionary<string, float[]> inputs, CancellationToken cancellation = default)
    {
        var values = Session.Evaluate(_outputs, inputs, cancellation);
        double lossValue = values[0][0];
        if (!double.IsFinite(lossValue))
            throw new LxtException($"the loss is {lossValue} at step {Optimizer.StepCount + 1}; lower the learning rate or check the inputs");
        var metrics = _metrics.Select((m, i) => (m, values[1 + i][0])).ToDictionary(p => p.m, p => p.Item2);
        int first = 1 + _metrics.Length;
        var updates = _parameters.Select((p, i) => (p.Name, Weights.Read(p.Name, p.Shape), values[first + i].Values)).ToArray();
        double norm = Optimizer.Step(updates);
        foreach (var (name, current, _) in updates) Session.SetParameter(name, current);
        return new TrainingStep(Optimizer.StepCount, lossValue, norm, metrics);
    }

    public void Dispose() => Session.Dispose();
}
