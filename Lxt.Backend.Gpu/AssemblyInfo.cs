// Assembly attributes: the property tests check the cuBLAS call planning directly, since CI has no GPU.
using System.Runtime.CompilerServices;

[assembly: InternalsVisibleTo("Lxt.PropertyTests")]
