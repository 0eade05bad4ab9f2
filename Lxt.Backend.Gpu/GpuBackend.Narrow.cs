// Narrow values: in bfloat16 mode, large values that only products, layout copies, fused groups and prologues read are
// stored in bfloat16 (attention scores, probabilities and their relevances), halving the bytes their kernels move; so
// are values of any size that only readers rounding them to bfloat16 read (products, attention on tensor cores).
// Products write them from cuBLAS in bfloat16, fused groups and softmax rows round as they store, layout copies move
// them as they are, and every reader widens as it loads. Kernels may take values in pairs (PairedKernels), so that a
// bfloat16 pair moves as one 32-bit word.
using Lxt.Graph;

namespace Lxt.Backend.Gpu;

public sealed partial class GpuBackend : INarrowValues
{
    /// <summary>Which kernels run one thread per pair of neighbouring values instead of one per value (default
    /// <see cref="DefaultPairedKernels"/>); results are the same either way but for the order of row sums. The choice
    /// is there to compare the two (the GPU check's <c>--pairs</c>).</summary>
    public PairedKernels PairedKernels { get; set; } = DefaultPairedKernels;

    /// <summary>Every kernel that can: on an H100, 4 Llama 3.2 1B layers at 2048 tokens took 15.5 ms so, 15.7 ms with
    /// pairs only where every value a thread moves is bfloat16, and 16.6 ms with none.</summary>
    public const PairedKernels DefaultPairedKernels = PairedKernels.All;

    /// <summary>The default of <see cref="NarrowValuesFrom"/>: 4M values (16 MiB as float32), where the bytes a pass
    /// moves, not its launch, set its time. Attention's [heads, tokens, tokens] values reach it from about 360 tokens
    /// with 32 heads.</summary>
    public const int DefaultNarrowValuesFrom = 1 << 22;

    /// <summary>In <see cref="GemmPrecision.BFloat16"/> mode, computed values of at least this many elements are stored
    /// in bfloat16 where their kernel can write them so and every step reading them can read them so (see
    /// <see cref="INarrowValues"/>), and so are smaller ones that only products read, which round them to bfloat16
    /// anyway; 0 narrows every such value, <see cref="int.MaxValue"/> none. Products round their
    /// operands to bfloat16 in this mode anyway; pointwise and softmax results are rounded once more as they are
    /// stored. Other precisions store every value in float32. Starts from <c>$LXT_NARROW_VALUES_FROM</c> (a count, or
    /// <c>off</c>) when set, else <see cref="DefaultNarrowValuesFrom"/>.</summary>
    public int NarrowValuesFrom
    {
        get => narrowValuesFrom;
        set => narrowValuesFrom = value >= 0 ? value : throw new ArgumentOutOfRangeException(nameof(value), value, "a count of values cannot be negative");
    }
    int narrowValuesFrom = NarrowValuesFromEnvironment();

    /// <summary>The <see cref="NarrowValuesFrom"/> a new backend starts from: <c>$LXT_NARROW_VALUES_FROM</c> (a count of
    /// values, or <c>off</c>: <see cref="int.MaxValue"/>) when set, else <see cref="DefaultNarrowValuesFrom"/>. Throws
    /// an <see cref="LxtException"/> naming the variable when it is neither.</summary>
    public static int NarrowValuesFromEnvironment()
    {
        var text = Environment.GetEnvironmentVariable("LXT_NARROW_VALUES_FROM")?.Trim();
        if (string.IsNullOrEmpty(text)) return DefaultNarrowValuesFrom;
        if (string.Equals(text, "off", StringComparison.OrdinalIgnoreCase)) return int.MaxValue;
        return int.TryParse(text, out int n) && n >= 0
            ? n
            : throw new LxtException($"LXT_NARROW_VALUES_FROM is '{text}': give a count of values (0 narrows every value that can be) or off");
    }

    /// <summary>Fused groups, softmaxes read through a prologue, layout copies of narrow values and products write
    /// bfloat16 values. cuBLAS writes bfloat16 from bfloat16 operands only, so a float32 operand is rounded into a
    /// scratch copy first: a product writes narrow when each operand is narrow already or no larger than its result
    /// (attention's scores). A value smaller than <see cref="NarrowValuesFrom"/> is narrow too where only products
    /// read it (<paramref name="readRounded"/>): they would round it to bfloat16 anyway, each into a scratch copy of
    /// its own, one more pass and launch per product; a layout copy so read rounds float32 operands as it moves them.</summary>
    bool INarrowValues.WritesNarrow(Node step, bool fused, bool[] narrowOperands, bool readRounded)
    {
        if (Precision != GemmPrecision.BFloat16 || step is null) return false;
        int n = ShapeModule.numel(step.Shape);
        if (n < NarrowValuesFrom && !(readRounded && NarrowValuesFrom != int.MaxValue)) return false;
        if (IsLayout(step) && !fused) return readRounded || (narrowOperands is { Length: > 0 } o && o.All(narrow => narrow));
        if (step.Op is not Op.MatMul mm) return fused && step.Op is not Op.Reduce;
        bool Cheap(Node operand, int k) => (narrowOperands is { } o && k < o.Length && o[k]) || ShapeModule.numel(operand.Shape) <= n;
        return Cheap(mm.a, 0) && Cheap(mm.b, 1);
    }

    /// <summary>Products, layout copies, fused groups and prologues read bfloat16 operands, and attention on tensor
    /// cores its queries, keys and values; other plain kernels read float32 only.</summary>
    bool INarrowValues.ReadsNarrow(Node step, bool fused, Node operand) =>
        step is not null && (fused || TakesBFloat16(step) || ReadsQueriesKeysValuesRounded(step, operand));

    /// <summary>In bfloat16 mode products round both operands to bfloat16 as they read them, and attention on tensor
    /// cores its queries, keys and values.</summary>
    bool INarrowValues.RoundsOperand(Node step, Node operand) =>
        Precision == GemmPrecision.BFloat16 && (step?.Op is Op.MatMul || ReadsQueriesKeysValuesRounded(step, operand));

    /// <summary>Whether <paramref name="step"/> is an attention op this backend computes on tensor cores and
    /// <paramref name="operand"/> is its Q, K or V and no other of its operands: the kernels round those to bfloat16
    /// as they load them (<see cref="TensorCoreAttention"/>), and read them stored so as they are.</summary>
    bool ReadsQueriesKeysValuesRounded(Node? step, Node operand)
    {
        if (step is null) return false;
        var at = step.Children.Select((x, i) => (x, i)).Where(p => ReferenceEquals(p.x, operand)).Select(p => p.i).ToList();
        return at.Count > 0 && at.All(i => ReadsNarrowOnTensorCores(step, i));
    }

    /// <summary>Whether <paramref name="node"/> is an attention op this backend computes on tensor cores and operand
    /// <paramref name="i"/> one of its Q, K and V, which its kernels read stored in bfloat16 too.</summary>
    bool ReadsNarrowOnTensorCores(Node node, int i) =>
        i < TensorCoreAttention.NarrowOperands && node.Op is Op.Attention a && OnTensorCores(AttentionShape.Of(a));

    IBuffer INarrowValues.AllocateNarrow(int length) => AllocateBFloat16(length);

    int INarrowValues.NarrowElementBytes => sizeof(ushort);

    bool INarrowValues.IsNarrow(IBuffer buffer) => buffer is GpuBuffer { IsBFloat16: true };
}

/// <summary>Kernels of <see cref="GpuBackend"/> that may run one thread per pair of neighbouring values (see
/// <see cref="GpuBackend.PairedKernels"/>): a bfloat16 pair is one 32-bit word, a float32 pair two values a thread
/// reads at a stride of two.</summary>
[Flags]
public enum PairedKernels
{
    None = 0,
    /// <summary>Fused groups into bfloat16 whose operands of the result's size are bfloat16 too.</summary>
    NarrowPointwise = 1,
    /// <summary>Every other fused group.</summary>
    Pointwise = 2,
    /// <summary>Softmax and reduction rows of even length read through a prologue.</summary>
    Rows = 4,
    /// <summary>Layout copies from bfloat16 into bfloat16 (permute, slice, concat, broadcast).</summary>
    NarrowCopies = 8,
    /// <summary>Every other layout copy.</summary>
    Copies = 16,
    All = NarrowPointwise | Pointwise | Rows | NarrowCopies | Copies,
}

