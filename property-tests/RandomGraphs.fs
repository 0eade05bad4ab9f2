// A generator of random, well-shaped graphs that together cover every differentiable op, with values for their leaves.
module Lxt.Tests.RandomGraphs

open System
open Lxt.Graph
open Lxt.Graph.Ops

/// A random graph: its output, and a value for each leaf (inputs and parameters) by name.
type Sample =
    { Output: Node
      Values: Map<string, float[]>
      Description: string }
    override s.ToString() = s.Description

type private Builder(rng: Random) =
    let mutable values = Map.empty
    let mutable count = 0
    let steps = ResizeArray<string>()
    member _.Rng = rng
    member _.Values = values
    member _.Steps = steps
    member _.Leaf(shape: Shape, ?isParameter: bool) =
        count <- count + 1
        let name = sprintf "x%d" count
        values <- values.Add(name, Array.init (Shape.numel shape) (fun _ -> rng.NextDouble() * 2.0 - 1.0))
        if defaultArg isParameter false then parameter name shape else input name shape Float
    member _.Indices(shape: Shape, rows: int) =
        count <- count + 1
        let name = sprintf "i%d" count
        values <- values.Add(name, Array.init (Shape.numel shape) (fun _ -> float (rng.Next rows)))
        input name shape Int

/// Positive values for ops defined on positive numbers only.
let private positive x = addScalar 0.5 (square x)

/// Each step maps the current node to a new one, usually combining it with fresh leaves.
let private stepOps : (string * (Builder -> Node -> Node)) list =
    let unary name f = name, (fun (_: Builder) x -> f x)
    [ unary "neg" neg
      unary "exp" (fun x -> exp (tanh x))
      unary "log" (fun x -> log (positive x))
      unary "sqrt" (fun x -> sqrt (positive x))
      unary "rsqrt" (fun x -> rsqrt (positive x))
      unary "tanh" tanh
      unary "sigmoid" sigmoid
      unary "erf" erf
      unary "gelu" geluErf
      unary "gelu-tanh" geluTanh
      unary "silu" silu
      unary "relu" relu
      unary "abs" abs
      unary "reciprocal" (fun x -> reciprocal (positive x))
      unary "sin" sin
      unary "cos" cos
      unary "square" square
      unary "sign·x" (fun x -> mul (sign x) x)
      "add", (fun b x -> add x (b.Leaf x.Shape))
      "sub-broadcast", (fun b x -> sub x (b.Leaf [| x.Shape.[x.Shape.Length - 1] |]))
      "mul", (fun b x -> mul x (b.Leaf x.Shape))
      "div", (fun b x -> div x (positive (b.Leaf x.Shape)))
      "pow", (fun b x -> pow (positive x) (b.Leaf x.Shape))
      "maximum", (fun b x -> maximum x (b.Leaf x.Shape))
      "minimum", (fun b x -> minimum x (b.Leaf x.Shape))
      "where", (fun b x -> let y = b.Leaf x.Shape in where (greater y (scalar 0.0)) x (mul x y))
      "matmul", (fun b x ->
        let k = x.Shape.[x.Shape.Length - 1]
        matmul x (b.Leaf([| k; 1 + b.Rng.Next 4 |], true)))
      "matmul-batched", (fun b x ->
        let s = x.Shape
        matmul x (transpose -1 -2 (b.Leaf s)))
      "softmax", (fun b x -> softmax (b.Rng.Next x.Shape.Length) x)
      "sum", (fun b x -> reduceSum [ b.Rng.Next x.Shape.Length ] (b.Rng.Next 2 = 0) x |> fun y -> if y.Shape.Length < 2 then reshape [| 1; -1 |] y else y)
      "mean", (fun b x -> reduceMean [ b.Rng.Next x.Shape.Length ] true x)
      "max", (fun b x -> reduceMax [ b.Rng.Next x.Shape.Length ] true x)
      "broadcast", (fun b x -> broadcastTo (Array.append [| 2 |] x.Shape) x |> fun y -> mul y (b.Leaf y.Shape) |> reduceSum [ 0 ] false)
      "reshape", (fun _ x -> reshape [| -1; x.Shape.[x.Shape.Length - 1] |] x)
      "permute", (fun _ x -> transpose 0 -1 x)
      "slice", (fun b x ->
        let ax = b.Rng.Next x.Shape.Length
        let n = x.Shape.[ax]
        if n < 2 then x else let s = b.Rng.Next(n - 1) in slice ax s (s + 1 + b.Rng.Next(n - s - 1)) x)
      "concat", (fun b x -> concat (x.Shape.Length - 1) [ x; b.Leaf x.Shape ])
      "gather", (fun b x ->
        let s = x.Shape
        let rows = 3
        let table = b.Leaf([| rows; s.[s.Length - 1] |], true)
        add x (gather table (b.Indices(s.[.. s.Length - 2], rows))))
      "conv2d", (fun b x ->
        let img = b.Leaf [| 1; 2; 5; 5 |]
        let w = b.Leaf([| 3; 2; 2; 2 |], true)
        let stride = 1 + b.Rng.Next 2
        let pad = b.Rng.Next 2
        add x (reduceSum [ 0; 1; 2; 3 ] false (conv2d (stride, stride) (pad, pad) img w))) ]

let opNames = stepOps |> List.map fst

/// A graph of `depth` random steps over a random input of rank 2 or 3, forcing the op `forced` in first.
let build (seed: int) (depth: int) (forced: string option) : Sample =
    let rng = Random seed
    let b = Builder rng
    let shape = if rng.Next 2 = 0 then [| 2 + rng.Next 3; 2 + rng.Next 3 |] else [| 2; 2 + rng.Next 2; 2 + rng.Next 3 |]
    let mutable x = b.Leaf shape
    let pick () = stepOps.[rng.Next stepOps.Length]
    let chosen = [ for i in 0 .. depth - 1 -> if i = 0 && forced.IsSome then stepOps |> List.find (fst >> (=) forced.Value) else pick () ]
    for (name, f) in chosen do
        b.Steps.Add name
        x <- f b x
    { Output = x; Values = b.Values; Description = sprintf "seed %d: %s -> %s" seed (String.Join(" > ", b.Steps)) (Shape.show x.Shape) }

/// Σ (output ⊙ w) for fixed pseudo-random weights w: a scalar loss whose gradient exercises every output element.
let lossOf (seed: int) (out: Node) =
    let rng = Random(seed + 7)
    let w = constant out.Shape (Array.init (Shape.numel out.Shape) (fun _ -> rng.NextDouble() * 2.0 - 1.0))
    reduceSum [ 0 .. out.Shape.Length - 1 ] false (mul out w)

/// The float inputs and parameters under `root` (what gradients are taken with respect to).
let floatLeaves (root: Node) =
    Traverse.topo [ root ] |> Array.filter (fun n -> match n.Op with Input _ | Parameter _ -> n.DType = Float | _ -> false) |> List.ofArray

/// The forward value and the gradient of `lossOf seed output` with respect to every float leaf, for one plan.
let forwardAndGradients (seed: int) (output: Node) =
    let loss = lossOf seed output
    output :: Autodiff.vjp [ loss, scalar 1.0 ] (floatLeaves loss)
