// Trains the demo model with Lxt's autodiff and Adam, saves it to models/demo, then measures held-out accuracy and how
// often AttnLRP's most relevant token is the evidence (the animal).
// Usage: dotnet run -c Release --project examples/TrainDemo [-- --steps N] [--out FOLDER]
using System.Diagnostics;
using Lxt;
using Lxt.Demo;
using Lxt.Import;
using Lxt.Training;

var options = new DemoTrainingOptions();
string? output = null;
for (int i = 0; i < args.Length; i++)
{
    switch (args[i])
    {
        case "--steps": options = options with { Steps = int.Parse(args[++i]) }; break;
        case "--out": output = args[++i]; break;
        default: Console.Error.WriteLine($"unknown argument '{args[i]}' (known: --steps N, --out FOLDER)"); return 2;
    }
}
output ??= Path.Combine(RepositoryRoot(), DemoModel.RelativePath);

var a = options.Architecture;
Console.WriteLine($"Training a {a.Layers}-layer Llama decoder (hidden {a.Hidden}, {a.Heads} heads, vocabulary {DemoTask.VocabularySize}) " +
                  $"for {options.Steps} steps of {options.BatchSize} sequences, seed {options.Seed}");
var clock = Stopwatch.StartNew();
var window = new Queue<TrainingStep>();
var progress = new SynchronousProgress<TrainingStep>(s =>
{
    window.Enqueue(s);
    if (window.Count > 25) window.Dequeue();
    if (s.Step % 25 == 0 || s.Step == options.Steps)
        Console.WriteLine($"  step {s.Step,4}  loss {window.Average(w => w.Loss):F4}  accuracy {window.Average(w => w.Metrics["accuracy"]):P1}  " +
                          $"|grad| {s.GradientNorm:F3}  {clock.Elapsed.TotalSeconds:F0} s");
});
var trained = DemoTraining.Train(options, progress);
var last = trained.History.TakeLast(25).ToArray();
Console.WriteLine($"Training: loss {last.Average(s => s.Loss):F4}, accuracy {last.Average(s => s.Metrics["accuracy"]):P1} (last {last.Length} batches), {clock.Elapsed.TotalSeconds:F1} s");

var readme = $"""
    # Lxt demo model

    A {a.Layers}-layer Llama-architecture decoder (hidden size {a.Hidden}, {a.Heads} heads, vocabulary {DemoTask.VocabularySize}) trained
    with Lxt's own autodiff and Adam by `examples/TrainDemo` ({options.Steps} steps of {options.BatchSize} sequences, seed {options.Seed}).

    Task ("which animal says what", `Lxt.Demo.DemoTask`): {DemoTask.MinLength}–{DemoTask.MaxLength} words of filler with exactly one
    animal, closed by `says`; the next token is that animal's sound. The animal is the only evidence:

        {DemoTask.Generate(1, 7)[0].Text}  →  {DemoTask.Token(DemoTask.Generate(1, 7)[0].Label)}

    {string.Join(", ", DemoTask.Animals.Select(p => $"{p.Animal} → {p.Sound}"))}

    Files: `config.json` (model_type llama), `model.safetensors` (float32), `tokenizer.json` (word level, whitespace split).
    """;
DemoModel.Save(output, trained.Architecture, trained.Weights, trained.Shapes, readme + "\n");
Console.WriteLine($"Saved {output} ({Directory.GetFiles(output).Sum(f => new FileInfo(f).Length) / 1024.0:F0} KiB)");

// everything below reads the saved folder, as a user of the model would
using var model = PretrainedModel.Open(output);
using (var tokenizer = TextTokenizer.Open(output))
{
    var sample = DemoTask.Generate(20, 99);
    bool roundTrips = sample.All(e => tokenizer.Encode(e.Text).SequenceEqual(e.Ids) && tokenizer.Decode(e.Ids) == e.Text);
    if (!roundTrips) throw new InvalidOperationException("tokenizer.json does not round-trip the demo sentences");
}
var heldOut = DemoTask.Generate(200, seed: 2024);
clock.Restart();
var evaluation = DemoEvaluation.Run(model, heldOut, Method.AttnLrp);
Console.WriteLine($"Held-out: accuracy {evaluation.Accuracy:P1} on {heldOut.Count} sequences; AttnLRP's most relevant token is the animal in " +
                  $"{evaluation.EvidenceHitRate:P1} of them ({clock.Elapsed.TotalSeconds:F1} s)");

var shown = evaluation.Predictions[0];
Console.WriteLine($"Example: \"{shown.Example.Text}\" → {DemoTask.Token(shown.Predicted)}");
Console.WriteLine("  " + string.Join("  ", shown.Example.Ids.Select((id, i) => $"{DemoTask.Token(id)} {shown.Relevance[i]:+0.00;-0.00;0.00}")));
return 0;

static string RepositoryRoot()
{
    for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        if (File.Exists(Path.Combine(dir.FullName, "Lxt.sln"))) return dir.FullName;
    throw new DirectoryNotFoundException($"Lxt.sln not found above {AppContext.BaseDirectory}; pass --out FOLDER");
}

/// <summary>Reports on the caller's thread, in order (Progress&lt;T&gt; would post to the thread pool).</summary>
sealed class SynchronousProgress<T>(Action<T> report) : IProgress<T>
{
    public void Report(T value) => report(value);
}
