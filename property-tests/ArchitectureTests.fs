// Architectures without reference fixtures: each builds from a config, runs on both backends with the same values,
// and explains with every rule set; structural facts (masks, rotary scaling, routing) are checked directly.
module Lxt.Tests.ArchitectureTests

open System
open System.Collections.Generic
open Expecto
open Lxt
open Lxt.Models

let configs =
    [ "mistral", """{"model_type":"mistral","hidden_size":32,"num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,
                     "intermediate_size":48,"vocab_size":50,"rms_norm_eps":1e-6,"rope_theta":10000.0,"sliding_window":3}"""
      "qwen3", """{"model_type":"qwen3","hidden_size":32,"num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"head_dim":16,
                   "intermediate_size":48,"vocab_size":50,"rms_norm_eps":1e-6,"rope_theta":1000000.0,"tie_word_embeddings":true}"""
      "gemma3_text", """{"model_type":"gemma3_text","hidden_size":32,"num_hidden_layers":3,"num_attention_heads":4,"num_key_value_heads":1,"head_dim":8,
                         "intermediate_size":48,"vocab_size":50,"rms_norm_eps":1e-6,"hidden_activation":"gelu_pytorch_tanh","query_pre_attn_scalar":8,
                         "sliding_window":3,"layer_types":["sliding_attention","sliding_attention","full_attention"],"rope_theta":1000000.0,
                         "rope_local_base_freq":10000.0,"final_logit_softcapping":30.0}"""
      "mixtral", """{"model_type":"mixtral","hidden_size":32,"num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,
                     "intermediate_size":24,"vocab_size":50,"rms_norm_eps":1e-5,"rope_theta":1000000.0,"num_local_experts":4,"num_experts_per_tok":2}"""
      "llama3", """{"model_type":"llama","hidden_size":32,"num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":4,
                    "intermediate_size":48,"vocab_size":50,"rms_norm_eps":1e-5,
                    "rope_scaling":{"rope_type":"llama3","factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":64},
                    "rope_theta":500000.0}"""
      "bert-mlm", """{"model_type":"bert","architectures":["BertForMaskedLM"],"hidden_size":32,"num_hidden_layers":2,"num_attention_heads":4,
                      "intermediate_size":48,"vocab_size":50,"max_position_embeddings":16,"type_vocab_size":2,"layer_norm_eps":1e-12,"hidden_act":"gelu"}""" ]

let private tokens = 6

/// The graph, random weights (seeded) and a random input for a config.
let build (json: string) =
    let graph = Architectures.Build(ModelConfig.Parse json, tokens)
    let weights = Weights.Random(graph.Model, seed = 3, std = 0.2)
    let rng = Random 5
    let input = Array.init (graph.InputShape |> Seq.fold (*) 1) (fun _ -> float32 (rng.NextDouble() * 2.0 - 1.0))
    graph, weights, input

let relErr (a: double[]) (b: double[]) =
    let scale = b |> Array.map Math.Abs |> Array.max |> max 1e-12
    Array.map2 (fun (x: double) y -> Math.Abs(x - y)) a b |> Array.max |> fun e -> e / scale

let tests =
    testList "architectures" [
        for name, json in configs do
            test (sprintf "%s: float32 CPU agrees with the float64 reference, forward and every rule set" name) {
                let graph, weights, input = build json
                use reference = new Explainer(graph.Model, graph.InputName, weights, Device.Reference)
                use cpu = new Explainer(graph.Model, graph.InputName, weights, Device.Cpu)
                let logits = reference.Forward input
                Expect.isLessThan (relErr (cpu.Forward input) logits) 1e-4 "logits"
                for m in [ Method.AttnLrp; Method.CpLrp; Method.Epsilon(); Method.InputXGradient; Method.Gradient ] do
                    let options = ExplainOptions(Method = m)
                    let r, c = reference.Explain(input, options), cpu.Explain(input, options)
                    Expect.equal c.Target r.Target "same target"
                    Expect.isTrue (r.PerPosition |> Array.forall Double.IsFinite) (sprintf "%s relevance is finite" m.Id)
                    Expect.isLessThan (relErr (c.InputRelevance.ToDoubleArray()) (r.InputRelevance.ToDoubleArray())) 1e-3 (sprintf "%s relevance" m.Id)
            }
        test "sliding-window layers attend only to the last keys of the window; full layers to every earlier key" {
            let graph, weights, input = build (snd configs.[2])
            use s = new Session(graph.Model, weights, Device.Reference)
            let attention layer = s.Evaluate([| graph.Model.FindNode(sprintf "model.layers.%d.self_attn.attn_weights" layer) |], dict [ graph.InputName, input ] |> Dictionary).[0]
            let sliding, full = attention 0, attention 2
            for h in 0 .. 3 do
                for i in 0 .. tokens - 1 do
                    for j in 0 .. tokens - 1 do
                        let at (w: TensorValue) = w.[(h * tokens + i) * tokens + j]
                        Expect.equal (at sliding > 0.0) (j <= i && i - j < 3) (sprintf "sliding layer, query %d key %d" i j)
                        Expect.equal (at full > 0.0) (j <= i) (sprintf "full layer, query %d key %d" i j)
        }
        test "llama3 rotary scaling keeps high frequencies, divides low ones by the factor, interpolates between" {
            let c = ModelConfig.Parse (snd configs.[4])
            let plain = RotaryEmbedding.Default(8, 500000.0).InverseFrequencies
            let scaled = Rope.FromConfig(c, 8).InverseFrequencies
            // original context 64: wavelengths under 64/4 are kept, over 64/1 divided by 8
            for f, g in Array.zip plain scaled do
                let wavelength = 2.0 * Math.PI / f
                if wavelength < 16.0 then Expect.floatClose Accuracy.veryHigh g f "high frequency kept"
                elif wavelength > 64.0 then Expect.floatClose Accuracy.veryHigh g (f / 8.0) "low frequency divided by the factor"
                else Expect.isTrue (g >= f / 8.0 && g <= f) "medium frequency between the two"
            Expect.isTrue (plain |> Array.exists (fun f -> 2.0 * Math.PI / f < 16.0) && plain |> Array.exists (fun f -> 2.0 * Math.PI / f > 64.0)) "both regimes occur"
        }
        test "mixture-of-experts routing weights keep the top k experts per token and sum to 1 when normalised" {
            let graph, weights, input = build (snd configs.[3])
            use s = new Session(graph.Model, weights, Device.Reference)
            let node = graph.Model.FindNode "model.layers.0.block_sparse_moe.routing_weights"
            Expect.isNotNull node "the routing weights are a named node"
            let w = s.Evaluate([| node |], dict [ graph.InputName, input ] |> Dictionary).[0]
            for t in 0 .. tokens - 1 do
                let row = Array.init 4 (fun e -> w.[t * 4 + e])
                Expect.equal (row |> Array.filter (fun v -> v > 0.0) |> Array.length) 2 "two experts chosen"
                Expect.floatClose Accuracy.high (Array.sum row) 1.0 "renormalised"
        }
    ]
