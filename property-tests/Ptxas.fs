/// NVIDIA's PTX assembler, where the tests find one: it checks what ILGPU's PTX backend alone cannot, that a device's
/// driver accepts a kernel's PTX (it refused an untyped mov once) and how the kernel uses registers.
module Lxt.Tests.Ptxas

open System
open System.Diagnostics
open Expecto

/// LXT_PTXAS (which must then exist; .ci/run fetches one), else ptxas on the PATH, else none.
let find () =
    match Environment.GetEnvironmentVariable "LXT_PTXAS" with
    | null | "" ->
        (Environment.GetEnvironmentVariable "PATH" |> Option.ofObj |> Option.defaultValue "").Split(IO.Path.PathSeparator)
        |> Array.map (fun d -> IO.Path.Combine(d, "ptxas"))
        |> Array.tryFind IO.File.Exists
    | named ->
        Expect.isTrue (IO.File.Exists named) (sprintf "LXT_PTXAS names %s, which does not exist" named)
        Some named

/// Assembles a kernel's PTX for SM 9.0 and expects ptxas to accept it with no stack frame and no spill. The PTX is
/// assembled as version 7.8, which holds every instruction the kernels use (mma.sync on bfloat16, ldmatrix and cvt to
/// bfloat16 pairs came with 7.0 and earlier), so that assemblers from CUDA 11.8 on read it.
let expectRegistersOnly (ptxas: string) (name: string) (ptx: string) =
    let file = IO.Path.Combine(IO.Path.GetTempPath(), sprintf "lxt-ptxas-%d-%s.ptx" Environment.ProcessId (Guid.NewGuid().ToString "N"))
    try
        IO.File.WriteAllText(file, Text.RegularExpressions.Regex.Replace(ptx, @"(?m)^\.version \d+\.\d+", ".version 7.8"))
        let info = ProcessStartInfo(ptxas, sprintf "-arch=sm_90 -v \"%s\" -o /dev/null" file, RedirectStandardOutput = true, RedirectStandardError = true)
        use run = Process.Start info
        let errors = run.StandardError.ReadToEndAsync()
        let printed = run.StandardOutput.ReadToEnd() + errors.Result
        run.WaitForExit()
        Expect.equal run.ExitCode 0 (sprintf "%s: ptxas accepts it\n%s" name printed)
        let frames = Text.RegularExpressions.Regex.Matches(printed, @"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
        Expect.isGreaterThan frames.Count 0 (sprintf "%s: ptxas reports its frame\n%s" name printed)
        for f in frames do
            Expect.equal f.Value "0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads" (sprintf "%s: registers only" name)
    finally
        IO.File.Delete file
