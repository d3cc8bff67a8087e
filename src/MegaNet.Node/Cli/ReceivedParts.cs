using Google.Protobuf;
using MegaNet.Api;
using MegaNet.Api.V1;
using MegaNet.Core.Interop;

namespace MegaNet.Node.Cli;

/// <summary>
/// Parts of files sent in several envelopes (<see cref="FileParts"/>), kept beside the identity file until each file is
/// whole: the directory with the extension <c>.parts</c> (<c>bob.json</c> → <c>bob.parts</c>, mode 0700), one
/// directory per file (sender address and file id), each part's opened content in a file of its own. A part is on disk
/// (flushed, and its directory entry too) before <c>Add</c> returns, so <c>--ack</c> may delete it from the node; once
/// the file is whole, checked and shown, its parts are deleted here. Parts of a file that never becomes whole are deleted after
/// <see cref="SeenMessages.Window"/>.
/// </summary>
internal sealed class ReceivedParts
{
    /// <summary>The extension of the directory beside an identity file (identity files may not have it).</summary>
    public const string Extension = ".parts";

    private const string PartExtension = ".part";

    private ReceivedParts(string directory) => Directory = directory;

    /// <summary>The directory.</summary>
    public string Directory { get; }

    /// <summary>The parts directory of the identity at <paramref name="identityPath"/>; parts waiting longer than
    /// <see cref="SeenMessages.Window"/> are deleted.</summary>
    public static ReceivedParts Beside(string identityPath)
    {
        var parts = new ReceivedParts(Path.ChangeExtension(Path.GetFullPath(identityPath), Extension));
        parts.Prune(DateTime.UtcNow - SeenMessages.Window);
        return parts;
    }

    /// <summary>What became of a part.</summary>
    public abstract record Outcome;

    /// <summary>Kept; the file is not whole yet.</summary>
    public sealed record Waiting(int Index, int Have, int Count) : Outcome;

    /// <summary>The file is whole: <paramref name="File"/> is the part's message with the whole file as its content. Its
    /// parts stay here until <see cref="Forget"/>, so a file that could not be shown or saved is put together again when
    /// one of its parts comes again.</summary>
    public sealed record Whole(ReceivedMessage File, int Count, string Directory) : Outcome;

    /// <summary>Not a part that can be used (said why); like junk, it is reported and may be acknowledged.</summary>
    public sealed record Refused(string Reason) : Outcome;

    /// <summary>Keeps <paramref name="part"/> (a message of content type <see cref="FileParts.ContentType"/>), and puts
    /// its file together once every part is here.</summary>
    public Outcome Add(ReceivedMessage part)
    {
        SealedContent content = part.Content;
        if (!FileParts.TryReadHeader(content.Content.Span, out FilePartHeader header, out string? problem))
        {
            return new Refused(problem);
        }

        // Keyed by the sender too: a part from anyone else cannot join (or spoil) this sender's file.
        string file = Path.Combine(Directory, $"{Convert.ToHexStringLower(part.Sender.Address)}-{Convert.ToHexStringLower(header.FileId)}");
        CreateDirectory(Directory, Path.GetDirectoryName(Directory)!);
        CreateDirectory(file, Directory);
        string[] kept = System.IO.Directory.GetFiles(file, "*" + PartExtension);
        if (kept.Length > 0)
        {
            SealedContent earlier = SealedContent.Parser.ParseFrom(File.ReadAllBytes(kept[0]));
            if (!FileParts.TryReadHeader(earlier.Content.Span, out FilePartHeader first, out _) || !first.SameFile(header) || earlier.FileName != content.FileName)
            {
                return new Refused($"part {header.Index} of file '{content.FileName}' does not match the parts of that file received before (another count, length, hash or name)");
            }
        }

        string path = Path.Combine(file, header.Index.ToString(System.Globalization.CultureInfo.InvariantCulture) + PartExtension);
        byte[] bytes = content.ToByteArray();
        int have = kept.Length;
        if (File.Exists(path))
        {
            // The same part again (fetched again before it was acknowledged): the same slice, or two parts claim it.
            SealedContent same = SealedContent.Parser.ParseFrom(File.ReadAllBytes(path));
            if (!same.Content.Equals(content.Content))
            {
                return new Refused($"part {header.Index} of file '{content.FileName}' came twice with different contents");
            }
        }
        else
        {
            WriteDurably(path, bytes);
            have++;
        }

        if (have < header.Count)
        {
            return new Waiting(header.Index, have, header.Count);
        }

        var slices = new byte[header.Count][];
        for (int i = 0; i < header.Count; i++)
        {
            slices[i] = SealedContent.Parser.ParseFrom(File.ReadAllBytes(Path.Combine(file, i.ToString(System.Globalization.CultureInfo.InvariantCulture) + PartExtension))).Content.ToByteArray();
        }

        if (!FileParts.TryJoin(slices, out byte[]? whole, out problem))
        {
            System.IO.Directory.Delete(file, recursive: true);
            return new Refused($"file '{content.FileName}' in {header.Count} parts: {problem}; its parts were dropped");
        }

        var opened = new SealedContent(content) { ContentType = "application/octet-stream", Content = UnsafeByteOperations.UnsafeWrap(whole) };
        return new Whole(part with { Content = opened }, header.Count, file);
    }

    /// <summary>Deletes the parts of a file that has been shown (and saved).</summary>
    public static void Forget(Whole whole) => System.IO.Directory.Delete(whole.Directory, recursive: true);

    /// <summary>Deletes the parts of files whose newest part is older than <paramref name="before"/>.</summary>
    private void Prune(DateTime before)
    {
        if (!System.IO.Directory.Exists(Directory))
        {
            return;
        }

        foreach (string file in System.IO.Directory.GetDirectories(Directory))
        {
            string[] parts = System.IO.Directory.GetFiles(file);
            if (parts.Length == 0 || parts.Max(File.GetLastWriteTimeUtc) < before)
            {
                System.IO.Directory.Delete(file, recursive: true);
            }
        }
    }

    /// <summary>Creates <paramref name="directory"/> (owner only) and flushes its entry in <paramref name="parent"/>.</summary>
    private static void CreateDirectory(string directory, string parent)
    {
        if (System.IO.Directory.Exists(directory))
        {
            return;
        }

        if (OperatingSystem.IsWindows())
        {
            System.IO.Directory.CreateDirectory(directory);
        }
        else
        {
            System.IO.Directory.CreateDirectory(directory, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        }

        DirectoryFlush.Flush(parent);
    }

    /// <summary>Writes a part whole (a temporary file of this process's, flushed, renamed) and flushes the directory,
    /// so the part survives a crash once this returns.</summary>
    private static void WriteDurably(string path, byte[] bytes)
    {
        string temporary = $"{path}.{Environment.ProcessId}.tmp";
        try
        {
            using (var stream = new FileStream(temporary, FileMode.Create, FileAccess.Write, FileShare.None))
            {
                stream.Write(bytes);
                stream.Flush(flushToDisk: true);
            }

            File.Move(temporary, path, overwrite: true);
            DirectoryFlush.Flush(Path.GetDirectoryName(path)!);
        }
        finally
        {
            File.Delete(temporary);
        }
    }
}
