// The float64 reference semantics of every op: short, index-by-index, obviously correct. Fast backends are tested against it.
module Lxt.Graph.Reference

open System

let private sqrt2 = Math.Sqrt 2.0
let private sqrt2OverPi = Math.Sqrt(2.0 / Math.PI)

/// erf to double precision (W. J. Cody's rational approximations, as in most libms).
let erf (x: float) =
    let ax = Math.Abs x
    let r =
        if ax < 0.5 then
            let t = x * x
            let p = ((((0.185777706184603153 * t + 3.16112374387056560) * t + 113.864154151050156) * t + 377.485237685302021) * t + 3209.37758913846947)
            let q = (((t + 23.6012909523441209) * t + 244.024637934444173) * t + 1282.61652607737228) * t + 2844.23683343917062
            ax * p / q
        elif ax < 4.0 then
            let p = ((((((((2.15311535474403846e-8 * ax + 0.564188496988670089) * ax + 8.88314979438837594) * ax + 66.1191906371416295) * ax + 298.635138197400131) * ax + 881.952221241769090) * ax + 1712.04761263407058) * ax + 2051.07837782607147) * ax + 1230.33935479799725)
            let q = (((((((ax + 15.7449261107098347) * ax + 117.693950891312499) * ax + 537.181101862009858) * ax + 1621.38957456669019) * ax + 3290.79923573345963) * ax + 4362.61909014324716) * ax + 3439.36767414372164) * ax + 1230.33935480374942
            1.0 - Math.Exp(-ax * ax) * p / q
        else
            let z = 1.0 / (ax * ax)
            let p = ((((0.0163153871373020978 * z + 0.305326634961232344) * z + 0.360344899949804439) * z + 0.125781726111229246) * z + 0.0160837851487422766) * z + 0.000658749161529837803
            let q = ((((z + 2.56852019228982242) * z + 1.87295284992346725) * z + 0.527905102951428412) * z + 0.0605183413124413191) * z + 0.00233520497626869185
            let r = (1.0 / Math.Sqrt Math.PI - z * p / q) / ax
            if Double.IsNaN x then nan else 1.0 - Math.Exp(-ax * ax) * r
    if x < 0.0 then -r else r

let unary (op: UnaryOp) (x: float) : float =
    match op with
    | Neg -> -x
    | Exp -> Math.Exp x
    | Log -> Math.Log x
    | Sqrt -> Math.Sqrt x
    | Rsqrt -> 1.0 / Math.Sqrt x
    | Tanh -> Math.Tanh x
    | Sigmoid -> 1.0 / (1.0 + Math.Exp(-x))
    | Erf -> erf x
    | GeluErf -> 0.5 * x * (1.0 + erf (x / sqrt2))
    | GeluTanh -> 0.5 * x * (1.0 + Math.Tanh(sqrt2OverPi * (x + 0.044715 * x * x * x)))
    | Silu -> x / (1.0 + Math.Exp(-x))
    | Relu -> if x > 0.0 then x else 0.0
    | Abs -> Math.Abs x
    | Sign -> if x > 0.0 then 1.0 elif x < 0.0 then -1.0 else 0.0
    | Reciprocal -> 1.0 / x
    | Sin -> Math.Sin x
    | Cos -> Math.Cos x
    | Square -> x * x

let binary (op: BinaryOp) (a: float) (b: float) : float =
    match op with
    | Add -> a + b
    | Sub -> a - b
    | Mul -> a * b
    | Div -> a / b
    | Pow -> Math.Pow(a, b)
    | Maximum -> Math.Max(a, b)
    | Minimum -> Math.Min(a, b)
    | Greater -> if a > b then 1.0 else 0.0
    | Equal -> if a = b then 1.0 else 0.0

/// Multi-index of a linear offset in a row-major shape.
let private unravel (shape: Shape) (i: int) =
    let idx = Array.zeroCreate shape.Length
    let mutable r = i
    for a in shape.Length - 1 .. -1 .. 0 do
        idx.[a] <- r % shape.[a]
        r <- r / shape.[a]
    idx

let private offset (strides: int[]) (idx: int[]) = Array.fold2 (fun acc s i -> acc + s * i) 0 strides idx

/// Reads `x` (of shape xs) at a multi-index of the broadcast shape `target`.
let private broadcastRead (x: float[]) (xs: Shape) (target: Shape) =
    let st = Shape.broadcastStrides xs target
    fun (idx: int[]) -> x.[offset st idx]

/// The attention op's part (see AttentionPart) from its operands' values, row by row, as softmax(scale·q·kᵀ)·v reads.
let attention (part: AttentionPart) (mask: AttentionMask) (scale: float) (shapes: Shape list) (args: float[][]) (out: float[]) =
    let { Heads = heads; T = t; D = d; KvHeads = kvHeads; Keys = keys; Dv = dv } as dims = AttentionDims.Of(shapes.[0], shapes.[1], shapes.[2])
    let q, k = args.[0], args.[1]
    for h in 0 .. heads - 1 do
        let kh = h / dims.Group
        for i in 0 .. t - 1 do
            let qi = (h * t + i) * d
            let kept = [| for j in 0 .. keys - 1 do if mask.Keeps(i, j) then yield j |]
            let score j =
                let kj = (kh * keys + j) * d
                let mutable acc = 0.0
                for c in 0 .. d - 1 do acc <- acc + q.[qi + c] * k.[kj + c]
                scale * acc
            let s = kept |> Array.map score
            let row = h * t + i
            match part with
            | Output ->
                let m = Array.max s
                let z = s |> Array.sumBy (fun x -> Math.Exp(x - m))
                let v = args.[2]
                for c in 0 .. dv - 1 do
                    let mutable acc = 0.0
                    kept |> Array.iteri (fun at j -> acc <- acc + Math.Exp(s.[at] - m) / z * v.[(kh * keys + j) * dv + c])
                    out.[row * dims.Row + c] <- acc
                out.[row * dims.Row + dv] <- m + Math.Log z
            | Gradient | ValueGradient ->
                let v, g, y = args.[2], args.[3], args.[4]
                let keysToo = part = Gradient
                let dk, dvAt = heads * t * d, (if keysToo then heads * t * d + kvHeads * keys * d else 0)
                let lse = y.[row * dims.Row + dv]
                kept |> Array.iteri (fun at j ->
                    let p = Math.Exp(s.[at] - lse)
                    if keysToo then
                        let mutable dp = 0.0
                        for c in 0 .. dv - 1 do dp <- dp + g.[row * dims.Row + c] * v.[(kh * keys + j) * dv + c]
                        let ds = scale * p * (dp - args.[5].[row])
                        let kj = (kh * keys + j) * d
                        for c in 0 .. d - 1 do
                            out.[qi + c] <- out.[qi + c] + ds * k.[kj + c]
                            out.[dk + kj + c] <- out.[dk + kj + c] + ds * q.[qi + c]
                    let vj = dvAt + (kh * keys + j) * dv
                    for c in 0 .. dv - 1 do out.[vj + c] <- out.[vj + c] + p * g.[row * dims.Row + c])

/// Evaluates one node given the values of its operands (in Op.Children order).
let evaluate (n: Node) (args: float[][]) : float[] =
    let out = Array.zeroCreate (Shape.numel n.Shape)
    let kid i = n.Children.[i]
    let each f = for i in 0 .. out.Length - 1 do out.[i] <- f (unravel n.Shape i)
    match n.Op with
    | Input _ | Parameter _ | Constant _ -> invalidOp (sprintf "%s is a leaf: its value is bound, not computed" (Node.Describe n))
    | Fill v -> Array.fill out 0 out.Length v
    | Unary(o, _) -> for i in 0 .. out.Length - 1 do out.[i] <- unary o args.[0].[i]
    | Binary(o, a, b) ->
        let ra, rb = broadcastRead args.[0] a.Shape n.Shape, broadcastRead args.[1] b.Shape n.Shape
        each (fun idx -> binary o (ra idx) (rb idx))
    | Where(c, a, b) ->
        let rc = broadcastRead args.[0] c.Shape n.Shape
        let ra, rb = broadcastRead args.[1] a.Shape n.Shape, broadcastRead args.[2] b.Shape n.Shape
        each (fun idx -> if rc idx <> 0.0 then ra idx else rb idx)
    | MatMul(a, b) ->
        let ra, rb, r = a.Shape.Length, b.Shape.Length, n.Shape.Length
        let k = a.Shape.[ra - 1]
        let sa, sb = Shape.strides a.Shape, Shape.strides b.Shape
        // batch strides count whole matrices
        let batchA = Shape.broadcastStrides a.Shape.[.. ra - 3] n.Shape.[.. r - 3] |> Array.map (fun s -> s * a.Shape.[ra - 2] * k)
        let batchB = Shape.broadcastStrides b.Shape.[.. rb - 3] n.Shape.[.. r - 3] |> Array.map (fun s -> s * k * b.Shape.[rb - 1])
        each (fun idx ->
            let bi = idx.[.. r - 3]
            let oa = offset batchA bi + idx.[r - 2] * sa.[ra - 2]
            let ob = offset batchB bi + idx.[r - 1]
            let mutable acc = 0.0
            for j in 0 .. k - 1 do acc <- acc + args.[0].[oa + j] * args.[1].[ob + j * sb.[rb - 2]]
            acc)
    | Softmax(axis, x) ->
        let st = Shape.strides x.Shape
        let len = x.Shape.[axis]
        each (fun idx ->
            let base' = offset st idx - idx.[axis] * st.[axis]
            let xs = Array.init len (fun j -> args.[0].[base' + j * st.[axis]])
            let m = Array.max xs
            let m = if Double.IsNegativeInfinity m then 0.0 else m
            let z = xs |> Array.sumBy (fun v -> Math.Exp(v - m))
            Math.Exp(args.[0].[offset st idx] - m) / z)
    | Reduce(o, axes, keep, x) ->
        let st = Shape.strides x.Shape
        let count = axes |> Array.fold (fun acc a -> acc * x.Shape.[a]) 1
        let inner = Array.map (fun a -> x.Shape.[a]) axes
        each (fun idx ->
            // the output index with the reduced axes put back at 0
            let full =
                if keep then Array.copy idx
                else
                    let mutable j = 0
                    Array.init x.Shape.Length (fun a -> if Array.contains a axes then 0 else (j <- j + 1; idx.[j - 1]))
            for a in axes do full.[a] <- 0
            let vals = Array.init count (fun c ->
                let ii = unravel inner c
                axes |> Array.iteri (fun t a -> full.[a] <- ii.[t])
                args.[0].[offset st full])
            match o with
            | Sum -> Array.sum vals
            | Mean -> Array.sum vals / float count
            | Max -> Array.max vals)
    | Broadcast x -> let rx = broadcastRead args.[0] x.Shape n.Shape in each rx
    | Reshape _ | StopGradient _ | GradientScale _ | Recompute _ -> Array.blit args.[0] 0 out 0 out.Length
    | TopKMask(k, x) ->
        let width = x.Shape.[x.Shape.Length - 1]
        for row in 0 .. out.Length / width - 1 do
            let values = Array.sub args.[0] (row * width) width
            // stable: equal values keep index order, so ties go to the lower index
            Array.indexed values |> Array.sortWith (fun (i, a) (j, b) -> if a <> b then compare b a else compare i j)
            |> Array.take k |> Array.iter (fun (i, _) -> out.[row * width + i] <- 1.0)
    | Attention(part, mask, scale, xs) -> attention part mask scale (xs |> List.map (fun x -> x.Shape)) args out
    | Permute(perm, x) ->
        let st = Shape.strides x.Shape
        each (fun idx ->
            let src = Array.zeroCreate perm.Length
            perm |> Array.iteri (fun i p -> src.[p] <- idx.[i])
            args.[0].[offset st src])
    | Slice(axis, start, _, x) ->
        let st = Shape.strides x.Shape
        each (fun idx -> let src = Array.copy idx in src.[axis] <- src.[axis] + start; args.[0].[offset st src])
    | Concat(axis, xs) ->
        let starts = xs |> List.scan (fun acc x -> acc + x.Shape.[axis]) 0 |> Array.ofList
        each (fun idx ->
            let part = (Array.findIndexBack (fun s -> s <= idx.[axis]) starts.[.. starts.Length - 2])
            let src = Array.copy idx
            src.[axis] <- idx.[axis] - starts.[part]
            args.[part].[offset (Shape.strides xs.[part].Shape) src])
    | Gather(table, indices) ->
        let rows = table.Shape.[0]
        let width = Shape.numel table.Shape / max rows 1
        for i in 0 .. indices.Shape |> Shape.numel |> (fun c -> c - 1) do
            let r = int args.[1].[i]
            if r < 0 || r >= rows then
                raise (BindingException(sprintf "gather: index %d at position %d is outside the %d rows of %s" r i rows (Node.Describe table)))
            Array.blit args.[0] (r * width) out (i * width) width
    | ScatterAdd(indices, _) ->
        let rows = n.Shape.[0]
        let width = out.Length / max rows 1
        for i in 0 .. Shape.numel indices.Shape - 1 do
            let r = int args.[0].[i]
            if r < 0 || r >= rows then
                raise (BindingException(sprintf "scatter-add: index %d at position %d is outside the %d rows of %s" r i rows (Node.Describe n)))
            for j in 0 .. width - 1 do out.[r * width + j] <- out.[r * width + j] + args.[1].[i * width + j]
    | Conv2d((sh, sw), (ph, pw), x, w) ->
        let c, h, wd = x.Shape.[1], x.Shape.[2], x.Shape.[3]
        let kh, kw = w.Shape.[2], w.Shape.[3]
        each (fun idx ->
            let b, o, oy, ox = idx.[0], idx.[1], idx.[2], idx.[3]
            let mutable acc = 0.0
            for ci in 0 .. c - 1 do
                for ky in 0 .. kh - 1 do
                    for kx in 0 .. kw - 1 do
                        let iy, ix = oy * sh - ph + ky, ox * sw - pw + kx
                        if iy >= 0 && iy < h && ix >= 0 && ix < wd then
                            acc <- acc + args.[0].[((b * c + ci) * h + iy) * wd + ix] * args.[1].[((o * c + ci) * kh + ky) * kw + kx]
            acc)
    | Conv2dGradInput((sh, sw), (ph, pw), g, w) ->
        let c, h, wd = n.Shape.[1], n.Shape.[2], n.Shape.[3]
        let o, oh, ow = g.Shape.[1], g.Shape.[2], g.Shape.[3]
        let kh, kw = w.Shape.[2], w.Shape.[3]
        for b in 0 .. n.Shape.[0] - 1 do
            for oc in 0 .. o - 1 do
                for oy in 0 .. oh - 1 do
                    for ox in 0 .. ow - 1 do
                        let gv = args.[0].[((b * o + oc) * oh + oy) * ow + ox]
                        for ci in 0 .. c - 1 do
                            for ky in 0 .. kh - 1 do
                                for kx in 0 .. kw - 1 do
                                    let iy, ix = oy * sh - ph + ky, ox * sw - pw + kx
                                    if iy >= 0 && iy < h && ix >= 0 && ix < wd then
                                        let t = ((b * c + ci) * h + iy) * wd + ix
                                        out.[t] <- out.[t] + gv * args.[1].[((oc * c + ci) * kh + ky) * kw + kx]
    | Conv2dGradWeight((sh, sw), (ph, pw), x, g) ->
        let c, h, wd = x.Shape.[1], x.Shape.[2], x.Shape.[3]
        let o, oh, ow = g.Shape.[1], g.Shape.[2], g.Shape.[3]
        let kh, kw = n.Shape.[2], n.Shape.[3]
        each (fun idx ->
            let oc, ci, ky, kx = idx.[0], idx.[1], idx.[2], idx.[3]
            let mutable acc = 0.0
            for b in 0 .. x.Shape.[0] - 1 do
                for oy in 0 .. oh - 1 do
                    for ox in 0 .. ow - 1 do
                        let iy, ix = oy * sh - ph + ky, ox * sw - pw + kx
                        if iy >= 0 && iy < h && ix >= 0 && ix < wd then
                            acc <- acc + args.[0].[((b * c + ci) * h + iy) * wd + ix] * args.[1].[((b * o + oc) * oh + oy) * ow + ox]
            acc)
    out
