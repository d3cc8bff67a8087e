using System.Runtime.InteropServices;

namespace MegaNet.Core.Interop;

/// <summary>
/// fsync(2) on a directory. A rename changes the directory, not the file: flushing a file's data makes its contents
/// durable, but on Linux a new name is durable only once its directory is flushed too, so after a crash of the machine
/// (not of the process: <c>kill -9</c> leaves the page cache to the kernel) the old name, or none, could come back.
/// Windows has no directory flush; there this does nothing.
/// </summary>
public static partial class DirectoryFlush
{
    /// <summary>Each directory flushed, after its flush (tests: a kill -9 keeps what was never flushed, so only this
    /// tells whether the store flushes where it makes names).</summary>
    internal static event Action<string>? Flushed;

    /// <summary>Flushes <paramref name="directory"/>.</summary>
    /// <exception cref="IOException">The directory cannot be opened or flushed; the message names it.</exception>
    public static void Flush(string directory)
    {
        ArgumentNullException.ThrowIfNull(directory);
        if (OperatingSystem.IsWindows())
        {
            return;
        }

        int fd = Open(directory, 0 /* O_RDONLY: enough to fsync a directory */, 0);
        if (fd < 0)
        {
            throw Error("open", directory);
        }

        try
        {
            if (Fsync(fd) != 0)
            {
                throw Error("flush", directory);
            }

            Flushed?.Invoke(directory);
        }
        finally
        {
            _ = Close(fd);
        }
    }

    /// <summary>Creates <paramref name="directory"/> and any missing parents, owner-only (0700) on Unix, flushing the parent
    /// of each one created (from the top down), so that the new names survive a crash of the machine: files made in a
    /// directory whose own name never reached the disk are lost with it, however well their contents were flushed. The
    /// store's directories are made here, and they hold every envelope, recipient address and sending key: with the
    /// umask's mode (0755 as a rule) any local user could list them and read what FASTER writes in them.</summary>
    /// <exception cref="IOException">A directory cannot be created or flushed; the message names it.</exception>
    public static void CreateDirectory(string directory)
    {
        ArgumentNullException.ThrowIfNull(directory);
        PrivateFile.CreateDirectory(directory, flush: true);
    }

    /// <summary>fsync(2) on an open descriptor the process was given (standard output): 0, or the errno.</summary>
    public static int FlushDescriptor(int fd) =>
        OperatingSystem.IsWindows() ? 0 : Fsync(fd) == 0 ? 0 : Marshal.GetLastPInvokeError();

    private static IOException Error(string what, string directory)
    {
        int errno = Marshal.GetLastPInvokeError();
        return new IOException($"Cannot {what} the directory '{directory}' to make a file name in it durable: {Marshal.GetPInvokeErrorMessage(errno)} (errno {errno}).", errno);
    }

    [LibraryImport("libc", EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int Open(string path, int flags, int mode);

    [LibraryImport("libc", EntryPoint = "fsync", SetLastError = true)]
    private static partial int Fsync(int fd);

    [LibraryImport("libc", EntryPoint = "close", SetLastError = true)]
    private static partial int Close(int fd);
}
