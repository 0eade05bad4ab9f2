/// Locations shared by the test files: the repository root and the reference fixtures.
module Lxt.Tests.Paths

open System
open System.IO
open Expecto

/// Tests that run kernels on ILGPU's CPU accelerator, one group: they run one at a time, never beside each other, as
/// each accelerator's threads would otherwise contend for the cores. (The wrong values once seen with several at work
/// came from host copies a garbage collection moved; GpuBackend.CopyIn and CopyOut pin them.)
let onIlgpuCpu (tests: Test) = testSequencedGroup "ILGPU CPU accelerator" tests

/// The repository root: $LXT_REPO_ROOT if set, otherwise the first folder above
/// AppContext.BaseDirectory that contains Lxt.sln.
let repoRoot : string =
    match Environment.GetEnvironmentVariable "LXT_REPO_ROOT" with
    | null | "" ->
        let rec walk (dir: DirectoryInfo) =
            if isNull dir then
                failwithf "Lxt.sln not found above %s; set LXT_REPO_ROOT to the repository root" AppContext.BaseDirectory
            elif File.Exists(Path.Combine(dir.FullName, "Lxt.sln")) then dir.FullName
            else walk dir.Parent
        walk (DirectoryInfo AppContext.BaseDirectory)
    | root -> Path.GetFullPath root

/// The reference fixtures: $LXT_FIXTURES if set, otherwise <repoRoot>/../shared/fixtures/lxt-reference;
/// when that folder does not exist (e.g. a checkout nested one level deeper),
/// the first shared/fixtures/lxt-reference found in a folder further up.
let fixtures : string =
    match Environment.GetEnvironmentVariable "LXT_FIXTURES" with
    | null | "" ->
        let relative = Path.Combine("shared", "fixtures", "lxt-reference")
        let primary = Path.GetFullPath(Path.Combine(repoRoot, "..", relative))
        if Directory.Exists primary then primary
        else
            let rec walk (dir: DirectoryInfo) =
                if isNull dir then primary
                else
                    let candidate = Path.Combine(dir.FullName, relative)
                    if Directory.Exists candidate then candidate else walk dir.Parent
            walk (DirectoryInfo(repoRoot).Parent)
    | dir -> Path.GetFullPath dir
