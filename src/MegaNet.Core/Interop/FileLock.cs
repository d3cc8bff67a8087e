namespace MegaNet.Core.Interop;

/// <summary>What an <see cref="IOException"/> from opening a file with <see cref="FileShare.None"/> means.</summary>
public static class FileLock
{
    /// <summary>True when another process (or another open in this one) holds the file: .NET takes
    /// <see cref="FileShare.None"/> as an advisory flock(LOCK_EX) on Unix (EWOULDBLOCK: 11 on Linux, 35 on macOS and
    /// the BSDs) and as a sharing or lock violation on Windows.</summary>
    public static bool IsContention(IOException e)
    {
        ArgumentNullException.ThrowIfNull(e);
        return OperatingSystem.IsWindows() ? (e.HResult & 0xFFFF) is 32 or 33 // ERROR_SHARING_VIOLATION, ERROR_LOCK_VIOLATION
            : e.HResult == (OperatingSystem.IsLinux() ? 11 : 35);
    }
}
