// The one small interface every backend implements: device buffers, host transfers, and one op at a time.
namespace Lxt.Graph

open System

/// Memory owned by a backend (host arrays, device allocations). Its element type is the backend's precision.
type IBuffer =
    inherit IDisposable
    abstract Length: int

/// A tensor backend. The executor only allocates, transfers and asks for one node at a time to be computed
/// from its operands' buffers into an output buffer. A backend knows ops and shapes, never rules or models.
type IBackend =
    inherit IDisposable
    abstract Name: string
    /// True when buffers hold float64 values.
    abstract IsDoublePrecision: bool
    abstract Allocate: length: int -> IBuffer
    abstract Upload: source: ReadOnlySpan<float32> * destination: IBuffer -> unit
    abstract UploadDouble: source: ReadOnlySpan<float> * destination: IBuffer -> unit
    abstract Download: source: IBuffer * destination: Span<float32> -> unit
    abstract DownloadDouble: source: IBuffer * destination: Span<float> -> unit
    abstract Copy: source: IBuffer * destination: IBuffer -> unit
    /// Computes `node` from `inputs` (its operands' values, in Op.Children order) into `output`.
    abstract Execute: node: Node * inputs: IBuffer[] * output: IBuffer -> unit

/// Optional for backends: a matrix product that reads an operand in its stored layout and transposes it on the fly.
/// Plans then never materialise a Permute that only swaps the last two axes of a MatMul operand (a linear layer's
/// weight, the keys in q·kᵀ, the transposes autodiff adds); without it they copy the transpose first.
type ITransposedMatMul =
    /// Computes `node` (a MatMul) into `output`. When `transA` is true, `a` holds the node's first operand with its last
    /// two axes swapped (the un-permuted value); likewise `transB` for `b`.
    abstract ExecuteMatMul: node: Node * a: IBuffer * transA: bool * b: IBuffer * transB: bool * output: IBuffer -> unit

/// Optional for backends: a Concat that reads an operand that is a Slice in place, from the slice's own operand.
/// Plans then never materialise a Slice read only by Concats (rotating halves: concat [x₂; x₁] of x's two halves is
/// one copy, not three).
type ISlicedConcat =
    /// False runs every Slice as a step of its own on this backend.
    abstract ReadsSlicesInPlace: bool
    /// Computes `node` (a Concat) into `output`. When `sliced[k]`, `inputs[k]` holds the operand of the node's k-th
    /// operand, a Slice, which the backend reads through the slice's range.
    abstract ExecuteConcat: node: Node * inputs: IBuffer[] * sliced: bool[] * output: IBuffer -> unit

/// Optional for backends whose pointwise kernels (Unary, Binary, Where) allow `output` to be the very buffer of an
/// operand of the same shape: each output element is written after the same element of the operand is read.
/// Plans then write such results into an operand that dies at that step instead of taking a fresh buffer.
type IInPlaceElementwise =
    abstract SupportsInPlaceElementwise: bool

/// Optional for backends computing in host float32 memory: a buffer over the caller's array, without a copy.
/// The caller must not change the array while the buffer is in use (weights read once and kept are the use).
type IHostArrayAdoption =
    abstract Adopt: values: float32[] -> IBuffer

/// Optional for backends: a group of pointwise nodes computed by one call that runs the group's program at every
/// element of its root (see FusedGroup), so chains of pointwise ops cost one pass over memory instead of one each.
/// An Executable on such a backend fuses its plan (Plan.fuse) when SupportsFusedPointwise is true.
type IFusedPointwise =
    /// False runs plans node by node on this backend.
    abstract SupportsFusedPointwise: bool
    /// Whether a pointwise node may be computed inside a fused group (a backend may keep large values, where its
    /// plain kernels are faster than its fused one, out of groups).
    abstract Fuses: node: Node -> bool
    /// Computes `group.Root` into `output` from `inputs`, the values of `group.Operands` in order. With
    /// IInPlaceElementwise, `output` may be the buffer of an operand of the root's shape.
    abstract ExecuteFused: group: FusedGroup * inputs: IBuffer[] * output: IBuffer -> unit

/// Optional for backends: whether explanations on this backend compute attention as one op (Op.Attention, see
/// FusedAttention) unless told which; without it they compute it as products and a softmax.
type IAttentionChoice =
    /// True where one op is as fast as products and a softmax or faster on this backend.
    abstract FusesAttention: bool

/// A backend's recording of the device work of one run, replayed with the same buffers (a CUDA graph).
type IRecordedRun =
    inherit IDisposable
    /// Queues the recorded work again, reading and writing the buffers it was recorded with.
    abstract Replay: unit -> unit

/// Optional for backends that can record the work queued between BeginCapture and EndCapture instead of running it,
/// and replay it later (CUDA stream capture). Executables then record one run of a plan and replay it, paying the
/// host's cost per op once instead of on every run. Work queued while capturing must not wait for the device.
type IRunCapture =
    /// True when recording is possible now (a device and driver that support it; not while profiling).
    abstract CanCapture: bool
    /// Starts recording: work queued from now on is recorded, not run.
    abstract BeginCapture: unit -> unit
    /// Ends recording and returns it; nothing recorded has run yet. Raises if the recording failed, after which
    /// the backend is usable as before.
    abstract EndCapture: unit -> IRecordedRun

/// Optional for backends that may keep a parameter read only as a matrix-product operand (directly, through views
/// such as Reshape, or through transposes a MatMul reads lazily) in a narrower type than their buffers, such as
/// bfloat16 weights for bfloat16 products. Backends implementing it also implement ITransposedMatMul.
type ILowPrecisionWeights =
    /// True when AllocateMatrixWeight stores values narrower than Allocate's buffers; false when it makes the same
    /// buffers as Allocate (the precision in use keeps weights wide).
    abstract NarrowsMatrixWeights: bool
    /// A buffer holding `values`, to be read only as an operand of matrix products; the backend may store it
    /// narrower (rounded). Its Length is values.Length; uploads into it round, downloads widen it back to float32,
    /// and ops other than MatMul refuse it with a typed LxtException naming the op.
    abstract AllocateMatrixWeight: values: ReadOnlySpan<float32> -> IBuffer

/// Optional for backends running fused groups: a Reduce or Softmax that reads its operand through a fused pointwise
/// program (see Prologue) evaluated per element as it is read, so the pointwise value read only there is never
/// written. An Executable fusing its plan gives a consumer a prologue when TakesPrologue accepts it; for any other
/// backend plans are unchanged.
type IFusedPrologue =
    /// True when this backend computes `consumer` (a Reduce or Softmax) from a prologue.
    abstract TakesPrologue: consumer: Node -> bool
    /// Computes `prologue.Consumer` into `output` from `inputs`, the values of `prologue.Group.Operands` in order.
    /// `output` is never an operand's buffer (a softmax reads each element of its operand more than once).
    abstract ExecuteWithPrologue: prologue: Prologue * inputs: IBuffer[] * output: IBuffer -> unit

/// Optional for backends that may store some computed values narrower than their buffers (bfloat16 attention
/// probabilities and scores in a bfloat16 mode), halving the bytes their kernels write and read. A plan bound to such
/// a backend stores a step's value narrow when the backend writes it narrow and every step reading it (directly or
/// through views, lazy transposes and lazy slices, which share its buffer) reads it narrow; outputs never are (see
/// Plan.narrowWhere).
/// `fused` tells whether the step is computed as a fused group's root or a prologue's consumer. Backends implementing
/// it also implement ITransposedMatMul and ISlicedConcat.
type INarrowValues =
    /// True when `step`'s kernel can write its value narrow and the backend would rather store it so. `narrowOperands`
    /// tells, for each value the step reads (Plan.reads), whether it is stored narrow: a narrow value, or a parameter
    /// read only by products on a backend storing those narrow (ILowPrecisionWeights.NarrowsMatrixWeights).
    /// `readRounded` tells that every step reading the value rounds it to the narrow type as it reads it
    /// (RoundsOperand), directly or through steps that only move values: stored narrow, it loses nothing.
    abstract WritesNarrow: step: Node * fused: bool * narrowOperands: bool[] * readRounded: bool -> bool
    /// True when `step` rounds `operand`, a value it reads, to the narrow type wherever it reads it (bfloat16 products
    /// their operands, attention on tensor cores its queries, keys and values).
    abstract RoundsOperand: step: Node * operand: Node -> bool
    /// True when `step`'s kernel reads `operand`, a value it reads, from a narrow buffer as well as from a wide one.
    abstract ReadsNarrow: step: Node * fused: bool * operand: Node -> bool
    /// A buffer of `length` narrow values. Copies, uploads and downloads of it are refused or convert as the backend
    /// documents; plans only compute into it and read it back in other steps.
    abstract AllocateNarrow: length: int -> IBuffer
    /// Bytes one narrow value takes (2 for bfloat16).
    abstract NarrowElementBytes: int
    /// True when `buffer`, one of this backend's, holds narrow values: made by AllocateNarrow, or a matrix weight
    /// stored narrow (ILowPrecisionWeights.AllocateMatrixWeight), which a plan is handed bound as a parameter.
    abstract IsNarrow: buffer: IBuffer -> bool
