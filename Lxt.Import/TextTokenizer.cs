// TextTokenizer: Hugging Face tokenizer.json files (BPE, byte-level BPE, SentencePiece-style, WordPiece) through the
// Rust tokenizers library, with tokens shown as clean text.
namespace Lxt.Import;

/// <summary>A tokenizer.json loaded with Hugging Face's tokenizers library (Tokenizers.DotNet).</summary>
public sealed class TextTokenizer : IDisposable
{
    private readonly Tokenizers.DotNet.Tokenizer _inner;

    private TextTokenizer(Tokenizers.DotNet.Tokenizer inner, string path)
    {
        _inner = inner;
        Path = path;
    }

    public string Path { get; }

    /// <summary>Opens a tokenizer.json file (or the tokenizer.json of a model folder).</summary>
    public static TextTokenizer Open(string path)
    {
        if (System.IO.Directory.Exists(path)) path = System.IO.Path.Combine(path, "tokenizer.json");
        if (!File.Exists(path)) throw new LxtImportException($"no tokenizer at '{path}'");
        try { return new TextTokenizer(new Tokenizers.DotNet.Tokenizer(path), path); }
        catch (Exception e) when (e is not LxtImportException)
        {
            throw new LxtImportException($"{path}: not a tokenizer.json the tokenizers library can load ({e.Message})", e);
        }
    }

    /// <summary>Token ids of <paramref name="text"/> (no special tokens are added).</summary>
    public int[] Encode(string text) => _inner.Encode(text).Select(i => (int)i).ToArray();

    public string Decode(IEnumerable<int> ids) => _inner.Decode(ids.Select(i => (uint)i).ToArray());

    /// <summary>The text of one token as a reader sees it: byte-level (Ġ), SentencePiece (▁) and WordPiece (##)
    /// markers resolved by the tokenizer's own decoder.</summary>
    public string TokenText(int id) => _inner.Decode([(uint)id]);

    public void Dispose() => _inner.Dispose();
}
