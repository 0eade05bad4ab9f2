// HeatmapInfo: what a heatmap says about the explanation beside the colours — title, rule set, target.
namespace Lxt.Visualization;

/// <summary>The explanation a heatmap shows: printed in its header. Every field is optional.</summary>
public sealed record HeatmapInfo
{
    public string? Title { get; init; }
    /// <summary>The rule set ("attnlrp (AttnLRP)").</summary>
    public string? Rules { get; init; }
    /// <summary>The explained output ("12 'meow'").</summary>
    public string? Target { get; init; }
    /// <summary>Further lines for the header (model folder, input, ...).</summary>
    public IReadOnlyList<string> Notes { get; init; } = [];
    public ColorMap ColorMap { get; init; } = ColorMap.Bwr;
    /// <summary>Put a space between tokens. Null: only when no token carries its own whitespace (word-level
    /// tokenizers, token ids), since byte-level tokens (" the") already hold theirs.</summary>
    public bool? SeparateTokens { get; init; }

    /// <summary>The header lines: rules, target, notes.</summary>
    public IEnumerable<string> HeaderLines()
    {
        if (Rules is { } r) yield return $"rules: {r}";
        if (Target is { } t) yield return $"target: {t}";
        foreach (var n in Notes) yield return n;
    }
}
