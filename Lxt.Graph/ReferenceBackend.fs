// The float64 reference backend: host arrays and the reference semantics, one op at a time.
namespace Lxt.Graph

open System

type internal HostBuffer(length: int) =
    member val Data: float[] = Array.zeroCreate length
    interface IBuffer with
        member _.Length = length
        member _.Dispose() = ()

/// Runs plans in float64 with Reference.evaluate. Slow, simple, and the definition of what every op means.
type ReferenceBackend() =
    let data (b: IBuffer) =
        match b with
        | :? HostBuffer as h -> h.Data
        | _ -> invalidArg "buffer" "the buffer belongs to another backend"
    interface IBackend with
        member _.Name = "reference-f64"
        member _.IsDoublePrecision = true
        member _.Allocate length = new HostBuffer(length) :> IBuffer
        member _.Upload(src, dst) = let d = data dst in for i in 0 .. src.Length - 1 do d.[i] <- float src.[i]
        member _.UploadDouble(src, dst) = src.CopyTo(Span(data dst))
        member _.Download(src, dst) = let s = data src in for i in 0 .. dst.Length - 1 do dst.[i] <- float32 s.[i]
        member _.DownloadDouble(src, dst) = ReadOnlySpan(data src).CopyTo dst
        member _.Copy(src, dst) = Array.blit (data src) 0 (data dst) 0 src.Length
        member _.Execute(node, inputs, output) =
            let v = Reference.evaluate node (inputs |> Array.map data)
            Array.blit v 0 (data output) 0 v.Length
        member _.Dispose() = ()
