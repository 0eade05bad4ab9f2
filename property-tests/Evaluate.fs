// Test helpers: run graphs on a backend with host values in and out.
module Lxt.Tests.Evaluate

open System
open System.Collections.Generic
open Lxt.Graph

/// Evaluates `outputs` on `backend`, binding inputs and parameters by name from `values`.
let onBackend (backend: IBackend) (values: Map<string, float[]>) (outputs: Node list) : float[][] =
    HostEvaluation.evaluate backend values outputs

let reference values outputs = onBackend (new ReferenceBackend()) values outputs
let reference1 values output = (reference values [ output ]).[0]
