// Model: an immutable graph with named outputs and declared parameters; Weights: parameter values by name.
using Lxt.Graph;

namespace Lxt;

/// <summary>An immutable model graph: named outputs over inputs and declared parameters. Values are bound by a <see cref="Session"/>.</summary>
public sealed class Model
{
    internal Model(IReadOnlyDictionary<string, Expr> outputs, IReadOnlyDictionary<string, int[]> parameters)
    {
        if (outputs.Count == 0) throw new LxtException("a model needs at least one output");
        Outputs = outputs;
        Parameters = parameters.ToDictionary(kv => kv.Key, kv => (IReadOnlyList<int>)kv.Value);
        Inputs = Traverse.topo(outputs.Values.Select(e => e.Node))
            .Where(n => n.Op.IsInput).Select(n => new Expr(n)).ToArray();
    }

    /// <summary>A model over any expressions: its parameters are the parameter nodes the outputs reach. Use it for graphs
    /// composed from other models' expressions (a training loss over a decoder and an embedding table).</summary>
    public static Model Create(IReadOnlyDictionary<string, Expr> outputs)
    {
        ArgumentNullException.ThrowIfNull(outputs);
        var parameters = new Dictionary<string, int[]>();
        foreach (var n in Traverse.topo(outputs.Values.Select(e => e.Node)))
            if (n.Op is Op.Parameter p) parameters[p.name] = n.Shape;
        return new Model(outputs, parameters);
    }

    public IReadOnlyDictionary<string, Expr> Outputs { get; }

    /// <summary>Declared parameters (module path → shape).</summary>
    public IReadOnlyDictionary<string, IReadOnlyList<int>> Parameters { get; }

    /// <summary>The inputs that must be fed on every run.</summary>
    public IReadOnlyList<Expr> Inputs { get; }

    public Expr this[string output] => Outputs.TryGetValue(output, out var e)
        ? e : throw new KeyNotFoundException($"the model has no output '{output}' (outputs: {string.Join(", ", Outputs.Keys)})");

    /// <summary>The first node named <paramref name="name"/> in the model graph, or null.</summary>
    public Expr? FindNode(string name)
    {
        var found = Traverse.tryFindNamed(name, Outputs.Values.Select(e => e.Node));
        return found is null ? null : new Expr(found.Value);
    }

    /// <summary>Names of all named nodes, in execution order.</summary>
    public IReadOnlyList<string> NodeNames() =>
        Traverse.topo(Outputs.Values.Select(e => e.Node))
            .Where(n => n.Name != null).Select(n => n.Name.Value).Distinct().ToArray();

    /// <summary>The same graph with other outputs (for instance an inner node as output).</summary>
    public Model WithOutputs(IReadOnlyDictionary<string, Expr> outputs) =>
        new(outputs, Parameters.ToDictionary(kv => kv.Key, kv => kv.Value.ToArray()));
}

/// <summary>Parameter values by name, as float32 arrays (float32 converts to float64 exactly, so they serve both precisions).</summary>
public interface IWeightSource
{
    bool Contains(string name);
    /// <summary>The values of <paramref name="name"/>, checked against the expected shape.</summary>
    float[] Read(string name, IReadOnlyList<int> expectedShape);
}

/// <summary>Weights held in memory.</summary>
public sealed class Weights : IWeightSource
{
    private readonly Dictionary<string, (int[] Shape, float[] Values)> _values = new();

    public Weights Set(string name, float[] values, params int[] shape)
    {
        long count = shape.Aggregate(1L, (a, d) => a * d);
        if (count != values.Length)
            throw new BindingException($"weight '{name}' has {values.Length} values, its shape [{string.Join(", ", shape)}] needs {count}");
        _values[name] = (shape, values);
        return this;
    }

    public IEnumerable<string> Names => _values.Keys;
    public bool Contains(string name) => _values.ContainsKey(name);

    public float[] Read(string name, IReadOnlyList<int> expectedShape)
    {
        if (!_values.TryGetValue(name, out var w)) throw new BindingException($"no value for weight '{name}'");
        if (!w.Shape.SequenceEqual(expectedShape))
            throw new BindingException($"weight '{name}' has shape [{string.Join(", ", w.Shape)}], the model expects [{string.Join(", ", expectedShape)}]");
        return w.Values;
    }

    /// <summary>Random weights drawn from N(0, std²) with a fixed seed, for every parameter of a model
    /// (norm weights set to 1 so activations stay in range).</summary>
    public static Weights Random(Model model, int seed = 0, double std = 0.02)
    {
        var rng = new System.Random(seed);
        var w = new Weights();
        foreach (var (name, shape) in model.Parameters.OrderBy(kv => kv.Key, StringComparer.Ordinal))
        {
            int count = shape.Aggregate(1, (a, d) => a * d);
            bool isNorm = name.Contains("norm", StringComparison.Ordinal) && name.EndsWith(".weight", StringComparison.Ordinal);
            var values = new float[count];
            for (int i = 0; i < count; i++)
                values[i] = isNorm ? 1f : (float)(std * Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble()));
            w.Set(name, values, shape.ToArray());
        }
        return w;
    }
}
