// DemoTask: a synthetic next-token task whose evidence is known — one animal word among filler words decides the
// sound the model must predict after the final "says".
namespace Lxt.Demo;

/// <summary>One sequence of the demo task: token ids, the id to predict after them, and where the evidence is.</summary>
public sealed record DemoExample(int[] Ids, int Label, int EvidencePosition)
{
    /// <summary>The sequence as words separated by spaces (what the demo tokenizer encodes back to <see cref="Ids"/>).</summary>
    public string Text => DemoTask.Text(Ids);
}

/// <summary>
/// "Which animal says what": <see cref="MinLength"/>–<see cref="MaxLength"/> tokens of random filler words with exactly
/// one animal at a random position, closed by <c>says</c>; the next token is that animal's sound
/// (<c>the old cat sat near a tree ... says</c> → <c>meow</c>). The animal is the only evidence for the answer.
/// </summary>
public static class DemoTask
{
    public const int MinLength = 12;
    public const int MaxLength = 16;
    public const string UnknownToken = "<unk>";
    public const string QueryToken = "says";

    /// <summary>The animals (the evidence) and their sounds (the labels), in id order.</summary>
    public static IReadOnlyList<(string Animal, string Sound)> Animals { get; } =
    [
        ("cat", "meow"), ("dog", "woof"), ("cow", "moo"), ("duck", "quack"),
        ("sheep", "baa"), ("owl", "hoot"), ("frog", "croak"), ("bee", "buzz"),
    ];

    /// <summary>Words that carry no evidence.</summary>
    public static IReadOnlyList<string> Fillers { get; } =
    [
        "the", "a", "big", "small", "old", "young", "red", "green", "blue", "brown", "quiet", "loud", "happy", "sleepy",
        "near", "under", "over", "behind", "beside", "in", "on", "by", "with", "and",
        "tree", "house", "river", "hill", "field", "barn", "road", "fence", "garden", "pond", "rock", "cloud",
        "morning", "night", "sun", "rain", "sat", "ran", "slept", "walked", "looked", "stood",
    ];

    /// <summary>All tokens by id: <c>&lt;unk&gt;</c>, <c>says</c>, the animals, the sounds, the fillers (64 in all).</summary>
    public static IReadOnlyList<string> Vocabulary { get; } =
        new[] { UnknownToken, QueryToken }.Concat(Animals.Select(a => a.Animal)).Concat(Animals.Select(a => a.Sound)).Concat(Fillers).ToArray();

    private static readonly Dictionary<string, int> Ids = Vocabulary.Select((t, i) => (t, i)).ToDictionary(p => p.t, p => p.i, StringComparer.Ordinal);

    public static int VocabularySize => Vocabulary.Count;

    /// <summary>The id of a token; unknown words map to <c>&lt;unk&gt;</c>.</summary>
    public static int Id(string token) => Ids.TryGetValue(token, out var id) ? id : 0;

    public static string Token(int id) => id >= 0 && id < Vocabulary.Count ? Vocabulary[id] : UnknownToken;

    public static string Text(IEnumerable<int> ids) => string.Join(' ', ids.Select(Token));

    public static int AnimalId(int animal) => 2 + animal;
    public static int SoundId(int animal) => 2 + Animals.Count + animal;

    /// <summary>The ids of the animal tokens (the only evidence the task has).</summary>
    public static bool IsEvidence(int id) => id >= 2 && id < 2 + Animals.Count;

    /// <summary>The sound that follows <paramref name="ids"/>, with the animal's position; null unless exactly one animal occurs.</summary>
    public static (int Label, int EvidencePosition)? Answer(IReadOnlyList<int> ids)
    {
        int found = -1;
        for (int i = 0; i < ids.Count; i++)
            if (IsEvidence(ids[i]))
            {
                if (found >= 0) return null;
                found = i;
            }
        return found < 0 ? null : (SoundId(ids[found] - 2), found);
    }

    /// <summary><paramref name="count"/> examples from a seeded generator: the same seed gives the same examples.
    /// Lengths are drawn from <see cref="MinLength"/>..<see cref="MaxLength"/> unless <paramref name="length"/> is given.</summary>
    public static IReadOnlyList<DemoExample> Generate(int count, int seed, int? length = null)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        var rng = new Random(seed);
        return Enumerable.Range(0, count).Select(_ => Sample(rng, length ?? rng.Next(MinLength, MaxLength + 1))).ToArray();
    }

    /// <summary>One example of <paramref name="length"/> tokens (at least 2: the animal and <c>says</c>).</summary>
    public static DemoExample Sample(Random rng, int length)
    {
        ArgumentNullException.ThrowIfNull(rng);
        ArgumentOutOfRangeException.ThrowIfLessThan(length, 2);
        var ids = new int[length];
        for (int i = 0; i < length - 1; i++) ids[i] = Id(Fillers[rng.Next(Fillers.Count)]);
        int animal = rng.Next(Animals.Count);
        int position = rng.Next(length - 1);
        ids[position] = AnimalId(animal);
        ids[length - 1] = Id(QueryToken);
        return new DemoExample(ids, SoundId(animal), position);
    }
}
