// Session: a model's graph compiled to a plan on a backend, weights bound once, run many times.
using System.Numerics;
using System.Numerics.Tensors;
using Lxt.Backend.Gpu;
using Lxt.Graph;

namespace Lxt;

/// <summary>Where and in which precision graphs run.</summary>
public enum Device
{
    /// <summary>float32 on the CPU, SIMD and multi-threaded.</summary>
    Cpu,
    /// <summary>float64 reference interpreter: slow, exact semantics.</summary>
    Reference,
    /// <summary>float32 on the first CUDA GPU (ILGPU kernels, cuBLAS products in the <see cref="GemmPrecision"/> given to
    /// <see cref="Backends.Create"/>); fails with <see cref="Lxt.Backend.Gpu.GpuUnavailableException"/> where there is none.</summary>
    Cuda,
    /// <summary>The GPU backend's kernels on ILGPU's CPU accelerator: slow, for testing the GPU code without a GPU.</summary>
    IlgpuCpu,
}

public static class Backends
{
    /// <summary>A new backend for <paramref name="device"/>; <paramref name="threads"/> 0 = all cores.
    /// <paramref name="precision"/> chooses how the GPU backends (<see cref="Device.Cuda"/>, <see cref="Device.IlgpuCpu"/>)
    /// compute matrix products; the CPU and reference backends take only <see cref="GemmPrecision.Float32"/>.</summary>
    /// <exception cref="ArgumentException">TF32 or bfloat16 products were asked of the CPU or reference backend.</exception>
    public static IBackend Create(Device device, int threads = 0, GemmPrecision precision = GemmPrecision.Float32)
    {
        if (precision != GemmPrecision.Float32 && !SupportsPrecision(device, precision))
            throw new ArgumentException($"{GpuBackend.IdOf(precision)} matrix products need a GPU device (cuda or ilgpu-cpu); {IdOf(device)} computes them in {(device == Device.Reference ? "float64" : "float32")}", nameof(precision));
        return device switch
        {
            Device.Reference => new ReferenceBackend(),
            Device.Cpu => new Lxt.Backend.Cpu.CpuBackend(threads),
            Device.Cuda => GpuBackend.Create(GpuKind.Cuda, precision),
            Device.IlgpuCpu => GpuBackend.Create(GpuKind.CpuAccelerator, precision),
            _ => throw new ArgumentOutOfRangeException(nameof(device)),
        };
    }

    /// <summary>True when <paramref name="device"/> computes matrix products in <paramref name="precision"/>: every
    /// device in float32 (float64 on the reference), TF32 and bfloat16 only on cuda and ilgpu-cpu.</summary>
    public static bool SupportsPrecision(Device device, GemmPrecision precision) =>
        precision == GemmPrecision.Float32 || device is Device.Cuda or Device.IlgpuCpu;

    /// <summary>The short id of a device as command lines spell it: cpu, reference, cuda, ilgpu-cpu.</summary>
    public static string IdOf(Device device) => device switch
    {
        Device.Cpu => "cpu",
        Device.Reference => "reference",
        Device.Cuda => "cuda",
        Device.IlgpuCpu => "ilgpu-cpu",
        _ => throw new ArgumentOutOfRangeException(nameof(device)),
    };

    /// <summary>The device whose id (see <see cref="IdOf"/>) is <paramref name="id"/>, ignoring case.</summary>
    public static bool TryParseDevice(string id, out Device device)
    {
        foreach (var d in Enum.GetValues<Device>())
            if (string.Equals(IdOf(d), id?.Trim(), StringComparison.OrdinalIgnoreCase)) { device = d; return true; }
        device = Device.Cpu;
        return false;
    }
}

/// <summary>float32 values widened to float64 a vector at a time: copied, summed or added.</summary>
internal static class Widening
{
    public static void Copy(ReadOnlySpan<float> x, Span<double> y)
    {
        int i = 0, w = Vector<float>.Count;
        for (; i <= x.Length - w; i += w)
        {
            Vector.Widen(new Vector<float>(x[i..]), out var low, out var high);
            low.CopyTo(y[i..]);
            high.CopyTo(y[(i + w / 2)..]);
        }
        for (; i < x.Length; i++) y[i] = x[i];
    }

    public static double Sum(ReadOnlySpan<float> x)
    {
        var a = Vector<double>.Zero;
        var b = Vector<double>.Zero;
        int i = 0, w = Vector<float>.Count;
        for (; i <= x.Length - w; i += w)
        {
            Vector.Widen(new Vector<float>(x[i..]), out var low, out var high);
            a += low;
            b += high;
        }
        double s = Vector.Sum(a + b);
        for (; i < x.Length; i++) s += x[i];
        return s;
    }

    public static void AddTo(ReadOnlySpan<float> x, Span<double> sums)
    {
        int i = 0, w = Vector<float>.Count, h = Vector<double>.Count;
        for (; i <= x.Length - w; i += w)
        {
            Vector.Widen(new Vector<float>(x[i..]), out var low, out var high);
            (new Vector<double>(sums[i..]) + low).CopyTo(sums[i..]);
            (new Vector<double>(sums[(i + h)..]) + high).CopyTo(sums[(i + h)..]);
        }
        for (; i < x.Length; i++) sums[i] += x[i];
    }
}

/// <summary>The phases of one <see cref="Session.Evaluate(IReadOnlyList{Expr}, IReadOnlyDictionary{string, float[]}, CancellationToken)"/>.</summary>
public readonly record struct EvaluationTimes(TimeSpan Upload, TimeSpan Submit, TimeSpan Download);

/// <summary>A computed tensor: shape and values (float32, and float64 when computed in float64).</summary>
public sealed class TensorValue
{
    internal TensorValue(int[] shape, float[] values, double[]? doubles)
    {
        Shape = shape;
        Values = values;
        Float64 = doubles;
    }

    public IReadOnlyList<int> Shape { get; }
    public float[] Values { get; }
    /// <summary>The values in float64 when the backend computed in float64; otherwise null.</summary>
    public double[]? Float64 { get; }
    public ReadOnlySpan<float> Span => Values;
    public double this[int index] => Float64 is { } d ? d[index] : Values[index];
    /// <summary>The values as float64 (exact copies of float32 values where that was the precision).</summary>
    public double[] ToDoubleArray()
    {
        if (Float64 is { } d) return (double[])d.Clone();
        var wide = GC.AllocateUninitializedArray<double>(Values.Length);
        Widening.Copy(Values, wide);
        return wide;
    }

    /// <summary>The sum of <paramref name="count"/> values from <paramref name="start"/>, in float64.</summary>
    internal double Sum(int start, int count) =>
        Float64 is { } d ? TensorPrimitives.Sum<double>(d.AsSpan(start, count)) : Widening.Sum(Values.AsSpan(start, count));

    /// <summary>Adds <paramref name="sums"/>.Length values from <paramref name="start"/> to <paramref name="sums"/>.</summary>
    internal void AddTo(int start, Span<double> sums)
    {
        if (Float64 is { } d) TensorPrimitives.Add<double>(sums, d.AsSpan(start, sums.Length), sums);
        else Widening.AddTo(Values.AsSpan(start, sums.Length), sums);
    }
}

/// <summary>
/// Runs graphs over one model's weights on one backend. Parameters are uploaded once (and checked for shape and
/// NaN); intermediate buffers are pooled across runs. Not thread-safe; dispose to free backend memory.
/// </summary>
public sealed class Session : IDisposable
{
    private IWeightSource _weights;
    private readonly IReadOnlyDictionary<string, IReadOnlyList<int>> _parameterShapes;
    private readonly Dictionary<string, IBuffer> _uploaded = new();
    // parameters stored narrow (e.g. bfloat16) for plans that read them only as matrix-product operands
    private readonly Dictionary<string, IBuffer> _matrixWeights = new();
    // values set by SetParameter on a parameter held only narrow: a later float32 upload starts from them, not the source
    private readonly Dictionary<string, float[]> _setValues = new();
    private readonly Dictionary<string, int[]> _uploadedShapes = new();
    private readonly Dictionary<(Node[] Outputs, Node[] Checkpoints), Executable> _plans = new(new PlanKeyComparer());
    private readonly HashSet<Executable> _bound = new(ReferenceEqualityComparer.Instance);
    // each plan's input buffers, uploaded into by every run: no device allocation or free per run
    private readonly Dictionary<Executable, Dictionary<string, IBuffer>> _feeds = new(ReferenceEqualityComparer.Instance);

    /// <summary>A session on a new backend for <paramref name="device"/> (see <see cref="Backends.Create"/>).</summary>
    public Session(Model model, IWeightSource weights, Device device = Device.Cpu, int threads = 0, GemmPrecision precision = GemmPrecision.Float32)
        : this(model, weights, Backends.Create(device, threads, precision)) { }

    public Session(Model model, IWeightSource weights, IBackend backend)
    {
        Model = model;
        _weights = weights;
        _parameterShapes = model.Parameters;
        Backend = backend;
    }

    public Model Model { get; }
    public IBackend Backend { get; }

    /// <summary>Bytes of intermediate buffers held at once by the plans run so far (their peak).</summary>
    public long PeakIntermediateBytes => _plans.Values.Select(p => p.PeakIntermediateBytes).DefaultIfEmpty(0).Max();

    /// <summary>Runs the model's outputs on the given inputs (name → values; integer inputs as whole numbers).</summary>
    public IReadOnlyDictionary<string, TensorValue> Run(IReadOnlyDictionary<string, float[]> inputs, CancellationToken cancellation = default)
    {
        var names = Model.Outputs.Keys.ToArray();
        var values = Evaluate(names.Select(n => Model.Outputs[n]).ToArray(), inputs, cancellation);
        return names.Select((n, i) => (n, values[i])).ToDictionary(p => p.n, p => p.Item2);
    }

    /// <summary>Evaluates any nodes over this model's parameters (used by explanations for rewritten graphs).</summary>
    public TensorValue[] Evaluate(IReadOnlyList<Expr> outputs, IReadOnlyDictionary<string, float[]> inputs, CancellationToken cancellation = default) =>
        Evaluate(outputs, inputs, null, cancellation);

    /// <summary>As <see cref="Evaluate(IReadOnlyList{Expr}, IReadOnlyDictionary{string, float[]}, CancellationToken)"/>,
    /// with some inputs given in float64 (<paramref name="doubleInputs"/> wins over <paramref name="inputs"/>): a float64
    /// backend keeps them exact, for instance a key/value cache computed by an earlier run.</summary>
    public TensorValue[] Evaluate(IReadOnlyList<Expr> outputs, IReadOnlyDictionary<string, float[]> inputs,
        IReadOnlyDictionary<string, double[]>? doubleInputs, CancellationToken cancellation = default) =>
        Evaluate(outputs, inputs, doubleInputs, [], cancellation);

    /// <summary>As <see cref="Evaluate(IReadOnlyList{Expr}, IReadOnlyDictionary{string, float[]}, IReadOnlyDictionary{string, double[]}, CancellationToken)"/>,
    /// with gradient checkpointing: a backward pass among <paramref name="outputs"/> recomputes the activations between
    /// <paramref name="checkpoints"/> (nodes of the forward pass, e.g. layer outputs and the input) instead of keeping
    /// them. The values are the same; the peak memory holds the checkpoints and one segment's activations.</summary>
    public TensorValue[] Evaluate(IReadOnlyList<Expr> outputs, IReadOnlyDictionary<string, float[]> inputs,
        IReadOnlyDictionary<string, double[]>? doubleInputs, IReadOnlyList<Expr> checkpoints, CancellationToken cancellation = default)
    {
        cancellation.ThrowIfCancellationRequested();
        ArgumentNullException.ThrowIfNull(checkpoints);
        var nodes = outputs.Select(o => o.Node).ToArray();
        var key = (nodes, checkpoints.Select(c => c.Node).ToArray());
        if (!_plans.TryGetValue(key, out var exe))
        {
            var options = new PlanOptions(Microsoft.FSharp.Collections.ListModule.OfArray(key.Item2));
            exe = new Executable(PlanModule.compileWith(options, Microsoft.FSharp.Collections.ListModule.OfArray(nodes)), Backend);
            _plans[key] = exe;
        }
        if (!_bound.Contains(exe))
        {
            // once per plan: later runs find every parameter bound (their buffers are updated in place)
            var narrow = NarrowableParameters(exe.Plan);
            foreach (var p in PlanModule.parameters(exe.Plan))
            {
                var name = ((Op.Parameter)p.Op).name;
                if (!exe.IsBound(name))
                    exe.BindParameter(name, narrow.Contains(name) ? UploadMatrixWeight(name, p.Shape) : Upload(name, p.Shape), owned: false);
            }
            _bound.Add(exe);
        }
        var clock = System.Diagnostics.Stopwatch.StartNew();
        if (!_feeds.TryGetValue(exe, out var feeds)) _feeds[exe] = feeds = new Dictionary<string, IBuffer>();
        foreach (var input in PlanModule.inputs(exe.Plan))
        {
            var name = ((Op.Input)input.Op).name;
            int length = ShapeModule.numel(input.Shape);
            if (!feeds.TryGetValue(name, out var buffer)) feeds[name] = buffer = Backend.Allocate(length);
            void Fits(int given)
            {
                if (given != length)
                    throw new BindingException($"input '{name}' has {given} values, its shape [{string.Join(", ", input.Shape)}] needs {length}");
            }
            if (doubleInputs is not null && doubleInputs.TryGetValue(name, out var exact))
            {
                Fits(exact.Length);
                Backend.UploadDouble(exact, buffer);
                continue;
            }
            if (!inputs.TryGetValue(name, out var host))
                throw new BindingException($"no value was given for input '{name}' [{string.Join(", ", input.Shape)}]");
            Fits(host.Length);
            Backend.Upload(host, buffer);
        }
        var uploaded = clock.Elapsed;
        var outs = exe.Run(feeds);
        var submitted = clock.Elapsed;
        try
        {
            var values = outs.Select((b, i) => Download(b, nodes[i].Shape)).ToArray();
            LastEvaluation = new EvaluationTimes(uploaded, submitted - uploaded, clock.Elapsed - submitted);
            return values;
        }
        finally { exe.Recycle(outs); }
    }

    /// <summary>Where the last <see cref="Evaluate(IReadOnlyList{Expr}, IReadOnlyDictionary{string, float[]}, CancellationToken)"/>
    /// spent its time: uploading inputs, submitting the plan's run (on an asynchronous backend such as the GPU's the
    /// device may still be running it) and downloading the outputs (waiting for the device first).</summary>
    public EvaluationTimes LastEvaluation { get; private set; }

    /// <summary>The parameters of a plan the backend may store narrow: those read only as matrix-product operands,
    /// when the backend implements <see cref="ILowPrecisionWeights"/> and narrows them.</summary>
    private IReadOnlySet<string> NarrowableParameters(Plan plan)
    {
        if (Backend is not ILowPrecisionWeights { NarrowsMatrixWeights: true }) return new HashSet<string>();
        return new HashSet<string>(PlanModule.matMulOnlyParameters(Backend is ITransposedMatMul, plan));
    }

    /// <summary>A parameter for plans that read it only as a matrix-product operand: its float32 buffer when one is
    /// already uploaded (another plan reads it otherwise), else one narrow upload shared by all such plans.</summary>
    private IBuffer UploadMatrixWeight(string name, int[] shape)
    {
        if (_uploaded.TryGetValue(name, out var wide)) return wide;
        if (_matrixWeights.TryGetValue(name, out var shared)) return shared;
        var values = ReadChecked(name, shape);
        var buffer = ((ILowPrecisionWeights)Backend).AllocateMatrixWeight(values);
        _matrixWeights[name] = buffer;
        _uploadedShapes[name] = shape;
        return buffer;
    }

    private float[] ReadChecked(string name, int[] shape)
    {
        if (!_weights.Contains(name)) throw new BindingException($"the weights have no value for parameter '{name}' [{string.Join(", ", shape)}]");
        var values = _weights.Read(name, shape);
        int bad = FirstNonFinite(values);
        if (bad >= 0) throw new BindingException($"weight '{name}' holds {values[bad]} at element {bad}");
        return values;
    }

    private IBuffer Upload(string name, int[] shape)
    {
        // one upload per parameter, shared by all plans (weights are the bulk of memory); a parameter also stored
        // narrow for products keeps that copy for them and gets this float32 one for its other readers
        if (_uploaded.TryGetValue(name, out var shared)) return shared;
        var values = _setValues.Remove(name, out var set) ? set : ReadChecked(name, shape);
        IBuffer buffer;
        if (Backend is IHostArrayAdoption host) buffer = host.Adopt(values); // the array read is the buffer: no second copy
        else
        {
            buffer = Backend.Allocate(values.Length);
            Backend.Upload(values, buffer);
        }
        _uploaded[name] = buffer;
        _uploadedShapes[name] = shape;
        return buffer;
    }

    /// <summary>
    /// Replaces a parameter's values for every later run (a training step updates the weights between runs). The values
    /// are uploaded into the parameter's buffer, which all plans share; the weight source is not read again for it.
    /// </summary>
    public void SetParameter(string name, ReadOnlySpan<float> values) => Set(name, values, fromSource: false);

    private void Set(string name, ReadOnlySpan<float> values, bool fromSource)
    {
        ArgumentNullException.ThrowIfNull(name);
        if (_uploadedShapes.TryGetValue(name, out var shape) || TryDeclaredShape(name, out shape))
        {
            if (values.Length != ShapeModule.numel(shape))
                throw new BindingException($"parameter '{name}' [{string.Join(", ", shape)}] takes {ShapeModule.numel(shape)} values, got {values.Length}");
        }
        int bad = FirstNonFinite(values);
        if (bad >= 0) throw new BindingException($"new value of parameter '{name}' holds {values[bad]} at element {bad}");
        bool narrowed = _matrixWeights.TryGetValue(name, out var narrow);
        if (narrowed) Backend.Upload(values, narrow!); // a narrow buffer takes the values rounded
        if (_uploaded.TryGetValue(name, out var buffer))
        {
            Backend.Upload(values, buffer);
            return;
        }
        if (narrowed)
        {
            // a narrow copy has lost the float32 values a later float32 upload needs (unless the source holds them)
            if (fromSource) _setValues.Remove(name);
            else _setValues[name] = values.ToArray();
            return;
        }
        buffer = Backend.Allocate(values.Length);
        Backend.Upload(values, buffer);
        _uploaded[name] = buffer;
        if (shape is not null) _uploadedShapes[name] = shape;
    }

    /// <summary>Reads every parameter again from <paramref name="weights"/> (those already uploaded at once, the others
    /// when a plan first needs them).</summary>
    public void UpdateWeights(IWeightSource weights)
    {
        ArgumentNullException.ThrowIfNull(weights);
        _weights = weights;
        foreach (var (name, shape) in _uploadedShapes.ToArray())
        {
            if (!weights.Contains(name)) throw new BindingException($"the weights have no value for parameter '{name}' [{string.Join(", ", shape)}]");
            Set(name, weights.Read(name, shape), fromSource: true);
        }
    }

    private bool TryDeclaredShape(string name, out int[] shape)
    {
        shape = null!;
        if (!_parameterShapes.TryGetValue(name, out var declared)) return false;
        shape = declared.ToArray();
        return true;
    }

    private static int FirstNonFinite(ReadOnlySpan<float> values)
    {
        // Σ 0·v is NaN exactly when some v is NaN or ±∞: one vectorised pass, then a scan only on failure
        if (float.IsFinite(TensorPrimitives.Dot(values, values) * 0f + TensorPrimitives.Sum(values) * 0f)) return -1;
        for (int i = 0; i < values.Length; i++) if (!float.IsFinite(values[i])) return i;
        return -1;
    }

    private TensorValue Download(IBuffer buffer, int[] shape)
    {
        var floats = GC.AllocateUninitializedArray<float>(buffer.Length);
        double[]? doubles = null;
        if (Backend.IsDoublePrecision)
        {
            doubles = new double[buffer.Length];
            Backend.DownloadDouble(buffer, doubles);
            for (int i = 0; i < doubles.Length; i++) floats[i] = (float)doubles[i];
        }
        else Backend.Download(buffer, floats);
        return new TensorValue(shape, floats, doubles);
    }

    /// <summary>Frees the compiled plans and the intermediate buffers they pool; uploaded weights stay. Later runs
    /// compile again. Use it between workloads of different shapes on one session, so one's buffers do not stay
    /// allocated while the other runs.</summary>
    public void ReleasePlans()
    {
        foreach (var p in _plans.Values) ((IDisposable)p).Dispose();
        _plans.Clear();
        _bound.Clear();
        foreach (var b in _feeds.Values.SelectMany(f => f.Values)) b.Dispose();
        _feeds.Clear();
    }

    public void Dispose()
    {
        ReleasePlans();
        foreach (var b in _uploaded.Values) b.Dispose();
        _uploaded.Clear();
        foreach (var b in _matrixWeights.Values) b.Dispose();
        _matrixWeights.Clear();
        _setValues.Clear();
        _uploadedShapes.Clear();
        Backend.Dispose();
    }

    private sealed class PlanKeyComparer : IEqualityComparer<(Node[] Outputs, Node[] Checkpoints)>
    {
        public bool Equals((Node[] Outputs, Node[] Checkpoints) x, (Node[] Outputs, Node[] Checkpoints) y) =>
            Same(x.Outputs, y.Outputs) && Same(x.Checkpoints, y.Checkpoints);
        public int GetHashCode((Node[] Outputs, Node[] Checkpoints) key) =>
            key.Checkpoints.Aggregate(key.Outputs.Aggregate(17, (h, n) => h * 31 + n.Id) * 7, (h, n) => h * 31 + n.Id);
        private static bool Same(Node[] x, Node[] y) => x.Length == y.Length && x.Zip(y).All(p => ReferenceEquals(p.First, p.Second));
    }
}
