// DeviceOption: the --device and --threads options of every command that runs a model, and the one table from
// --device names to Lxt.Device (a new backend is one line in it).
namespace Lxt.Cli;

public static class DeviceOption
{
    /// <summary>The names <c>--device</c> accepts, the device each selects and how the usage describes it.</summary>
    public static IReadOnlyList<(string Name, Device Device, string Description)> Devices { get; } =
    [
        ("cpu", Device.Cpu, "float32 on the CPU"),
        ("reference", Device.Reference, "float64 reference interpreter"),
        ("cuda", Device.Cuda, "float32 on an NVIDIA GPU (ILGPU kernels + cuBLAS)"),
        ("ilgpu-cpu", Device.IlgpuCpu, "the GPU kernels on ILGPU's CPU accelerator"),
    ];

    public static IReadOnlyList<string> Names => Devices.Select(d => d.Name).ToArray();

    /// <summary>The <c>--device</c> option.</summary>
    public static OptionSpec DeviceSpec { get; } = new("device", "DEVICE",
        $"where the model runs: {string.Join(", ", Devices.Select(d => $"{d.Name} ({d.Description})"))}; default {Devices[0].Name}");

    /// <summary>The <c>--threads</c> option.</summary>
    public static OptionSpec ThreadsSpec { get; } = new("threads", "N", "CPU threads (default: all cores)");

    /// <summary>Both options, for a command's option list.</summary>
    public static IReadOnlyList<OptionSpec> Specs { get; } = [DeviceSpec, ThreadsSpec];

    /// <summary>The device <c>--device</c> names, or <paramref name="fallback"/> when it is not given.</summary>
    public static Device Parse(Arguments args, Device fallback = Device.Cpu)
    {
        if (args.String("device") is not { } name) return fallback;
        foreach (var d in Devices)
            if (d.Name == name) return d.Device;
        throw new UsageException($"option '--device' takes one of {string.Join(", ", Names)}, not '{name}'");
    }

    /// <summary>CPU threads: <c>--threads</c>, 0 (all cores) when not given.</summary>
    public static int Threads(Arguments args) => args.Int("threads", min: 0) ?? 0;

    /// <summary>The name of a device as <c>--device</c> spells it.</summary>
    public static string NameOf(Device device) =>
        Devices.FirstOrDefault(d => d.Device == device).Name ?? device.ToString().ToLowerInvariant();
}
