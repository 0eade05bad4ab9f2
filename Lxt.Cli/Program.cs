// Program: the lxt command table, usage texts, and the one place where errors become exit codes
// (0 success, 1 a failed run with one "error: ..." line, 2 wrong arguments with the usage).
using Lxt.Cli.Commands;
using Spectre.Console;

namespace Lxt.Cli;

public static class Program
{
    /// <summary>Every subcommand; a new one is a class implementing <see cref="ICommand"/> and a line here.</summary>
    public static IReadOnlyList<ICommand> Commands { get; } =
    [
        new ExplainCommand(),
        new NodesCommand(),
        new PlanCommand(),
        new EvaluateCommand(),
        new GenerateCommand(),
        new NeuronsCommand(),
        new ActivationsCommand(),
        new CheckCommand(),
        new DemoCommand(),
    ];

    public static int Main(string[] args) => Run(args, Console.Out, Console.Error);

    /// <summary>Runs one command line, writing to the given writers; returns the exit code.</summary>
    public static int Run(string[] args, TextWriter stdout, TextWriter stderr)
    {
        if (args.Length == 0 || args[0] is "--help" or "-h" or "help")
        {
            (args.Length == 0 ? stderr : stdout).Write(MainUsage());
            return args.Length == 0 ? 2 : 0;
        }
        var command = Commands.FirstOrDefault(c => c.Name == args[0]);
        if (command is null)
        {
            stderr.WriteLine($"error: unknown command '{args[0]}'");
            stderr.Write(MainUsage());
            return 2;
        }
        var rest = args[1..];
        if (rest.Contains("--help") || rest.Contains("-h"))
        {
            stdout.Write(Usage(command));
            return 0;
        }
        try
        {
            var parsed = Arguments.Parse(rest, command.Options);
            return command.Execute(parsed, new CommandContext(stdout, stderr, Terminal.Create(stdout)));
        }
        catch (UsageException e)
        {
            stderr.WriteLine($"error: {OneLine(e.Message)}");
            stderr.Write(Usage(command));
            return 2;
        }
        catch (Exception e) when (e is Lxt.Graph.LxtException or IOException or UnauthorizedAccessException)
        {
            stderr.WriteLine($"error: {OneLine(e.Message)}");
            return 1;
        }
        catch (OperationCanceledException)
        {
            stderr.WriteLine("error: cancelled");
            return 1;
        }
        catch (Exception e)
        {
            // not an error Lxt raises on purpose: still one line, with the type to report it by
            stderr.WriteLine($"error: {OneLine(e.Message)} ({e.GetType().Name})");
            return 1;
        }
    }

    private static string OneLine(string message) =>
        string.Join(" ", message.Split('\n', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries));

    public static string MainUsage()
    {
        var w = new StringWriter();
        w.WriteLine("lxt: explain transformer predictions with Layer-wise Relevance Propagation (AttnLRP)");
        w.WriteLine();
        w.WriteLine("usage: lxt COMMAND [OPTIONS]");
        w.WriteLine();
        w.WriteLine("commands:");
        int width = Commands.Max(c => c.Name.Length);
        foreach (var c in Commands) w.WriteLine($"  {c.Name.PadRight(width)}  {c.Summary}");
        w.WriteLine();
        w.WriteLine("'lxt COMMAND --help' lists a command's options.");
        return w.ToString();
    }

    public static string Usage(ICommand command)
    {
        var w = new StringWriter();
        w.WriteLine($"usage: lxt {command.Name} {command.Synopsis}");
        w.WriteLine();
        w.WriteLine(command.Summary);
        w.WriteLine();
        w.WriteLine("options:");
        int width = command.Options.Max(o => o.ToString().Length);
        foreach (var o in command.Options) w.WriteLine($"  {o.ToString().PadRight(width)}  {o.Help}");
        w.WriteLine($"  {"--help".PadRight(width)}  show this text");
        return w.ToString();
    }
}
