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
