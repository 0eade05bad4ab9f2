// Gradients: reverse-mode derivatives of a scalar expression, as expressions — Autodiff.vjp behind C# types.
using Lxt.Graph;
using Microsoft.FSharp.Collections;

namespace Lxt.Training;

public static class Gradients
{
    /// <summary>∂<paramref name="output"/>/∂x for each x of <paramref name="wrt"/> (parameters, inputs or inner nodes),
    /// each in x's shape; a zero tensor where the output does not depend on x. The output must be a scalar.</summary>
    public static Expr[] Of(Expr output, IEnumerable<Expr> wrt)
    {
        ArgumentNullException.ThrowIfNull(output);
        ArgumentNullException.ThrowIfNull(wrt);
        if (output.Rank != 0) throw new GraphShapeException($"gradients are taken of a scalar; {output} is not one");
        var grads = Autodiff.vjp(
            ListModule.OfArray(new[] { Tuple.Create(output.Node, Ops.scalar(1.0)) }), ListModule.OfSeq(wrt.Select(x => x.Node)));
        return grads.Select(g => new Expr(g)).ToArray();
    }
}
