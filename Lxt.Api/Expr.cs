// Expr: the C# face of a graph node — immutable, with operators and the core ops as methods.
using Lxt.Graph;
using Microsoft.FSharp.Collections;
using Microsoft.FSharp.Core;

namespace Lxt;

/// <summary>A symbolic tensor: a node of an immutable model graph. Building the same expression twice gives the same node.</summary>
public sealed class Expr : IEquatable<Expr>
{
    internal Node Node { get; }

    internal Expr(Node node) => Node = node;

    /// <summary>Dimensions, outermost first.</summary>
    public IReadOnlyList<int> Shape => Node.Shape;

    public int Rank => Node.Shape.Length;

    /// <summary>The node's name (a module path such as <c>model.layers.3.mlp.act_fn</c>), or null.</summary>
    public string? Name => OptionModule.IsSome(Node.Name) ? Node.Name.Value : null;

    public bool IsInteger => Node.DType.IsInt;

    /// <summary>The same values as <paramref name="outputs"/>, each value under them computed only at the rows read of it
    /// (<see cref="SlicePushdown"/>): a slice picking one position of a layer's output leaves that layer computing that
    /// row alone. Values are equal up to rounding; every output keeps its whole value.</summary>
    public static Expr[] AtRowsRead(IReadOnlyList<Expr> outputs)
    {
        ArgumentNullException.ThrowIfNull(outputs);
        var map = SlicePushdown.rewrite(new HashSet<Node>(), ListModule.OfSeq(outputs.Select(o => o.Node)));
        return outputs.Select(o => new Expr(map[o.Node])).ToArray();
    }

    /// <summary>The same value under a name, to address it in errors and ask for its relevance.</summary>
    public Expr Named(string name) => new(Ops.named(name, Node));

    public static Expr operator +(Expr a, Expr b) => new(Ops.add(a.Node, b.Node));
    public static Expr operator -(Expr a, Expr b) => new(Ops.sub(a.Node, b.Node));
    public static Expr operator *(Expr a, Expr b) => new(Ops.mul(a.Node, b.Node));
    public static Expr operator /(Expr a, Expr b) => new(Ops.div(a.Node, b.Node));
    public static Expr operator -(Expr a) => new(Ops.neg(a.Node));
    public static Expr operator +(Expr a, double c) => new(Ops.addScalar(c, a.Node));
    public static Expr operator *(Expr a, double c) => new(Ops.scale(c, a.Node));
    public static Expr operator *(double c, Expr a) => new(Ops.scale(c, a.Node));

    public Expr MatMul(Expr other) => new(Ops.matmul(Node, other.Node));
    public Expr Exp() => new(Ops.exp(Node));
    public Expr Log() => new(Ops.log(Node));
    public Expr Sqrt() => new(Ops.sqrt(Node));
    public Expr Rsqrt() => new(Ops.rsqrt(Node));
    public Expr Square() => new(Ops.square(Node));
    public Expr Pow(Expr exponent) => new(Ops.pow(Node, exponent.Node));
    public Expr Tanh() => new(Ops.tanh(Node));
    public Expr Sigmoid() => new(Ops.sigmoid(Node));
    public Expr Gelu() => new(Ops.geluErf(Node));
    public Expr GeluTanh() => new(Ops.geluTanh(Node));
    public Expr Silu() => new(Ops.silu(Node));
    public Expr Relu() => new(Ops.relu(Node));
    public Expr Abs() => new(Ops.abs(Node));
    public Expr Maximum(Expr other) => new(Ops.maximum(Node, other.Node));

    /// <summary>Applies a named activation: silu, gelu, gelu_new / gelu_pytorch_tanh, relu, tanh, sigmoid.</summary>
    public Expr Activation(string kind) => kind switch
    {
        "silu" or "swish" => Silu(),
        "gelu" => Gelu(),
        "gelu_new" or "gelu_pytorch_tanh" or "gelu_fast" => GeluTanh(),
        "relu" => Relu(),
        "tanh" => Tanh(),
        "sigmoid" => Sigmoid(),
        _ => throw new LxtException($"unknown activation '{kind}' (known: silu, gelu, gelu_new, gelu_pytorch_tanh, relu, tanh, sigmoid)"),
    };

    public Expr Softmax(int axis = -1) => new(Ops.softmax(axis, Node));
    public Expr Sum(int axis, bool keepDims = false) => new(Ops.reduceSum(ListModule.OfArray(new[] { axis }), keepDims, Node));
    public Expr Mean(int axis, bool keepDims = false) => new(Ops.reduceMean(ListModule.OfArray(new[] { axis }), keepDims, Node));
    public Expr Max(int axis, bool keepDims = false) => new(Ops.reduceMax(ListModule.OfArray(new[] { axis }), keepDims, Node));
    public Expr Reshape(params int[] shape) => new(Ops.reshape(shape, Node));
    public Expr Transpose(int axis1 = -2, int axis2 = -1) => new(Ops.transpose(axis1, axis2, Node));
    public Expr Permute(params int[] permutation) => new(Ops.permute(ListModule.OfArray(permutation), Node));
    public Expr BroadcastTo(params int[] shape) => new(Ops.broadcastTo(shape, Node));
    public Expr Slice(int axis, int start, int stop) => new(Ops.slice(axis, start, stop, Node));
    public static Expr Concat(int axis, params Expr[] parts) => new(Ops.concat(axis, ListModule.OfSeq(parts.Select(p => p.Node))));
    public static Expr Where(Expr condition, Expr whenTrue, Expr whenFalse) => new(Ops.where(condition.Node, whenTrue.Node, whenFalse.Node));
    /// <summary>Rows of this table picked by integer indices (an embedding lookup).</summary>
    public Expr Gather(Expr indices) => new(Ops.gather(Node, indices.Node));
    public Expr Conv2d(Expr weight, int stride, int padding = 0) =>
        new(Ops.conv2d(stride, stride, padding, padding, Node, weight.Node));
    /// <summary>1 at the k largest entries of each row (last axis), else 0; no gradient (mixture-of-experts routing).</summary>
    public Expr TopKMask(int k) => new(Ops.topKMask(k, Node));
    /// <summary>Identity forward; no gradient flows back.</summary>
    public Expr StopGradient() => new(Ops.stopGradient(Node));
    /// <summary>Identity forward; the gradient flowing back is multiplied by <paramref name="factor"/>.</summary>
    public Expr GradientScale(double factor) => new(Ops.gradientScale(factor, Node));

    /// <summary>This expression with every occurrence of <paramref name="target"/> replaced by <paramref name="replacement"/>
    /// (of the same shape); everything else, names included, is kept. Training uses it to feed a model's embedding input
    /// from an embedding-table lookup.</summary>
    public Expr Replace(Expr target, Expr replacement)
    {
        if (!target.Node.Shape.AsSpan().SequenceEqual(replacement.Node.Shape))
            throw new GraphShapeException($"replace: {replacement} does not have the shape of {target}");
        var t = target.Node;
        var r = replacement.Node;
        var map = Traverse.mapBottomUp(FuncConvert.FromFunc<Node, Node>(n => ReferenceEquals(n, t) ? r : n), new[] { Node });
        return new(map[Node]);
    }

    public bool Equals(Expr? other) => other is not null && ReferenceEquals(Node, other.Node);
    public override bool Equals(object? obj) => obj is Expr e && Equals(e);
    public override int GetHashCode() => Node.Id;
    public override string ToString() => Node.Describe(Node);
}
