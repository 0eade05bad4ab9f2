// A backend that computes nothing: it plans and allocates as a real backend does and counts the bytes it would hold and
// the ops it would launch, so the device memory and kernel count of a model, an input length and a checkpointing choice
// are known without the device.
namespace Lxt.Graph

open System

/// Counts what a DryRunBackend holds.
type private DryRunLedger() =
    let mutable live = 0L
    let mutable peak = 0L
    member val Launches = 0L with get, set
    member this.Launch() = this.Launches <- this.Launches + 1L
    member _.Take(bytes: int64) =
        live <- live + bytes
        peak <- max peak live
    member _.Give(bytes: int64) = live <- live - bytes
    member _.Live = live
    member _.Peak = peak
    member _.ResetPeak() = peak <- live

type private DryBuffer(length: int, elementBytes: int64, ledger: DryRunLedger) =
    let mutable disposed = false
    do ledger.Take(int64 length * elementBytes)
    member _.ElementBytes = elementBytes
    interface IBuffer with
        member _.Length = length
        member _.Dispose() =
            if not disposed then
                disposed <- true
                ledger.Give(int64 length * elementBytes)

/// A backend that allocates nothing and computes nothing, and plans as `decisions` does: the same fused groups,
/// prologues, in-place pointwise steps, lazy transposes and slices, narrow matrix weights and narrow values
/// (`decisions` must implement ITransposedMatMul; its other optional interfaces are mirrored when present). Every
/// buffer is counted at 4 bytes an element (a narrow matrix weight or value at its narrow width), so PeakBytes is the
/// most an executable, its weights and its inputs and outputs would hold at once on `decisions`' device — without the
/// backend's own scratch (GEMM workspaces). Runs give zeros; only their allocations are real.
type DryRunBackend(decisions: IBackend) =
    do
        if isNull (box decisions) then nullArg "decisions"
        match decisions with
        | :? ITransposedMatMul -> ()
        | _ -> invalidArg "decisions" (sprintf "backend %s reads no transposed operands (ITransposedMatMul); a dry run plans as backends that do" decisions.Name)
    let ledger = DryRunLedger()
    let fusing = match decisions with :? IFusedPointwise as f -> Some f | _ -> None
    let prologues = match decisions with :? IFusedPrologue as p -> Some p | _ -> None
    let narrows = match decisions with :? ILowPrecisionWeights as w -> w.NarrowsMatrixWeights | _ -> false
    let inPlace = match decisions with :? IInPlaceElementwise as b -> b.SupportsInPlaceElementwise | _ -> false
    let narrowValues = match decisions with :? INarrowValues as v -> Some v | _ -> None
    let slicesInPlace = match decisions with :? ISlicedConcat as c -> c.ReadsSlicesInPlace | _ -> false
    let fusesAttention = match decisions with :? IAttentionChoice as c -> c.FusesAttention | _ -> false

    /// The most bytes held at once since creation or the last ResetPeak.
    member _.PeakBytes = ledger.Peak
    /// Bytes held now.
    member _.LiveBytes = ledger.Live
    /// Starts a new peak from the bytes held now.
    member _.ResetPeak() = ledger.ResetPeak()
    /// Ops the runs so far asked to compute (plain, fused, with a prologue, products): the kernels `decisions` would
    /// launch for them, besides the copies of inputs and outputs.
    member _.Launches = ledger.Launches

    interface IBackend with
        member _.Name = "dry run of " + decisions.Name
        member _.IsDoublePrecision = false
        member _.Allocate(length) = new DryBuffer(length, 4L, ledger) :> IBuffer
        member _.Upload(_: ReadOnlySpan<float32>, _: IBuffer) = ()
        member _.UploadDouble(_: ReadOnlySpan<float>, _: IBuffer) = ()
        member _.Download(_: IBuffer, destination: Span<float32>) = destination.Clear()
        member _.DownloadDouble(_: IBuffer, destination: Span<float>) = destination.Clear()
        member _.Copy(_, _) = ()
        member _.Execute(_, _, _) = ledger.Launch()
        member _.Dispose() = ()
    interface ITransposedMatMul with
        member _.ExecuteMatMul(_, _, _, _, _, _) = ledger.Launch()
    interface ISlicedConcat with
        member _.ReadsSlicesInPlace = slicesInPlace
        member _.ExecuteConcat(_, _, _, _) = ledger.Launch()
    interface IFusedPointwise with
        member _.SupportsFusedPointwise = fusing |> Option.exists (fun f -> f.SupportsFusedPointwise)
        member _.Fuses(node) = fusing |> Option.exists (fun f -> f.Fuses node)
        member _.ExecuteFused(_, _, _) = ledger.Launch()
    interface IFusedPrologue with
        member _.TakesPrologue(consumer) = prologues |> Option.exists (fun p -> p.TakesPrologue consumer)
        member _.ExecuteWithPrologue(_, _, _) = ledger.Launch()
    interface IInPlaceElementwise with
        member _.SupportsInPlaceElementwise = inPlace
    interface IAttentionChoice with
        member _.FusesAttention = fusesAttention
    interface ILowPrecisionWeights with
        member _.NarrowsMatrixWeights = narrows
        member _.AllocateMatrixWeight(values) = new DryBuffer(values.Length, (if narrows then 2L else 4L), ledger) :> IBuffer
    interface INarrowValues with
        member _.WritesNarrow(step, fused, narrowOperands, readRounded) = narrowValues |> Option.exists (fun v -> v.WritesNarrow(step, fused, narrowOperands, readRounded))
        member _.RoundsOperand(step, operand) = narrowValues |> Option.exists (fun v -> v.RoundsOperand(step, operand))
        member _.ReadsNarrow(step, fused, operand) = narrowValues |> Option.exists (fun v -> v.ReadsNarrow(step, fused, operand))
        member _.NarrowElementBytes = match narrowValues with Some v -> v.NarrowElementBytes | None -> 4
        member _.IsNarrow(buffer) = match buffer with :? DryBuffer as b -> b.ElementBytes < 4L | _ -> false
        member this.AllocateNarrow(length) =
            new DryBuffer(length, int64 (this :> INarrowValues).NarrowElementBytes, ledger) :> IBuffer
