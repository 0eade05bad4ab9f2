// Assembly attributes: the property tests check the cuBLAS call planning directly, since CI has no GPU; ILGPU's
// generated launchers pass the internal ProgramTable to kernels.
using System.Runtime.CompilerServices;

[assembly: InternalsVisibleTo("Lxt.PropertyTests")]
[assembly: InternalsVisibleTo("ILGPURuntime")]
