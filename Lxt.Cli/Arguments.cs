// Arguments: a small parser for "--name value" / "--name=value" / "--flag" options with typed errors (exit code 2).
using System.Globalization;

namespace Lxt.Cli;

/// <summary>The command line is wrong (unknown option, missing or malformed value, conflicting options): the
/// command's usage is printed and the exit code is 2.</summary>
public sealed class UsageException(string message) : Exception(message);

/// <summary>One option a command accepts. <paramref name="Value"/> names its value in the usage text; null = a flag.</summary>
public sealed record OptionSpec(string Name, string? Value, string Help)
{
    public bool IsFlag => Value is null;
    /// <summary>The option may be given several times (read them with <see cref="Arguments.Strings"/>).</summary>
    public bool Repeatable { get; init; }

    public override string ToString() => IsFlag ? $"--{Name}" : $"--{Name} {Value}";
}

/// <summary>The options given to one command, read with typed accessors that raise <see cref="UsageException"/>.</summary>
public sealed class Arguments
{
    private readonly Dictionary<string, string?> _values;
    // every value of a repeatable option, in order (_values holds the last)
    private readonly Dictionary<string, List<string>> _repeated;

    private Arguments(Dictionary<string, string?> values, Dictionary<string, List<string>> repeated) =>
        (_values, _repeated) = (values, repeated);

    /// <summary>Parses <paramref name="args"/> against <paramref name="specs"/>; every option may be given once, except
    /// the repeatable ones.</summary>
    public static Arguments Parse(IReadOnlyList<string> args, IReadOnlyList<OptionSpec> specs)
    {
        var values = new Dictionary<string, string?>(StringComparer.Ordinal);
        var repeated = new Dictionary<string, List<string>>(StringComparer.Ordinal);
        for (int i = 0; i < args.Count; i++)
        {
            var arg = args[i];
            if (!arg.StartsWith("--", StringComparison.Ordinal) || arg.Length == 2)
                throw new UsageException($"unexpected argument '{arg}'");
            string name = arg[2..];
            string? inline = null;
            int eq = name.IndexOf('=');
            if (eq >= 0) (name, inline) = (name[..eq], name[(eq + 1)..]);
            var spec = specs.FirstOrDefault(s => s.Name == name) ?? throw new UsageException($"unknown option '--{name}'");
            if (values.ContainsKey(name) && !spec.Repeatable) throw new UsageException($"option '--{name}' is given twice");
            if (spec.IsFlag)
            {
                if (inline is not null) throw new UsageException($"option '--{name}' takes no value");
                values[name] = null;
            }
            else if (inline is not null) values[name] = inline;
            else if (i + 1 < args.Count && !IsOptionName(args[i + 1])) values[name] = args[++i];
            else throw new UsageException($"option '--{name}' needs a value ({spec.Value})");
            if (spec.Repeatable && values[name] is { } value)
            {
                if (!repeated.TryGetValue(name, out var list)) repeated[name] = list = [];
                list.Add(value);
            }
        }
        return new Arguments(values, repeated);
    }

    // a value may start with "-" (a negative number), never with "--" followed by a letter
    private static bool IsOptionName(string s) => s.StartsWith("--", StringComparison.Ordinal) && s.Length > 2 && char.IsLetter(s[2]);

    public bool Has(string name) => _values.ContainsKey(name);

    public string? String(string name) => _values.GetValueOrDefault(name);

    /// <summary>Every value of a repeatable option, in the order given (empty when it is not given).</summary>
    public IReadOnlyList<string> Strings(string name) =>
        _repeated.TryGetValue(name, out var list) ? list : String(name) is { } s ? [s] : [];

    public string RequiredString(string name) =>
        String(name) ?? throw new UsageException($"option '--{name}' is required");

    public int? Int(string name, int min = int.MinValue)
    {
        if (String(name) is not { } s) return null;
        if (!int.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture, out int v))
            throw new UsageException($"option '--{name}' takes a whole number, not '{s}'");
        if (v < min) throw new UsageException($"option '--{name}' must be at least {min}, not {v}");
        return v;
    }

    public double? Double(string name)
    {
        if (String(name) is not { } s) return null;
        if (!double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out double v) || !double.IsFinite(v))
            throw new UsageException($"option '--{name}' takes a number, not '{s}'");
        return v;
    }

    /// <summary>A comma-separated list of whole numbers ("1,2,3").</summary>
    public int[]? IntList(string name)
    {
        if (String(name) is not { } s) return null;
        var parts = s.Split(',', StringSplitOptions.TrimEntries);
        var result = new int[parts.Length];
        for (int i = 0; i < parts.Length; i++)
            if (!int.TryParse(parts[i], NumberStyles.Integer, CultureInfo.InvariantCulture, out result[i]))
                throw new UsageException($"option '--{name}' takes comma-separated whole numbers; '{parts[i]}' is not one");
        return result;
    }

    /// <summary>A comma-separated list of names.</summary>
    public string[]? List(string name) =>
        String(name) is { } s ? s.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries) : null;

    /// <summary>One of <paramref name="choices"/>, or <paramref name="fallback"/> when not given.</summary>
    public string Choice(string name, IReadOnlyList<string> choices, string fallback)
    {
        var s = String(name) ?? fallback;
        if (!choices.Contains(s)) throw new UsageException($"option '--{name}' takes one of {string.Join(", ", choices)}, not '{s}'");
        return s;
    }

    /// <summary>Exactly one of <paramref name="names"/> must be given; returns it.</summary>
    public string ExactlyOne(params string[] names)
    {
        var given = names.Where(Has).ToArray();
        return given.Length switch
        {
            1 => given[0],
            0 => throw new UsageException($"give one of {string.Join(", ", names.Select(n => "--" + n))}"),
            _ => throw new UsageException($"give only one of {string.Join(", ", given.Select(n => "--" + n))}"),
        };
    }
}
