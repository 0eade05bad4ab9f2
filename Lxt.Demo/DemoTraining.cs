// DemoTraining: the recipe that trains the demo model with Lxt's own autodiff and Adam — a minibatch loss graph over
// the decoder that Architectures builds from the demo config, with the embedding table as a trained parameter.
using Lxt.Models;
using Lxt.Training;

namespace Lxt.Demo;

/// <summary>How the demo model is trained. The defaults produce the committed model.</summary>
public sealed record DemoTrainingOptions
{
    public DemoArchitecture Architecture { get; init; } = new();
    public int Steps { get; init; } = 400;
    /// <summary>Sequences per step; their lengths cycle through <see cref="DemoTask.MinLength"/>..<see cref="DemoTask.MaxLength"/>.</summary>
    public int BatchSize { get; init; } = 10;
    public double LearningRate { get; init; } = 1e-2;
    /// <summary>Steps of linear warm-up; afterwards the learning rate decays along a cosine to a tenth.</summary>
    public int WarmupSteps { get; init; } = 20;
    public double WeightDecay { get; init; } = 0.01;
    public double MaxGradientNorm { get; init; } = 1.0;
    /// <summary>Standard deviation of the initial weights (norm weights start at 1).</summary>
    public double InitialStd { get; init; } = 0.1;
    /// <summary>Seeds the initial weights and the training sequences.</summary>
    public int Seed { get; init; } = 1;
}

/// <summary>The trained weights with what is needed to save them.</summary>
public sealed record DemoTrainingResult(DemoArchitecture Architecture, Weights Weights,
    IReadOnlyDictionary<string, IReadOnlyList<int>> Shapes, IReadOnlyList<TrainingStep> History);

public static class DemoTraining
{
    /// <summary>
    /// The training graph for one batch with sequences of <paramref name="lengths"/>: each sequence's decoder graph (as
    /// <see cref="Architectures.Build"/> makes it for inference) reads its <c>inputs_embeds</c> from rows of the
    /// parameter <c>model.embed_tokens.weight</c> picked by the input <c>input_ids.{i}</c>; the loss is the mean
    /// cross-entropy of the last position's logits against the one-hot input <c>target.{i}</c>; <c>accuracy</c> is the
    /// fraction of the batch whose target has the largest logit.
    /// </summary>
    public static Model LossModel(ModelConfig config, IReadOnlyList<int> lengths)
    {
        ArgumentNullException.ThrowIfNull(config);
        if (lengths.Count == 0) throw new ArgumentException("a batch needs at least one sequence", nameof(lengths));
        var b = new GraphBuilder();
        int vocab = config.Int("vocab_size"), hidden = config.Int("hidden_size");
        var table = b.Parameter("model.embed_tokens.weight", vocab, hidden);
        var losses = new List<Expr>();
        var correct = new List<Expr>();
        for (int i = 0; i < lengths.Count; i++)
        {
            var graph = Architectures.Build(config, lengths[i]);
            var embeds = graph.Model.Inputs.Single(x => x.Name == graph.InputName);
            var logits = graph.Logits.Replace(embeds, table.Gather(b.IntegerInput($"input_ids.{i}", lengths[i])));
            var target = b.Input($"target.{i}", vocab);
            losses.Add(Losses.CrossEntropy(logits, target).Reshape(1));
            correct.Add(Losses.Correct(logits, target).Reshape(1));
        }
        return Model.Create(new Dictionary<string, Expr>
        {
            ["loss"] = Expr.Concat(0, losses.ToArray()).Mean(0),
            ["accuracy"] = Expr.Concat(0, correct.ToArray()).Mean(0),
        });
    }

    /// <summary>The lengths of a batch's sequences: <see cref="DemoTask.MinLength"/>..<see cref="DemoTask.MaxLength"/>, cycling.</summary>
    public static int[] BatchLengths(int batchSize) =>
        Enumerable.Range(0, batchSize).Select(i => DemoTask.MinLength + i % (DemoTask.MaxLength - DemoTask.MinLength + 1)).ToArray();

    /// <summary>The inputs of <see cref="LossModel"/> for one batch of examples.</summary>
    public static Dictionary<string, float[]> Feeds(IReadOnlyList<DemoExample> batch)
    {
        var feeds = new Dictionary<string, float[]>();
        for (int i = 0; i < batch.Count; i++)
        {
            feeds[$"input_ids.{i}"] = batch[i].Ids.Select(id => (float)id).ToArray();
            var target = new float[DemoTask.VocabularySize];
            target[batch[i].Label] = 1;
            feeds[$"target.{i}"] = target;
        }
        return feeds;
    }

    /// <summary>
    /// Trains a demo model from scratch: fresh random sequences every step, Adam with warm-up, cosine decay, decoupled
    /// weight decay and gradient clipping, float32 on one CPU thread. The same options give bit-identical weights.
    /// </summary>
    public static DemoTrainingResult Train(DemoTrainingOptions? options = null, IProgress<TrainingStep>? progress = null,
        CancellationToken cancellation = default)
    {
        options ??= new DemoTrainingOptions();
        var config = ModelConfig.Parse(DemoModel.ConfigJson(options.Architecture), "demo config");
        var lengths = BatchLengths(options.BatchSize);
        var model = LossModel(config, lengths);
        var weights = Weights.Random(model, options.Seed, options.InitialStd);
        var adam = new AdamOptions
        {
            LearningRate = options.LearningRate,
            WeightDecay = options.WeightDecay,
            MaxGradientNorm = options.MaxGradientNorm,
        };
        using var trainer = new Trainer(model, weights, adam, Device.Cpu, threads: 1);
        var rng = new Random(options.Seed);
        var history = new List<TrainingStep>();
        for (int step = 0; step < options.Steps; step++)
        {
            cancellation.ThrowIfCancellationRequested();
            trainer.Optimizer.LearningRate = Schedule(options, step);
            var batch = lengths.Select(n => DemoTask.Sample(rng, n)).ToArray();
            var result = trainer.Step(Feeds(batch), cancellation);
            history.Add(result);
            progress?.Report(result);
        }
        return new DemoTrainingResult(options.Architecture, weights, model.Parameters, history);
    }

    private static double Schedule(DemoTrainingOptions o, int step)
    {
        if (step < o.WarmupSteps) return o.LearningRate * (step + 1) / o.WarmupSteps;
        double progress = (double)(step - o.WarmupSteps) / Math.Max(1, o.Steps - o.WarmupSteps);
        return o.LearningRate * (0.1 + 0.9 * 0.5 * (1 + Math.Cos(Math.PI * progress)));
    }
}
