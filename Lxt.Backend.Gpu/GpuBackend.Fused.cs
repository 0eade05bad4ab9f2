// Fused pointwise groups on the GPU: each group's table (merged output walk, operand strides, program) is checked,
// encoded and uploaded once, and its program's type (FusedPrograms.cs) picks the compiled kernel, made on first use
// and shared by every group of the same shape; then every run is one launch of FusedKernels.Fused, or for a prologue
// one launch of the row kernel (FusedKernels.SoftmaxRows, FusedKernels.ReduceRows) that reads its operand through the
// program.
using System.Reflection;
using ILGPU;
using ILGPU.Backends;
using ILGPU.Backends.EntryPoints;
using ILGPU.Backends.PTX;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;
using Lxt.Graph;

namespace Lxt.Backend.Gpu;

public sealed partial class GpuBackend : IFusedPointwise, IFusedPrologue, IInPlaceElementwise, IAttentionChoice
{
    // one compiled kernel per program type (and kernel): groups computing alike share it
    readonly Dictionary<(Type, string), Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>,
        ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, ProgramTable>> fusedKernels = [];
    readonly Dictionary<(Type, string), Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>,
        ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, ProgramTable, int, int>> softmaxRowsKernels = [];
    readonly Dictionary<Type, Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>,
        ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, ProgramTable, int, int, int>> reduceRowsKernels = [];
    // the same into bfloat16 values (narrow results)
    readonly Dictionary<(Type, string), Action<Index1D, ArrayView<ushort>, ArrayView<float>, ArrayView<float>, ArrayView<float>,
        ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, ProgramTable>> fusedNarrowKernels = [];
    readonly Dictionary<(Type, string), Action<KernelConfig, ArrayView<ushort>, ArrayView<float>, ArrayView<float>, ArrayView<float>,
        ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, ProgramTable, int, int>> softmaxRowsNarrowKernels = [];

    // one uploaded table per group and set of narrow operands (a bit each), kept while the backend lives (a plan's
    // groups are few and their tables small), with the same table as a kernel parameter and the program's types
    // reading the one (Program) or the other (Inline, ProgramTablesAsParameters); FusedGroup compares by reference
    readonly Dictionary<(FusedGroup Group, int Narrow), (MemoryBuffer1D<int, Stride1D.Dense> Table, ProgramTable Parameter, Type Program, Type Inline)> fusedTables = [];
    readonly ArrayView<float>[] fusedViews = new ArrayView<float>[FusedKernels.MaxOperands];

    /// <summary>When true (the default), executables on this backend fuse chains of pointwise ops into one kernel
    /// each (see <see cref="Plan"/>.fuse); false runs them one kernel per op, e.g. to compare the two.</summary>
    public bool FusePointwise { get; set; } = true;

    bool IFusedPointwise.SupportsFusedPointwise => FusePointwise;

    /// <summary>Pointwise values of more elements than this stay out of fused groups (default: no limit).</summary>
    public int FusedElementLimit { get; set; } = int.MaxValue;

    /// <summary>Softmaxes and reductions of operands of more elements than this read them materialised, not through a
    /// prologue (default: no limit). A prologue reads the group's operands where the row kernel would read the
    /// materialised value, and its program is compiled code, so a prologue moves fewer bytes at every size; the limit
    /// is there to compare the two.</summary>
    public int PrologueElementLimit { get; set; } = int.MaxValue;

    bool IFusedPointwise.Fuses(Node node) => node is not null && ShapeModule.numel(node.Shape) <= FusedElementLimit;

    /// <summary>When true, fused programs read their table's walk, strides and constants from a kernel parameter
    /// (an inline program, <see cref="ProgramTable"/>: the constant bank, no load from memory); false (the default)
    /// reads them from the table in device memory where each element needs them. There to compare the two (the GPU
    /// check's <c>--table-parameters</c>).</summary>
    public bool ProgramTablesAsParameters { get; set; }

    /// <summary>When true, a softmax read through a prologue runs one warp per row, several rows a group, with no
    /// group barrier (<see cref="FusedKernels.SoftmaxWarpRowsOf{TValue, TOut}"/>: an online softmax that reads the row
    /// twice); false (the default) runs one group per row, which keeps rows of up to 8192 values in shared memory and
    /// reads them once. There to compare the two (the GPU check's <c>--softmax-warp-rows</c>).</summary>
    public bool SoftmaxWarpPerRow { get; set; }

    /// <summary>Attention ops (Op.Attention) on tensor cores (<see cref="TensorCoreAttention"/>: bfloat16 products
    /// with float32 sums, heads of up to 128 dimensions in multiples of 16) instead of one warp per row on CUDA cores,
    /// on accelerators with warps of 32 lanes. Off by default until timed; there to compare
    /// (<c>--tensor-core-attention</c>).</summary>
    public bool AttentionOnTensorCores { get; set; }

    /// <summary>When true, the tensor-core attention kernels read the B fragments of their shared tiles by columns
    /// (V in P·V; dO, Q and K in the backward pass) with one <c>ldmatrix.trans</c> each (<see cref="MatrixColumns"/>)
    /// instead of two 16-bit loads a word (<see cref="ColumnHalves"/>). Off by default until timed; there to compare
    /// (<c>--ldmatrix</c>).</summary>
    public bool TensorCoreMatrixLoads { get; set; }

    /// <summary>Attention as one op by default where it runs on tensor cores; on CUDA cores products in cuBLAS and a
    /// softmax are faster.</summary>
    bool IAttentionChoice.FusesAttention => AttentionOnTensorCores;

    /// <summary>When true, a softmax read through a prologue whose rows fit a warp's registers (up to
    /// 2·<see cref="RowCellTypes.MaxCells"/>·WarpSize values, 2048 on a CUDA device) runs one warp per row, each lane
    /// holding its values of the row in registers (<see cref="FusedKernels.SoftmaxRegisterRowsOf{TValue, TOut, TCells}"/>:
    /// the row read once, every load of a lane independent, no shared memory or group barrier); longer rows run as
    /// <see cref="SoftmaxWarpPerRow"/> says. False (the default) leaves every row to that choice. There to compare (the
    /// GPU check's <c>--softmax-register-rows</c>).</summary>
    public bool SoftmaxRowsInRegisters { get; set; }

    /// <summary>When true (the default) and <see cref="FusePointwise"/> is on, a softmax along the last axis or a
    /// reduction over trailing axes reads an operand that nothing else reads through the operand's fused program
    /// instead of a materialised buffer; false materialises it, e.g. to compare the two.</summary>
    public bool FusePrologues { get; set; } = true;

    /// <summary>Softmaxes along the last axis and reductions over the trailing axes (the row kernels) take prologues.</summary>
    bool IFusedPrologue.TakesPrologue(Node consumer) =>
        FusePointwise && FusePrologues && consumer is not null && RowsOf(consumer, out _, out _, out _)
        && consumer.Children.All(c => ShapeModule.numel(c.Shape) <= Math.Min(FusedElementLimit, PrologueElementLimit));

    /// <summary>Every pointwise kernel (Unary, Binary, Where, fused) writes element i after reading element i of
    /// each full-shape operand and reads no other element of it, so its output may be such an operand's buffer.</summary>
    bool IInPlaceElementwise.SupportsInPlaceElementwise => true;

    /// <summary>Computes a fused group's root into <paramref name="output"/> with one kernel launch.</summary>
    public void ExecuteFused(FusedGroup group, IBuffer[] inputs, IBuffer output)
    {
        var y = CheckCall(group, inputs, output);
        var root = group.Root;
        int n = ShapeModule.numel(root.Shape);
        if (y.Length != n)
            throw new ArgumentException($"the output buffer has {y.Length} values, fused {Node.Describe(root)} needs {n}", nameof(output));
        var (table, parameter, program) = BindFused(group, inputs);
        var v = fusedViews;
        // pairs of float32 values are read and written at a stride of two, narrow pairs as one word
        bool narrowThroughout = y.IsBFloat16 && inputs.All(b => b is GpuBuffer { IsBFloat16: true } || b.Length < n);
        bool pairs = (PairedKernels & (narrowThroughout ? PairedKernels.NarrowPointwise : PairedKernels.Pointwise)) != 0;
        int threads = pairs ? (n + 1) / 2 : n;
        if (n > 0 && y.IsBFloat16)
            PointwiseKernel(fusedNarrowKernels, pairs ? nameof(FusedKernels.FusedNarrowPairs) : nameof(FusedKernels.FusedNarrow), program)(
                threads, y.NarrowView, v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], table, parameter);
        else if (n > 0)
            PointwiseKernel(fusedKernels, pairs ? nameof(FusedKernels.FusedPairs) : nameof(FusedKernels.Fused), program)(
                threads, y.View, v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], table, parameter);
        if (SynchronizeEveryStep) accelerator.Synchronize();
    }

    /// <summary>Computes a prologue's consumer (a softmax along the last axis or a reduction over trailing axes)
    /// into <paramref name="output"/> with one launch of its row kernel, which computes the consumer's operand by the
    /// prologue's program as it reads it.</summary>
    public void ExecuteWithPrologue(Prologue prologue, IBuffer[] inputs, IBuffer output)
    {
        var y = CheckCall(prologue, inputs, output);
        var consumer = prologue.Consumer;
        var group = prologue.Group;
        if (consumer.Children.Length != 1 || !ReferenceEquals(consumer.Children.Head, group.Root))
            throw new ArgumentException($"the prologue of {Node.Describe(consumer)} computes {Node.Describe(group.Root)}, which is not its operand", nameof(prologue));
        if (!RowsOf(consumer, out int rows, out int len, out int op))
            throw new NotSupportedException($"gpu backend: {Node.Describe(consumer)} cannot read its operand through a prologue; only a softmax along the last axis or a reduction over the trailing axes can");
        int n = ShapeModule.numel(consumer.Shape);
        if (y.Length != n)
            throw new ArgumentException($"the output buffer has {y.Length} values, {Node.Describe(consumer)} needs {n}", nameof(output));
        if (y.IsBFloat16 && op >= 0)
            throw new NarrowOperandException(Node.Describe(consumer), $"gpu backend: {Node.Describe(consumer)} cannot write into a bfloat16 buffer; reductions write float32");
        var (table, parameter, program) = BindFused(group, inputs);
        var v = fusedViews;
        int pairs = (PairedKernels & PairedKernels.Rows) != 0 ? 1 : 0;
        int cells = SoftmaxRowsInRegisters && op < 0 ? RowCellTypes.For(len, accelerator.WarpSize) : 0;
        if (rows > 0 && len > 0 && cells > 0)
        {
            if (y.IsBFloat16)
                SoftmaxKernel(softmaxRowsNarrowKernels, nameof(FusedKernels.SoftmaxRegisterRowsNarrow), program, cells)(
                    WarpRowsLaunch(rows), y.NarrowView, v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], table, parameter, len, pairs);
            else
                SoftmaxKernel(softmaxRowsKernels, nameof(FusedKernels.SoftmaxRegisterRows), program, cells)(
                    WarpRowsLaunch(rows), y.View, v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], table, parameter, len, pairs);
        }
        else if (rows > 0 && len > 0)
        {
            var launch = SoftmaxWarpPerRow ? WarpRowsLaunch(rows) : SoftmaxRowsLaunch(rows, len);
            if (op < 0 && y.IsBFloat16)
                SoftmaxKernel(softmaxRowsNarrowKernels, SoftmaxWarpPerRow ? nameof(FusedKernels.SoftmaxWarpRowsNarrow) : nameof(FusedKernels.SoftmaxRowsNarrow), program)(
                    launch, y.NarrowView, v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], table, parameter, len, pairs);
            else if (op < 0)
                SoftmaxKernel(softmaxRowsKernels, SoftmaxWarpPerRow ? nameof(FusedKernels.SoftmaxWarpRows) : nameof(FusedKernels.SoftmaxRows), program)(
                    launch, y.View, v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], table, parameter, len, pairs);
            else
                ReduceKernel(program)(GroupPerRow(rows, len), y.View, v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], table, parameter, len, op, pairs);
        }
        if (SynchronizeEveryStep) accelerator.Synchronize();
    }

    /// <summary>The fused pointwise kernel <paramref name="name"/> (into <typeparamref name="TOut"/> values) for a
    /// program type, compiled on first use into <paramref name="compiled"/>.</summary>
    Action<Index1D, ArrayView<TOut>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>,
        ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, ProgramTable> PointwiseKernel<TOut>(
        Dictionary<(Type, string), Action<Index1D, ArrayView<TOut>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>,
            ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, ProgramTable>> compiled, string name, Type program)
        where TOut : unmanaged
    {
        if (!compiled.TryGetValue((program, name), out var kernel))
        {
            var k = accelerator.LoadAutoGroupedKernel(Specialize<Action<Index1D, ArrayView<TOut>, ArrayView<float>, ArrayView<float>,
                ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>,
                ArrayView<int>, ProgramTable>>(name, program));
            compiled[(program, name)] = kernel = (i, y, a0, a1, a2, a3, a4, a5, a6, a7, t, q) => k(stream, i, y, a0, a1, a2, a3, a4, a5, a6, a7, t, q);
        }
        return kernel;
    }

    /// <summary>The softmax row kernel <paramref name="name"/> (into <typeparamref name="TOut"/> values) for a prologue's
    /// program type, and for a register-row kernel rows of <paramref name="cells"/> cells a lane, compiled on first use
    /// into <paramref name="compiled"/>.</summary>
    Action<KernelConfig, ArrayView<TOut>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>,
        ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, ProgramTable, int, int> SoftmaxKernel<TOut>(
        Dictionary<(Type, string), Action<KernelConfig, ArrayView<TOut>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>,
            ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, ProgramTable, int, int>> compiled, string name, Type program,
        int cells = 0)
        where TOut : unmanaged
    {
        string key = cells == 0 ? name : $"{name}/{cells}";
        if (!compiled.TryGetValue((program, key), out var kernel))
        {
            var k = accelerator.LoadKernel(Specialize<Action<ArrayView<TOut>, ArrayView<float>, ArrayView<float>, ArrayView<float>,
                ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, ProgramTable, int, int>>(
                name, cells == 0 ? [program] : [program, RowCellTypes.Of(cells)]));
            compiled[(program, key)] = kernel = (c, o, a0, a1, a2, a3, a4, a5, a6, a7, t, q, l, p) => k(stream, c, o, a0, a1, a2, a3, a4, a5, a6, a7, t, q, l, p);
        }
        return kernel;
    }

    /// <summary>The row reduction kernel for a prologue's program type, compiled on first use.</summary>
    Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>,
        ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, ProgramTable, int, int, int> ReduceKernel(Type program)
    {
        if (!reduceRowsKernels.TryGetValue(program, out var kernel))
        {
            var k = accelerator.LoadKernel(Specialize<Action<ArrayView<float>, ArrayView<float>, ArrayView<float>,
                ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>,
                ArrayView<int>, ProgramTable, int, int, int>>(nameof(FusedKernels.ReduceRows), program));
            reduceRowsKernels[program] = kernel = (c, o, a0, a1, a2, a3, a4, a5, a6, a7, t, q, l, r, p) => k(stream, c, o, a0, a1, a2, a3, a4, a5, a6, a7, t, q, l, r, p);
        }
        return kernel;
    }

    /// <summary>The output buffer of a fused call, after checking the call's arguments and that the backend lives.</summary>
    GpuBuffer CheckCall(object what, IBuffer[] inputs, IBuffer output)
    {
        ArgumentNullException.ThrowIfNull(what);
        ArgumentNullException.ThrowIfNull(inputs);
        ObjectDisposedException.ThrowIf(disposed, this);
        return Own(output, nameof(output));
    }

    /// <summary>Rows and row length of a consumer the row kernels run: a softmax along the last axis (op −1) or a
    /// reduction over the trailing axes, of at least one element each (op its <see cref="ReduceOp"/> tag).</summary>
    static bool RowsOf(Node consumer, out int rows, out int len, out int op)
    {
        rows = len = 0;
        op = -1;
        switch (consumer.Op)
        {
            case Op.Softmax s:
            {
                var shape = consumer.Shape;
                if (shape.Length == 0 || s.axis != shape.Length - 1) return false;
                len = shape[s.axis];
                rows = len == 0 ? 0 : ShapeModule.numel(shape) / len;
                return true;
            }
            case Op.Reduce r:
            {
                var xs = r.x.Shape;
                var axes = r.axes;
                if (axes.Length == 0 || axes[^1] != xs.Length - 1 || axes[^1] - axes[0] != axes.Length - 1) return false;
                len = 1;
                foreach (int a in axes) len *= xs[a];
                if (len == 0) return false;
                rows = ShapeModule.numel(xs) / len;
                op = r.op.Tag;
                return true;
            }
            default:
                return false;
        }
    }

    /// <summary>The PTX that the fused kernel <paramref name="kernel"/> (Fused, SoftmaxRows, SoftmaxRegisterRows or
    /// ReduceRows) compiles to for <paramref name="group"/> on an SM 9.0 device, made without a device: to inspect the code a program gives.</summary>
    internal static string FusedPtx(FusedGroup group, string kernel, bool inline = false, int cells = 4)
    {
        var method = typeof(FusedKernels).GetMethod(kernel)!;
        var program = FusedProgramType.Of(EncodeFused(group), inline);
        return KernelPtx(method.GetGenericArguments().Length == 2
            ? method.MakeGenericMethod(program, RowCellTypes.Of(cells)) // a register-row kernel: rows of this many cells a lane
            : method.MakeGenericMethod(program));
    }

    /// <summary>The PTX a kernel method compiles to for an SM 9.0 device, made without a device (ILGPU's PTX backend
    /// needs no driver) as <see cref="Compile"/> makes it for a device.</summary>
    internal static string KernelPtx(MethodInfo kernel)
    {
        using var context = Context.Create(b => b.EnableAlgorithms());
        using var backend = new PTXBackend(context, new CudaCapabilityContext(CudaArchitecture.SM_90), CudaArchitecture.SM_90,
            CudaInstructionSet.ISA_80, null!);
        return Compile(context, backend, kernel).PTXAssembly;
    }

    /// <summary>Whether a kernel is loaded from rewritten PTX (<see cref="PtxRewrites"/>): the tensor-core kernels,
    /// whose inline assembly has outputs (mma.sync, cvt, ldmatrix) that ILGPU passes through local memory, whose
    /// ldmatrix rows need shared tiles on 16 bytes, and whose atomic adds all go into device memory.</summary>
    static bool RewritesPtx(MethodInfo kernel) =>
        kernel.DeclaringType == typeof(TensorCoreAttention) || kernel.DeclaringType == typeof(TensorCores);

    /// <summary>A kernel compiled by a PTX backend, its PTX rewritten where <see cref="RewritesPtx"/> says (local
    /// scalars in registers, shared allocations on 16 bytes, atomic adds into device memory as such): a kernel whose first parameter is an index runs
    /// implicitly grouped, any other explicitly.</summary>
    static PTXCompiledKernel Compile(Context context, PTXBackend backend, MethodInfo kernel)
    {
        var first = kernel.GetParameters()[0].ParameterType;
        var entry = first == typeof(Index1D) || first == typeof(Index2D) || first == typeof(Index3D)
            ? EntryPointDescription.FromImplicitlyGroupedKernel(kernel)
            : EntryPointDescription.FromExplicitlyGroupedKernel(kernel);
        var compiled = (PTXCompiledKernel)backend.Compile(entry, KernelSpecialization.Empty);
        if (!RewritesPtx(kernel)) return compiled;
        var ptx = PtxRewrites.GlobalReductions(PtxRewrites.AlignShared(PtxRewrites.PromoteLocals(compiled.PTXAssembly)));
        if (!PtxRewrites.SharedAligned(ptx))
            throw new InvalidOperationException($"{kernel.Name}: a shared allocation of its PTX is not declared as ILGPU 1.5 declares them, so it cannot be aligned to 16 bytes for ldmatrix");
        // ILGPU 1.5 makes a compiled kernel from its entry point and PTX internally only
        var entryPoint = typeof(CompiledKernel).GetProperty("EntryPoint", BindingFlags.NonPublic | BindingFlags.Instance);
        var make = typeof(PTXCompiledKernel).GetConstructors(BindingFlags.NonPublic | BindingFlags.Instance).SingleOrDefault(c => c.GetParameters().Length == 4);
        if (entryPoint is null || make is null)
            throw new InvalidOperationException($"{kernel.Name}: this ILGPU ({typeof(Context).Assembly.GetName().Version}) makes compiled kernels otherwise than 1.5 does; its PTX cannot be loaded rewritten");
        return (PTXCompiledKernel)make.Invoke([context, entryPoint.GetValue(compiled), compiled.Info, ptx]);
    }

    /// <summary>The launcher of an explicitly grouped kernel (its first argument the stream, then the launch's
    /// configuration): on CUDA, a kernel <see cref="RewritesPtx"/> names is compiled here and loaded from the PTX
    /// <see cref="Compile"/> makes; every other kernel, and every kernel elsewhere, as ILGPU loads it.</summary>
    TLauncher Grouped<TLauncher>(Delegate kernel) where TLauncher : Delegate =>
        (accelerator is CudaAccelerator cuda && RewritesPtx(kernel.Method)
            ? accelerator.LoadKernel(Compile(context, cuda.Backend, kernel.Method))
            : accelerator.LoadKernel(kernel.Method)).CreateLauncherDelegate<TLauncher>();

    /// <summary>The fused kernel <paramref name="name"/> of <see cref="FusedKernels"/> for a program type (and, for a
    /// register-row kernel, a cell type).</summary>
    static TDelegate Specialize<TDelegate>(string name, params Type[] types) where TDelegate : Delegate =>
        Specialize<TDelegate>(typeof(FusedKernels), name, types);

    /// <summary>The generic kernel <paramref name="name"/> of <paramref name="kernels"/> for <paramref name="types"/>.</summary>
    static TDelegate Specialize<TDelegate>(Type kernels, string name, params Type[] types) where TDelegate : Delegate =>
        kernels.GetMethod(name)!.MakeGenericMethod(types).CreateDelegate<TDelegate>();

    /// <summary>Checks a group's operand buffers, binds them to the fused views (a bfloat16 operand through its
    /// pairs view; unused views to a stand-in the program never loads) and returns the group's uploaded table, the
    /// same table as a kernel parameter, and its program's type for the operands' element types.</summary>
    (ArrayView<int> Table, ProgramTable Parameter, Type Program) BindFused(FusedGroup group, IBuffer[] inputs)
    {
        var root = group.Root;
        if (inputs.Length != group.Operands.Length)
            throw new ArgumentException($"fused {Node.Describe(root)} reads {group.Operands.Length} operands, got {inputs.Length}", nameof(inputs));
        var views = fusedViews;
        int narrow = 0;
        for (int k = 0; k < views.Length; k++)
        {
            if (k >= inputs.Length) { views[k] = UnusedWide(); continue; } // never read: the program loads operands < count
            var b = Own(inputs[k], "input");
            var operand = group.Operands[k];
            if (b.Length != ShapeModule.numel(operand.Shape))
                throw new ArgumentException($"operand {k} of fused {Node.Describe(root)} has {b.Length} values, {Node.Describe(operand)} needs {ShapeModule.numel(operand.Shape)}", nameof(inputs));
            if (b.IsBFloat16) narrow |= 1 << k;
            views[k] = b.IsBFloat16 ? b.NarrowPairs : b.View;
        }
        accelerator.Bind();
        if (!fusedTables.TryGetValue((group, narrow), out var bound))
        {
            var encoded = EncodeFused(group, narrow);
            var table = accelerator.Allocate1D<int>(encoded.Length);
            CopyIn<int>(encoded, table.View);
            fusedTables[(group, narrow)] = bound = (table, ProgramTable.Of(encoded), FusedProgramType.Of(encoded), FusedProgramType.Of(encoded, inline: true));
        }
        return (bound.Table.View, bound.Parameter, ProgramTablesAsParameters ? bound.Inline : bound.Program);
    }

    /// <summary>The kernel's table for a group whose operands k with bit k of <paramref name="narrow"/> set are stored
    /// in bfloat16, after checking that the program only reads earlier registers and existing operands and that each
    /// operand broadcasts to the root's shape.</summary>
    internal static int[] EncodeFused(FusedGroup group, int narrow = 0)
    {
        var root = group.Root;
        var shape = root.Shape;
        int operands = group.Operands.Length, count = group.Program.Length;
        string where = $"fused group of {Node.Describe(root)}";
        if (operands > FusedKernels.MaxOperands)
            throw new NotSupportedException($"gpu backend: {where} reads {operands} operands; at most {FusedKernels.MaxOperands} are supported");
        if (count == 0 || count > FusedKernels.MaxRegisters)
            throw new NotSupportedException($"gpu backend: {where} has {count} instructions; 1 to {FusedKernels.MaxRegisters} are supported");
        var strides = new int[operands][];
        for (int k = 0; k < operands; k++)
        {
            var s = group.Operands[k].Shape;
            bool fits = s.Length <= shape.Length;
            for (int d = 0; fits && d < s.Length; d++)
            {
                int t = shape[shape.Length - s.Length + d];
                fits = s[d] == t || s[d] == 1;
            }
            if (!fits)
                throw new ArgumentException($"{where}: operand {k}, {Node.Describe(group.Operands[k])}, does not broadcast to {ShapeModule.show(shape)}", nameof(group));
            strides[k] = Walk.BroadcastStrides(s, shape);
        }
        // size-1 axes dropped; neighbours every operand walks as one run merged (as Walk.Of does for three operands)
        var dims = new List<(int N, int[] S)>();
        for (int d = 0; d < shape.Length; d++)
        {
            if (shape[d] == 1) continue;
            var cur = (N: shape[d], S: strides.Select(s => s[d]).ToArray());
            if (dims.Count > 0)
            {
                var p = dims[^1];
                bool merges = true;
                for (int k = 0; k < operands; k++) merges &= p.S[k] == cur.S[k] * cur.N;
                if (merges) { dims[^1] = (p.N * cur.N, cur.S); continue; }
            }
            dims.Add(cur);
        }
        int rank = dims.Count;
        if (rank > FusedKernels.MaxRank)
            throw new NotSupportedException($"gpu backend: {where} walks {rank} axes that cannot be merged; at most {FusedKernels.MaxRank} are supported");
        int program = FusedKernels.HeaderLength + rank * FusedKernels.AxisLength + operands * rank;
        var table = new int[program + count * FusedKernels.InstructionLength];
        table[FusedKernels.RankAt] = rank;
        table[FusedKernels.OperandsAt] = operands;
        table[FusedKernels.CountAt] = count;
        table[FusedKernels.ProgramAt] = program;
        for (int j = 0; j < rank; j++)
        {
            var (n, s) = dims[rank - 1 - j]; // axis j counted from the innermost
            var (magic, shift) = FastDivision.Of(n);
            int at = FusedKernels.HeaderLength + j * FusedKernels.AxisLength;
            table[at] = n;
            table[at + 1] = (int)magic;
            table[at + 2] = shift;
            for (int k = 0; k < operands; k++) table[FusedKernels.HeaderLength + rank * FusedKernels.AxisLength + k * rank + j] = s[k];
        }
        // loads that need no multi-index: an operand walked contiguously (its strides are the walk's row-major ones)
        // reads at the output's index, a broadcast scalar at 0
        var modes = new int[operands];
        for (int k = 0; k < operands; k++)
        {
            bool scalar = true, contiguous = true;
            long expected = 1;
            for (int d = rank - 1; d >= 0; d--)
            {
                scalar &= dims[d].S[k] == 0;
                contiguous &= dims[d].S[k] == expected;
                expected *= dims[d].N;
            }
            modes[k] = scalar ? FusedKernels.Scalar : contiguous ? FusedKernels.Contiguous : FusedKernels.Strided;
        }
        for (int pc = 0; pc < count; pc++)
        {
            int Register(int r) => r >= 0 && r < pc
                ? r
                : throw new ArgumentException($"{where}: instruction {pc} reads register {r}, which is not computed before it", nameof(group));
            int at = program + pc * FusedKernels.InstructionLength;
            (int kind, int p, int a, int b) = group.Program[pc] switch
            {
                FusedInstr.Load l when l.operand >= 0 && l.operand < operands =>
                    (FusedKernels.Load, l.operand, modes[l.operand], (narrow >> l.operand) & 1),
                FusedInstr.Load l => throw new ArgumentException($"{where}: instruction {pc} loads operand {l.operand} of {operands}", nameof(group)),
                FusedInstr.Const c => (FusedKernels.Const, BitConverter.SingleToInt32Bits((float)c.value), 0, 0),
                FusedInstr.Apply1 u => (FusedKernels.Unary, u.op.Tag, Register(u.x), 0),
                FusedInstr.Apply2 b2 => (FusedKernels.Binary, b2.op.Tag, Register(b2.a), Register(b2.b)),
                FusedInstr.Select s => (FusedKernels.Where, Register(s.cond), Register(s.whenTrue), Register(s.whenFalse)),
                _ => throw new NotSupportedException($"gpu backend: {where} has an instruction this backend does not implement"),
            };
            table[at] = kind;
            table[at + 1] = p;
            table[at + 2] = a;
            table[at + 3] = b;
        }
        return table;
    }

    void DisposeFusedTables()
    {
        foreach (var t in fusedTables.Values) t.Table.Dispose();
        fusedTables.Clear();
    }
}
