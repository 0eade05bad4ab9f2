using Lxt.Benchmarks;

// Usage: dotnet run -c Release --project benchmarks -- <name> [options]
if (args.Length == 0 || args[0] is "-h" or "--help" or "help")
{
    Usage();
    return 0;
}

var rest = args.Skip(1).ToArray();
switch (args[0].ToLowerInvariant())
{
    case "sgemm":
        return SgemmBench.Run(rest);
    case "llama":
        return LlamaBench.Run(rest);
    case "checkpointing":
        return CheckpointingBench.Run(rest);
    case "llama-memory": // child process of `llama`: one explanation, then its peak resident memory
        return LlamaBench.Run(rest, memoryChild: true);
    default:
        Console.Error.WriteLine($"unknown benchmark '{args[0]}'");
        Usage();
        return 2;
}

static void Usage()
{
    Console.WriteLine("usage: Lxt.Benchmarks <benchmark> [options]");
    Console.WriteLine("benchmarks:");
    Console.WriteLine("  sgemm [--threads N] [--sizes 512,1024,2048] [--reps R]");
    Console.WriteLine("        FP32 FMA peak of one core, Lxt SGEMM vs OpenBLAS cblas_sgemm (default 1 thread)");
    Console.WriteLine("  llama [--threads 1] [--layers 8 --hidden 1024 --intermediate 2816 --heads 16 --kv-heads 4 --tokens 256 --vocab 32000]");
    Console.WriteLine("        [--reps 5] [--profile] [--no-torch] [--torch-script PATH] [--attention-blocks 512] [--all-positions]");
    Console.WriteLine("        AttnLRP end to end on a random Llama beside PyTorch (../shared/bench/torch_llama_lrp.py), peak memory, op profile;");
    Console.WriteLine("        over more tokens than --attention-blocks, also with every attention whole, and the ratio; without");
    Console.WriteLine("        --all-positions, also with every value computed at every position, and the ratio");
    Console.WriteLine("  checkpointing [--layers 2 --hidden 2048 --intermediate 8192 --heads 32 --kv-heads 8 --tokens 512 --vocab 1000]");
    Console.WriteLine("        [--threads 0] [--reps 2] [--mode none|layers|sqrt|products ...]");
    Console.WriteLine("        AttnLRP on the CPU backend: peak intermediate bytes and time per checkpointing mode, relevance against the first");
}
