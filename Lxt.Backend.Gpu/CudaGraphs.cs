// CUDA graphs through the driver API: the work queued on the backend's stream between BeginCapture and EndCapture is
// recorded as a graph, instantiated once and launched again on every replay with one driver call.
using System.Runtime.InteropServices;
using Lxt.Graph;

namespace Lxt.Backend.Gpu;

internal static class CudaDriver
{
    const string Library = "libcuda.so.1";

    /// <summary>CUstreamCaptureMode: relaxed lets other threads make unrelated driver calls while capturing.</summary>
    public const int CaptureModeRelaxed = 2;

    [DllImport(Library, EntryPoint = "cuStreamBeginCapture_v2", ExactSpelling = true)]
    public static extern int StreamBeginCapture(IntPtr stream, int mode);

    [DllImport(Library, EntryPoint = "cuStreamEndCapture", ExactSpelling = true)]
    public static extern int StreamEndCapture(IntPtr stream, out IntPtr graph);

    [DllImport(Library, EntryPoint = "cuGraphInstantiateWithFlags", ExactSpelling = true)]
    public static extern int GraphInstantiate(out IntPtr exec, IntPtr graph, ulong flags);

    [DllImport(Library, EntryPoint = "cuGraphLaunch", ExactSpelling = true)]
    public static extern int GraphLaunch(IntPtr exec, IntPtr stream);

    [DllImport(Library, EntryPoint = "cuGraphExecDestroy", ExactSpelling = true)]
    public static extern int GraphExecDestroy(IntPtr exec);

    [DllImport(Library, EntryPoint = "cuGraphDestroy", ExactSpelling = true)]
    public static extern int GraphDestroy(IntPtr graph);

    public static void Check(int status, string function)
    {
        if (status != 0) throw new LxtException($"CUDA {function} failed with CUresult {status}");
    }
}

/// <summary>An instantiated CUDA graph of one recorded run, launched on the stream it was captured from.</summary>
internal sealed class CudaRecording(GpuBackend owner, IntPtr graph, IntPtr exec, IntPtr stream) : IRecordedRun
{
    IntPtr graph = graph, exec = exec;

    public void Replay()
    {
        ObjectDisposedException.ThrowIf(exec == IntPtr.Zero, this);
        owner.Bind();
        CudaDriver.Check(CudaDriver.GraphLaunch(exec, stream), "cuGraphLaunch");
    }

    public void Dispose()
    {
        if (exec == IntPtr.Zero) return;
        owner.Bind();
        CudaDriver.GraphExecDestroy(exec);
        CudaDriver.GraphDestroy(graph);
        exec = graph = IntPtr.Zero;
    }
}
