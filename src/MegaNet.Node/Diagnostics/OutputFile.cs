namespace MegaNet.Node.Diagnostics;

/// <summary>
/// A file a long-running command streams into (a trace), opened before the work starts: a path that cannot be written
/// (a directory, a missing directory, no permission) is then refused in a second with one line, not after an attached
/// session. A file the command created is removed again unless something was written to it; an existing one keeps its
/// contents until then. A file written once at the end (bench's report and plot) is a <see cref="ReportFile"/>.
/// </summary>
internal sealed class OutputFile : IDisposable
{
    private readonly FileStream _stream;
    private readonly bool _existed;
    private bool _written;

    private OutputFile(string path, FileStream stream, bool existed)
    {
        FullPath = path;
        _stream = stream;
        _existed = existed;
    }

    /// <summary>The file's full path.</summary>
    public string FullPath { get; }

    /// <summary>Opens <paramref name="path"/> for writing without truncating it yet.</summary>
    /// <param name="path">The file.</param>
    /// <param name="what">What the file is, for the message (e.g. "--json", "the trace").</param>
    /// <exception cref="IOException">The file cannot be written; the message is one line naming it and why.</exception>
    public static OutputFile Open(string path, string what)
    {
        string full = FullPathOf(path, what);
        if (Directory.Exists(full))
        {
            throw new IOException($"{what} {path}: is a directory; give a file path");
        }

        bool existed = File.Exists(full);
        try
        {
            var stream = new FileStream(full, FileMode.OpenOrCreate, FileAccess.Write, FileShare.Read);
            return new OutputFile(full, stream, existed);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw CannotWrite(path, what, full, e);
        }
    }

    /// <summary><paramref name="path"/> made full; an <see cref="IOException"/> saying so where it is not a path.</summary>
    internal static string FullPathOf(string path, string what)
    {
        try
        {
            return Path.GetFullPath(path);
        }
        catch (Exception e) when (e is ArgumentException or NotSupportedException or PathTooLongException)
        {
            throw new IOException($"{what} {path}: not a usable file path ({ErrorText.Plain(e)})", e);
        }
    }

    /// <summary>The one-line error for <paramref name="e"/>, met creating or opening <paramref name="full"/>.</summary>
    internal static IOException CannotWrite(string path, string what, string full, Exception e)
    {
        string why = e switch
        {
            DirectoryNotFoundException => $"the directory {Path.GetDirectoryName(full)} does not exist",
            UnauthorizedAccessException => "permission denied",
            _ => e.Message,
        };
        return new IOException($"{what} {path}: cannot write there ({why})", e);
    }

    /// <summary>Empties the file and hands out its stream to write the output to; the file is kept from now on.</summary>
    public Stream Begin()
    {
        _written = true;
        _stream.SetLength(0);
        return _stream;
    }

    public void Dispose()
    {
        _stream.Dispose();
        if (!_written && !_existed)
        {
            try
            {
                File.Delete(FullPath);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                // Left behind empty: nothing to report over the error that ended the command.
            }
        }
    }
}
