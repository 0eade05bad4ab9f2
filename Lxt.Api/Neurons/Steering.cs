// Steering: a rule-free rewrite of a model graph that adds to, scales or clamps chosen neurons of named nodes,
// parsed from NODE:INDEX=+D | NODE:INDEX*F | NODE:INDEX=V specs.
using System.Globalization;
using Lxt.Graph;
using Microsoft.FSharp.Core;

namespace Lxt;

/// <summary>A steering spec that does not parse, or names a node or neuron the model does not have.</summary>
public sealed class SteeringException(string message) : LxtException(message);

public enum SteerKind
{
    /// <summary>x + D</summary>
    Add,
    /// <summary>x · F</summary>
    Scale,
    /// <summary>x := V</summary>
    Clamp,
}

/// <summary>
/// One intervention on neuron <see cref="Index"/> of the node named <see cref="Node"/> (along its neuron axis, see
/// <see cref="Neurons.NeuronAxis"/>: the last axis, or the head axis of attention weights), at every token.
/// </summary>
public sealed record Steer(string Node, int Index, SteerKind Kind, double Value)
{
    /// <summary>
    /// Parses <c>NODE:INDEX=+D</c> (add D, which may be signed: <c>=+-2</c>), <c>NODE:INDEX*F</c> (scale by F) or
    /// <c>NODE:INDEX=V</c> (clamp to V), e.g. <c>model.layers.0.mlp.act_fn:12=+4.0</c>. <c>+=D</c> and <c>*=F</c> are
    /// accepted too. Numbers use the invariant culture.
    /// </summary>
    public static Steer Parse(string spec)
    {
        ArgumentNullException.ThrowIfNull(spec);
        int colon = spec.LastIndexOf(':');
        if (colon <= 0)
            throw new SteeringException($"steering spec '{spec}': expected NODE:INDEX=+D, NODE:INDEX*F or NODE:INDEX=V (no ':' after a node name)");
        string node = spec[..colon].Trim(), rest = spec[(colon + 1)..].Trim();
        int op = rest.IndexOfAny(['=', '*', '+']);
        if (op <= 0)
            throw new SteeringException($"steering spec '{spec}': expected an index and then '=+D', '*F' or '=V' after ':'");
        if (!int.TryParse(rest[..op], NumberStyles.None, CultureInfo.InvariantCulture, out int index))
            throw new SteeringException($"steering spec '{spec}': neuron index '{rest[..op]}' is not a non-negative integer");
        string tail = rest[op..];
        (SteerKind kind, string number) = tail switch
        {
            _ when tail.StartsWith("=+", StringComparison.Ordinal) || tail.StartsWith("+=", StringComparison.Ordinal) => (SteerKind.Add, tail[2..]),
            _ when tail.StartsWith("=*", StringComparison.Ordinal) || tail.StartsWith("*=", StringComparison.Ordinal) => (SteerKind.Scale, tail[2..]),
            _ when tail.StartsWith('*') => (SteerKind.Scale, tail[1..]),
            _ when tail.StartsWith('=') => (SteerKind.Clamp, tail[1..]),
            _ => throw new SteeringException($"steering spec '{spec}': '{tail}' is none of '=+D' (add), '*F' (scale), '=V' (clamp)"),
        };
        if (!double.TryParse(number.Trim(), NumberStyles.Float, CultureInfo.InvariantCulture, out double value) || !double.IsFinite(value))
            throw new SteeringException($"steering spec '{spec}': '{number}' is not a finite number");
        return new Steer(node, index, kind, value);
    }

    /// <summary>Parses several specs (see <see cref="Parse"/>).</summary>
    public static IReadOnlyList<Steer> ParseAll(IEnumerable<string> specs) => specs.Select(Parse).ToArray();

    /// <summary>The spec this steer parses from.</summary>
    public override string ToString()
    {
        string v = Value.ToString("R", CultureInfo.InvariantCulture);
        return Kind switch
        {
            SteerKind.Add => $"{Node}:{Index}=+{v}",
            SteerKind.Scale => $"{Node}:{Index}*{v}",
            _ => $"{Node}:{Index}={v}",
        };
    }
}

/// <summary>Applies steers to model graphs as a plain graph rewrite (no rule set, no backend involved).</summary>
public static class Steering
{
    /// <summary>
    /// The model with every steer applied to its node: the named node is replaced by the steered value (which keeps the
    /// name, so relevance and activations asked at that name see the steered value). Several steers on one node apply
    /// in order. Unknown nodes and out-of-range indices raise a <see cref="SteeringException"/> naming what exists.
    /// </summary>
    public static Model Apply(Model model, IReadOnlyList<Steer> steers)
    {
        if (steers.Count == 0) return model;
        var byNode = new Dictionary<string, List<Steer>>();
        foreach (var s in steers)
        {
            var node = model.FindNode(s.Node) ?? throw new SteeringException(UnknownNode(model, s.Node));
            int n = Neurons.Count(s.Node, node.Shape);
            if (s.Index < 0 || s.Index >= n)
                throw new SteeringException(
                    $"steer '{s}': index {s.Index} is outside the {n} neurons of '{s.Node}' [{string.Join(", ", node.Shape)}] (axis {Neurons.NeuronAxis(s.Node, node.Shape)})");
            if (!byNode.TryGetValue(s.Node, out var list)) byNode[s.Node] = list = [];
            list.Add(s);
        }
        var steer = FuncConvert.FromFunc((Node rebuilt) =>
            OptionModule.IsSome(rebuilt.Name) && byNode.TryGetValue(rebuilt.Name.Value, out var list) ? Steered(rebuilt, list) : rebuilt);
        var map = Traverse.mapBottomUp(steer, model.Outputs.Values.Select(e => e.Node));
        return model.WithOutputs(model.Outputs.ToDictionary(kv => kv.Key, kv => new Expr(map[kv.Value.Node])));
    }

    private static Node Steered(Node named, List<Steer> steers)
    {
        string name = named.Name.Value;
        var x = Ops.make(named.Op, named.Shape, named.DType, FSharpOption<string>.None);
        int axis = Neurons.NeuronAxis(name, named.Shape), n = named.Shape[axis];
        var maskShape = named.Shape.Select((d, i) => i == axis ? d : 1).ToArray();
        Node Along(int index, double at, double elsewhere)
        {
            var v = new double[n];
            Array.Fill(v, elsewhere);
            v[index] = at;
            return Ops.constant(maskShape, v);
        }
        foreach (var s in steers)
        {
            x = s.Kind switch
            {
                SteerKind.Add => Ops.add(x, Along(s.Index, s.Value, 0)),
                SteerKind.Scale => Ops.mul(x, Along(s.Index, s.Value, 1)),
                _ => Ops.where(Along(s.Index, 1, 0), Ops.scalar(s.Value), x),
            };
        }
        return Ops.named(name, x);
    }

    private static string UnknownNode(Model model, string name)
    {
        var names = model.NodeNames();
        static int Common(string a, string b)
        {
            int i = 0;
            while (i < a.Length && i < b.Length && a[i] == b[i]) i++;
            return i;
        }
        var close = names.OrderByDescending(n => Common(n, name)).ThenBy(n => n.Length).Take(8);
        return $"the model has no node named '{name}' (named nodes include: {string.Join(", ", close)}, ...; {names.Count} in all)";
    }
}
