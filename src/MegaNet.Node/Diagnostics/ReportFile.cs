using MegaNet.Core.Interop;

namespace MegaNet.Node.Diagnostics;

/// <summary>
/// A file a long-running command writes once, at its end (bench's <c>--json</c> and <c>--plot</c>). Its path is checked
/// when the command starts, without creating or truncating anything there, so a path that cannot be written is refused
/// in a second, not after the sweep. At the end the contents go to a temporary file in the same directory, which then
/// replaces the path in one rename: a run interrupted or failing before or while it writes leaves an earlier file at
/// the path whole, and a reader never sees it half written. An existing file is written in place instead where a rename
/// would change more than its contents or cannot be made: an empty file; one that is not a regular file (/dev/null, a
/// named pipe); one with other hard links or another owner (Linux); one in a directory where no new file can be made.
/// </summary>
internal sealed class ReportFile : IDisposable
{
    private readonly string _what;

    /// <summary>Written to directly, not replaced (see the class).</summary>
    private readonly bool _inPlace;

    /// <summary>A file that cannot seek (a named pipe, a terminal), held open from the check to the write: closed
    /// between them, a reader of a pipe (<c>cat fifo</c>) would see its end and leave, and the open at the end would
    /// then wait for a reader for ever.</summary>
    private FileStream? _held;

    private ReportFile(string fullPath, string what, bool inPlace, FileStream? held = null)
    {
        FullPath = fullPath;
        _what = what;
        _inPlace = inPlace;
        _held = held;
    }

    /// <summary>The file's full path (a symbolic link's final target, so that the link is kept).</summary>
    public string FullPath { get; }

    /// <summary>Checks that <paramref name="path"/> can be written, changing nothing there.</summary>
    /// <param name="path">The file.</param>
    /// <param name="what">What the file is, for the message (e.g. "--json").</param>
    /// <exception cref="IOException">The file cannot be written; the message is one line naming it and why.</exception>
    public static ReportFile Check(string path, string what)
    {
        string full = OutputFile.FullPathOf(path, what);
        if (Directory.Exists(full))
        {
            throw new IOException($"{what} {path}: is a directory; give a file path");
        }

        FileStream? existing = null;
        try
        {
            bool inPlace = false;
            if (File.Exists(full))
            {
                // Opened for writing, not truncated: a file the user may not write (read-only, someone else's) is not
                // replaced behind their back.
                existing = new FileStream(full, FileMode.Open, FileAccess.Write, FileShare.ReadWrite);
                if (!existing.CanSeek)
                {
                    var held = new ReportFile(full, what, inPlace: true, existing);
                    existing = null;
                    return held;
                }

                inPlace = existing.Length == 0;
                if (!inPlace && new FileInfo(full).ResolveLinkTarget(returnFinalTarget: true) is { } target)
                {
                    full = target.FullName;
                }

                inPlace = inPlace || PrivateFile.IsLinkedOrOthers(full);
            }

            if (!inPlace)
            {
                // The rename at the end needs a new file in the directory: make one now, and let it go.
                try
                {
                    using (new FileStream(TemporaryPath(full), FileMode.CreateNew, FileAccess.Write, FileShare.None, 0, FileOptions.DeleteOnClose))
                    {
                    }
                }
                catch (Exception e) when (existing is not null && e is IOException or UnauthorizedAccessException)
                {
                    // The file may be written but not the directory (or the name is too long for a temporary one
                    // beside it): write it in place, as before the rename.
                    inPlace = true;
                }
            }

            return new ReportFile(full, what, inPlace);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw OutputFile.CannotWrite(path, what, full, e);
        }
        finally
        {
            existing?.Dispose();
        }
    }

    /// <summary>Closes a file held open since the check, if it was not written.</summary>
    public void Dispose()
    {
        _held?.Dispose();
        _held = null;
    }

    /// <summary>Replaces the file with what <paramref name="write"/> writes, in one rename once it is all on disk.</summary>
    /// <exception cref="IOException">It could not be written; the message names the file and says an earlier one is
    /// unchanged.</exception>
    public void Write(Action<Stream> write)
    {
        ArgumentNullException.ThrowIfNull(write);
        if (_inPlace)
        {
            WriteInPlace(write);
            return;
        }

        string temporary = TemporaryPath(FullPath);
        try
        {
            using (var stream = new FileStream(temporary, FileMode.CreateNew, FileAccess.Write, FileShare.None))
            {
                write(stream);
                // On disk before the rename: after a crash the path holds the old file or the whole new one.
                stream.Flush(flushToDisk: true);
            }

            KeepMode(temporary);
            File.Move(temporary, FullPath, overwrite: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            Delete(temporary);
            throw new IOException($"{_what} {FullPath}: could not write it ({ErrorText.Plain(e)}); any earlier file there is unchanged", e);
        }
        catch
        {
            Delete(temporary);
            throw;
        }
    }

    private void WriteInPlace(Action<Stream> write)
    {
        try
        {
            using FileStream stream = _held ?? new FileStream(FullPath, FileMode.OpenOrCreate, FileAccess.Write, FileShare.Read);
            _held = null;
            // Only what holds something is emptied: a device such as /dev/null seeks but cannot be truncated
            // ("Invalid argument"), and reads as empty.
            if (stream.CanSeek && stream.Length > 0)
            {
                stream.SetLength(0);
            }

            write(stream);
            stream.Flush();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new IOException($"{_what} {FullPath}: could not write it ({ErrorText.Plain(e)})", e);
        }
    }

    /// <summary>Replaces the file with <paramref name="bytes"/> (see <see cref="Write(Action{Stream})"/>).</summary>
    public void Write(byte[] bytes) => Write(stream => stream.Write(bytes));

    /// <summary>A name beside <paramref name="full"/> that no other run picks: hidden, and saying whose it is.</summary>
    private static string TemporaryPath(string full) =>
        Path.Combine(Path.GetDirectoryName(full)!, $".{Path.GetFileName(full)}.{Guid.NewGuid():N}.tmp");

    /// <summary>Gives the new file the permissions of the one it replaces (a report kept private stays private).</summary>
    private void KeepMode(string temporary)
    {
        if (!OperatingSystem.IsWindows() && File.Exists(FullPath))
        {
            File.SetUnixFileMode(temporary, File.GetUnixFileMode(FullPath));
        }
    }

    private static void Delete(string temporary)
    {
        try
        {
            File.Delete(temporary);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // Left behind, hidden: nothing to report over the error that ended the write.
        }
    }
}
