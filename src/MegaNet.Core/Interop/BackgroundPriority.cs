using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace MegaNet.Core.Interop;

/// <summary>
/// Lowers the calling thread's scheduling priority, for threads that do bulk work nobody waits on (a checkpoint's
/// writes): when the cores are busy, the threads that answer requests run first. .NET's
/// <see cref="Thread.Priority"/> does nothing on Linux, so there this sets the thread's nice value (Linux keeps one
/// per thread) to <see cref="Nice"/>. A thread cannot raise its priority back without privileges, so only call this on
/// a thread of your own that does nothing else.
/// </summary>
public static partial class BackgroundPriority
{
    /// <summary>The nice value a lowered thread gets on Linux: a tenth of a normal thread's share of a busy core
    /// (scheduler weight 110 against 1,024), not starved.</summary>
    public const int Nice = 10;

    /// <summary>Lowers the calling thread: nice <see cref="Nice"/> on Linux (unless it is that low already),
    /// <see cref="ThreadPriority.BelowNormal"/> elsewhere. True when the operating system took it (false on a platform that ignores it, or where the call
    /// failed); the thread runs on either way.</summary>
    public static bool LowerCurrentThread()
    {
        if (!OperatingSystem.IsLinux())
        {
            try
            {
                Thread.CurrentThread.Priority = ThreadPriority.BelowNormal;
                return OperatingSystem.IsWindows();
            }
            catch (ThreadStateException)
            {
                return false;
            }
        }

        // A thread already that low (a node started under nice) stays as it is: anything else would raise it.
        if (CurrentThreadNice() is >= Nice)
        {
            return true;
        }

        try
        {
            // PRIO_PROCESS with a thread id: on Linux the nice value is a thread's own (setpriority(2), BUGS).
            return setpriority(PrioProcess, gettid(), Nice) == 0;
        }
        catch (EntryPointNotFoundException)
        {
            // A C library without gettid (glibc before 2.30).
            return false;
        }
    }

    /// <summary>The calling thread's nice value on Linux (tests; null elsewhere or where it cannot be read).</summary>
    public static int? CurrentThreadNice()
    {
        if (!OperatingSystem.IsLinux())
        {
            return null;
        }

        // getpriority can return -1 as a value; the thread's stat file cannot be misread. Field 19 is the nice value,
        // counted after the command name's closing parenthesis (the name may hold spaces).
        try
        {
            string stat = File.ReadAllText("/proc/thread-self/stat");
            string[] fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
            return fields.Length > 19 - 3 && int.TryParse(fields[19 - 3], out int nice) ? nice : null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // No /proc (a container without it): unknown. Never thrown at the I/O threads that call this first.
            return null;
        }
    }

    private const int PrioProcess = 0;

    [LibraryImport("libc", EntryPoint = "gettid")]
    [UnmanagedCallConv(CallConvs = [typeof(CallConvCdecl)])]
    private static partial int gettid();

    [LibraryImport("libc", EntryPoint = "setpriority", SetLastError = true)]
    [UnmanagedCallConv(CallConvs = [typeof(CallConvCdecl)])]
    private static partial int setpriority(int which, int who, int prio);
}
