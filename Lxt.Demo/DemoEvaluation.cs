// DemoEvaluation: accuracy of a demo model and how often an explanation's most relevant token is the evidence.
using Lxt.Import;

namespace Lxt.Demo;

/// <summary>The model's answer for one example and where the explanation puts the most relevance.</summary>
public sealed record DemoPrediction(DemoExample Example, int Predicted, double[] Relevance)
{
    public bool Correct => Predicted == Example.Label;
    /// <summary>The position with the largest (signed) relevance.</summary>
    public int MostRelevantPosition => Array.IndexOf(Relevance, Relevance.Max());
    public bool EvidenceIsMostRelevant => MostRelevantPosition == Example.EvidencePosition;
}

public sealed record DemoEvaluationResult(IReadOnlyList<DemoPrediction> Predictions)
{
    public double Accuracy => Predictions.Count == 0 ? 0 : Predictions.Count(p => p.Correct) / (double)Predictions.Count;
    /// <summary>The fraction of examples whose most relevant token is the evidence token.</summary>
    public double EvidenceHitRate => Predictions.Count == 0 ? 0 : Predictions.Count(p => p.EvidenceIsMostRelevant) / (double)Predictions.Count;
}

public static class DemoEvaluation
{
    /// <summary>
    /// Explains the predicted next token of every example with <paramref name="method"/> (AttnLRP by default) and
    /// records prediction and per-token relevance. Graphs are built per sequence length through the model's config.
    /// </summary>
    public static DemoEvaluationResult Run(PretrainedModel model, IReadOnlyList<DemoExample> examples, Method? method = null,
        Device device = Device.Cpu, int threads = 1, CancellationToken cancellation = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(examples);
        var options = new ExplainOptions { Method = method ?? Method.AttnLrp };
        var explainers = new Dictionary<int, (Models.TransformerGraph Graph, Explainer Explainer)>();
        try
        {
            var predictions = new List<DemoPrediction>();
            foreach (var example in examples)
            {
                cancellation.ThrowIfCancellationRequested();
                int length = example.Ids.Length;
                if (!explainers.TryGetValue(length, out var entry))
                {
                    var graph = model.BuildGraph(length);
                    entry = (graph, new Explainer(graph.Model, graph.InputName, model.WeightsFor(graph), device, threads));
                    explainers[length] = entry;
                }
                var explanation = entry.Explainer.Explain(model.Embed(entry.Graph, example.Ids), options, cancellation);
                predictions.Add(new DemoPrediction(example, explanation.Target, explanation.PerPosition));
            }
            return new DemoEvaluationResult(predictions);
        }
        finally
        {
            foreach (var (_, e) in explainers.Values) e.Dispose();
        }
    }
}
