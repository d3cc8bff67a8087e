using System.Runtime.InteropServices;

namespace MegaNet.Store;

/// <summary>
/// Replaces a file by renaming a flushed temporary file over it, then flushes the directory, so that after a power
/// loss the directory names the new file (or, had the rename not reached the disk, the old one whole).
/// </summary>
/// <remarks>
/// A rename changes the directory, not the file: flushing the file's data makes its contents durable, but on Linux
/// the new name is durable only once the directory is flushed too (fsync(2) on the directory). Without it a crash of
/// the machine (not of the process: <c>kill -9</c> leaves the page cache to the kernel) could bring back the old
/// manifest after the checkpoint segments it names were deleted. Windows has no directory flush; there
/// <see cref="File.Move(string, string, bool)"/> alone is used.
/// </remarks>
internal static partial class DurableRename
{
    /// <summary>Renames <paramref name="temp"/> (already flushed) over <paramref name="path"/> and flushes the
    /// directory that holds them.</summary>
    /// <exception cref="IOException">The rename or the directory flush failed; the message names the directory.</exception>
    public static void Replace(string temp, string path)
    {
        File.Move(temp, path, overwrite: true);
        if (OperatingSystem.IsWindows())
        {
            return;
        }

        string directory = Path.GetDirectoryName(Path.GetFullPath(path))!;
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
        }
        finally
        {
            _ = Close(fd);
        }
    }

    private static IOException Error(string what, string directory)
    {
        int errno = Marshal.GetLastPInvokeError();
        return new IOException($"Cannot {what} the directory '{directory}' to make a rename durable: {Marshal.GetPInvokeErrorMessage(errno)} (errno {errno}).", errno);
    }

    [LibraryImport("libc", EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int Open(string path, int flags, int mode);

    [LibraryImport("libc", EntryPoint = "fsync", SetLastError = true)]
    private static partial int Fsync(int fd);

    [LibraryImport("libc", EntryPoint = "close", SetLastError = true)]
    private static partial int Close(int fd);
}
