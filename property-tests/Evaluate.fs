// Test helpers: run graphs on a backend with host values in and out.
module Lxt.Tests.Evaluate

open System
open System.Collections.Generic
open Lxt.Graph

/// Evaluates `outputs` on `backend`, binding inputs and parameters by name from `values`.
let onBackend (backend: IBackend) (values: Map<string, float[]>) (outputs: Node list) : float[][] =
    let plan = Plan.compile outputs
    use exe = new Executable(plan, backend)
    let upload (v: float[]) =
        let b = backend.Allocate v.Length
        backend.UploadDouble(ReadOnlySpan v, b)
        b
    for p in Plan.parameters plan do
        match p.Op with
        | Parameter name -> exe.BindParameter(name, upload values.[name])
        | _ -> ()
    let feeds = Dictionary<string, IBuffer>()
    for i in Plan.inputs plan do
        match i.Op with
        | Input name -> feeds.[name] <- upload values.[name]
        | _ -> ()
    let outs = exe.Run feeds
    let result =
        outs |> Array.map (fun b ->
            let host = Array.zeroCreate b.Length
            backend.DownloadDouble(b, Span host)
            host)
    exe.Recycle outs
    for b in feeds.Values do b.Dispose()
    result

let reference values outputs = onBackend (new ReferenceBackend()) values outputs
let reference1 values output = (reference values [ output ]).[0]
