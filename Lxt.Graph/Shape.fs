// Shapes: row-major dimension arrays, broadcasting and axis normalisation.
namespace Lxt.Graph

open System

/// A tensor shape, outermost dimension first. Never mutated once built.
type Shape = int[]

module Shape =
    let rank (s: Shape) = s.Length
    /// Product of the dimensions from..to−1; overflow past Int32 raises OverflowException rather than wrapping.
    let product (s: Shape) (from: int) (until: int) =
        let mutable n = 1L
        for i in from .. until - 1 do n <- n * int64 s.[i]
        Checked.int n
    let numel (s: Shape) = product s 0 s.Length
    let show (s: Shape) = "[" + String.Join(", ", s) + "]"

    /// Row-major strides of a contiguous tensor.
    let strides (s: Shape) =
        let st = Array.zeroCreate s.Length
        let mutable acc = 1
        for i in s.Length - 1 .. -1 .. 0 do
            st.[i] <- acc
            acc <- acc * s.[i]
        st

    /// Numpy broadcasting of two shapes; None when they do not broadcast.
    let tryBroadcast (a: Shape) (b: Shape) : Shape option =
        let r = max a.Length b.Length
        let dim (s: Shape) i = let j = i - (r - s.Length) in if j < 0 then 1 else s.[j]
        let out = Array.init r (fun i ->
            let x, y = dim a i, dim b i
            if x = y then x elif x = 1 then y elif y = 1 then x else -1)
        if Array.contains -1 out then None else Some out

    /// Strides of `s` seen from a broadcast shape `target` (0 where `s` is broadcast).
    let broadcastStrides (s: Shape) (target: Shape) =
        let st = strides s
        let off = target.Length - s.Length
        Array.init target.Length (fun i ->
            let j = i - off
            if j < 0 || s.[j] = 1 then 0 else st.[j])

    /// A possibly negative axis made non-negative; None when out of range.
    let tryAxis (rank: int) (axis: int) =
        let a = if axis < 0 then axis + rank else axis
        if a < 0 || a >= rank then None else Some a
