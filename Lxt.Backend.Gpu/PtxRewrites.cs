// Rewrites of a kernel's PTX that ILGPU gives no way to ask for, made before the kernel is loaded (GpuBackend.Compile):
// - Scalars that ILGPU keeps in local memory, moved to registers. ILGPU passes every operand of inline assembly with an
//   output (CudaAsm.Emit with `out`, CudaAsm.EmitRef) through a local variable of its own: a scalar declared
//   `.local .b8 __local_depotN[4]` (or [8]), its address moved once into a register, stored before the instruction and
//   loaded after it. ptxas keeps most of them in memory, so that each mma.sync of the tensor-core kernels came with
//   some twenty local loads and stores. Each such scalar whose address is used for nothing else becomes a register,
//   and each of its loads and stores a move.
// - Shared allocations aligned to 16 bytes, as ldmatrix needs its rows: ILGPU aligns them to their element, or 8.
// - Atomic adds into device memory as such. ILGPU reduces through generic addresses (`red.add.f32 [%rd]`), and ptxas
//   then tests each address's space and keeps a compare-exchange loop for shared memory beside the global add. The
//   rewritten kernels add atomically into device memory only (dQ, and dK and dV of grouped heads), so each becomes
//   `cvta.to.global` and `red.global.add.f32`.
using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;

namespace Lxt.Backend.Gpu;

public static class PtxRewrites
{
    static readonly Regex Depot = new(@"^\s*\.local\s+\.align\s+\d+\s+\.b8\s+(__local_depot\d+)\[(4|8)\];\s*$", RegexOptions.CultureInvariant);
    static readonly Regex Address = new(@"^\s*mov\.b64\s+(%rd\d+),\s*(__local_depot\d+);\s*$", RegexOptions.CultureInvariant);
    static readonly Regex Load = new(@"^(\s*(?:@!?%p\d+\s+)?)ld\.local\.([bfsu])(32|64)\s+(%[A-Za-z_$][\w$]*),\s*\[(%rd\d+)\];\s*$", RegexOptions.CultureInvariant);
    static readonly Regex Store = new(@"^(\s*(?:@!?%p\d+\s+)?)st\.local\.([bfsu])(32|64)\s+\[(%rd\d+)\],\s*([^,;\s]+);\s*$", RegexOptions.CultureInvariant);
    static readonly Regex Register64 = new(@"%rd\d+\b", RegexOptions.CultureInvariant);
    static readonly Regex DepotName = new(@"__local_depot\d+\b", RegexOptions.CultureInvariant);

    /// <summary>The PTX with each promotable local scalar in a register (see the file's head); a scalar whose address
    /// register is written or read by anything but its one move, its loads and its stores, or whose accesses differ in
    /// size from it, stays as it was.</summary>
    public static string PromoteLocals(string ptx)
    {
        var lines = ptx.Split('\n');
        var size = new Dictionary<string, int>();          // depot → bits
        var declared = new Dictionary<string, int>();      // depot → its declaration's line
        var named = new Dictionary<string, List<int>>();   // depot → lines naming it
        var mentions = new Dictionary<string, List<int>>(); // %rd register → lines naming it
        for (int i = 0; i < lines.Length; i++)
        {
            var depot = Depot.Match(lines[i]);
            if (depot.Success)
            {
                size[depot.Groups[1].Value] = 8 * int.Parse(depot.Groups[2].Value, CultureInfo.InvariantCulture);
                declared[depot.Groups[1].Value] = i;
            }
            foreach (Match m in DepotName.Matches(lines[i])) At(named, m.Value).Add(i);
            foreach (Match m in Register64.Matches(lines[i]))
            {
                var at = At(mentions, m.Value);
                if (at.Count == 0 || at[^1] != i) at.Add(i);
            }
        }
        var promoted = new Dictionary<string, (string Name, int Bits)>(); // address register → its scalar's register
        int count = 0;
        foreach (var (depot, bits) in size)
        {
            // the declaration and one move of the address into a register, nothing else naming the depot
            if (named[depot].Count != 2) continue;
            int move = named[depot].Find(i => i != declared[depot]);
            var address = Address.Match(lines[move]);
            if (!address.Success || address.Groups[2].Value != depot) continue;
            var register = address.Groups[1].Value;
            bool onlyAccesses = mentions[register].TrueForAll(i => i == move || AccessBits(lines[i], register) == bits);
            if (!onlyAccesses) continue;
            promoted[register] = ($"%lxl{count++}", bits);
            lines[declared[depot]] = $"\t.reg .b{bits} {promoted[register].Name};";
            lines[move] = "";
        }
        if (promoted.Count == 0) return ptx;
        var text = new StringBuilder(ptx.Length);
        foreach (var line in lines)
        {
            var load = Load.Match(line);
            if (load.Success && promoted.TryGetValue(load.Groups[5].Value, out var from))
            {
                text.Append(load.Groups[1].Value).Append($"mov.b{from.Bits}\t{load.Groups[4].Value}, {from.Name};\n");
                continue;
            }
            var store = Store.Match(line);
            if (store.Success && promoted.TryGetValue(store.Groups[4].Value, out var to))
            {
                text.Append(store.Groups[1].Value).Append($"mov.b{to.Bits}\t{to.Name}, {BitsLiteral(store.Groups[5].Value)};\n");
                continue;
            }
            text.Append(line).Append('\n');
        }
        text.Length--; // the split's last line had no line feed after it
        return text.ToString();
    }

    /// <summary>The bits a line loads from or stores to the address in <paramref name="register"/> alone (its only
    /// mention), 0 for any other line.</summary>
    static int AccessBits(string line, string register)
    {
        var load = Load.Match(line);
        if (load.Success && load.Groups[5].Value == register && load.Groups[4].Value != register)
            return int.Parse(load.Groups[3].Value, CultureInfo.InvariantCulture);
        var store = Store.Match(line);
        if (store.Success && store.Groups[4].Value == register && store.Groups[5].Value != register)
            return int.Parse(store.Groups[3].Value, CultureInfo.InvariantCulture);
        return 0;
    }

    /// <summary>A stored operand as a move of bits takes it: a float literal (0fXXXXXXXX, 0dXXXXXXXXXXXXXXXX) as the
    /// hexadecimal integer of the same bits; registers and integers as they are.</summary>
    static string BitsLiteral(string operand) =>
        operand.Length > 2 && operand[0] == '0' && (operand[1] == 'f' || operand[1] == 'd' || operand[1] == 'F' || operand[1] == 'D')
            ? "0x" + operand[2..]
            : operand;

    static readonly Regex SharedAllocation = new(@"^(\s*\.shared\s+\.align\s+)(\d+)(\s+\.b8\s+__shared_alloca\d+\[\d+\];)", RegexOptions.Multiline | RegexOptions.CultureInvariant);

    /// <summary>The PTX with every shared allocation of the kernel aligned to at least 16 bytes.</summary>
    public static string AlignShared(string ptx) =>
        SharedAllocation.Replace(ptx, m => int.Parse(m.Groups[2].Value, CultureInfo.InvariantCulture) >= 16 ? m.Value : m.Groups[1].Value + "16" + m.Groups[3].Value);

    /// <summary>Whether every shared allocation the PTX declares starts on 16 bytes.</summary>
    public static bool SharedAligned(string ptx)
    {
        int declared = Regex.Matches(ptx, @"\.shared\s+\.align\s+\d+\s+\.b8\s+__shared_alloca\d+\[").Count;
        return SharedAllocation.Matches(ptx).Count(m => int.Parse(m.Groups[2].Value, CultureInfo.InvariantCulture) >= 16) == declared;
    }

    static readonly Regex GenericReduction = new(@"^(\s*)((?:@!?%p\d+\s+)?)red\.add\.f32\s+\[(%rd\d+)\],\s*(%f\d+);\s*$", RegexOptions.CultureInvariant);
    static readonly Regex AddressRegisters = new(@"^\s*\.reg\s+\.b64\s+%rd<\d+>;\s*$", RegexOptions.CultureInvariant);

    /// <summary>The PTX with each float32 atomic add through a generic address made an add into device memory
    /// (`cvta.to.global.u64` into a register of its own, then `red.global.add.f32`). Only for kernels that add
    /// atomically into device memory alone.</summary>
    public static string GlobalReductions(string ptx)
    {
        var lines = ptx.Split('\n');
        bool any = false;
        for (int i = 0; i < lines.Length; i++)
        {
            var m = GenericReduction.Match(lines[i]);
            if (!m.Success) continue;
            string indent = m.Groups[1].Value, guard = m.Groups[2].Value;
            lines[i] = $"{indent}{guard}cvta.to.global.u64\t%lxg, {m.Groups[3].Value};\n{indent}{guard}red.global.add.f32\t[%lxg], {m.Groups[4].Value};";
            any = true;
        }
        if (!any) return ptx;
        int declarations = Array.FindIndex(lines, l => AddressRegisters.IsMatch(l));
        if (declarations < 0)
            throw new InvalidOperationException("the PTX declares no 64-bit registers (%rd) before its atomic adds, as ILGPU 1.5 does");
        lines[declarations] += "\n\t.reg .b64\t%lxg;";
        return string.Join('\n', lines);
    }

    static List<int> At(Dictionary<string, List<int>> map, string key)
    {
        if (!map.TryGetValue(key, out var list)) map[key] = list = new List<int>();
        return list;
    }
}
