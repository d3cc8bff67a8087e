namespace MegaNet.Node.Cli;

/// <summary>
/// A small file the CLI rewrites whole (the audit's tree heads, an identity's contacts), held under an advisory lock on
/// <c>FILE.lock</c> beside it from reading to saving, so that two commands changing it at once do not lose one change.
/// Readers that only read need no lock: a save replaces the file by a rename, so they see the old file or the new.
/// </summary>
internal sealed class LockedFile : IDisposable
{
    private readonly FileStream _lock;

    private LockedFile(string path, FileStream lockFile) => (Path, _lock) = (path, lockFile);

    /// <summary>The file, as a full path.</summary>
    public string Path { get; }

    /// <summary>How long a command waits for another to let go of the lock.</summary>
    private static readonly TimeSpan RetryDelay = TimeSpan.FromMilliseconds(100);

    private const int Attempts = 300;

    /// <summary>Takes the lock of <paramref name="path"/> (its directory created if missing), waiting up to 30 s for a
    /// command that holds it (<paramref name="holder"/>, in the error when it does not let go).</summary>
    public static async Task<LockedFile> OpenAsync(string path, string holder, CancellationToken cancellationToken)
    {
        for (int attempt = 1; ; attempt++)
        {
            if (TryOpen(path, holder, attempt) is { } file)
            {
                return file;
            }

            // Another command holds it while it reads or rewrites the file: milliseconds.
            await Task.Delay(RetryDelay, cancellationToken);
        }
    }

    /// <summary><see cref="OpenAsync"/> for code that cannot wait asynchronously.</summary>
    public static LockedFile Open(string path, string holder)
    {
        for (int attempt = 1; ; attempt++)
        {
            if (TryOpen(path, holder, attempt) is { } file)
            {
                return file;
            }

            Thread.Sleep(RetryDelay);
        }
    }

    private static LockedFile? TryOpen(string path, string holder, int attempt)
    {
        string full = System.IO.Path.GetFullPath(path);
        Directory.CreateDirectory(System.IO.Path.GetDirectoryName(full)!);
        try
        {
            return new LockedFile(full, new FileStream(full + ".lock", FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None));
        }
        catch (IOException e) when (IsLocked(e) && attempt < Attempts)
        {
            return null;
        }
        catch (IOException e) when (IsLocked(e))
        {
            throw new CliException($"{full}.lock stayed locked for 30 s: {holder} is using {path} ({e.Message}).");
        }
    }

    // .NET takes FileShare.None as flock(LOCK_EX) on Unix (EWOULDBLOCK, 11, when held elsewhere; advisory: it binds
    // programs that lock the file too, as every command writing these files does) and as a sharing violation on Windows.
    private static bool IsLocked(IOException e) => e.HResult is 11 or unchecked((int)0x80070020);

    /// <summary>The file's text, or null when it does not exist yet.</summary>
    public string? ReadText() => File.Exists(Path) ? File.ReadAllText(Path) : null;

    /// <summary>Writes the file whole (a temporary file flushed to disk, then renamed over it): a crash leaves the old
    /// file or the new, never one cut short.</summary>
    public void Save(string text)
    {
        string temporary = $"{Path}.{Environment.ProcessId}.tmp";
        try
        {
            // Owner only, as the .seen record: who one's contacts are is one's own business (a rename would otherwise
            // bring back the umask's mode at each save, whatever the owner set).
            var options = new FileStreamOptions { Mode = FileMode.Create, Access = FileAccess.Write, Share = FileShare.None };
            if (!OperatingSystem.IsWindows())
            {
                options.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
            }

            using (var stream = new FileStream(temporary, options))
            {
                stream.Write(System.Text.Encoding.UTF8.GetBytes(text));
                stream.Flush(flushToDisk: true);
            }

            File.Move(temporary, Path, overwrite: true);
        }
        finally
        {
            File.Delete(temporary);
        }
    }

    public void Dispose() => _lock.Dispose();
}
