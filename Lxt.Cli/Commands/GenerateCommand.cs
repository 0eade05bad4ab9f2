// lxt generate: token-by-token generation of a causal LM (greedy or sampled, optionally steered), the relevance
// matrix of the generated tokens with --explain, and JSON; the last printed line is the generated ids (or text).
using System.Globalization;
using System.Text.Json;
using Lxt.Generation;

namespace Lxt.Cli.Commands;

public sealed class GenerateCommand : ICommand
{
    public string Name => "generate";
    public string Summary => "generate tokens with a causal LM, optionally steered, and explain them";
    public string Synopsis => "--model DIR (--text TEXT | --input-ids 1,2,3) --max-new-tokens N [--steer NODE:INDEX=+D|*F|=V ...] [OPTIONS]";

    public IReadOnlyList<OptionSpec> Options { get; } =
    [
        new("model", "DIR", "model folder of a causal LM"),
        new("text", "TEXT", "prompt text (needs the folder's tokenizer.json)"),
        new("input-ids", "IDS", "prompt token ids, comma-separated"),
        new("max-new-tokens", "N", "how many tokens to generate at most"),
        new("steer", "SPEC", "NODE:INDEX=+D (add), NODE:INDEX*F (scale) or NODE:INDEX=V (clamp) at every token; may be repeated") { Repeatable = true },
        new("temperature", "T", "0 (default): greedy; otherwise sample from softmax(logits / T)"),
        new("top-k", "K", "sample among the K most likely tokens"),
        new("top-p", "P", "sample among the most likely tokens whose probabilities reach P"),
        new("seed", "S", "seed of the sampling (default 0)"),
        new("no-stop", null, "do not stop at the config's eos_token_id"),
        new("explain", null, "print the relevance of every prompt / earlier token for every generated token"),
        new("rules", "RULES", $"rule set of --explain: {string.Join(", ", Method.Ids)} (default attnlrp)"),
        new("json", "FILE", "also write the generation (and the relevance matrix) as JSON"),
        .. DeviceOption.Specs,
    ];

    public int Execute(Arguments args, CommandContext context)
    {
        string dir = args.RequiredString("model");
        string input = args.ExactlyOne("text", "input-ids");
        int maxNew = args.Int("max-new-tokens", min: 0) ?? throw new UsageException("option '--max-new-tokens' is required");
        IReadOnlyList<Steer> steers;
        try { steers = Steer.ParseAll(args.Strings("steer")); }
        catch (SteeringException e) { throw new UsageException(e.Message); }
        double temperature = args.Double("temperature") ?? 0;
        if (temperature < 0) throw new UsageException($"option '--temperature' must be at least 0, not {temperature.ToString(CultureInfo.InvariantCulture)}");
        int? topK = args.Int("top-k", min: 1);
        double? topP = args.Double("top-p");
        if (topP is double p && !(p > 0 && p <= 1)) throw new UsageException($"option '--top-p' must lie in (0, 1], not {p.ToString(CultureInfo.InvariantCulture)}");
        var method = Method.Parse(args.Choice("rules", Method.Ids, "attnlrp"));
        var options = new GenerationOptions
        {
            Temperature = temperature,
            TopK = topK,
            TopP = topP,
            Seed = args.Int("seed") ?? 0,
            Steering = steers,
            StopTokens = args.Has("no-stop") ? Array.Empty<int>() : null,
        };
        string? json = args.String("json");

        using var lm = LanguageModel.Open(dir, DeviceOption.Parse(args), DeviceOption.Threads(args));
        var prompt = input == "text" ? lm.Encode(args.RequiredString("text")) : args.IntList("input-ids")!;
        if (prompt.Length == 0) throw new InputException("the prompt has no tokens");
        var generator = new Generator(lm);
        var result = generator.Generate(prompt, maxNew, options);
        var matrix = args.Has("explain") && result.Generated.Count > 0 ? generator.ExplainSequence(result, method) : null;
        if (json is not null) WriteJson(json, lm, result, matrix, method);

        var o = context.Out;
        o.WriteLine($"model      {dir}");
        o.WriteLine($"prompt     {Quote(lm.Decode(prompt))} ({Ids(prompt)})");
        o.WriteLine($"steering   {(steers.Count == 0 ? "none" : string.Join(", ", steers))}");
        o.WriteLine($"decoding   {(temperature == 0 ? "greedy" : $"temperature {temperature.ToString(CultureInfo.InvariantCulture)}" + (topK is int k ? $", top-k {k}" : "") + (topP is double tp ? $", top-p {tp.ToString(CultureInfo.InvariantCulture)}" : "") + $", seed {options.Seed}")}");
        o.WriteLine($"stopped    {result.Generated.Count} tokens, {Reason(result.StopReason)}");
        if (matrix is not null) RenderMatrix(o, lm, matrix, method);
        o.WriteLine($"ids        {Ids(result.Generated)}");
        // the last line is the result itself, for scripts: the text when there is a tokenizer, else the ids
        o.WriteLine(lm.Tokenizer is not null ? lm.Decode(result.Generated) : Ids(result.Generated));
        return 0;
    }

    private static string Ids(IEnumerable<int> ids) => string.Join(",", ids.Select(i => i.ToString(CultureInfo.InvariantCulture)));

    private static string Quote(string s) => "'" + s.Replace("\n", "\\n").Replace("\r", "\\r").Replace("\t", "\\t") + "'";

    private static string Reason(StopReason r) => r switch
    {
        StopReason.StopToken => "a stop token",
        StopReason.ContextFull => "the model's positions ran out",
        _ => "--max-new-tokens reached",
    };

    private static string F(double v) => double.IsFinite(v) ? v.ToString("0.000", CultureInfo.InvariantCulture) : "nan";

    /// <summary>Rows: generated tokens; columns: every token before the last generated one (later tokens are blank).
    /// Plain fixed-width text, one line per row however wide, so that it never wraps into a jumble.</summary>
    private static void RenderMatrix(TextWriter o, LanguageModel lm, RelevanceMatrix m, Method method)
    {
        const int cell = 9;
        int columns = m.Tokens.Count - 1;
        static string Cut(string s, int width) => s.Length <= width ? s : s[..(width - 1)] + "…";
        string Label(int id) => Cut(lm.TokenText(id).Trim(), cell - 2);
        int first = Math.Max(9, Enumerable.Range(0, m.Generated).Select(r => Label(m.Tokens[m.PromptLength + r]).Length + 2).DefaultIfEmpty(0).Max());
        o.WriteLine();
        o.WriteLine($"relevance ({method.Id}) of each token (columns) for each generated token (rows):");
        var line = new System.Text.StringBuilder("generated".PadRight(first));
        for (int c = 0; c < columns; c++) line.Append(Label(m.Tokens[c]).PadLeft(cell));
        o.WriteLine(line.ToString().TrimEnd());
        for (int r = 0; r < m.Generated; r++)
        {
            line.Clear().Append(Quote(Label(m.Tokens[m.PromptLength + r])).PadRight(first));
            for (int c = 0; c < m.PromptLength + r; c++) line.Append(F(m[r, c]).PadLeft(cell));
            o.WriteLine(line.ToString());
        }
        o.WriteLine();
    }

    private static void WriteJson(string path, LanguageModel lm, GenerationResult result, RelevanceMatrix? matrix, Method method)
    {
        AtomicFile.Write(path, stream =>
        {
            using var w = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true });
            w.WriteStartObject();
            WriteInts(w, "prompt_ids", result.Prompt);
            WriteInts(w, "generated_ids", result.Generated);
            w.WriteString("text", lm.Decode(result.Generated));
            w.WriteStartArray("tokens");
            foreach (var t in result.Tokens) w.WriteStringValue(lm.TokenText(t));
            w.WriteEndArray();
            w.WriteString("stop_reason", result.StopReason switch
            {
                StopReason.StopToken => "stop_token",
                StopReason.ContextFull => "context_full",
                _ => "max_new_tokens",
            });
            w.WriteStartArray("steering");
            foreach (var s in result.Steering) w.WriteStringValue(s.ToString());
            w.WriteEndArray();
            if (matrix is not null)
            {
                w.WriteStartObject("relevance");
                w.WriteString("rules", method.Id);
                w.WriteString("layout", "rows: generated tokens; columns: prompt and generated tokens (0 after the explained token's context)");
                w.WriteStartArray("rows");
                foreach (var row in matrix.Rows)
                {
                    w.WriteStartArray();
                    foreach (var v in row)
                        if (double.IsFinite(v)) w.WriteNumberValue(v);
                        else w.WriteNullValue();
                    w.WriteEndArray();
                }
                w.WriteEndArray();
                w.WriteStartArray("target_logits");
                foreach (var v in matrix.TargetLogits)
                    if (double.IsFinite(v)) w.WriteNumberValue(v);
                    else w.WriteNullValue();
                w.WriteEndArray();
                w.WriteEndObject();
            }
            w.WriteEndObject();
        });
    }

    private static void WriteInts(Utf8JsonWriter w, string name, IEnumerable<int> values)
    {
        w.WriteStartArray(name);
        foreach (var v in values) w.WriteNumberValue(v);
        w.WriteEndArray();
    }
}
