// The float32 CPU backend: buffers, host transfers, and the dispatch of every graph op to its kernel family.
using Lxt.Graph;

namespace Lxt.Backend.Cpu;

/// <summary>Runs plans in float32 on the CPU: TensorPrimitives for elementwise work, a blocked GEMM for products,
/// Parallel.For over rows for large ops.</summary>
public sealed class CpuBackend : IBackend, ITransposedMatMul, IInPlaceElementwise, IHostArrayAdoption, IAttentionChoice
{
    /// <param name="maxThreads">Most threads one op may use; 0 means one per processor.</param>
    public CpuBackend(int maxThreads = 0)
    {
        if (maxThreads < 0) throw new ArgumentOutOfRangeException(nameof(maxThreads), maxThreads, "the thread limit cannot be negative");
        MaxThreads = maxThreads == 0 ? Environment.ProcessorCount : maxThreads;
    }

    /// <summary>Most threads one op uses.</summary>
    public int MaxThreads { get; }

    public string Name => "cpu-f32";
    public bool IsDoublePrecision => false;

    /// <summary>A zeroed buffer of `length` float32 values.</summary>
    public CpuBuffer Allocate(int length) => new(length);
    IBuffer IBackend.Allocate(int length) => Allocate(length);

    /// <summary>A buffer whose storage is <paramref name="values"/> itself, without a copy (weights read once are
    /// the buffers). The caller must not change the array while the buffer is in use.</summary>
    public CpuBuffer Wrap(float[] values) => new(values);
    IBuffer IHostArrayAdoption.Adopt(float[] values) => Wrap(values);

    /// <summary>Every pointwise kernel reads an element before it writes the same element of the output.</summary>
    public bool SupportsInPlaceElementwise => true;

    /// <summary>Attention as one op by default: its blocks of rows against kept keys keep pace with products and a
    /// softmax at a few hundred tokens and pass them at thousands, storing no [heads, tokens, keys] value.</summary>
    public bool FusesAttention => true;

    static CpuBuffer Own(IBuffer buffer, string role) => buffer switch
    {
        CpuBuffer c => c,
        null => throw new ArgumentNullException(role),
        _ => throw new ArgumentException($"the {role} buffer ({buffer.GetType().Name}) belongs to another backend, not cpu-f32", role),
    };

    static void Fits(int source, int destination, string what)
    {
        if (source > destination)
            throw new ArgumentException($"{what}: {source} values do not fit in {destination}");
    }

    public void Upload(ReadOnlySpan<float> source, IBuffer destination)
    {
        var d = Own(destination, nameof(destination));
        Fits(source.Length, d.Length, "upload");
        source.CopyTo(d.Span);
    }

    public void UploadDouble(ReadOnlySpan<double> source, IBuffer destination)
    {
        var d = Own(destination, nameof(destination));
        Fits(source.Length, d.Length, "upload");
        var dst = d.Span;
        for (int i = 0; i < source.Length; i++) dst[i] = (float)source[i];
    }

    public void Download(IBuffer source, Span<float> destination)
    {
        var s = Own(source, nameof(source));
        Fits(destination.Length, s.Length, "download");
        s.Span[..destination.Length].CopyTo(destination);
    }

    public void DownloadDouble(IBuffer source, Span<double> destination)
    {
        var s = Own(source, nameof(source));
        Fits(destination.Length, s.Length, "download");
        var src = s.Span;
        for (int i = 0; i < destination.Length; i++) destination[i] = src[i];
    }

    public void Copy(IBuffer source, IBuffer destination)
    {
        var s = Own(source, nameof(source));
        var d = Own(destination, nameof(destination));
        Fits(s.Length, d.Length, "copy");
        Layout.Copy(s.Array, d.Array, s.Length, MaxThreads);
    }

    public void Execute(Node node, IBuffer[] inputs, IBuffer output)
    {
        ArgumentNullException.ThrowIfNull(node);
        ArgumentNullException.ThrowIfNull(inputs);
        var y = Own(output, nameof(output));
        int n = ShapeModule.numel(node.Shape);
        if (y.Length != n)
            throw new ArgumentException($"the output buffer has {y.Length} values, {Node.Describe(node)} needs {n}", nameof(output));
        int arity = node.Children.Length;
        if (inputs.Length != arity)
            throw new ArgumentException($"{Node.Describe(node)} takes {arity} operands, got {inputs.Length}", nameof(inputs));
        var x = new float[arity][];
        int k = 0;
        foreach (var child in node.Children)
        {
            var b = Own(inputs[k], "input");
            if (b.Length != ShapeModule.numel(child.Shape))
                throw new ArgumentException($"operand {k} of {Node.Describe(node)} has {b.Length} values, {Node.Describe(child)} needs {ShapeModule.numel(child.Shape)}", nameof(inputs));
            x[k++] = b.Array;
        }
        Dispatch(node, x, y.Array, n);
    }

    /// <summary>A MatMul whose operands may be stored with their last two axes swapped: the GEMM reads them
    /// transposed, so no transposed copy is made.</summary>
    public void ExecuteMatMul(Node node, IBuffer a, bool transA, IBuffer b, bool transB, IBuffer output)
    {
        ArgumentNullException.ThrowIfNull(node);
        if (node.Op is not Op.MatMul mm)
            throw new ArgumentException($"{Node.Describe(node)} is not a matrix product", nameof(node));
        var y = Own(output, nameof(output));
        var xa = Own(a, "a");
        var xb = Own(b, "b");
        int n = ShapeModule.numel(node.Shape);
        if (y.Length != n)
            throw new ArgumentException($"the output buffer has {y.Length} values, {Node.Describe(node)} needs {n}", nameof(output));
        if (xa.Length != ShapeModule.numel(mm.a.Shape) || xb.Length != ShapeModule.numel(mm.b.Shape))
            throw new ArgumentException($"the operands of {Node.Describe(node)} have {xa.Length} and {xb.Length} values, its operands need {ShapeModule.numel(mm.a.Shape)} and {ShapeModule.numel(mm.b.Shape)}");
        MatMul.Run(mm.a.Shape, xa.Array, transA, mm.b.Shape, xb.Array, transB, node.Shape, y.Array, MaxThreads);
    }

    void Dispatch(Node node, float[][] x, float[] y, int n)
    {
        int t = MaxThreads;
        var shape = node.Shape;
        switch (node.Op)
        {
            case Op.Input or Op.Parameter or Op.Constant:
                throw new InvalidOperationException($"{Node.Describe(node)} is a leaf: its value is bound, not computed");
            case Op.Fill f:
                y.AsSpan(0, n).Fill((float)f.value);
                break;
            case Op.Unary u:
                Elementwise.Unary(u.op, x[0], y, n, t);
                break;
            case Op.Binary b:
                Elementwise.Binary(b.op, b.a.Shape, x[0], b.b.Shape, x[1], shape, y, t);
                break;
            case Op.Where w:
                Elementwise.Where(w.cond.Shape, x[0], w.whenTrue.Shape, x[1], w.whenFalse.Shape, x[2], shape, y, t);
                break;
            case Op.MatMul mm:
                MatMul.Run(mm.a.Shape, x[0], false, mm.b.Shape, x[1], false, shape, y, t);
                break;
            case Op.Softmax s:
                Reductions.Softmax(s.axis, shape, x[0], y, t);
                break;
            case Op.Reduce r:
                Reductions.Reduce(r.op, r.axes, r.x.Shape, x[0], y, t);
                break;
            case Op.Broadcast b:
                Layout.Broadcast(b.x.Shape, x[0], shape, y, t);
                break;
            case Op.Reshape or Op.StopGradient or Op.GradientScale or Op.Recompute:
                Layout.Copy(x[0], y, n, t);
                break;
            case Op.Permute p:
                Layout.Permute(p.perm, p.x.Shape, x[0], y, t);
                break;
            case Op.Slice s:
                Layout.Slice(s.axis, s.start, s.stop, s.x.Shape, x[0], y, t);
                break;
            case Op.Concat c:
                Layout.Concat(c.axis, c.xs.Select(p => p.Shape).ToArray(), x, shape, y, t);
                break;
            case Op.Gather g:
                Layout.Gather(g.table, x[0], x[1], ShapeModule.numel(g.indices.Shape), y, t);
                break;
            case Op.ScatterAdd s:
                Layout.ScatterAdd(node, x[0], ShapeModule.numel(s.indices.Shape), x[1], y);
                break;
            case Op.Conv2d c:
                Conv.Forward(c.stride, c.padding, c.x.Shape, x[0], c.w.Shape, x[1], shape, y, t);
                break;
            case Op.Conv2dGradInput c:
                Conv.GradInput(c.stride, c.padding, c.grad.Shape, x[0], c.w.Shape, x[1], shape, y, t);
                break;
            case Op.Conv2dGradWeight c:
                Conv.GradWeight(c.stride, c.padding, c.x.Shape, x[0], c.grad.Shape, x[1], shape, y, t);
                break;
            case Op.TopKMask k:
                Reductions.TopKMask(k.k, shape, x[0], y);
                break;
            case Op.Attention a:
                Attention.Run(a, x, y, t);
                break;
            default:
                throw new NotSupportedException($"cpu backend: {Node.Describe(node)} has an op this backend does not implement");
        }
    }

    public void Dispose() { }
}
