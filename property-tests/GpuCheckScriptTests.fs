/// scripts/gpu-check.sh's `tune` on this machine, with a stand-in for the GPU check: it names the fastest of the
/// choices whose checks pass, stops one that hangs, and runs the check with the chosen options.
module Lxt.Tests.GpuCheckScriptTests

open System
open System.Diagnostics
open System.IO
open Expecto

/// A stand-in for the published Lxt.GpuCheck: the full check (with --fixtures) echoes its options; a 4-layer timing
/// on tensor cores with ldmatrix hangs; without, it checks and times attention alone, takes 10.5 ms and exits with
/// $FAKE_TENSOR_CORE_STATUS (a check failed where 1); any other choice takes 15.5 ms.
let private fakeCheck = """#!/usr/bin/env bash
a="$*"
if [[ "$a" == *--fixtures* ]]; then echo "check run with: $a"; exit 0; fi
if [[ "$a" == *--ldmatrix* ]]; then exec sleep 60; fi
if [[ "$a" == *--tensor-core-attention* ]]; then
  echo "attention d 64: O on tensor cores vs CUDA cores: relative difference 1.0E-003 ok"
  echo "attention d 64, 32 heads over 8, 2048 tokens, causal: output on tensor cores 0.20 ms (86.0 TFLOP/s)"
  echo "profile llama-1b 2048 tokens: 10.50 ms per run replaying a CUDA graph, 11.00 ms launching kernel by kernel"
  exit "${FAKE_TENSOR_CORE_STATUS:-0}"
fi
echo "profile llama-1b 2048 tokens: 15.50 ms per run replaying a CUDA graph, 16.00 ms launching kernel by kernel"
"""

/// Runs `tune` in a folder of its own (the script, a packed stand-in) and returns its exit code and output.
let private tune (tensorCoreStatus: int) =
    let root = Path.Combine(Path.GetTempPath(), "lxt-tune-" + Guid.NewGuid().ToString("N"))
    try
        let stage = Path.Combine(root, "stage")
        Directory.CreateDirectory(Path.Combine(stage, "app")) |> ignore
        Directory.CreateDirectory(Path.Combine(stage, "fixtures")) |> ignore
        Directory.CreateDirectory(Path.Combine(root, "scripts")) |> ignore
        Directory.CreateDirectory(Path.Combine(root, ".gpu-check")) |> ignore
        let app = Path.Combine(stage, "app", "Lxt.GpuCheck")
        File.WriteAllText(app, fakeCheck)
        File.SetUnixFileMode(app, UnixFileMode.UserRead ||| UnixFileMode.UserWrite ||| UnixFileMode.UserExecute)
        File.Copy(Path.Combine(Paths.repoRoot, "scripts", "gpu-check.sh"), Path.Combine(root, "scripts", "gpu-check.sh"))
        let run (file: string) (args: string list) (env: (string * string) list) =
            let psi = ProcessStartInfo(file, RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = root)
            for a in args do psi.ArgumentList.Add a
            for k, v in env do psi.Environment.[k] <- v
            use p = Process.Start psi
            let err = p.StandardError.ReadToEndAsync()
            let out = p.StandardOutput.ReadToEnd()
            p.WaitForExit()
            p.ExitCode, out + err.Result
        let packed, packOutput = run "tar" [ "-C"; stage; "-cJf"; Path.Combine(root, ".gpu-check", "lxt-gpu-check.tar.xz"); "app"; "fixtures" ] []
        Expect.equal packed 0 (sprintf "packing the stand-in: %s" packOutput)
        run "bash" [ "scripts/gpu-check.sh"; "tune" ]
            [ "OUT", Path.Combine(root, "out"); "LXT_GPU_WORK", Path.Combine(root, "work"); "LXT_GPU_VARIANT_TIMEOUT", "2"
              "FAKE_TENSOR_CORE_STATUS", string tensorCoreStatus ]
    finally
        try Directory.Delete(root, true) with _ -> ()

/// `tune`'s lines (it must succeed), its whole output, and the line where the check reports the options it ran with.
let private tuned (tensorCoreStatus: int) =
    let code, output = tune tensorCoreStatus
    Expect.equal code 0 output
    let all = output.Split('\n') |> Array.map (fun l -> l.TrimEnd())
    all, output, all |> Array.findIndex (fun l -> l.StartsWith "check run with:")

let tests =
    testList "gpu-check.sh tune" [
        test "the fastest choice whose checks pass is chosen, and the check runs with its options less its checkpointing" {
            let all, output, ran = tuned 0
            Expect.contains all "fastest: --pairs All --fused-attention --tensor-core-attention --checkpointing none (10.50 ms)" output
            // the hanging choice is stopped and named so
            Expect.contains all "--pairs All --fused-attention --tensor-core-attention --ldmatrix --checkpointing none: ? ms for 4 layers, not chosen: a check failed or it was stopped" output
            Expect.stringContains all.[ran] "--precision bf16 --pairs All --fused-attention --tensor-core-attention" "the chosen kernels"
            Expect.isFalse (all.[ran].Contains "--ldmatrix") all.[ran]
            Expect.isFalse (all.[ran].Contains "--checkpointing") "every checkpointing choice of the table, not the 4 layers' one"
            // the choices' lines come again last, after the check's own output
            let again = all |> Array.findIndex (fun l -> l.StartsWith "choices timed first")
            Expect.isGreaterThan again ran "after the run"
            Expect.contains all.[again..] "--pairs All: 15.50 ms for 4 layers" output
            // with what the tensor-core choice checked and timed of attention alone
            Expect.contains all.[again..] "  attention d 64: O on tensor cores vs CUDA cores: relative difference 1.0E-003 ok" output
            Expect.contains all.[again..] "  attention d 64, 32 heads over 8, 2048 tokens, causal: output on tensor cores 0.20 ms (86.0 TFLOP/s)" output
        }
        test "a faster choice whose check failed is never chosen" {
            let all, output, ran = tuned 1
            Expect.contains all "--pairs All --fused-attention --tensor-core-attention --checkpointing none: 10.50 ms for 4 layers, not chosen: a check failed or it was stopped" output
            Expect.contains all "fastest: --pairs All (15.50 ms)" output
            Expect.isFalse (all.[ran].Contains "--tensor-core-attention") all.[ran]
        }
    ]
