// Checks the GPU backend where a CUDA device is: parity with every reference fixture, cuBLAS against the ILGPU
// tiled product, then AttnLRP timings on random Llama 3.2 1B / Llama 3.1 8B shapes. Prints a short table last.
// Usage: Lxt.GpuCheck [--fixtures DIR] [--out DIR] [--device cuda|ilgpu-cpu] [--models 1b,8b] [--tokens 128,512,2048]
//                     [--repeats 7] [--precision f32|tf32|bf16] [--profile] [--checkpointing none,products,layers]
//                     [--profile-tokens 128,2048] [--layers N] [--plan-memory] [--pairs none|all|LIST]
//                     [--softmax-warp-rows] [--softmax-register-rows] [--table-parameters] [--attention-blocks N]
//                     [--all-positions] [--fused-attention] [--tensor-core-attention] [--ldmatrix]
//                     (--models none skips the timings; --tf32 is --precision tf32; tf32 and bf16 loosen the parity
//                     tolerances to 1e-2 and 5e-2, and bf16 runs each fixture again with every value narrow that can
//                     be; --plan-memory only prints each run's planned device memory and kernel count, from a dry
//                     run that needs no GPU (with --tensor-core-attention as that choice plans); $LXT_NARROW_VALUES_FROM sets the narrow-value threshold of the timings;
//                     --pairs sets which kernels take values in pairs, e.g. "NarrowPointwise,Rows";
//                     --softmax-warp-rows runs softmax rows one warp each instead of one group each;
//                     --softmax-register-rows holds rows of up to 2048 values in a warp's registers;
//                     --table-parameters has fused programs read their tables from kernel parameters;
//                     --attention-blocks N computes masked attention in blocks of N query rows, 0 whole; default 512;
//                     --all-positions computes every value at every position, not only at the rows the logits read;
//                     --fused-attention computes each attention as one op, its probabilities never stored;
//                     --tensor-core-attention computes those ops on tensor cores, after checking one tensor-core
//                     product, each part of an attention against CUDA cores, and timing attention alone;
//                     --ldmatrix has them read their tiles by columns through ldmatrix)
using System.Diagnostics;
using System.Text;
using System.Text.Json;
using Lxt;
using Lxt.Backend.Gpu;
using Lxt.Graph;
using Lxt.Import;
using Lxt.Models;

var options = Options.Parse(args);
var log = new StringBuilder();
void Say(string line) { Console.WriteLine(line); log.AppendLine(line); Flush(); }
void Flush() { if (options.Out is { } o) File.WriteAllText(Path.Combine(o, "gpu-check.log"), log.ToString()); }
if (options.Out is { } outDir) Directory.CreateDirectory(outDir);

var summary = new List<string>();
int failures = 0;

if (options.PlanMemory)
{
    PlanMemory();
    return 0;
}

try
{
    using var probe = Create();
    Say($"device: {probe.DeviceName} ({probe.Name}), cuBLAS: {probe.UsesCublas}, products: {GpuBackend.IdOf(options.Precision)}, kernels taking values in pairs: {probe.PairedKernels}, softmax rows {(probe.SoftmaxRowsInRegisters ? "in a warp's registers where they fit, else " : "")}{(probe.SoftmaxWarpPerRow ? "a warp each" : "a group each")}, program tables read {(probe.ProgramTablesAsParameters ? "from kernel parameters" : "from device memory")}, attention ops on {(probe.AttentionOnTensorCores ? "tensor cores" + (probe.TensorCoreMatrixLoads ? " (tiles read by columns through ldmatrix)" : "") : "CUDA cores")}");
}
catch (GpuUnavailableException e)
{
    Say($"no GPU to check: {e.Message}");
    return 2;
}

// 1. fixture parity on the device
if (options.Fixtures is { } fixturesDir && Directory.Exists(fixturesDir))
{
    foreach (var dir in Directory.GetDirectories(fixturesDir).OrderBy(d => d, StringComparer.Ordinal))
    {
        var reference = Directory.GetFiles(dir, "reference_*.json").FirstOrDefault();
        if (reference is null) continue;
        // in bfloat16 each fixture runs a second time with every value stored narrow that can be: the fixtures are
        // too small for the default threshold, so this pass is what checks narrow values on the device
        foreach (int? narrowFrom in options.Precision == GemmPrecision.BFloat16 ? new int?[] { null, 0 } : [null])
        {
            string name = Path.GetFileName(dir) + (narrowFrom is null ? "" : " narrow");
            try
            {
                var (logitsErr, relevanceErr) = Fixture(dir, reference, name, narrowFrom);
                bool ok = logitsErr < ParityTolerance() && relevanceErr < ParityTolerance();
                if (!ok) failures++;
                Say($"fixture {name,-17} logits {logitsErr:E2}  relevance {relevanceErr:E2}  {(ok ? "ok" : $"FAIL (tolerance {ParityTolerance():E0})")}");
                summary.Add($"fixture {name}: {(ok ? "ok" : "FAIL")} (relevance error {relevanceErr:E1})");
            }
            catch (Exception e)
            {
                failures++;
                Say($"fixture {name}: ERROR {e.GetType().Name}: {e.Message}");
                summary.Add($"fixture {name}: ERROR {e.GetType().Name}");
            }
        }
    }
}
else Say($"no fixtures folder ({options.Fixtures ?? "none given"}): parity skipped");

// 2. cuBLAS against the ILGPU tiled product, and their speed at 4096³
try { GemmCheck(); }
catch (Exception e) { failures++; Say($"gemm check: ERROR {e.GetType().Name}: {e.Message}"); }

// 3. attention on tensor cores against attention on CUDA cores, where asked for
if (options.TensorCoreAttention)
{
    // the whole exception, stack and inner ones: which call of which kernel a device refused
    try { TensorCoreProductCheck(); }
    catch (Exception e) { failures++; Say($"tensor-core product check: ERROR {e}"); }
    try { TensorCoreAttentionCheck(); }
    catch (Exception e) { failures++; Say($"tensor-core attention check: ERROR {e}"); }
}

// 4. AttnLRP timings on random Llama shapes, each with and without gradient checkpointing, against the reference
var rows = new List<string>();
var best = new List<string>();
foreach (var size in options.Models)
{
    try { TimeModel(size, rows, best); }
    catch (Exception e)
    {
        Say($"llama-{size}: {e.GetType().Name}: {e.Message}");
        rows.Add($"llama-{size,-4} {"-",6}  {e.GetType().Name}");
    }
    GC.Collect();
}

Say("");
foreach (var s in summary) Say(s);
Say("");
if (rows.Count > 0)
{
    Say($"{"model",-10} {"tokens",6} {"checkpointing",-13} {"median ms",10} {"min ms",8} {"peak GiB",9}  note");
    foreach (var r in rows) Say(r);
    Say("");
    Say($"fastest run within the reference's peak memory, against LXT 2.1 (PyTorch 2.11, H200; {Reference.Description}):");
    Say($"{"model",-10} {"tokens",6} {"Lxt ms",8} {"ref ms",8} {"speed-up",9} {"Lxt GiB",8} {"ref GiB",8}  checkpointing");
    foreach (var r in best) Say(r);
}
Say(failures == 0 ? "all checks passed" : $"{failures} check(s) failed");
return failures == 0 ? 0 : 1;

GpuBackend Create()
{
    // on ILGPU's CPU accelerator the tensor-core kernels need warps of 32 lanes, as on the device
    var backend = options.Device != "ilgpu-cpu" ? GpuBackend.Create(GpuKind.Cuda, options.Precision)
        : options.TensorCoreAttention ? GpuBackend.CreateCpuWithCudaWarps(options.Precision)
        : GpuBackend.Create(GpuKind.CpuAccelerator, options.Precision);
    backend.PairedKernels = options.Pairs;
    backend.SoftmaxWarpPerRow = options.SoftmaxWarpRows;
    backend.SoftmaxRowsInRegisters = options.SoftmaxRegisterRows;
    backend.ProgramTablesAsParameters = options.TableParameters;
    backend.AttentionOnTensorCores = options.TensorCoreAttention;
    backend.TensorCoreMatrixLoads = options.MatrixLoads;
    return backend;
}

// fixture parity against float64 references: bfloat16 operands keep ~3 significant digits, TF32 ~4
double ParityTolerance() => options.Precision switch { GemmPrecision.BFloat16 => 5e-2, GemmPrecision.TensorFloat32 => 1e-2, _ => 1e-4 };

(double Logits, double Relevance) Fixture(string dir, string referencePath, string name, int? narrowFrom)
{
    var json = JsonDocument.Parse(File.ReadAllText(referencePath)).RootElement;
    double[] Doubles(string key)
    {
        var list = new List<double>();
        void Walk(JsonElement e) { if (e.ValueKind == JsonValueKind.Array) foreach (var c in e.EnumerateArray()) Walk(c); else list.Add(e.GetDouble()); }
        Walk(json.GetProperty(key));
        return list.ToArray();
    }
    using var model = PretrainedModel.Open(dir);
    TransformerGraph graph;
    float[] input;
    if (json.TryGetProperty("input_ids", out var idsJson))
    {
        var ids = idsJson.EnumerateArray().Select(e => e.GetInt32()).ToArray();
        graph = model.BuildGraph(ids.Length);
        input = model.Embed(graph, ids);
    }
    else
    {
        graph = model.BuildGraph();
        input = Doubles("image").Select(v => (float)v).ToArray();
    }
    var method = Path.GetFileName(dir) switch { "vit" => Method.CpLrpGamma(0.25, 0.05), "vit-hf" => Method.CpLrp, _ => Method.AttnLrp };
    var backend = Create();
    if (narrowFrom is int n) backend.NarrowValuesFrom = n;
    using var session = new Session(graph.Model, model.WeightsFor(graph), backend);
    using var explainer = new Explainer(graph.Model, graph.InputName, session);
    var fixtureOptions = new ExplainOptions { Method = method, Target = json.GetProperty("target").GetInt32() };
    var firstRun = explainer.Explain(input, fixtureOptions);
    explainer.Explain(input, fixtureOptions);
    var e = explainer.Explain(input, fixtureOptions); // the third run replays the second's recording where graphs are on
    double drift = Relative(e.PerPosition, firstRun.PerPosition);
    if (drift > 1e-6)
    {
        failures++;
        Say($"fixture {name}: the replayed run differs from the first by {drift:E2}");
    }
    var logitsRef = json.TryGetProperty("logits_last", out _) ? Doubles("logits_last") : Doubles("logits");
    var logits = e.Logits;
    if (logits.Length != logitsRef.Length) logits = logits[^logitsRef.Length..];
    return (Relative(logits, logitsRef), Relative(e.PerPosition, Doubles("relevance")));
}

static double Relative(double[] ours, double[] reference)
{
    if (ours.Length != reference.Length) return double.PositiveInfinity;
    double scale = reference.Max(Math.Abs), err = 0;
    for (int i = 0; i < ours.Length; i++) err = Math.Max(err, Math.Abs(ours[i] - reference[i]));
    return err / scale;
}

void GemmCheck()
{
    using var backend = Create();
    var rng = new Random(1);
    // a broadcast batched product: both paths against each other
    var a = Ops.input("a", [2, 3, 77, 129], DType.Float);
    var b = Ops.input("b", [3, 129, 65], DType.Float);
    var y = Ops.matmul(a, b);
    var values = new Dictionary<string, float[]>
    {
        ["a"] = Enumerable.Range(0, 2 * 3 * 77 * 129).Select(_ => (float)rng.NextDouble() - 0.5f).ToArray(),
        ["b"] = Enumerable.Range(0, 3 * 129 * 65).Select(_ => (float)rng.NextDouble() - 0.5f).ToArray(),
    };
    // the same product with both operands stored transposed: the plan reads them lazily (ExecuteMatMul with op T)
    var at = Ops.input("at", [2, 3, 129, 77], DType.Float);
    var bt = Ops.input("bt", [3, 65, 129], DType.Float);
    var yt = Ops.matmul(Ops.transpose(2, 3, at), Ops.transpose(1, 2, bt));
    values["at"] = Transposed(values["a"], 6, 77, 129);
    values["bt"] = Transposed(values["b"], 3, 129, 65);
    // in bfloat16 a product of a small inner size, read by a pointwise op, is stored narrow (every value that can be,
    // on this backend; the other products are plan outputs, which never are): cuBLAS writes bfloat16
    backend.NarrowValuesFrom = 0;
    var an = Ops.input("an", [2, 3, 77, 8], DType.Float);
    var bn = Ops.input("bn", [3, 8, 65], DType.Float);
    var yn = Ops.neg(Ops.matmul(an, bn));
    values["an"] = Enumerable.Range(0, 2 * 3 * 77 * 8).Select(_ => (float)rng.NextDouble() - 0.5f).ToArray();
    values["bn"] = Enumerable.Range(0, 3 * 8 * 65).Select(_ => (float)rng.NextDouble() - 0.5f).ToArray();
    bool hadCublas = backend.UsesCublas;
    // bfloat16 products round the same operands the same way on both paths; TF32 rounding is the hardware's there
    // cuBLAS rounds float32 operands to TF32 (and, with CUBLAS_COMPUTE_32F_FAST_16BF, to bfloat16) its own way, not
    // exactly as the tiled kernel's round-to-nearest-even emulation does
    double tolerance = options.Precision switch { GemmPrecision.TensorFloat32 => 1e-2, GemmPrecision.BFloat16 => 3e-2, _ => 1e-4 };
    var products = new List<(Node, string)> { (y, "[2,3,77,129]x[3,129,65]"), (yt, "the same, both operands transposed") };
    if (options.Precision == GemmPrecision.BFloat16) products.Add((yn, "[2,3,77,8]x[3,8,65] into bfloat16, negated"));
    foreach (var (product, label) in products)
    {
        backend.UsesCublas = hadCublas;
        var viaCublas = Run(backend, product, values);
        backend.UsesCublas = false;
        var viaIlgpu = Run(backend, product, values);
        backend.UsesCublas = hadCublas;
        double diff = viaCublas.Zip(viaIlgpu, (p, q) => Math.Abs(p - q)).Max();
        bool ok = diff < tolerance;
        if (!ok) failures++;
        Say($"gemm {GpuBackend.IdOf(options.Precision)}: cuBLAS vs ILGPU tiled on {label}: max difference {diff:E2} {(ok ? "ok" : "FAIL")}");
        summary.Add($"gemm cuBLAS vs ILGPU ({label}): {(ok ? "ok" : "FAIL")} ({diff:E1})");
    }
    if (options.Device == "ilgpu-cpu") return;
    foreach (var cublas in new[] { true, false })
    {
        backend.UsesCublas = cublas && hadCublas;
        const int n = 4096;
        var p = Ops.input("p", [n, n], DType.Float);
        var plan = PlanModule.compile(Microsoft.FSharp.Collections.ListModule.OfArray(new[] { Ops.matmul(p, p) }));
        using var exe = new Executable(plan, backend);
        var buffer = backend.Allocate(n * n);
        backend.Upload(new float[n * n], buffer);
        var feeds = new Dictionary<string, IBuffer> { ["p"] = buffer };
        exe.Recycle(exe.Run(feeds));
        backend.Synchronize();
        var clock = Stopwatch.StartNew();
        const int reps = 5;
        for (int i = 0; i < reps; i++) exe.Recycle(exe.Run(feeds));
        backend.Synchronize();
        double tflops = 2.0 * n * n * n * reps / clock.Elapsed.TotalSeconds / 1e12;
        Say($"gemm {n}^3 via {(backend.UsesCublas ? "cuBLAS" : "ILGPU tiled")}: {tflops:F1} TFLOP/s");
        summary.Add($"gemm {n}^3 {(backend.UsesCublas ? "cuBLAS" : "ILGPU")}: {tflops:F1} TFLOP/s");
        buffer.Dispose();
    }
    backend.UsesCublas = hadCublas;
}

// One mma.sync of one warp (GpuBackend.ProductOnTensorCores) against A·B + C in float64 from A and B rounded to bfloat16:
// the instruction and the fragments' layout the attention kernels assume, on their own, so that a failure of the
// kernels' check below can be told apart from one of the layout. Where they differ, the elements of D that are wrong
// are drawn, and a cvt.rn.bf16x2 that ordered its halves the other way is named.
void TensorCoreProductCheck()
{
    using var backend = Create();
    var rng = new Random(3);
    float[] Random(int n) => Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() * 4 - 2)).ToArray();
    float[] a = Random(256), b = Random(128), c = Random(128);
    var d = backend.ProductOnTensorCores(a, b, c);
    static double Round(float x) => BFloat16Conversion.ToFloat(BFloat16Conversion.FromFloat(x));
    // D of A·B + C, A's columns 2j and 2j + 1 swapped where `swapped`
    double[] Expected(bool swapped) => Enumerable.Range(0, 128).Select(e =>
    {
        int i = e / 8, j = e % 8;
        double sum = c[e];
        for (int k = 0; k < 16; k++) sum += Round(a[i * 16 + (swapped ? k ^ 1 : k)]) * Round(b[k * 8 + j]);
        return sum;
    }).ToArray();
    double Error(double[] expected) => expected.Zip(d, (x, y) => Math.Abs(x - y)).Max() / (1 + expected.Max(Math.Abs));
    var expected = Expected(false);
    double error = Error(expected);
    bool ok = error < 1e-5 && d.All(float.IsFinite);
    if (!ok) failures++;
    Say($"tensor-core product (mma.sync m16n8k16 bf16 of one warp): relative difference {error:E2} from A·B + C in float64 {(ok ? "ok" : "FAIL")}");
    summary.Add($"tensor-core product: {(ok ? "ok" : "FAIL")} ({error:E1})");
    if (ok) return;
    for (int i = 0; i < 16; i++)
        Say("  D row " + i.ToString().PadLeft(2) + ": " + string.Concat(Enumerable.Range(0, 8).Select(j =>
            Math.Abs(expected[i * 8 + j] - d[i * 8 + j]) < 1e-5 * (1 + Math.Abs(expected[i * 8 + j])) ? '.' : 'x')));
    if (Error(Expected(true)) < 1e-5)
        Say("  D is A·B + C with A's column pairs swapped: cvt.rn.bf16x2.f32 puts its first source in the low half here, TensorCores.Pack assumes the high half");
}

// The output, log-sum-exp and gradients of a causal grouped-query attention at the Llama shapes' head sizes, on tensor
// cores and on CUDA cores: the same within bfloat16's precision (on the CPU accelerator, Create's warps of 32 lanes
// with the tensor cores' products emulated).
void TensorCoreAttentionCheck()
{
    bool cpu = options.Device == "ilgpu-cpu";
    using var backend = Create();
    var rng = new Random(2);
    foreach (int d in new[] { 64, 128 })
    {
        const int heads = 4, kvHeads = 2;
        int tokens = cpu ? 70 : 200;
        var (o, y, grads) = CausalAttention(d, heads, kvHeads, tokens);
        float[] Random(int n) => Enumerable.Range(0, n).Select(_ => (float)rng.NextDouble() * 2 - 1).ToArray();
        var values = new Dictionary<string, float[]>
        {
            ["q"] = Random(heads * tokens * d), ["k"] = Random(kvHeads * tokens * d), ["v"] = Random(kvHeads * tokens * d), ["w"] = Random(heads * tokens * d),
        };
        var parts = new (Node, string)[] { (o, "O"), (y, "Y (O and L)"), (grads[0], "dQ"), (grads[1], "dK"), (grads[2], "dV") };
        foreach (var (node, label) in parts)
        {
            backend.AttentionOnTensorCores = true;
            var onCores = Run(backend, node, values);
            backend.AttentionOnTensorCores = false;
            var onWarps = Run(backend, node, values);
            double scaleOf = 1 + onWarps.Max(Math.Abs), diff = onCores.Zip(onWarps, (a, b) => Math.Abs(a - b)).Max() / scaleOf;
            // bfloat16 operands leave a trace: a difference of 0 means the tensor cores were not used
            bool ok = diff < 3e-2 && diff > 0 && onCores.All(double.IsFinite);
            if (!ok) failures++;
            Say($"attention d {d}: {label} on tensor cores vs CUDA cores: relative difference {diff:E2} {(ok ? "ok" : "FAIL")}");
            summary.Add($"tensor-core attention d {d} {label}: {(ok ? "ok" : "FAIL")} ({diff:E1})");
        }
    }
    // the kernels' speed at the Llama shapes' attention (32 query heads over 8, causal, 2048 tokens; a small one on
    // the CPU accelerator, to try it)
    foreach (int d in new[] { 64, 128 }) TimeAttention(backend, d, cpu ? 4 : 32, cpu ? 2 : 8, cpu ? 64 : 2048);
}

// A causal grouped-query attention over inputs q [heads, tokens, d], k and v [kvHeads, tokens, d] as one op: its
// output O, Y (O and L), and the gradients of Q, K and V of Σ O ⊙ w (input w, O's shape).
static (Node O, Node Y, Node[] Grads) CausalAttention(int d, int heads, int kvHeads, int tokens)
{
    var mask = new AttentionMask(true, 0, null);
    var q = Ops.input("q", [heads, tokens, d], DType.Float);
    var k = Ops.input("k", [kvHeads, tokens, d], DType.Float);
    var v = Ops.input("v", [kvHeads, tokens, d], DType.Float);
    var w = Ops.input("w", [heads, tokens, d], DType.Float);
    double scale = 1 / Math.Sqrt(d);
    var o = Ops.attention(mask, scale, q, k, v);
    var y = Ops.attentionPart(AttentionPart.Output, mask, scale, Microsoft.FSharp.Collections.ListModule.OfArray(new[] { q, k, v }));
    var loss = Ops.reduceSum(Microsoft.FSharp.Collections.ListModule.OfArray(new[] { 0, 1, 2 }), false, Ops.mul(o, w));
    var grads = Autodiff.vjp(Microsoft.FSharp.Collections.ListModule.OfArray(new[] { Tuple.Create(loss, Ops.scalar(1.0)) }),
        Microsoft.FSharp.Collections.ListModule.OfArray(new[] { q, k, v })).ToArray();
    return (o, y, grads);
}

// Attention alone, its output (O and L) and its output with the gradients of Q, K and V, on tensor cores (Q, K and V
// stored in bfloat16, as a model's products leave them in bfloat16 mode) and on CUDA cores (float32), inputs resident
// on the device, median of 5 runs after one (one on the CPU accelerator); TFLOP/s counts the
// products a causal attention needs (Q·Kᵀ and P·V forward; K·Qᵀ, V·dOᵀ, Pᵀ·dO, dSᵀ·Q and dS·K backward), half of each
// square.
void TimeAttention(GpuBackend backend, int d, int heads, int kvHeads, int tokens)
{
    var (_, y, grads) = CausalAttention(d, heads, kvHeads, tokens);
    var rng = new Random(4);
    var feeds = new Dictionary<string, IBuffer>();
    var narrowFeeds = new Dictionary<string, IBuffer>();
    foreach (var (name, n) in new[] { ("q", heads), ("k", kvHeads), ("v", kvHeads), ("w", heads) })
    {
        var values = Enumerable.Range(0, n * tokens * d).Select(_ => (float)rng.NextDouble() * 2 - 1).ToArray();
        feeds[name] = backend.Allocate(values.Length);
        backend.Upload(values, feeds[name]);
        narrowFeeds[name] = name == "w" ? feeds[name] : backend.AllocateBFloat16(values.Length);
        if (name != "w") backend.Upload(values, narrowFeeds[name]);
    }
    double squares = (double)heads * d * tokens * tokens; // 2·d·T² flops a product, half of them kept
    int runs = options.Device == "ilgpu-cpu" ? 1 : 5; // the CPU accelerator only tries it
    bool onCores = backend.AttentionOnTensorCores;
    var line = new StringBuilder($"attention d {d}, {heads} heads over {kvHeads}, {tokens} tokens, causal:");
    foreach (var (outputs, what, products) in new[] { (new[] { y }, "output", 2), (grads, "output and gradients", 7) })
    {
        foreach (bool cores in new[] { true, false })
        {
            backend.AttentionOnTensorCores = cores;
            var plan = PlanModule.compile(Microsoft.FSharp.Collections.ListModule.OfArray(outputs));
            using var exe = new Executable(plan, backend);
            var needed = PlanModule.inputs(plan).Select(n => ((Op.Input)n.Op).name).ToHashSet();
            var used = (cores ? narrowFeeds : feeds).Where(f => needed.Contains(f.Key)).ToDictionary(f => f.Key, f => f.Value);
            exe.Recycle(exe.Run(used));
            var times = new List<double>();
            for (int i = 0; i < runs; i++)
            {
                backend.Synchronize();
                var clock = Stopwatch.StartNew();
                exe.Recycle(exe.Run(used));
                backend.Synchronize();
                times.Add(clock.Elapsed.TotalMilliseconds);
            }
            double ms = times.Order().ElementAt(runs / 2);
            line.Append($" {what} on {(cores ? "tensor" : "CUDA")} cores {ms:F2} ms ({products * squares / ms / 1e9:F1} TFLOP/s);");
        }
    }
    backend.AttentionOnTensorCores = onCores;
    foreach (var f in feeds.Values.Concat(narrowFeeds.Values).Distinct()) f.Dispose();
    Say(line.ToString().TrimEnd(';'));
}

// `count` row-major rows×cols matrices, each transposed
static float[] Transposed(float[] x, int count, int rows, int cols)
{
    var t = new float[x.Length];
    for (int c = 0; c < count; c++)
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < cols; j++)
                t[c * rows * cols + j * rows + i] = x[c * rows * cols + i * cols + j];
    return t;
}

static double[] Run(GpuBackend backend, Node output, Dictionary<string, float[]> values)
{
    var plan = PlanModule.compile(Microsoft.FSharp.Collections.ListModule.OfArray(new[] { output }));
    using var exe = new Executable(plan, backend);
    var feeds = new Dictionary<string, IBuffer>();
    var needed = PlanModule.inputs(plan).Select(n => ((Op.Input)n.Op).name).ToHashSet();
    foreach (var (name, v) in values.Where(p => needed.Contains(p.Key)))
    {
        var buffer = backend.Allocate(v.Length);
        backend.Upload(v, buffer);
        feeds[name] = buffer;
    }
    var outs = exe.Run(feeds);
    var host = new float[outs[0].Length];
    backend.Download(outs[0], host);
    exe.Recycle(outs);
    foreach (var f in feeds.Values) f.Dispose();
    return host.Select(v => (double)v).ToArray();
}

TransformerGraph LlamaShape(string size, int tokens)
{
    var (layers, hidden, mlp, heads, kv) = size switch
    {
        "1b" => (16, 2048, 8192, 32, 8),
        "8b" => (32, 4096, 14336, 32, 8),
        "tiny" => (2, 64, 128, 4, 2), // for trying the check where there is no GPU (--device ilgpu-cpu)
        _ => throw new ArgumentException($"unknown model size '{size}' (1b, 8b or tiny)"),
    };
    int vocab = size == "tiny" ? 1000 : 128256;
    if (options.Layers is int l) layers = l;
    string config = $$"""
        {"model_type": "llama", "hidden_size": {{hidden}}, "intermediate_size": {{mlp}}, "num_attention_heads": {{heads}},
         "num_key_value_heads": {{kv}}, "num_hidden_layers": {{layers}}, "vocab_size": {{vocab}}, "rms_norm_eps": 1e-5,
         "rope_theta": 500000.0, "max_position_embeddings": 131072, "tie_word_embeddings": false}
        """;
    return Architectures.Build(ModelConfig.Parse(config, $"llama-{size}"), tokens);
}

float[] RandomInput(TransformerGraph graph, int tokens)
{
    int hidden = graph.Model.Inputs.First(i => i.Name == graph.InputName).Shape[^1];
    var rng = new Random(tokens);
    var input = new float[tokens * hidden];
    for (int i = 0; i < input.Length; i++) input[i] = (float)(rng.NextDouble() - 0.5) * 0.05f;
    return input;
}

// The explanation plan run step by step: host time per op kind (launches are asynchronous, so this is the host's
// share), then the same runs with a device synchronisation after every step (the device's share per op kind).
void Profile(string size, int tokens)
{
    var graph = LlamaShape(size, tokens);
    var model = graph.Model;
    var output = model["logits"].Node;
    var inputNode = model.Inputs.First(i => i.Name == graph.InputName).Node;
    var explained = Explainer.RelevanceGraph(output, inputNode, Method.AttnLrp.RuleSet, options.AttentionBlocks, [], pick: false, options.AllPositions, options.FusedAttention);
    var plan = PlanModule.compile(Microsoft.FSharp.Collections.ListModule.OfSeq(explained));
    using var backend = Create();
    using var exe = new Executable(plan, backend);
    var weights = new RandomWeights(model);
    var narrow = PlanModule.matMulOnlyParameters(true, exe.Plan);
    foreach (var p in PlanModule.parameters(plan))
    {
        var name = ((Op.Parameter)p.Op).name;
        var values = weights.Read(name, p.Shape);
        IBuffer b;
        if (narrow.Contains(name)) b = backend.AllocateMatrixWeight(values);
        else
        {
            b = backend.Allocate(values.Length);
            backend.Upload(values, b);
        }
        exe.BindParameter(name, b, owned: true);
    }
    var seed = new float[output.Shape[0]];
    var input = RandomInput(graph, tokens);
    var feeds = new Dictionary<string, IBuffer> { [graph.InputName] = backend.Allocate(input.Length), [Explainer.SeedName] = backend.Allocate(seed.Length) };
    backend.Upload(input, feeds[graph.InputName]);
    backend.Upload(seed, feeds[Explainer.SeedName]);
    exe.Recycle(exe.Run(feeds));
    backend.Synchronize();
    const int reps = 3;
    double Wall()
    {
        exe.Recycle(exe.Run(feeds));
        backend.Synchronize();
        var clock = Stopwatch.StartNew();
        for (int i = 0; i < reps; i++) exe.Recycle(exe.Run(feeds));
        backend.Synchronize();
        return clock.Elapsed.TotalMilliseconds / reps;
    }
    double wall = Wall();
    bool replaying = exe.IsReplaying;
    // one run at a time, each waited for: the host's time to submit a run, and a run's latency (the device idles
    // while the host submits; back-to-back runs above overlap the two)
    double submit = 0, latency = 0;
    for (int i = 0; i < reps; i++)
    {
        var clock = Stopwatch.StartNew();
        var outs = exe.Run(feeds);
        submit += clock.Elapsed.TotalMilliseconds;
        backend.Synchronize();
        latency += clock.Elapsed.TotalMilliseconds;
        exe.Recycle(outs);
    }
    backend.UsesGraphs = false;
    double plainWall = Wall();
    backend.UsesGraphs = true;
    Say($"profile llama-{size} {tokens} tokens: {wall:F2} ms per run {(replaying ? "replaying a CUDA graph" : "(no CUDA graph)")}, {plainWall:F2} ms launching kernel by kernel; one run alone: {submit / reps:F2} ms to submit, {latency / reps:F2} ms until done");
    exe.Profiling = true;
    for (int i = 0; i < reps; i++) exe.Recycle(exe.Run(feeds));
    backend.Synchronize();
    var host = exe.Profile;
    exe.ResetProfile();
    backend.SynchronizeEveryStep = true;
    for (int i = 0; i < reps; i++) exe.Recycle(exe.Run(feeds));
    backend.SynchronizeEveryStep = false;
    var device = exe.Profile.ToDictionary(r => r.Kind);
    Say($"profile llama-{size} {tokens} tokens: {plan.Steps.Length} steps, {exe.Plan.Steps.Length} fused, {plan.LazyTransposes.Count} lazy transposes; host ms (async) / synchronised ms per op kind:");
    // GB/s: bytes of the operands read once and the output written, over the synchronised device time
    Say($"  {"op kind",-48} {"count",5} {"host ms",9} {"device ms",9} {"GB/s",7}");
    foreach (var r in host.OrderByDescending(r => device.TryGetValue(r.Kind, out var d) ? d.Seconds : 0))
    {
        double dev = device.TryGetValue(r.Kind, out var d) ? d.Seconds * 1e3 / reps : double.NaN;
        double rate = device.TryGetValue(r.Kind, out var b) && b.Seconds > 0 ? b.Bytes / b.Seconds / 1e9 : double.NaN;
        Say($"  {r.Kind,-48} {r.Count / reps,5} {r.Seconds * 1e3 / reps,9:F2} {dev,9:F2} {rate,7:F0}");
    }
    Say($"  {"total",-48} {host.Sum(r => r.Count) / reps,5} {host.Sum(r => r.Seconds) * 1e3 / reps,9:F2} {device.Values.Sum(r => r.Seconds) * 1e3 / reps,9:F2}");
    foreach (var f in feeds.Values) f.Dispose();
}

// One session (weights uploaded once) per model size; per token count one explainer, run without and with
// checkpointing every layer; plans are released between runs so each peak is the run's own.
void TimeModel(string size, List<string> rows, List<string> best)
{
    if (options.Profile && size == options.Models[0])
        foreach (var t in options.ProfileTokens ?? [options.Tokens[0]]) Profile(size, t);
    var graphs = options.Tokens.ToDictionary(t => t, t => LlamaShape(size, t));
    var backend = Create();
    var upload = Stopwatch.StartNew();
    using var session = new Session(graphs[options.Tokens[0]].Model, new RandomWeights(graphs[options.Tokens[0]].Model), backend);
    foreach (var tokens in options.Tokens)
    {
        var graph = graphs[tokens];
        var input = RandomInput(graph, tokens);
        var runs = new List<(string Mode, double Median, double Peak)>();
        double[]? relevance = null;
        var modes = new List<Checkpointing>(options.CheckpointModes);
        bool budgetAdded = false; // the budgeted choice is added once, after the given ones
        for (int m = 0; m < modes.Count; m++)
        {
            var checkpointing = modes[m];
            session.ReleasePlans();
            GC.Collect();
            backend.ResetPeak();
            var explainer = new Explainer(graph.Model, graph.InputName, session) { LayerOutputs = graph.LayerOutputs };
            var opts = new ExplainOptions { Method = Method.AttnLrp, Target = 0, Checkpointing = checkpointing, AttentionBlockRows = options.AttentionBlocks, AllPositions = options.AllPositions, FusedAttention = options.FusedAttention };
            string mode = ModeName(checkpointing);
            try
            {
                var setup = Stopwatch.StartNew();
                var first = explainer.Explain(input, opts);
                double warm = setup.Elapsed.TotalSeconds;
                if (upload is not null) { Say($"llama-{size}: weights uploaded and first explanation in {upload.Elapsed.TotalSeconds:F1} s"); upload = null; }
                bool finite = first.PerPosition.All(double.IsFinite) && double.IsFinite(first.TargetLogit);
                explainer.Explain(input, opts); // recorded where CUDA graphs are on; later runs replay it
                var timed = new List<(double Ms, EvaluationTimes Phases)>();
                Explanation last = first;
                for (int r = 0; r < options.Repeats; r++)
                {
                    var clock = Stopwatch.StartNew();
                    last = explainer.Explain(input, opts);
                    timed.Add((clock.Elapsed.TotalMilliseconds, session.LastEvaluation));
                }
                timed.Sort((a, b) => a.Ms.CompareTo(b.Ms));
                var times = timed.Select(t => t.Ms).ToList();
                // the median run's phases: the session's upload, submission and download (which waits for the device),
                // and the rest of Explain on the host
                var (midMs, ph) = timed[timed.Count / 2];
                double up = ph.Upload.TotalMilliseconds, sub = ph.Submit.TotalMilliseconds, down = ph.Download.TotalMilliseconds;
                Say($"llama-{size} {tokens} tokens, checkpointing {ModeName(checkpointing)}: median run {midMs:F1} ms = upload {up:F2} + submit {sub:F2} + device and download {down:F2} + the rest of Explain {midMs - up - sub - down:F2} ms");
                // runs repeat exactly, except that attention's backward pass on tensor cores adds each key tile's share
                // of dQ atomically, in whatever order the tiles finish: float32 sums then differ in their last bits,
                // which a deep random model magnifies (up to 1.8e-3 seen at the 8B shape)
                double drift = Relative(last.PerPosition, first.PerPosition);
                double driftAllowed = options.FusedAttention && backend.AttentionOnTensorCores ? 1e-2 : 1e-5;
                if (drift > driftAllowed)
                {
                    failures++;
                    Say($"llama-{size} {tokens} tokens: the last run's relevance differs from the first's by {drift:E2} (allowed {driftAllowed:E0}) FAIL");
                }
                else if (drift > 0) Say($"llama-{size} {tokens} tokens: the last run's relevance differs from the first's by {drift:E2} (allowed {driftAllowed:E0}: dQ summed atomically)");
                double median = times[times.Count / 2];
                double peak = backend.PeakAllocatedBytes / (double)(1L << 30);
                Say($"llama-{size} {tokens} tokens, checkpointing {mode}: first run {warm:F2} s, median {median:F1} ms over {times.Count}, peak {peak:F2} GiB, relevance finite: {finite}");
                if (options.Out is { } o)
                    File.AppendAllText(Path.Combine(o, "timings.tsv"), $"llama-{size}\t{tokens}\t{mode}\t{median:F2}\t{times[0]:F2}\t{peak:F3}\t{warm:F2}\n");
                rows.Add($"llama-{size,-4} {tokens,6} {mode,-13} {median,10:F1} {times[0],8:F1} {peak,9:F2}  {(finite ? "" : "NON-FINITE relevance")}");
                if (!finite) failures++;
                else runs.Add((mode, median, peak));
                relevance ??= last.PerPosition;
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                Say($"llama-{size} {tokens} tokens, checkpointing {mode}: {e.GetType().Name}: {e.Message}");
                rows.Add($"llama-{size,-4} {tokens,6} {mode,-13} {"-",10} {"-",8} {"-",9}  {e.GetType().Name}");
            }
            // where no checkpointing outgrows the reference's memory and the products fit, also keep the attention
            // probabilities of as many layers as fit in what the reference holds (less the weights and a margin for
            // inputs, outputs and the GEMM workspace)
            if (!budgetAdded && m == modes.Count - 1 && Reference.Of(size, tokens) is var (_, limitGiB)
                && runs.Any(r => r.Mode == ModeName(Checkpointing.None) && r.Peak > limitGiB)
                && runs.Any(r => r.Mode == ModeName(Checkpointing.Products) && r.Peak <= limitGiB))
            {
                session.ReleasePlans();
                long budget = (long)(limitGiB * (1L << 30)) - backend.AllocatedBytes - (256L << 20);
                if (budget > 0) modes.Add(Checkpointing.ProductsWithin(budget));
                budgetAdded = true;
            }
        }
        session.ReleasePlans();
        if (options.FusedAttention && relevance is not null) AgainstProducts(graph, session, backend, input, relevance, $"llama-{size} {tokens} tokens");
        if (Reference.Of(size, tokens) is not var (refMs, refGiB)) continue;
        var within = runs.Where(r => r.Peak <= refGiB).OrderBy(r => r.Median).ToList();
        var pick = within.Count > 0 ? within[0] : runs.OrderBy(r => r.Peak).FirstOrDefault();
        if (pick.Mode is null) continue;
        best.Add($"llama-{size,-4} {tokens,6} {pick.Median,8:F1} {refMs,8:F1} {refMs / pick.Median,8:F2}x {pick.Peak,8:F2} {refGiB,8:F1}  {pick.Mode}{(within.Count == 0 ? " (above the reference's memory)" : "")}");
    }
}

static string ModeName(Checkpointing checkpointing) => checkpointing.Id ?? checkpointing.Description;

// The timed relevance with attention as one op (on tensor cores where they are on) against the same explanation with
// attention as products and a softmax, checkpointed at the products so that it fits wherever the timed run did: the
// one-op kernels checked end to end inside a whole model, at the head sizes of the timed shapes
void AgainstProducts(TransformerGraph graph, Session session, GpuBackend backend, float[] input, double[] fused, string what)
{
    bool onCores = backend.AttentionOnTensorCores;
    backend.AttentionOnTensorCores = false;
    try
    {
        var explainer = new Explainer(graph.Model, graph.InputName, session) { LayerOutputs = graph.LayerOutputs };
        var products = explainer.Explain(input, new ExplainOptions
        {
            Method = Method.AttnLrp, Target = 0, Checkpointing = Checkpointing.Products, AttentionBlockRows = options.AttentionBlocks,
            AllPositions = options.AllPositions, FusedAttention = false,
        });
        // tensor cores take bfloat16 operands (Q, K, V, P, dO, dS) whatever the products' precision
        double tolerance = onCores ? 5e-2 : ParityTolerance(), diff = Relative(fused, products.PerPosition);
        bool ok = diff <= tolerance;
        if (!ok) failures++;
        Say($"{what}: relevance with attention as one op{(onCores ? " on tensor cores" : "")} against products and a softmax: relative difference {diff:E2} {(ok ? "ok" : "FAIL")} (tolerance {tolerance:E0})");
    }
    catch (Exception e) when (e is not OutOfMemoryException)
    {
        failures++;
        Say($"{what}: attention as products and a softmax failed: {e.GetType().Name}: {e.Message}");
    }
    finally
    {
        backend.AttentionOnTensorCores = onCores;
        session.ReleasePlans();
    }
}

// The device memory each timed run would hold, from a dry run on any machine: the explanation planned as the GPU
// backend plans it (fusion, prologues, in-place steps, bfloat16 weights), every allocation counted and nothing computed.
void PlanMemory()
{
    Say($"planned device memory, a dry run planning as the GPU backend ({GpuBackend.IdOf(options.Precision)} products{(options.TensorCoreAttention ? ", attention on tensor cores" : "")}): weights, intermediates, inputs and outputs (no GEMM workspace or scratch)");
    // the CUDA backend's choices, planned on ILGPU's CPU accelerator with the device's warps where they depend on them
    using var decisions = options.TensorCoreAttention ? GpuBackend.CreateCpuWithCudaWarps(options.Precision) : null;
    if (decisions is not null) decisions.AttentionOnTensorCores = true;
    Say($"{"model",-10} {"tokens",6} {"checkpointing",-13} {"planned GiB",11} {"ref GiB",8} {"kernels",8}");
    foreach (var size in options.Models)
        foreach (var tokens in options.Tokens)
        {
            var graph = LlamaShape(size, tokens);
            var plans = ExplanationPlanner.Plan(graph.Model, graph.InputName, graph.LayerOutputs, Device.Cuda, options.Precision, options.CheckpointModes,
                attentionBlockRows: options.AttentionBlocks, allPositions: options.AllPositions, fusedAttention: options.FusedAttention, decisions: decisions);
            foreach (var p in plans)
            {
                string reference = Reference.Of(size, tokens) is var (_, refGiB) ? $"{refGiB,8:F1}" : $"{"-",8}";
                Say($"llama-{size,-4} {tokens,6} {ModeName(p.Checkpointing),-13} {p.PeakGiB,11:F2} {reference} {p.Kernels,8}");
            }
            GC.Collect();
        }
}

/// <summary>Random weights made per parameter on demand (uniform with standard deviation 0.02, norms 1), filled in
/// parallel so the 8B shapes stay quick to set up and never all sit in host memory at once.</summary>
sealed class RandomWeights(Model model) : IWeightSource
{
    public bool Contains(string name) => model.Parameters.ContainsKey(name);

    public float[] Read(string name, IReadOnlyList<int> expectedShape)
    {
        long count = expectedShape.Aggregate(1L, (a, d) => a * d);
        var values = new float[count];
        bool norm = name.Contains("norm", StringComparison.Ordinal);
        if (norm) { Array.Fill(values, 1f); return values; }
        const int chunk = 1 << 20;
        float halfWidth = 0.02f * MathF.Sqrt(3f);
        int seed = name.GetHashCode(StringComparison.Ordinal);
        Parallel.For(0, (int)((count + chunk - 1) / chunk), c =>
        {
            uint s = (uint)(seed ^ (c * 0x9E3779B9)) | 1u;
            long end = Math.Min(count, (long)(c + 1) * chunk);
            for (long i = (long)c * chunk; i < end; i++)
            {
                s ^= s << 13; s ^= s >> 17; s ^= s << 5;
                values[i] = ((s >> 8) * (1f / (1 << 24)) * 2f - 1f) * halfWidth;
            }
        });
        return values;
    }
}

sealed record Options(string? Fixtures, string? Out, string Device, string[] Models, int[] Tokens, int Repeats, GemmPrecision Precision, bool Profile, Checkpointing[] CheckpointModes)
{
    /// <summary>Token counts the profile runs at (the first timed count when not given).</summary>
    public int[]? ProfileTokens { get; init; }
    /// <summary>Overrides the shapes' layer count (a quicker profile; timings then are not the table's).</summary>
    public int? Layers { get; init; }
    /// <summary>The kernels that take values in pairs (<see cref="GpuBackend.PairedKernels"/>).</summary>
    public PairedKernels Pairs { get; init; } = GpuBackend.DefaultPairedKernels;
    /// <summary>Fused programs reading their tables from kernel parameters (<see cref="GpuBackend.ProgramTablesAsParameters"/>).</summary>
    public bool TableParameters { get; init; }
    /// <summary>Query rows of a block of masked attention (<see cref="ExplainOptions.AttentionBlockRows"/>; 0: whole).</summary>
    public int AttentionBlocks { get; init; } = ExplainOptions.DefaultAttentionBlockRows;
    /// <summary>Every value at every position (<see cref="ExplainOptions.AllPositions"/>).</summary>
    public bool AllPositions { get; init; }
    /// <summary>Attention as one op (<see cref="ExplainOptions.FusedAttention"/>).</summary>
    public bool FusedAttention { get; init; }
    /// <summary>Attention ops on tensor cores (<see cref="GpuBackend.AttentionOnTensorCores"/>).</summary>
    public bool TensorCoreAttention { get; init; }
    /// <summary>Their tiles read by columns through ldmatrix (<see cref="GpuBackend.TensorCoreMatrixLoads"/>).</summary>
    public bool MatrixLoads { get; init; }
    /// <summary>Softmax rows held in a warp's registers (<see cref="GpuBackend.SoftmaxRowsInRegisters"/>).</summary>
    public bool SoftmaxRegisterRows { get; init; }

    /// <summary>Softmax rows one warp each (<see cref="GpuBackend.SoftmaxWarpPerRow"/>).</summary>
    public bool SoftmaxWarpRows { get; init; }
    /// <summary>Only plans: the device memory of each shape, token count and checkpointing choice from a dry run
    /// (<see cref="DryRunBackend"/>), on any machine.</summary>
    public bool PlanMemory { get; init; }

    public static Options Parse(string[] args)
    {
        var o = new Options(null, Environment.GetEnvironmentVariable("OUT"), "cuda", ["1b", "8b"], [128, 512, 2048], 7, GemmPrecision.Float32, false, [Checkpointing.None, Checkpointing.Products, Checkpointing.EveryLayer]);
        for (int i = 0; i < args.Length; i++)
        {
            string Next() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{args[i]} needs a value");
            o = args[i] switch
            {
                "--fixtures" => o with { Fixtures = Next() },
                "--out" => o with { Out = Next() },
                "--device" => o with { Device = Next() },
                "--models" => o with { Models = Next().Split(',', StringSplitOptions.RemoveEmptyEntries).Where(m => m != "none").ToArray() },
                "--tokens" => o with { Tokens = Next().Split(',', StringSplitOptions.RemoveEmptyEntries).Select(int.Parse).ToArray() },
                "--repeats" => o with { Repeats = int.Parse(Next()) },
                "--tf32" => o with { Precision = GemmPrecision.TensorFloat32 },
                "--precision" => o with
                {
                    Precision = GpuBackend.TryParsePrecision(Next(), out var p) ? p
                        : throw new ArgumentException($"--precision takes f32, tf32 or bf16, not '{args[i]}'"),
                },
                "--profile" => o with { Profile = true },
                "--profile-tokens" => o with { Profile = true, ProfileTokens = Next().Split(',', StringSplitOptions.RemoveEmptyEntries).Select(int.Parse).ToArray() },
                "--layers" => o with { Layers = int.Parse(Next()) },
                "--plan-memory" => o with { PlanMemory = true },
                "--softmax-warp-rows" => o with { SoftmaxWarpRows = true },
                "--table-parameters" => o with { TableParameters = true },
                "--softmax-register-rows" => o with { SoftmaxRegisterRows = true },
                "--attention-blocks" => o with { AttentionBlocks = int.Parse(Next()) },
                "--all-positions" => o with { AllPositions = true },
                "--fused-attention" => o with { FusedAttention = true },
                "--tensor-core-attention" => o with { TensorCoreAttention = true },
                "--ldmatrix" => o with { MatrixLoads = true },
                "--pairs" => o with
                {
                    Pairs = Enum.TryParse<PairedKernels>(Next(), ignoreCase: true, out var pairs) && (pairs & ~PairedKernels.All) == 0 ? pairs
                        : throw new ArgumentException($"--pairs takes a comma-separated list of {string.Join(", ", Enum.GetNames<PairedKernels>())}, not '{args[i]}'"),
                },
                "--checkpointing" => o with
                {
                    CheckpointModes = Next().Split(',', StringSplitOptions.RemoveEmptyEntries).Select(c =>
                        Lxt.Checkpointing.TryParse(c, out var mode) ? mode
                        : throw new ArgumentException($"--checkpointing takes {Lxt.Checkpointing.NamesInWords}, not '{c}'")).ToArray(),
                },
                var other => throw new ArgumentException($"unknown option '{other}'"),
            };
        }
        return o;
    }
}

/// <summary>The reference's timings on an H200 (LXT 2.1 efficient mode, PyTorch 2.11, transformers 5.17, BF16, AttnLRP
/// forward + relevance to the input embeddings, median of 7 after warm-up) and its peak GPU memory.</summary>
static class Reference
{
    public const string Description = "median ms and peak GiB as given in the GPU issue";

    public static (double Ms, double GiB)? Of(string size, int tokens) => (size, tokens) switch
    {
        ("1b", 128) => (38.6, 2.6),
        ("1b", 512) => (37.9, 3.2),
        ("1b", 2048) => (36.6, 5.7),
        ("8b", 128) => (75.8, 15.5),
        ("8b", 512) => (67.8, 17.0),
        ("8b", 2048) => (139.9, 23.0),
        _ => null,
    };
}
