// Assembly attributes: the property tests exercise the internal GEMM directly.
using System.Runtime.CompilerServices;

[assembly: InternalsVisibleTo("Lxt.PropertyTests")]
