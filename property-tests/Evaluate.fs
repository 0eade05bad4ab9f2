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

/// Leaves with random values in [−scale, scale), collected by name as a test builds a graph.
type LeafValues(rng: Random) =
    let mutable values = Map.empty
    member _.Rng = rng
    member _.Map = values
    member _.Random(shape: Shape, ?scale: float) =
        let s = defaultArg scale 1.0
        Array.init (Shape.numel shape) (fun _ -> (rng.NextDouble() * 2.0 - 1.0) * s)
    member this.Input(name: string, shape: Shape) =
        values <- values.Add(name, this.Random shape)
        Ops.input name shape Float
    member this.Parameter(name: string, shape: Shape, ?scale: float) =
        values <- values.Add(name, this.Random(shape, defaultArg scale 1.0))
        Ops.parameter name shape
    member this.Seed(output: Node) = Ops.constant output.Shape (this.Random output.Shape)
