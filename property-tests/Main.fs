// Runs every test of the repository and closes with a plain "N passed, N failed" line.
module Lxt.Tests.Main

open Expecto
open Expecto.Impl

let all =
    testList "lxt" [ GraphTests.tests; PlanTests.tests; CaptureTests.tests; CpuBackendTests.tests; RulesTests.tests; ExplicitTests.tests; SafetensorsTests.tests; SgemmTests.tests; FixtureTests.tests; FusedAttentionTests.tests; ArchitectureTests.tests; EvaluationTests.tests; CliTests.tests; CliCommandsTests.tests; VisualizationTests.tests; DemoTests.tests; GenerationTests.tests; GpuBackendTests.tests; FusionTests.tests; NarrowValuesTests.tests; CheckpointingTests.tests; GpuCheckScriptTests.tests ]

[<EntryPoint>]
let main argv =
    let inner = defaultConfig.printer
    let mutable last : TestRunSummary option = None
    let printer = { inner with summary = fun config summary -> last <- Some summary; inner.summary config summary }
    let code = runTestsWithCLIArgs [ CLIArguments.Printer printer; CLIArguments.No_Spinner ] argv all
    match last with
    | Some s ->
        stdout.WriteLine()
        stdout.WriteLine(sprintf "%d passed, %d failed, %d skipped" s.passed.Length (s.failed.Length + s.errored.Length) s.ignored.Length)
    | None -> stdout.WriteLine "0 passed, 0 failed"
    code
