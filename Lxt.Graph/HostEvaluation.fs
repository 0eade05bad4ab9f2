// Evaluating graphs with host values in and out: the convenience path for checks, tests and small graphs.
module Lxt.Graph.HostEvaluation

open System
open System.Collections.Generic

/// Runs a compiled `plan` on `backend`, binding every input and parameter by name from `values` (float64 host
/// arrays); returns the outputs' values and the run's peak intermediate bytes. A name missing from `values` raises a
/// BindingException naming it.
let run (backend: IBackend) (values: Map<string, float[]>) (plan: Plan) : float[][] * int64 =
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
        host, exe.PeakIntermediateBytes
    finally
        for b in feeds.Values do b.Dispose()

/// Evaluates `outputs` on `backend` with inputs and parameters from `values` (see `run`).
let evaluate (backend: IBackend) (values: Map<string, float[]>) (outputs: Node list) : float[][] =
    fst (run backend values (Plan.compile outputs))
