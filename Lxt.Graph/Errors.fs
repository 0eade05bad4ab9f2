// Typed exceptions raised by the graph core: every message names the node (or file) and what was wrong.
namespace Lxt.Graph

open System

/// Base class of every error Lxt raises on purpose.
type LxtException(message: string, inner: exn) =
    inherit Exception(message, inner)
    new(message: string) = LxtException(message, null)

/// A graph was built with shapes or axes that do not fit together.
type GraphShapeException(message: string) =
    inherit LxtException(message)

/// The automatic differentiator met an op that has no derivative rule.
type MissingDerivativeException(op: string, message: string) =
    inherit LxtException(message)
    member _.Op = op

/// A rewrite did not reach a fixpoint within its iteration guard.
type RewriteLoopException(message: string) =
    inherit LxtException(message)

/// Values bound to a plan (inputs, parameters) are missing or do not fit their nodes.
type BindingException(message: string) =
    inherit LxtException(message)
