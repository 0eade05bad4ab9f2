// ICommand: one subcommand of lxt — its name, options and what it does. Program.Commands lists them all.
namespace Lxt.Cli.Commands;

/// <summary>Where a command writes: results to <see cref="Out"/>, diagnostics to <see cref="Error"/>.</summary>
public sealed record CommandContext(TextWriter Out, TextWriter Error, Spectre.Console.IAnsiConsole Console);

public interface ICommand
{
    /// <summary>The word after "lxt" ("explain").</summary>
    string Name { get; }
    /// <summary>One line for "lxt --help".</summary>
    string Summary { get; }
    /// <summary>The synopsis after "lxt NAME" in the usage text.</summary>
    string Synopsis { get; }
    IReadOnlyList<OptionSpec> Options { get; }
    /// <summary>Runs the command; returns the exit code. Wrong arguments raise <see cref="UsageException"/>.</summary>
    int Execute(Arguments args, CommandContext context);
}
