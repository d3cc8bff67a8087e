using Microsoft.Win32.SafeHandles;

namespace MegaNet.Core.Interop;

/// <summary>Advisory locks on files opened with <see cref="FileShare.None"/>, and what an <see cref="IOException"/> from
/// taking one means.</summary>
public static class FileLock
{
    /// <summary>Tries of <see cref="Take"/> before it gives up on a lock file deleted under it each time.</summary>
    private const int Attempts = 100;

    /// <summary>True when another process (or another open in this one) holds the file: .NET takes
    /// <see cref="FileShare.None"/> as an advisory flock(LOCK_EX) on Unix (EWOULDBLOCK: 11 on Linux, 35 on macOS and
    /// the BSDs) and as a sharing or lock violation on Windows.</summary>
    public static bool IsContention(IOException e)
    {
        ArgumentNullException.ThrowIfNull(e);
        return OperatingSystem.IsWindows() ? (e.HResult & 0xFFFF) is 32 or 33 // ERROR_SHARING_VIOLATION, ERROR_LOCK_VIOLATION
            : e.HResult == (OperatingSystem.IsLinux() ? 11 : 35);
    }

    /// <summary>
    /// Takes the lock file <paramref name="path"/> (opened with <paramref name="mode"/>) without waiting, and only as
    /// the file its name still gives. On Unix, opening and locking are two steps (open(2), then flock(2)): a process
    /// that deletes a lock file while holding it (<see cref="Delete"/>) can do so after another opened it and before
    /// that one locked it, which then holds a file nobody else can find, while a third creates the name anew and locks
    /// that: both would think they hold the lock. So, once locked, the name is looked up again, and a lock on a file
    /// it no longer gives is let go and taken again. With <paramref name="deletable"/> the file may then be deleted
    /// while held (<see cref="Delete"/>).
    /// </summary>
    /// <exception cref="IOException">Another holds it (<see cref="IsContention"/>), it cannot be opened (with
    /// <see cref="FileMode.Open"/>: it is gone), or it was deleted under every try.</exception>
    public static FileStream Take(string path, FileMode mode, bool deletable = false)
    {
        ArgumentNullException.ThrowIfNull(path);
        // Windows: FILE_SHARE_DELETE lets the holder delete the file, and still refuses everyone else's open (whose
        // share mode, none, does not admit the holder's read and write access).
        FileShare share = deletable && OperatingSystem.IsWindows() ? FileShare.Delete : FileShare.None;
        for (int attempt = 1; attempt <= Attempts; attempt++)
        {
            // Owner-only, as the record it guards: an empty file, but in the umask's mode it was the one file there others could read.
            FileStream held = PrivateFile.Open(path, mode, FileAccess.ReadWrite, share, bufferSize: 1);
            if (StillNamed(held.SafeFileHandle, path))
            {
                return held;
            }

            held.Dispose();
        }

        throw new IOException($"{path} was deleted each time it was locked ({Attempts} tries); something keeps deleting it.");
    }

    /// <summary>Deletes the lock file <paramref name="path"/> that <paramref name="held"/> holds (from
    /// <see cref="Take"/> with deletable), then lets it go: deleted only while held, so that no other holder of it
    /// loses it. The deletion is by name: only processes that take the lock through <see cref="Take"/> can tell
    /// they hold a file already deleted.</summary>
    public static void Delete(FileStream held, string path)
    {
        ArgumentNullException.ThrowIfNull(held);
        try
        {
            File.Delete(path);
        }
        finally
        {
            held.Dispose();
        }
    }

    /// <summary>
    /// True when <paramref name="path"/> still names the file <paramref name="held"/> is open on (the same
    /// <see cref="FileIdentity"/>: device, inode and birth), or when that cannot be told. Linux only: elsewhere it is
    /// taken as true. On Windows a file opened without FILE_SHARE_DELETE cannot be deleted, and opening is locking, so
    /// the gap does not exist there; other Unixes keep the gap (.NET has no inode there).
    /// </summary>
    public static bool StillNamed(SafeFileHandle held, string path)
    {
        ArgumentNullException.ThrowIfNull(held);
        ArgumentNullException.ThrowIfNull(path);
        if (!OperatingSystem.IsLinux() || FileIdentity.Of(held) is not { } open)
        {
            return true; // a kernel before 4.11 or a C library without statx: nothing can be told
        }

        return FileIdentity.OfPath(path) == open; // null: the name is gone
    }
}
