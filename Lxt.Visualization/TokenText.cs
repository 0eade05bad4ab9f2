// TokenText: how a token's text is shown — whitespace a reader can see (↵ for a newline, ⇥ for a tab, ␣ for a
// token of spaces only), never an invisible or empty box.
namespace Lxt.Visualization;

public static class TokenText
{
    /// <summary>The token as one visible line: newlines as ↵, tabs as ⇥, carriage returns as ␍, other control
    /// characters as \u escapes; a token of spaces only as ␣ per space; an empty token as ∅.</summary>
    public static string Visible(string token)
    {
        if (token.Length == 0) return "∅";
        if (token.All(c => c == ' ')) return new string('␣', token.Length);
        var b = new System.Text.StringBuilder(token.Length);
        foreach (var c in token)
            b.Append(c switch
            {
                '\n' => "↵",
                '\t' => "⇥",
                '\r' => "␍",
                _ when char.IsControl(c) => $"\\u{(int)c:x4}",
                _ => c.ToString(),
            });
        return b.ToString();
    }

    /// <summary>Whether to put a space between tokens when none carries whitespace of its own (word-level
    /// tokenizers, token ids); see <see cref="HeatmapInfo.SeparateTokens"/>.</summary>
    public static bool Separate(IReadOnlyList<string> tokens, HeatmapInfo info) =>
        info.SeparateTokens ?? !tokens.Any(t => t.Any(char.IsWhiteSpace));

    internal static void Check(IReadOnlyList<string> tokens, IReadOnlyList<double> relevance)
    {
        ArgumentNullException.ThrowIfNull(tokens);
        ArgumentNullException.ThrowIfNull(relevance);
        if (tokens.Count != relevance.Count)
            throw new ArgumentException($"{tokens.Count} tokens but {relevance.Count} relevance values");
    }
}
