namespace Lxt.Import;

/// <summary>Element types supported by the safetensors reader (the safetensors names, upper case).</summary>
public enum TensorDType
{
    F64,
    F32,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

public static class TensorDTypeExtensions
{
    /// <summary>Size of one element in bytes.</summary>
    public static int ElementSize(this TensorDType dtype) => dtype switch
    {
        TensorDType.F64 or TensorDType.I64 => 8,
        TensorDType.F32 or TensorDType.I32 => 4,
        TensorDType.F16 or TensorDType.BF16 or TensorDType.I16 => 2,
        TensorDType.I8 or TensorDType.U8 or TensorDType.Bool => 1,
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "Unknown tensor dtype."),
    };

    /// <summary>True for F64, F32, F16 and BF16.</summary>
    public static bool IsFloatingPoint(this TensorDType dtype) =>
        dtype is TensorDType.F64 or TensorDType.F32 or TensorDType.F16 or TensorDType.BF16;

    /// <summary>The string used for this dtype in a safetensors header ("F32", "BF16", "BOOL", …).</summary>
    public static string ToSafetensorsString(this TensorDType dtype) => dtype switch
    {
        TensorDType.F64 => "F64",
        TensorDType.F32 => "F32",
        TensorDType.F16 => "F16",
        TensorDType.BF16 => "BF16",
        TensorDType.I64 => "I64",
        TensorDType.I32 => "I32",
        TensorDType.I16 => "I16",
        TensorDType.I8 => "I8",
        TensorDType.U8 => "U8",
        TensorDType.Bool => "BOOL",
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "Unknown tensor dtype."),
    };

    /// <summary>Parses a safetensors dtype string (exact, case-sensitive, as the format specifies).</summary>
    public static bool TryParseSafetensors(string? text, out TensorDType dtype)
    {
        switch (text)
        {
            case "F64": dtype = TensorDType.F64; return true;
            case "F32": dtype = TensorDType.F32; return true;
            case "F16": dtype = TensorDType.F16; return true;
            case "BF16": dtype = TensorDType.BF16; return true;
            case "I64": dtype = TensorDType.I64; return true;
            case "I32": dtype = TensorDType.I32; return true;
            case "I16": dtype = TensorDType.I16; return true;
            case "I8": dtype = TensorDType.I8; return true;
            case "U8": dtype = TensorDType.U8; return true;
            case "BOOL": dtype = TensorDType.Bool; return true;
            default: dtype = default; return false;
        }
    }
}
