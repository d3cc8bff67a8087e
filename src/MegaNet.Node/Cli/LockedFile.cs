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

    /// <summary>Takes the lock of <paramref name="path"/> (its directory created if missing), waiting up to 30 s for a
    /// command that holds it (<paramref name="holder"/>, in the error when it does not let go).</summary>
    public static async Task<LockedFile> OpenAsync(string path, string holder, CancellationToken cancellationToken)
    {
        string full = System.IO.Path.GetFullPath(path);
        Directory.CreateDirectory(System.IO.Path.GetDirectoryName(full)!);
        for (int attempt = 0; ; attempt++)
        {
            try
            {
                return new LockedFile(full, new FileStream(full + ".lock", FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None));
            }
            catch (IOException e) when (IsLocked(e) && attempt < 300)
            {
                // Another command holds it while it reads or rewrites the file: milliseconds.
                await Task.Delay(100, cancellationToken);
            }
            catch (IOException e) when (IsLocked(e))
            {
                throw new CliException($"{full}.lock stayed locked for 30 s: {holder} is using {path} ({e.Message}).");
            }
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
            using (var stream = new FileStream(temporary, FileMode.Create, FileAccess.Write, FileShare.None))
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
