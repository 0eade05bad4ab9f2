// Dispatch of every graph op to its ILGPU kernel; kernels are compiled once per accelerator, on first use.
using ILGPU;
using ILGPU.Runtime;
using Lxt.Graph;

namespace Lxt.Backend.Gpu;

public sealed partial class GpuBackend
{
    // one loaded kernel per op family, compiled for this accelerator when first needed
    Action<Index1D, ArrayView<float>, float>? fill;
    Action<Index1D, ArrayView<float>, ArrayView<float>, int>? unary;
    Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, Walk, int>? binary;
    Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, Walk>? where;
    Action<Index1D, ArrayView<float>, ArrayView<ushort>, ArrayView<float>, ArrayView<ushort>, Walk, int, int, int>? stridedCopy, stridedCopyPairs;
    Action<Index1D, ArrayView<float>, ArrayView<float>, int, int>? softmax;
    Action<Index1D, ArrayView<float>, ArrayView<float>, Walk, Walk, int, int>? reduce;
    Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int>? gather, scatterAdd;
    Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ConvShape>? conv2d, conv2dGradInput, conv2dGradWeight;
    Action<KernelConfig, ArrayView<float>, ArrayView<float>, int, int>? topKMask;
    Action<KernelConfig, ArrayView<float>, ArrayView<float>, int>? softmaxRows;
    Action<KernelConfig, ArrayView<float>, ArrayView<float>, int, int>? reduceRows;
    Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, AttentionShape>?
        attentionQueryRows, attentionKeyRows;
    // the tensor-core attention kernels per head dimensions (D, Dv) and way of reading tiles by columns
    readonly Dictionary<(int, int, bool, int), Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, AttentionShape>> tensorCoreForward = [];
    Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>>? tensorCoreProduct;
    readonly Dictionary<(int, int, bool, int), Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, AttentionShape>> tensorCoreBackward = [];

    /// <summary>A launch of one warp per row, for the top-k rows.</summary>
    KernelConfig WarpPerRow(int rows) => new(new Index1D(rows), new Index1D(accelerator.WarpSize));

    /// <summary>A launch of one group per row of <paramref name="len"/> values, for the softmax and reduction rows: a
    /// warp, doubled while each thread would still have more than <see cref="ValuesPerRowThread"/> values, up to
    /// <see cref="MaxRowGroup"/> threads (and the accelerator's group size), so long rows keep many loads in flight.</summary>
    KernelConfig GroupPerRow(int rows, int len) => new(new Index1D(rows), new Index1D(RowGroupWidth(len)));

    /// <summary>A launch of a row kernel running one warp per row, as many rows a group as warps fit in
    /// <see cref="MaxRowGroup"/> threads.</summary>
    KernelConfig WarpRowsLaunch(int rows)
    {
        int warp = accelerator.WarpSize, group = Math.Max(warp, Math.Min(MaxRowGroup, accelerator.MaxNumThreadsPerGroup) / warp * warp);
        int perGroup = group / warp;
        return new(new Index1D((rows + perGroup - 1) / perGroup), new Index1D(group));
    }

    /// <summary>The threads of a row kernel's group for rows of <paramref name="len"/> values.</summary>
    internal int RowGroupWidth(int len)
    {
        int width = accelerator.WarpSize, most = Math.Min(MaxRowGroup, accelerator.MaxNumThreadsPerGroup);
        while (width * 2 <= most && (long)width * ValuesPerRowThread < len) width *= 2;
        return width;
    }

    /// <summary>Values of a row each thread of a row kernel handles before the group grows.</summary>
    public const int ValuesPerRowThread = 8;

    /// <summary>The most threads a row kernel's group has.</summary>
    public const int MaxRowGroup = 256;

    /// <summary>A launch of the softmax row kernel: one group per row (<see cref="GroupPerRow"/>), with shared memory
    /// for the row where it fits (<see cref="FusedKernels.CachedRowLimit"/>; one element otherwise, which the kernel
    /// then leaves unused).</summary>
    KernelConfig SoftmaxRowsLaunch(int rows, int len) =>
        new(new Index1D(rows), new Index1D(RowGroupWidth(len)),
            SharedMemoryConfig.RequestDynamic<float>(len <= FusedKernels.CachedRowLimit ? len : 1));

    /// <summary>Index checks of gather and scatter-add download the indices only up to this many (a cheap copy).</summary>
    const int HostCheckedIndices = 1 << 16;

    public void Execute(Node node, IBuffer[] inputs, IBuffer output)
    {
        var (x, y, n) = Operands(node, inputs, output);
        if (!TakesBFloat16(node))
            for (int i = 0; i < x.Length; i++)
                if (x[i].IsBFloat16 && !ReadsNarrowOnTensorCores(node, i))
                    throw new NarrowOperandException(Node.Describe(node),
                        $"gpu backend: operand {i} of {Node.Describe(node)} is stored in bfloat16, which only matrix products, layout copies, fused groups and attention on tensor cores (its queries, keys and values) read; bind a float32 value for this use");
        accelerator.Bind();
        Dispatch(node, x, y, n);
        if (SynchronizeEveryStep) accelerator.Synchronize();
    }

    /// <summary>Computes the MatMul <paramref name="node"/> reading <paramref name="a"/> (<paramref name="b"/>) with its
    /// last two axes swapped when <paramref name="transA"/> (<paramref name="transB"/>): the operand's stored layout is
    /// the transpose of the node's operand.</summary>
    public void ExecuteMatMul(Node node, IBuffer a, bool transA, IBuffer b, bool transB, IBuffer output)
    {
        if (node?.Op is not Op.MatMul mm)
            throw new ArgumentException($"ExecuteMatMul computes matrix products, not {(node is null ? "null" : Node.Describe(node))}", nameof(node));
        var (x, y, _) = Operands(node, [a, b], output);
        accelerator.Bind();
        MatMul(node, mm.a.Shape, x[0], transA, mm.b.Shape, x[1], transB, node.Shape, y);
        if (SynchronizeEveryStep) accelerator.Synchronize();
    }

    /// <summary>The operand and output buffers of a node, checked: this backend's, of the right lengths, a float32 output
    /// unless the node is a product or a layout copy.</summary>
    (GpuBuffer[] X, GpuBuffer Y, int N) Operands(Node node, IBuffer[] inputs, IBuffer output)
    {
        ArgumentNullException.ThrowIfNull(node);
        ArgumentNullException.ThrowIfNull(inputs);
        ObjectDisposedException.ThrowIf(disposed, this);
        var y = Own(output, nameof(output));
        int n = ShapeModule.numel(node.Shape);
        if (y.Length != n)
            throw new ArgumentException($"the output buffer has {y.Length} values, {Node.Describe(node)} needs {n}", nameof(output));
        if (y.IsBFloat16 && !TakesBFloat16(node))
            throw new NarrowOperandException(Node.Describe(node), $"gpu backend: {Node.Describe(node)} cannot write into a bfloat16 buffer; only products, layout copies and fused groups write bfloat16");
        int arity = node.Children.Length;
        if (inputs.Length != arity)
            throw new ArgumentException($"{Node.Describe(node)} takes {arity} operands, got {inputs.Length}", nameof(inputs));
        var x = new GpuBuffer[arity];
        int k = 0;
        foreach (var child in node.Children)
        {
            var b = Own(inputs[k], "input");
            if (b.Length != ShapeModule.numel(child.Shape))
                throw new ArgumentException($"operand {k} of {Node.Describe(node)} has {b.Length} values, {Node.Describe(child)} needs {ShapeModule.numel(child.Shape)}", nameof(inputs));
            x[k++] = b;
        }
        return (x, y, n);
    }

    /// <summary>When true, every op waits for the device to finish (for profiling the device time per op).</summary>
    public bool SynchronizeEveryStep { get; set; }

    void Dispatch(Node node, GpuBuffer[] x, GpuBuffer y, int n)
    {
        var shape = node.Shape;
        switch (node.Op)
        {
            case Op.Input or Op.Parameter or Op.Constant:
                throw new InvalidOperationException($"{Node.Describe(node)} is a leaf: its value is bound, not computed");
            case Op.Fill f:
                if (n > 0) (fill ??= Load<ArrayView<float>, float>(Kernels.Fill))(n, y.View, (float)f.value);
                break;
            case Op.Unary u:
                if (n > 0) (unary ??= Load<ArrayView<float>, ArrayView<float>, int>(Kernels.Unary))(n, x[0].View, y.View, u.op.Tag);
                break;
            case Op.Binary b:
            {
                if (n == 0) break;
                var walk = Walk.Of(node, shape, Walk.BroadcastStrides(b.a.Shape, shape), Walk.BroadcastStrides(b.b.Shape, shape));
                (binary ??= Load<ArrayView<float>, ArrayView<float>, ArrayView<float>, Walk, int>(Kernels.Binary))(n, x[0].View, x[1].View, y.View, walk, b.op.Tag);
                break;
            }
            case Op.Where w:
            {
                if (n == 0) break;
                var walk = Walk.Of(node, shape, Walk.BroadcastStrides(w.cond.Shape, shape),
                                   Walk.BroadcastStrides(w.whenTrue.Shape, shape), Walk.BroadcastStrides(w.whenFalse.Shape, shape));
                (where ??= Load<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, Walk>(Kernels.Where))(
                    n, x[0].View, x[1].View, x[2].View, y.View, walk);
                break;
            }
            case Op.MatMul mm:
                MatMul(node, mm.a.Shape, x[0], false, mm.b.Shape, x[1], false, shape, y);
                break;
            case Op.Softmax s:
            {
                int len = shape[s.axis], inner = ShapeModule.product(shape, s.axis + 1, shape.Length);
                int rows = len == 0 ? 0 : n / len;
                if (rows > 0 && inner == 1)
                    (softmaxRows ??= LoadGrouped<ArrayView<float>, ArrayView<float>, int>(Kernels.SoftmaxRows))(SoftmaxRowsLaunch(rows, len), x[0].View, y.View, len);
                else if (rows > 0) (softmax ??= Load<ArrayView<float>, ArrayView<float>, int, int>(Kernels.Softmax))(rows, x[0].View, y.View, len, inner);
                break;
            }
            case Op.Reduce r:
                Reduce(node, r.op, r.axes, r.x.Shape, x[0], y, n);
                break;
            case Op.Broadcast b:
                Strided(node, x[0], 0, Walk.BroadcastStrides(b.x.Shape, shape), y, 0, Walk.Strides(shape), shape);
                break;
            case Op.Reshape or Op.StopGradient or Op.GradientScale or Op.Recompute:
                if (n > 0) x[0].View.CopyTo(stream, y.View);
                break;
            case Op.Permute p:
            {
                var st = Walk.Strides(p.x.Shape);
                Strided(node, x[0], 0, p.perm.Select(a => st[a]).ToArray(), y, 0, Walk.Strides(shape), shape);
                break;
            }
            case Op.Slice s:
            {
                var st = Walk.Strides(s.x.Shape);
                Strided(node, x[0], s.start * st[s.axis], st, y, 0, Walk.Strides(shape), shape);
                break;
            }
            case Op.Concat c:
                Concat(node, c, x, null, y);
                break;
            case Op.Gather g:
            {
                int rows = g.table.Shape[0], count = ShapeModule.numel(g.indices.Shape);
                CheckIndices(x[1], count, rows, "gather", g.table);
                int width = ShapeModule.numel(g.table.Shape) / Math.Max(rows, 1);
                if (n > 0)
                    (gather ??= Load<ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int>(Kernels.Gather))(n, x[0].View, x[1].View, y.View, width, rows);
                break;
            }
            case Op.ScatterAdd s:
            {
                int rows = shape[0], count = ShapeModule.numel(s.indices.Shape);
                CheckIndices(x[0], count, rows, "scatter-add", node);
                int width = n / Math.Max(rows, 1);
                if (n > 0) y.View.MemSetToZero(stream);
                if (count * width > 0)
                    (scatterAdd ??= Load<ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int>(Kernels.ScatterAdd))(
                        count * width, x[0].View, x[1].View, y.View, width, rows);
                break;
            }
            case Op.Conv2d c:
                if (n > 0) (conv2d ??= LoadConv(Kernels.Conv2d))(n, x[0].View, x[1].View, y.View, Conv(c.stride, c.padding, c.x.Shape, c.w.Shape, shape));
                break;
            case Op.Conv2dGradInput c:
                if (n > 0) (conv2dGradInput ??= LoadConv(Kernels.Conv2dGradInput))(n, x[0].View, x[1].View, y.View, Conv(c.stride, c.padding, shape, c.w.Shape, c.grad.Shape));
                break;
            case Op.Conv2dGradWeight c:
                if (n > 0) (conv2dGradWeight ??= LoadConv(Kernels.Conv2dGradWeight))(n, x[0].View, x[1].View, y.View, Conv(c.stride, c.padding, c.x.Shape, shape, c.grad.Shape));
                break;
            case Op.TopKMask t:
            {
                int width = shape[^1], rows = width == 0 ? 0 : n / width;
                if (rows > 0) (topKMask ??= LoadGrouped<ArrayView<float>, ArrayView<float>, int, int>(Kernels.TopKMaskRows))(WarpPerRow(rows), x[0].View, y.View, width, t.k);
                break;
            }
            case Op.Attention a:
                Attention(node, a, x, y);
                break;
            default:
                throw new NotSupportedException($"gpu backend: {Node.Describe(node)} has an op this backend does not implement");
        }
    }

    /// <summary>An attention op's part, one warp per query row or per key (<see cref="AttentionKernels"/>).</summary>
    void Attention(Node node, Op.Attention a, GpuBuffer[] x, GpuBuffer y)
    {
        if (accelerator.WarpSize > AttentionKernels.MaxLanes)
            throw new NotSupportedException($"gpu backend: {Node.Describe(node)} needs warps of at most {AttentionKernels.MaxLanes} lanes, this accelerator's have {accelerator.WarpSize}");
        var s = AttentionShape.Of(a);
        ArrayView<float> At(int i) => AttentionOperand(x, i);
        int rows = s.Heads * s.T;
        if (OnTensorCores(s))
        {
            OnTensorCores(s, x, y);
            return;
        }
        if (rows > 0 && s.Part != 2)
        {
            attentionQueryRows ??= LoadGrouped<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, AttentionShape>(AttentionKernels.QueryRows);
            attentionQueryRows(WarpPerRow(rows), At(0), At(1), At(2), At(3), At(4), At(5), y.View, s);
        }
        if (s.Part == 0 || s.KvHeads * s.Keys == 0) return;
        // the gradient: dQ above, then dK and dV one key per warp (dV alone for part 2)
        attentionKeyRows ??= LoadGrouped<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, AttentionShape>(AttentionKernels.KeyRows);
        attentionKeyRows(WarpPerRow(s.KvHeads * s.Keys), At(0), At(1), At(2), At(3), At(4), At(5), y.View.SubView(s.Part == 1 ? rows * s.D : 0), s);
    }

    /// <summary>Whether this backend computes an attention of these sizes on tensor cores.</summary>
    bool OnTensorCores(in AttentionShape s) =>
        AttentionOnTensorCores && accelerator.WarpSize == TensorCores.Lanes && TensorCoreAttention.Takes(s);

    /// <summary>Attention on tensor cores (<see cref="TensorCoreAttention"/>): the output (O and L) a group per query
    /// tile of a head; the gradients a group per key tile of a query head, what several groups sum into cleared
    /// first. Q, K and V may be stored in bfloat16 (<see cref="AttentionShape.Narrow"/>), read then in pairs.</summary>
    void OnTensorCores(AttentionShape s, GpuBuffer[] x, GpuBuffer y)
    {
        for (int i = 0; i < TensorCoreAttention.NarrowOperands; i++)
            if (x[i].IsBFloat16) s.Narrow |= 1 << i;
        ArrayView<float> At(int i) => (s.Narrow >> i & 1) != 0 ? x[i].NarrowPairs : AttentionOperand(x, i);
        var launch = (int groups) => new KernelConfig(new Index1D(groups), new Index1D(TensorCoreAttention.Threads));
        if (s.Part == 0)
        {
            int tiles = TensorCoreAttention.Tiles(s.T);
            if (s.Heads * tiles == 0) return;
            var forwardKey = (s.D, s.Dv, TensorCoreMatrixLoads, s.Narrow);
            if (!tensorCoreForward.TryGetValue(forwardKey, out var forward))
                tensorCoreForward[forwardKey] = forward = LoadGrouped(TensorCoreAttention.ForwardKernel(s.D, s.Dv, TensorCoreMatrixLoads, s.Narrow)
                    .CreateDelegate<Action<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, AttentionShape>>());
            forward(launch(s.Heads * tiles), At(0), At(1), At(2), y.View, s);
            return;
        }
        int nq = s.Part == 1 ? s.Heads * s.T * s.D : 0, keyTiles = TensorCoreAttention.Tiles(s.Keys);
        // dQ is summed over key tiles; dK and dV over the heads of a group
        if (s.Heads > s.KvHeads) y.View.MemSetToZero(stream);
        else if (nq > 0) y.View.SubView(0, nq).MemSetToZero(stream);
        if (s.Heads * keyTiles == 0) return;
        var backwardKey = (s.D, s.Dv, TensorCoreMatrixLoads, s.Narrow);
        if (!tensorCoreBackward.TryGetValue(backwardKey, out var backward))
            tensorCoreBackward[backwardKey] = backward = LoadGrouped(TensorCoreAttention.BackwardKernel(s.D, s.Dv, TensorCoreMatrixLoads, s.Narrow)
                .CreateDelegate<Action<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, AttentionShape>>());
        backward(launch(s.Heads * keyTiles), At(0), At(1), At(2), At(3), At(4), At(5), y.View.SubView(0, Math.Max(1, nq)), y.View.SubView(nq), s);
    }

    /// <summary>D = A·B + C by one tensor-core product of one warp (<see cref="TensorCores.Product"/>): A [16, 16],
    /// B [16, 8], C [16, 8], row-major, A and B rounded to bfloat16 (to nearest, ties to even). On CUDA it is the
    /// mma.sync instruction the attention kernels are built on, elsewhere its emulation over warps of 32 lanes, so the
    /// GPU check can test a device's instruction and the fragments' layout on their own before the kernels.</summary>
    public float[] ProductOnTensorCores(ReadOnlySpan<float> a, ReadOnlySpan<float> b, ReadOnlySpan<float> c)
    {
        if (a.Length != 16 * 16 || b.Length != 16 * 8 || c.Length != 16 * 8)
            throw new ArgumentException($"a tensor-core product takes A [16, 16], B [16, 8] and C [16, 8] (256, 128 and 128 values), not {a.Length}, {b.Length} and {c.Length} values");
        if (accelerator.WarpSize != TensorCores.Lanes)
            throw new NotSupportedException($"{Name}: a tensor-core product needs warps of {TensorCores.Lanes} lanes; this accelerator's have {accelerator.WarpSize} (on the CPU, {nameof(CreateCpuWithCudaWarps)} simulates them)");
        using GpuBuffer da = Allocate(a.Length), db = Allocate(b.Length), dc = Allocate(c.Length), dd = Allocate(c.Length);
        Upload(a, da);
        Upload(b, db);
        Upload(c, dc);
        (tensorCoreProduct ??= LoadGrouped<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>>(TensorCores.Product))(
            new KernelConfig(new Index1D(1), new Index1D(TensorCores.Lanes)), da.View, db.View, dc.View, dd.View);
        var d = new float[c.Length];
        Download(dd, d);
        return d;
    }

    /// <summary>Operand <paramref name="i"/> of an attention op. Operands a part does not take are never read: any
    /// view stands in for them.</summary>
    static ArrayView<float> AttentionOperand(GpuBuffer[] x, int i) => x[Math.Min(i, x.Length - 1)].View;

    /// <summary>Copies each operand of a concat into its range of <paramref name="y"/>; an operand k with
    /// <paramref name="sliced"/>[k] is a Slice whose own operand <paramref name="x"/>[k] holds, read through the slice.</summary>
    void Concat(Node node, Op.Concat c, GpuBuffer[] x, bool[]? sliced, GpuBuffer y)
    {
        var outStrides = Walk.Strides(node.Shape);
        int start = 0, part = 0;
        foreach (var p in c.xs)
        {
            int yBase = start * outStrides[c.axis];
            if (sliced is not null && sliced[part])
            {
                var s = p.Op as Op.Slice ?? throw new ArgumentException($"operand {part} of {Node.Describe(node)}, {Node.Describe(p)}, is read as a slice but is none", nameof(sliced));
                var st = Walk.Strides(s.x.Shape);
                if (x[part].Length != ShapeModule.numel(s.x.Shape))
                    throw new ArgumentException($"operand {part} of {Node.Describe(node)} is read through {Node.Describe(p)}: its buffer has {x[part].Length} values, {Node.Describe(s.x)} needs {ShapeModule.numel(s.x.Shape)}", nameof(x));
                Strided(node, x[part], s.start * st[s.axis], st, y, yBase, outStrides, p.Shape);
            }
            else Strided(node, x[part], 0, Walk.Strides(p.Shape), y, yBase, outStrides, p.Shape);
            start += p.Shape[c.axis];
            part++;
        }
    }

    /// <summary>Concats read slices in place: a Slice read only by concats is no kernel of its own.</summary>
    public bool ReadsSlicesInPlace => true;

    /// <summary>Computes the Concat <paramref name="node"/> reading each operand k with <paramref name="sliced"/>[k] in
    /// place: that operand is a Slice, and <paramref name="inputs"/>[k] holds the slice's own operand.</summary>
    public void ExecuteConcat(Node node, IBuffer[] inputs, bool[] sliced, IBuffer output)
    {
        if (node?.Op is not Op.Concat c)
            throw new ArgumentException($"ExecuteConcat computes concats, not {(node is null ? "null" : Node.Describe(node))}", nameof(node));
        ArgumentNullException.ThrowIfNull(inputs);
        ArgumentNullException.ThrowIfNull(sliced);
        ObjectDisposedException.ThrowIf(disposed, this);
        int arity = node.Children.Length;
        if (inputs.Length != arity || sliced.Length != arity)
            throw new ArgumentException($"{Node.Describe(node)} takes {arity} operands, got {inputs.Length} buffers and {sliced.Length} flags", nameof(inputs));
        var y = Own(output, nameof(output));
        if (y.Length != ShapeModule.numel(node.Shape))
            throw new ArgumentException($"the output buffer has {y.Length} values, {Node.Describe(node)} needs {ShapeModule.numel(node.Shape)}", nameof(output));
        var x = inputs.Select((b, k) => Own(b, "input")).ToArray();
        for (int k = 0; k < arity; k++)
            if (!sliced[k] && x[k].Length != ShapeModule.numel(c.xs[k].Shape))
                throw new ArgumentException($"operand {k} of {Node.Describe(node)} has {x[k].Length} values, {Node.Describe(c.xs[k])} needs {ShapeModule.numel(c.xs[k].Shape)}", nameof(inputs));
        accelerator.Bind();
        Concat(node, c, x, sliced, y);
        if (SynchronizeEveryStep) accelerator.Synchronize();
    }

    /// <summary>y[yBase + walk over shape with yStrides] = x[xBase + walk with xStrides], either side float32 or
    /// bfloat16 (a narrow value).</summary>
    void Strided(Node node, GpuBuffer x, int xBase, int[] xStrides, GpuBuffer y, int yBase, int[] yStrides, int[] shape)
    {
        int n = ShapeModule.numel(shape);
        if (n == 0) return;
        var walk = Walk.Of(node, shape, xStrides, yStrides);
        var (xWide, xNarrow) = ViewsOf(x);
        var (yWide, yNarrow) = ViewsOf(y);
        int narrow = (x.IsBFloat16 ? 1 : 0) | (y.IsBFloat16 ? 2 : 0);
        bool pairs = (PairedKernels & (narrow == 3 ? PairedKernels.NarrowCopies : PairedKernels.Copies)) != 0;
        if (pairs && walk.InPairs(xBase, x.IsBFloat16, yBase, y.IsBFloat16))
            (stridedCopyPairs ??= Load<ArrayView<float>, ArrayView<ushort>, ArrayView<float>, ArrayView<ushort>, Walk, int, int, int>(Kernels.StridedCopyPairs))(
                n / 2, xWide, xNarrow, yWide, yNarrow, walk, xBase, yBase, narrow);
        else
            (stridedCopy ??= Load<ArrayView<float>, ArrayView<ushort>, ArrayView<float>, ArrayView<ushort>, Walk, int, int, int>(Kernels.StridedCopy))(
                n, xWide, xNarrow, yWide, yNarrow, walk, xBase, yBase, narrow);
    }

    /// <summary>Layout ops: each element of the result is one element of an operand, copied by <see cref="Strided"/>,
    /// which reads and writes float32 and bfloat16 alike.</summary>
    static bool IsLayout(Node node) => node.Op is Op.Permute or Op.Slice or Op.Concat or Op.Broadcast;

    /// <summary>The plain kernels (not fused groups or prologues) that read and write bfloat16 buffers as well as
    /// float32 ones: products and layout copies. Every other plain kernel refuses them.</summary>
    static bool TakesBFloat16(Node node) => node.Op is Op.MatMul || IsLayout(node);

    void Reduce(Node node, ReduceOp op, int[] axes, int[] xShape, GpuBuffer x, GpuBuffer y, int n)
    {
        if (n == 0) return;
        int count = ShapeModule.product(axes.Select(a => xShape[a]).ToArray(), 0, axes.Length);
        if (count == 0 && op.IsMax) throw new InvalidOperationException($"{Node.Describe(node)}: reduce max over an empty axis has no value");
        if (RowsOf(node, out _, out _, out _)) // trailing axes: one group per row
        {
            (reduceRows ??= LoadGrouped<ArrayView<float>, ArrayView<float>, int, int>(Kernels.ReduceRows))(GroupPerRow(n, count), x.View, y.View, count, op.Tag);
            return;
        }
        var st = Walk.Strides(xShape);
        var keptAxes = Enumerable.Range(0, xShape.Length).Where(a => !axes.Contains(a)).ToArray();
        var kept = Walk.Of(node, keptAxes.Select(a => xShape[a]).ToArray(), keptAxes.Select(a => st[a]).ToArray());
        var reduced = Walk.Of(node, axes.Select(a => xShape[a]).ToArray(), axes.Select(a => st[a]).ToArray());
        (reduce ??= Load<ArrayView<float>, ArrayView<float>, Walk, Walk, int, int>(Kernels.Reduce))(n, x.View, y.View, kept, reduced, count, op.Tag);
    }

    /// <summary>Raises the reference's BindingException for an index outside the table, when the indices are few
    /// enough to download cheaply (the kernels themselves never read or write outside their buffers).</summary>
    void CheckIndices(GpuBuffer indices, int count, int rows, string what, Node table)
    {
        if (count == 0 || count > HostCheckedIndices) return;
        var host = new float[count];
        Download(indices, host);
        for (int i = 0; i < count; i++)
        {
            int r = (int)host[i];
            if (r < 0 || r >= rows)
                throw new BindingException($"{what}: index {r} at position {i} is outside the {rows} rows of {Node.Describe(table)}");
        }
    }

    static ConvShape Conv(Tuple<int, int> stride, Tuple<int, int> padding, int[] x, int[] w, int[] y) => new()
    {
        B = x[0], C = x[1], H = x[2], W = x[3], O = w[0], KH = w[2], KW = w[3], OH = y[2], OW = y[3],
        SH = stride.Item1, SW = stride.Item2, PH = padding.Item1, PW = padding.Item2,
    };

    // kernels are loaded unbound and called on this backend's stream
    Action<Index1D, T1, T2> Load<T1, T2>(Action<Index1D, T1, T2> kernel)
        where T1 : struct where T2 : struct
    {
        var k = accelerator.LoadAutoGroupedKernel(kernel);
        return (i, a, b) => k(stream, i, a, b);
    }
    Action<Index1D, T1, T2, T3> Load<T1, T2, T3>(Action<Index1D, T1, T2, T3> kernel)
        where T1 : struct where T2 : struct where T3 : struct
    {
        var k = accelerator.LoadAutoGroupedKernel(kernel);
        return (i, a, b, c) => k(stream, i, a, b, c);
    }
    Action<Index1D, T1, T2, T3, T4> Load<T1, T2, T3, T4>(Action<Index1D, T1, T2, T3, T4> kernel)
        where T1 : struct where T2 : struct where T3 : struct where T4 : struct
    {
        var k = accelerator.LoadAutoGroupedKernel(kernel);
        return (i, a, b, c, d) => k(stream, i, a, b, c, d);
    }
    Action<Index1D, T1, T2, T3, T4, T5> Load<T1, T2, T3, T4, T5>(Action<Index1D, T1, T2, T3, T4, T5> kernel)
        where T1 : struct where T2 : struct where T3 : struct where T4 : struct where T5 : struct
    {
        var k = accelerator.LoadAutoGroupedKernel(kernel);
        return (i, a, b, c, d, e) => k(stream, i, a, b, c, d, e);
    }
    Action<Index1D, T1, T2, T3, T4, T5, T6, T7, T8> Load<T1, T2, T3, T4, T5, T6, T7, T8>(Action<Index1D, T1, T2, T3, T4, T5, T6, T7, T8> kernel)
        where T1 : struct where T2 : struct where T3 : struct where T4 : struct where T5 : struct where T6 : struct where T7 : struct where T8 : struct
    {
        var k = accelerator.LoadAutoGroupedKernel(kernel);
        return (i, a, b, c, d, e, f, g, h) => k(stream, i, a, b, c, d, e, f, g, h);
    }
    Action<Index1D, T1, T2, T3, T4, T5, T6> Load<T1, T2, T3, T4, T5, T6>(Action<Index1D, T1, T2, T3, T4, T5, T6> kernel)
        where T1 : struct where T2 : struct where T3 : struct where T4 : struct where T5 : struct where T6 : struct
    {
        var k = accelerator.LoadAutoGroupedKernel(kernel);
        return (i, a, b, c, d, e, f) => k(stream, i, a, b, c, d, e, f);
    }
    Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ConvShape> LoadConv(
        Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ConvShape> kernel) =>
        Load<ArrayView<float>, ArrayView<float>, ArrayView<float>, ConvShape>(kernel);

    // explicitly grouped kernels (a KernelConfig per launch), likewise on this backend's stream
    Action<KernelConfig, T1, T2, T3> LoadGrouped<T1, T2, T3>(Action<T1, T2, T3> kernel)
        where T1 : struct where T2 : struct where T3 : struct
    {
        var k = Grouped<Action<AcceleratorStream, KernelConfig, T1, T2, T3>>(kernel);
        return (c, a, b, d) => k(stream, c, a, b, d);
    }
    Action<KernelConfig, T1, T2, T3, T4> LoadGrouped<T1, T2, T3, T4>(Action<T1, T2, T3, T4> kernel)
        where T1 : struct where T2 : struct where T3 : struct where T4 : struct
    {
        var k = Grouped<Action<AcceleratorStream, KernelConfig, T1, T2, T3, T4>>(kernel);
        return (c, a, b, d, e) => k(stream, c, a, b, d, e);
    }
    Action<KernelConfig, T1, T2, T3, T4, T5> LoadGrouped<T1, T2, T3, T4, T5>(Action<T1, T2, T3, T4, T5> kernel)
        where T1 : struct where T2 : struct where T3 : struct where T4 : struct where T5 : struct
    {
        var k = Grouped<Action<AcceleratorStream, KernelConfig, T1, T2, T3, T4, T5>>(kernel);
        return (c, a, b, d, e, f) => k(stream, c, a, b, d, e, f);
    }
    Action<KernelConfig, T1, T2, T3, T4, T5, T6, T7, T8, T9> LoadGrouped<T1, T2, T3, T4, T5, T6, T7, T8, T9>(Action<T1, T2, T3, T4, T5, T6, T7, T8, T9> kernel)
        where T1 : struct where T2 : struct where T3 : struct where T4 : struct where T5 : struct where T6 : struct where T7 : struct where T8 : struct where T9 : struct
    {
        var k = Grouped<Action<AcceleratorStream, KernelConfig, T1, T2, T3, T4, T5, T6, T7, T8, T9>>(kernel);
        return (c, a, b, d, e, f, g, h, i, j) => k(stream, c, a, b, d, e, f, g, h, i, j);
    }
    Action<KernelConfig, T1, T2, T3, T4, T5, T6, T7, T8> LoadGrouped<T1, T2, T3, T4, T5, T6, T7, T8>(Action<T1, T2, T3, T4, T5, T6, T7, T8> kernel)
        where T1 : struct where T2 : struct where T3 : struct where T4 : struct where T5 : struct where T6 : struct where T7 : struct where T8 : struct
    {
        var k = Grouped<Action<AcceleratorStream, KernelConfig, T1, T2, T3, T4, T5, T6, T7, T8>>(kernel);
        return (c, a, b, d, e, f, g, h, i) => k(stream, c, a, b, d, e, f, g, h, i);
    }
    Action<KernelConfig, T1, T2, T3, T4, T5, T6, T7> LoadGrouped<T1, T2, T3, T4, T5, T6, T7>(Action<T1, T2, T3, T4, T5, T6, T7> kernel)
        where T1 : struct where T2 : struct where T3 : struct where T4 : struct where T5 : struct where T6 : struct where T7 : struct
    {
        var k = Grouped<Action<AcceleratorStream, KernelConfig, T1, T2, T3, T4, T5, T6, T7>>(kernel);
        return (c, a, b, d, e, f, g, h) => k(stream, c, a, b, d, e, f, g, h);
    }
}
