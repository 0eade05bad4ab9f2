// Specifications of recorded runs (IRunCapture, CUDA graphs on the GPU backend), on a CPU backend wrapped so that
// work queued while capturing is recorded as closures and replayed: runs after the recorded one give the values of
// plain runs for new inputs, results handed out are never overwritten by later runs, a new parameter buffer is
// recorded again, and a failing capture falls back to plain runs.
module Lxt.Tests.CaptureTests

open System
open System.Collections.Generic
open Expecto
open Lxt.Graph
open Lxt.Graph.Ops
open Lxt.Backend.Cpu

/// The CPU backend with capture: between BeginCapture and EndCapture, Execute and Copy are recorded, not run; host
/// transfers raise (the device would have to wait). `failCapture` makes EndCapture fail, as a driver may. Buffers
/// made by AllocateNarrow are narrow in name only (float32 inside), and, as on the GPU, no copy crosses between narrow
/// and wide buffers.
type private RecordingBackend(failCapture: bool) =
    let inner = new CpuBackend(1) :> IBackend
    let narrow = HashSet<IBuffer>(HashIdentity.Reference)
    let mutable capturing : ResizeArray<unit -> unit> option = None
    member val Captures = 0 with get, set
    member val Replays = 0 with get, set
    member val Steps = 0 with get, set
    member val Allocations = 0 with get, set
    member private _.Queue(work: unit -> unit) =
        match capturing with
        | Some l -> l.Add work
        | None -> work ()
    member private _.NotCapturing(what: string) =
        if capturing.IsSome then raise (InvalidOperationException(what + " while capturing"))
    interface IBackend with
        member _.Name = "recording cpu"
        member _.IsDoublePrecision = false
        member this.Allocate length =
            this.Allocations <- this.Allocations + 1
            inner.Allocate length
        member this.Upload(source, destination) = this.NotCapturing "upload"; inner.Upload(source, destination)
        member this.UploadDouble(source, destination) = this.NotCapturing "upload"; inner.UploadDouble(source, destination)
        member this.Download(source, destination) = this.NotCapturing "download"; inner.Download(source, destination)
        member this.DownloadDouble(source, destination) = this.NotCapturing "download"; inner.DownloadDouble(source, destination)
        member this.Copy(source, destination) =
            if narrow.Contains source <> narrow.Contains destination then
                raise (InvalidOperationException "a copy between a narrow and a wide buffer")
            this.Queue(fun () -> inner.Copy(source, destination))
        member this.Execute(node, inputs, output) =
            this.Steps <- this.Steps + 1
            this.Queue(fun () -> inner.Execute(node, inputs, output))
        member _.Dispose() = inner.Dispose()
    interface IRunCapture with
        member _.CanCapture = true
        member _.BeginCapture() = capturing <- Some(ResizeArray())
        member this.EndCapture() =
            let work = capturing.Value
            capturing <- None
            if failCapture then raise (InvalidOperationException "capture failed")
            this.Captures <- this.Captures + 1
            { new IRecordedRun with
                member _.Replay() =
                    this.Replays <- this.Replays + 1
                    for w in work do w ()
                member _.Dispose() = () }
    interface INarrowValues with
        member _.WritesNarrow(_, _, _, _) = false
        member _.RoundsOperand(_, _) = false
        member _.ReadsNarrow(_, _, _) = true
        member this.AllocateNarrow length =
            let b = (this :> IBackend).Allocate length
            narrow.Add b |> ignore
            b
        member _.NarrowElementBytes = 2
        member _.IsNarrow b = narrow.Contains b

/// A small network over an input and a parameter, with an output read inside the graph too.
let private network () =
    let x = input "x" [| 6; 5 |] Float
    let w = parameter "w" [| 4; 5 |]
    let h = tanh (matmul x (transpose -1 -2 w))
    let y = add (mul h h) (reduceSum [ 1 ] true h)
    [ y; reduceSum [ 0; 1 ] false y; h ]

/// The outputs of a run of `exe` on input `x`, given in a buffer `allocate` makes.
let private valuesIn (allocate: int -> IBuffer) (backend: IBackend) (exe: Executable) (x: float32[]) =
    let b = allocate x.Length
    backend.Upload(ReadOnlySpan x, b)
    let outs = exe.Run(readOnlyDict [ "x", b ])
    b.Dispose()
    outs

let private values (backend: IBackend) exe x = valuesIn backend.Allocate backend exe x

let private host (backend: IBackend) (buffers: IBuffer[]) =
    buffers |> Array.map (fun b -> let a = Array.zeroCreate<float32> b.Length in backend.Download(b, Span a); a)

let private randomArray (rng: Random) n = Array.init n (fun _ -> float32 (rng.NextDouble() * 2.0 - 1.0))

let private bind (backend: IBackend) (exe: Executable) (w: float32[]) =
    let b = backend.Allocate w.Length
    backend.Upload(ReadOnlySpan w, b)
    exe.BindParameter("w", b, true)

/// A recording backend's executable and a plain CPU executable of the same network, both with weights `w`.
let private pair (failCapture: bool) (rng: Random) =
    let outputs = network ()
    let recorder = new RecordingBackend(failCapture)
    let backend = recorder :> IBackend
    let exe = new Executable(Plan.compile outputs, backend)
    let plainBackend = new CpuBackend(1) :> IBackend
    let plain = new Executable(Plan.compile outputs, plainBackend)
    let w = randomArray rng 20
    bind backend exe w
    bind plainBackend plain w
    let dispose () =
        for d in [ exe :> IDisposable; plain; plainBackend; recorder ] do d.Dispose()
    recorder, exe, plainBackend, plain, { new IDisposable with member _.Dispose() = dispose () }

let tests =
    testSequenced <| testList "recorded runs" [
        test "the second run is recorded and later runs replay it with new inputs, as plain runs compute" {
            let rng = Random 3
            let recorder, exe, plainBackend, plain, resources = pair false rng
            use _ = resources
            let backend = recorder :> IBackend
            let held = ResizeArray()
            for run in 1 .. 5 do
                let x = randomArray rng 30
                let ours = values backend exe x
                let expected = values plainBackend plain x |> host plainBackend
                Expect.equal (host backend ours) expected (sprintf "run %d equals a plain run" run)
                held.Add(ours, expected)
            Expect.isTrue exe.IsReplaying "runs replay a recording"
            Expect.equal recorder.Captures 1 "one recording"
            Expect.equal recorder.Replays 4 "the recorded run and the three after it replay it"
            // results handed out earlier still hold their values: later replays never write into them
            for ours, expected in held do Expect.equal (host backend ours) expected "an earlier result is intact"
        }
        test "an input given in a narrow buffer is staged in a narrow buffer of the executable's, and runs replay" {
            let rng = Random 5
            let recorder, exe, plainBackend, plain, resources = pair false rng
            use _ = resources
            let backend = recorder :> IBackend
            for run in 1 .. 4 do
                let x = randomArray rng 30
                let ours = valuesIn (recorder :> INarrowValues).AllocateNarrow backend exe x
                let expected = values plainBackend plain x |> host plainBackend
                Expect.equal (host backend ours) expected (sprintf "run %d equals a plain run" run)
            Expect.equal recorder.Captures 1 "one recording"
            Expect.equal recorder.Replays 3 "the recorded run and the two after it replay it"
            // an input given wide after narrow ones is not copied across: that run is plain, and right
            let x = randomArray rng 30
            let expected = values plainBackend plain x |> host plainBackend
            Expect.equal (values backend exe x |> host backend) expected "a wide input after narrow ones"
        }
        test "a parameter bound to a new buffer is recorded again" {
            let rng = Random 4
            let recorder, exe, plainBackend, plain, resources = pair false rng
            use _ = resources
            let backend = recorder :> IBackend
            let x = randomArray rng 30
            for w in [ randomArray rng 20; randomArray rng 20 ] do
                bind backend exe w
                bind plainBackend plain w
                for _ in 1 .. 3 do
                    let expected = values plainBackend plain x |> host plainBackend
                    Expect.equal (values backend exe x |> host backend) expected "equals a plain run with the bound weights"
            Expect.equal recorder.Captures 2 "recorded again after the new binding"
        }
        test "a failing capture leaves plain runs that compute the same values" {
            let rng = Random 5
            let recorder, exe, plainBackend, plain, resources = pair true rng
            use _ = resources
            let backend = recorder :> IBackend
            for _ in 1 .. 4 do
                let x = randomArray rng 30
                Expect.equal (values backend exe x |> host backend) (values plainBackend plain x |> host plainBackend) "equals a plain run"
            Expect.isFalse exe.IsReplaying "no recording"
            Expect.equal recorder.Replays 0 "nothing replayed"
        }
        test "a missing input is reported while replaying, as in a plain run" {
            let rng = Random 6
            use recorder = new RecordingBackend(false)
            let backend = recorder :> IBackend
            use exe = new Executable(Plan.compile (network ()), backend)
            bind backend exe (randomArray rng 20)
            for _ in 1 .. 3 do values backend exe (randomArray rng 30) |> ignore
            Expect.isTrue exe.IsReplaying "replaying"
            Expect.throwsT<BindingException> (fun () -> exe.Run(readOnlyDict []) |> ignore) "a missing input raises BindingException"
        }
        test "profiled runs run the steps, not the recording" {
            let rng = Random 7
            use recorder = new RecordingBackend(false)
            let backend = recorder :> IBackend
            use exe = new Executable(Plan.compile (network ()), backend)
            bind backend exe (randomArray rng 20)
            for _ in 1 .. 3 do values backend exe (randomArray rng 30) |> ignore
            let before, allocated = recorder.Steps, recorder.Allocations
            exe.Profiling <- true
            values backend exe (randomArray rng 30) |> ignore
            Expect.isGreaterThan recorder.Steps before "the profiled run executed its steps"
            Expect.isNonEmpty exe.Profile "and profiled them"
            // on the recording's buffers: only the input fed and the results handed out are new
            Expect.isLessThanOrEqual (recorder.Allocations - allocated) 4 "no second set of intermediate buffers"
            Expect.isFalse exe.IsReplaying "the recording is dropped"
            exe.Profiling <- false
            for _ in 1 .. 2 do values backend exe (randomArray rng 30) |> ignore
            Expect.isTrue exe.IsReplaying "recorded again once profiling is off"
            Expect.equal recorder.Captures 2 "a second recording"
        }
    ]
