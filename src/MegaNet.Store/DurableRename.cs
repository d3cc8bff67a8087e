using MegaNet.Core.Interop;

namespace MegaNet.Store;

/// <summary>
/// Replaces a file by renaming a flushed temporary file over it, then flushes the directory, so that after a power
/// loss the directory names the new file (or, had the rename not reached the disk, the old one whole): without the
/// directory flush a crash of the machine could bring back the old manifest after the checkpoint segments it names
/// were deleted (see <see cref="DirectoryFlush"/>).
/// </summary>
internal static class DurableRename
{
    /// <summary>Renames <paramref name="temp"/> (already flushed) over <paramref name="path"/> and flushes the
    /// directory that holds them.</summary>
    /// <exception cref="IOException">The rename or the directory flush failed; the message names the directory.</exception>
    public static void Replace(string temp, string path)
    {
        File.Move(temp, path, overwrite: true);
        DirectoryFlush.Flush(Path.GetDirectoryName(Path.GetFullPath(path))!);
    }

    /// <summary>Writes <paramref name="content"/> whole to <paramref name="path"/>: into a temporary file beside it,
    /// flushed, then <see cref="Replace"/>.</summary>
    /// <exception cref="IOException">A write, the rename or the directory flush failed.</exception>
    public static void WriteAllBytes(string path, ReadOnlySpan<byte> content)
    {
        string temp = path + ".tmp";
        using (FileStream file = PrivateFile.Open(temp, FileMode.Create, FileAccess.Write, FileShare.None))
        {
            file.Write(content);
            file.Flush(flushToDisk: true);
        }

        Replace(temp, path);
    }
}
