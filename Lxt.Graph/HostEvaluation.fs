// Evaluating graphs with host values in and out: the convenience path for checks, tests and small graphs.
module Lxt.Graph.HostEvaluation

open System
open System.Collections.Generic

/// Evaluates `outputs` on `backend`, binding every input and parameter by name from `values` (float64 host arrays),
/// and returns the outputs' values. A name missing from `values` raises a BindingException naming it.
let evaluate (backend: IBackend) (values: Map<string, float[]>) (outputs: Node list) : float[][] =
    let plan = Plan.compile outputs
    use exe = new Executable(plan, backend)
    let upload (name: string) =
        match values.TryFind name with
        | Some v ->
            let b = backend.Allocate v.Length
            backend.UploadDouble(ReadOnlySpan v, b)
            b
        | None -> raise (BindingException(sprintf "no value was given for '%s'" name))
    for p in Plan.parameters plan do
        match p.Op with
        | Parameter name -> exe.BindParameter(name, upload name)
        | _ -> ()
    let feeds = Dictionary<string, IBuffer>()
    try
        for i in Plan.inputs plan do
            match i.Op with
            | Input name -> feeds.[name] <- upload name
            | _ -> ()
        let outs = exe.Run feeds
        let host =
            outs |> Array.map (fun b ->
                let h = Array.zeroCreate b.Length
                backend.DownloadDouble(b, Span h)
                h)
        exe.Recycle outs
        host
    finally
        for b in feeds.Values do b.Dispose()
