using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace MegaNet.Core.Interop;

/// <summary>
/// Sleeps for less than a millisecond, which .NET's own waits cannot do (<see cref="Thread.Sleep(int)"/>, timers and
/// wait handles count whole milliseconds). For waits of a few hundred microseconds that would otherwise spin.
/// </summary>
public static partial class ShortSleep
{
    /// <summary>True where the sleep is the libc <c>nanosleep</c> (Linux, macOS, FreeBSD); elsewhere
    /// <see cref="Sleep"/> only yields the processor once.</summary>
    public static bool IsSupported { get; } = OperatingSystem.IsLinux() || OperatingSystem.IsMacOS() || OperatingSystem.IsFreeBSD();

    /// <summary>Sleeps about <paramref name="microseconds"/> (0 to 999,999), plus the kernel's timer slack (50 µs by
    /// default on Linux). A signal may end it early; callers re-check their clock.</summary>
    public static unsafe void Sleep(int microseconds)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(microseconds);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(microseconds, 999_999);
        if (!IsSupported)
        {
            Thread.Yield();
            return;
        }

        // struct timespec { time_t tv_sec; long tv_nsec; }: two native-sized integers on these platforms.
        nint* request = stackalloc nint[2];
        request[0] = 0;
        request[1] = microseconds * 1000;
        _ = nanosleep(request, null);
    }

    [LibraryImport("libc")]
    [UnmanagedCallConv(CallConvs = [typeof(CallConvCdecl)])]
    private static unsafe partial int nanosleep(nint* request, nint* remaining);
}
