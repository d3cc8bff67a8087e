using System.Reflection;
using System.Text;
using System.Text.RegularExpressions;
using ILGPU;
using ILGPU.Backends;
using ILGPU.Backends.PTX;

namespace MegaNet.Verify.Gpu.Kernels;

/// <summary>
/// Turns ILGPU's 64-bit multiplies of two sign-extended 32-bit values into PTX <c>mul.wide.s32</c>.
/// </summary>
/// <remarks>
/// ILGPU 1.5.3 has no widening multiply: <c>(long)a * b</c> becomes <c>cvt.s64.s32</c> of each operand and a full
/// <c>mul.lo.s64</c>, which ptxas turns into three instructions (an unsigned wide multiply and two sign corrections;
/// perf/gpu/widen.ptx). Its inline PTX (<c>CudaAsm.Emit</c>) gives the one-instruction form but passes every operand
/// through local memory: on an H200 that kernel had a 113,944-byte stack frame and ran 4.7 times slower. So the plain
/// kernel's PTX is rewritten instead, before the driver compiles it.
/// <para>
/// The rewrite is exact: a register whose only definition in its function is <c>cvt.s64.s32</c> always holds the sign
/// extension of a 32-bit value, and its low 32 bits are that value; the product of two such values fits in 64 bits,
/// so <c>mul.wide.s32</c> of the low halves equals <c>mul.lo.s64</c> of the registers. Operands are re-read from the
/// 64-bit registers at the multiply (not from the 32-bit sources, which may have been redefined in a loop since), and
/// a register with any other definition, or a predicated multiply, is left alone.
/// </para>
/// </remarks>
internal static partial class PtxWidening
{
    // ILGPU 1.5.3 keeps a compiled kernel's constructor and entry point internal; the version is pinned
    // (Directory.Packages.props), and a build without them is refused below with a clear error, never run unchanged.
    private static readonly PropertyInfo? EntryPointProperty = typeof(CompiledKernel).GetProperty("EntryPoint", BindingFlags.Instance | BindingFlags.Public | BindingFlags.NonPublic);

    private static readonly ConstructorInfo? KernelConstructor = EntryPointProperty is null ? null : typeof(PTXCompiledKernel).GetConstructor(
        BindingFlags.Instance | BindingFlags.Public | BindingFlags.NonPublic, [typeof(Context), EntryPointProperty.PropertyType, typeof(CompiledKernel.KernelInfo), typeof(string)]);

    /// <summary>The kernel with its PTX rewritten, ready for <c>Accelerator.LoadKernel</c>.</summary>
    /// <exception cref="InvalidOperationException">Nothing to rewrite, or this ILGPU build cannot take new PTX.</exception>
    public static PTXCompiledKernel Rewrite(PTXCompiledKernel compiled, out int rewritten)
    {
        ArgumentNullException.ThrowIfNull(compiled);
        string widened = Rewrite(compiled.PTXAssembly, out rewritten);
        if (rewritten == 0)
        {
            // ILGPU's PTX changed shape (a new ILGPU version): say so rather than run a kernel the option did not change.
            throw new InvalidOperationException("GpuInlinePtx: no limb product in ILGPU's PTX had the cvt.s64.s32/mul.lo.s64 shape this rewrite expects; turn the option off.");
        }

        if (KernelConstructor is null)
        {
            throw new InvalidOperationException("GpuInlinePtx: this ILGPU build offers no way to load rewritten PTX (ILGPU 1.5.3 does); turn the option off.");
        }

        return (PTXCompiledKernel)KernelConstructor.Invoke([compiled.Context, EntryPointProperty!.GetValue(compiled), compiled.Info, widened]);
    }

    /// <summary>The rewritten PTX, and how many multiplies were rewritten.</summary>
    public static string Rewrite(string ptx, out int rewritten)
    {
        ArgumentNullException.ThrowIfNull(ptx);
        string[] lines = ptx.Split('\n');
        var output = new StringBuilder(ptx.Length + ptx.Length / 4);
        rewritten = 0;
        int start = 0;
        while (start < lines.Length)
        {
            int end = NextFunction(lines, start + 1);
            rewritten += RewriteFunction(lines, start, end, output);
            start = end;
        }

        // Split and join round-trip: no trailing newline is added or lost.
        if (output.Length > 0)
        {
            output.Length--;
        }

        return output.ToString();
    }

    // Registers are scoped to their function, so each .entry or .func is handled on its own.
    private static int NextFunction(string[] lines, int from)
    {
        for (int i = from; i < lines.Length; i++)
        {
            if (FunctionStart().IsMatch(lines[i]))
            {
                return i;
            }
        }

        return lines.Length;
    }

    private static int RewriteFunction(string[] lines, int start, int end, StringBuilder output)
    {
        // Every register written anywhere in the function, counted; what counts as written is over-approximated (any
        // register in the first operand of any instruction but stores, branches and calls), which can only leave a
        // multiply alone, never rewrite one wrongly.
        var definitions = new Dictionary<string, int>(StringComparer.Ordinal);
        var signExtended = new HashSet<string>(StringComparer.Ordinal);
        for (int i = start; i < end; i++)
        {
            if (!TryInstruction(lines[i], out string opcode, out string operands, out _))
            {
                // A scoped block on one line (inline assembly) may write any register it names.
                if (lines[i].TrimStart().StartsWith('{') && lines[i].Trim().Length > 1)
                {
                    foreach (Match m in Register().Matches(lines[i]))
                    {
                        definitions[m.Value] = definitions.GetValueOrDefault(m.Value) + 2;
                    }
                }

                continue;
            }

            if (opcode.StartsWith("st.", StringComparison.Ordinal) || opcode.StartsWith("red.", StringComparison.Ordinal)
                || opcode.StartsWith("bra", StringComparison.Ordinal) || opcode.StartsWith("ret", StringComparison.Ordinal)
                || opcode.StartsWith("exit", StringComparison.Ordinal) || opcode.StartsWith("bar", StringComparison.Ordinal)
                || opcode.StartsWith("membar", StringComparison.Ordinal) || opcode.StartsWith("fence", StringComparison.Ordinal))
            {
                continue;
            }

            if (opcode.StartsWith("call", StringComparison.Ordinal))
            {
                // A call writes its return operand: count every register it names.
                foreach (Match m in Register().Matches(operands))
                {
                    definitions[m.Value] = definitions.GetValueOrDefault(m.Value) + 2;
                }

                continue;
            }

            string first = FirstOperand(operands);
            foreach (Match m in Register().Matches(first))
            {
                definitions[m.Value] = definitions.GetValueOrDefault(m.Value) + 1;
            }

            if (opcode == "cvt.s64.s32" && Register().Match(first) is { Success: true } d && d.Value == first.Trim())
            {
                signExtended.Add(d.Value);
            }
        }

        int rewritten = 0;
        for (int i = start; i < end; i++)
        {
            string line = lines[i];
            if (TryInstruction(line, out string opcode, out string operands, out bool predicated) && !predicated && opcode == "mul.lo.s64")
            {
                string[] parts = operands.TrimEnd(';', ' ', '\t', '\r').Split(',', StringSplitOptions.TrimEntries);
                if (parts.Length == 3 && IsSignExtended(parts[1], signExtended, definitions) && IsSignExtended(parts[2], signExtended, definitions))
                {
                    string indent = line[..(line.Length - line.TrimStart().Length)];
                    output.Append(indent).Append("{ .reg .b32 %mnw<2>; cvt.u32.u64 %mnw0, ").Append(parts[1])
                        .Append("; cvt.u32.u64 %mnw1, ").Append(parts[2]).Append("; mul.wide.s32 ").Append(parts[0])
                        .Append(", %mnw0, %mnw1; }").Append(line.EndsWith('\r') ? "\r\n" : "\n");
                    rewritten++;
                    continue;
                }
            }

            output.Append(line).Append('\n');
        }

        return rewritten;
    }

    private static bool IsSignExtended(string register, HashSet<string> signExtended, Dictionary<string, int> definitions) =>
        signExtended.Contains(register) && definitions.GetValueOrDefault(register) == 1;

    // An instruction line: optional predicate guard, opcode, operands. Directives, labels, braces and comments are not.
    private static bool TryInstruction(string line, out string opcode, out string operands, out bool predicated)
    {
        opcode = operands = "";
        predicated = false;
        string text = line.Trim();
        int comment = text.IndexOf("//", StringComparison.Ordinal);
        if (comment >= 0)
        {
            text = text[..comment].TrimEnd();
        }

        if (text.Length == 0 || text[0] is '.' or '{' or '}' || text.EndsWith(':'))
        {
            return false;
        }

        if (text[0] == '@')
        {
            predicated = true;
            int guard = text.IndexOfAny([' ', '\t']);
            if (guard < 0)
            {
                return false;
            }

            text = text[guard..].TrimStart();
        }

        int space = text.IndexOfAny([' ', '\t']);
        opcode = space < 0 ? text.TrimEnd(';') : text[..space];
        operands = space < 0 ? "" : text[space..].Trim();
        return true;
    }

    // The first operand, braces (vector operands) and all.
    private static string FirstOperand(string operands)
    {
        if (operands.StartsWith('{'))
        {
            int close = operands.IndexOf('}', StringComparison.Ordinal);
            return close < 0 ? operands : operands[..(close + 1)];
        }

        int comma = operands.IndexOf(',', StringComparison.Ordinal);
        return (comma < 0 ? operands : operands[..comma]).TrimEnd(';');
    }

    [GeneratedRegex(@"^\s*(\.visible\s+|\.weak\s+|\.extern\s+)*\.(entry|func)\b")]
    private static partial Regex FunctionStart();

    [GeneratedRegex(@"%[A-Za-z_$][A-Za-z0-9_$]*")]
    private static partial Regex Register();
}
