// Losses: training objectives built from graph ops, so Lxt's own autodiff differentiates them.
using Lxt.Graph;

namespace Lxt.Training;

/// <summary>Loss and metric expressions over logits, for training with <see cref="Trainer"/>.</summary>
public static class Losses
{
    /// <summary>log softmax over the last axis as x − max − log Σ exp(x − max). The max only guards exp against
    /// overflow: it cancels from the value, so it is held constant for the gradient.</summary>
    public static Expr LogSoftmax(Expr logits)
    {
        var shifted = logits - logits.Max(-1, keepDims: true).StopGradient();
        return shifted - shifted.Exp().Sum(-1, keepDims: true).Log();
    }

    /// <summary>Cross-entropy −Σ target · log softmax(logits) over the last axis. <paramref name="target"/> has the
    /// logits' shape: a one-hot row (fed as an input, so one graph serves every label) or a distribution.</summary>
    public static Expr CrossEntropy(Expr logits, Expr target)
    {
        RequireSameShape(logits, target, "cross-entropy");
        return -(LogSoftmax(logits) * target).Sum(-1);
    }

    /// <summary>1 where the one-hot <paramref name="target"/>'s class has the largest logit (a tie counts as correct),
    /// else 0; per row of the last axis. It carries no gradient.</summary>
    public static Expr Correct(Expr logits, Expr target)
    {
        RequireSameShape(logits, target, "correct");
        var atTarget = (logits * target).Sum(-1);
        var best = logits.Max(-1);
        return new Expr(Ops.sub(Ops.scalar(1.0), Ops.greater(best.Node, atTarget.Node))).StopGradient();
    }

    private static void RequireSameShape(Expr logits, Expr target, string what)
    {
        if (!logits.Shape.SequenceEqual(target.Shape))
            throw new GraphShapeException($"{what}: target {target} does not have the shape of logits {logits}");
    }
}
