using MegaNet.Core.Interop;

namespace MegaNet.Node.Cli;

/// <summary>
/// A small file the CLI rewrites whole (the audit's tree heads, an identity's contacts), or a directory it changes (the
/// parts of files being received), held under an advisory lock on <c>PATH.lock</c> beside it from reading to saving, so
/// that two commands changing it at once do not lose one change. Readers that only read need no lock: a save replaces
/// the file by a rename, so they see the old file or the new.
/// </summary>
internal sealed class LockedFile : IDisposable
{
    /// <summary>The pause between two tries to take a lock another command holds.</summary>
    private static readonly TimeSpan RetryDelay = TimeSpan.FromMilliseconds(100);

    /// <summary>Tries before giving up: 30 s with <see cref="RetryDelay"/>; a command holds the lock for milliseconds.</summary>
    private const int Attempts = 300;

    private readonly FileStream _lock;

    private LockedFile(string path, FileStream lockFile) => (Path, _lock) = (path, lockFile);

    /// <summary>The file, as a full path.</summary>
    public string Path { get; }

    /// <summary>Takes the lock of <paramref name="path"/> (its directory created if missing), waiting for a command
    /// that holds it (<paramref name="holder"/>, in the error when it does not let go).</summary>
    public static async Task<LockedFile> OpenAsync(string path, string holder, CancellationToken cancellationToken)
    {
        LockedFile? file;
        for (int attempt = 1; (file = TryOpen(path, holder, attempt)) is null; attempt++)
        {
            await Task.Delay(RetryDelay, cancellationToken);
        }

        return file;
    }

    /// <summary><see cref="OpenAsync"/> for code that cannot wait asynchronously.</summary>
    public static LockedFile Open(string path, string holder)
    {
        LockedFile? file;
        for (int attempt = 1; (file = TryOpen(path, holder, attempt)) is null; attempt++)
        {
            Thread.Sleep(RetryDelay);
        }

        return file;
    }

    /// <summary>Takes the lock of <paramref name="path"/> if no other command holds it now; null when one does.</summary>
    public static LockedFile? TryOpen(string path) => TryOpen(path, string.Empty, attempt: 1);

    private static LockedFile? TryOpen(string path, string holder, int attempt)
    {
        string full = System.IO.Path.GetFullPath(path);
        Directory.CreateDirectory(System.IO.Path.GetDirectoryName(full)!);
        try
        {
            // Owner-only, as the file it guards (contacts, tree heads): not the umask's mode.
            return new LockedFile(full, PrivateFile.Open(full + ".lock", FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None));
        }
        catch (IOException e) when (FileLock.IsContention(e) && attempt < Attempts)
        {
            return null;
        }
        catch (IOException e) when (FileLock.IsContention(e))
        {
            throw new CliException($"{full}.lock stayed locked for {(Attempts * RetryDelay).TotalSeconds:0} s: {holder} is using {path} ({e.Message}).");
        }
    }

    /// <summary>The file's text, or null when it does not exist yet.</summary>
    public string? ReadText() => File.Exists(Path) ? File.ReadAllText(Path) : null;

    /// <summary>Writes the file whole (<see cref="PrivateFile.Write"/>: owner-only, as the .seen record, since who one's
    /// contacts are is one's own business; flushed, renamed over it, the directory flushed): a crash leaves the old file
    /// or the new, never one cut short.</summary>
    public void Save(string text) => PrivateFile.Write(Path, stream => stream.Write(System.Text.Encoding.UTF8.GetBytes(text)), replace: true);

    public void Dispose() => _lock.Dispose();
}
