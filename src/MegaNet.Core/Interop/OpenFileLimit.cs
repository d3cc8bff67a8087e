using System.Runtime.InteropServices;

namespace MegaNet.Core.Interop;

/// <summary>
/// The process's open-file limit (the soft <c>RLIMIT_NOFILE</c>). The .NET runtime raises the soft limit to the hard
/// one as the process starts, so in a .NET process this is the hard limit it was started with (<c>ulimit -Hn</c>), not
/// the shell's <c>ulimit -n</c> (measured: started with soft 520 and hard 4,096, a node read 4,096). Every socket holds a descriptor,
/// and a process that runs out of them cannot open a file, load an assembly or accept a connection: the .NET runtime
/// then aborts ("Out of memory."). Servers size their connection caps below it.
/// </summary>
public static partial class OpenFileLimit
{
    /// <summary>The soft limit in force (the hard one, once the runtime has raised it), or null where there is none or it
    /// cannot be read (Windows, or unlimited).</summary>
    public static long? Current()
    {
        int resource = OperatingSystem.IsLinux() ? 7 : OperatingSystem.IsMacOS() || OperatingSystem.IsFreeBSD() ? 8 : -1;
        if (resource < 0 || GetRLimit(resource, out RLimit limit) != 0 || limit.Current >= long.MaxValue)
        {
            return null;
        }

        return (long)limit.Current;
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct RLimit
    {
        public ulong Current;
        public ulong Maximum;
    }

    [LibraryImport("libc", EntryPoint = "getrlimit", SetLastError = true)]
    private static partial int GetRLimit(int resource, out RLimit limit);
}
