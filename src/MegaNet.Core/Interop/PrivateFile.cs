using System.Runtime.InteropServices;

namespace MegaNet.Core.Interop;

/// <summary>
/// Writes a file of secrets (an identity, a node key) so that it is owner-only from the moment it exists, never seen
/// half-written, and durable once written: a temporary file of its own, flushed, given its name, then the directory
/// flushed. Without <c>replace</c> the name is taken with link(2), which fails when the name exists however recently
/// it was made: File.Move(overwrite: false) checks, then rename(2)s, and replaced a file created in between (two saves
/// at once both succeeded, seen in a test).
/// </summary>
public static partial class PrivateFile
{
    /// <summary>errno EEXIST (the same on Linux and macOS): the <see cref="Exception.HResult"/> of the <see cref="IOException"/> when the name is taken.</summary>
    public const int AlreadyExists = 17;

    /// <summary>Writes <paramref name="path"/> through <paramref name="write"/>; with <paramref name="replace"/> an
    /// existing file is replaced, without it an <see cref="IOException"/> with HResult <see cref="AlreadyExists"/>
    /// (on Unix) says the name is taken. No copy of the contents is left beside it, whatever fails.</summary>
    public static void Write(string path, Action<Stream> write, bool replace)
    {
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(write);
        if (Directory.Exists(path))
        {
            throw new IOException($"'{path}' is a directory; give the path of a file.");
        }

        if (replace && !IsRegularFileOrNothing(path))
        {
            // Replacing renames over the name: a device (/dev/full), a pipe or a symbolic link there would be
            // swapped for a plain file, not written through.
            throw new IOException($"'{path}' is not a regular file (a device, a pipe or a symbolic link); it is left as it is. Give the path of a file.");
        }

        string? directory = Path.GetDirectoryName(Path.GetFullPath(path));
        if (directory is not null)
        {
            // Missing folders owner-only, as the file: with the umask's mode (0755, 0777 under umask 0) anyone could
            // replace what else the folder holds (an identity's pinned node ids, its contacts).
            CreateDirectory(directory);
        }

        // A name of its own: two writers at once must not write into one temporary file.
        string temp = $"{path}.{Guid.NewGuid():N}.tmp";
        // A new file, never a leftover one (or a link someone placed there): the mode applies only on creation.
        var options = new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write };
        if (!OperatingSystem.IsWindows())
        {
            options.UnixCreateMode = OwnerOnlyFile;
        }

        try
        {
            try
            {
                using var stream = new FileStream(temp, options);
                write(stream);
                stream.Flush(flushToDisk: true);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                // The message names the temporary file ('x.json.9f3c….tmp'), which the user never asked for.
                throw new IOException(e.Message.Replace(temp, path, StringComparison.Ordinal), e);
            }

            if (replace)
            {
                File.Move(temp, path, overwrite: true);
            }
            else
            {
                MoveNoReplace(temp, path);
                // The link's second name goes before the directory is flushed: flushed while both names were there, a
                // crash could bring back the temporary one, a copy of the secrets nothing ever deletes.
                File.Delete(temp);
            }

            if (directory is not null)
            {
                DirectoryFlush.Flush(directory);
            }
        }
        finally
        {
            // Linked or moved, or failed (the name taken, a full disk): the temporary name, a second copy, goes.
            File.Delete(temp);
        }
    }

    /// <summary>Appends <paramref name="text"/> (UTF-8) to <paramref name="path"/>, creating the file owner-only (0600)
    /// if it is missing; not flushed. File.AppendAllText creates it with the process's umask (0644 as a rule).
    /// <paramref name="share"/>: what others may do with the file meanwhile (File.AppendAllText's: read).</summary>
    public static void Append(string path, string text, FileShare share = FileShare.Read)
    {
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(text);
        var options = new FileStreamOptions { Mode = FileMode.Append, Access = FileAccess.Write, Share = share };
        if (!OperatingSystem.IsWindows())
        {
            options.UnixCreateMode = OwnerOnlyFile;
        }

        using var stream = new FileStream(path, options);
        stream.Write(System.Text.Encoding.UTF8.GetBytes(text));
    }

    /// <summary>Appends <paramref name="line"/> and a newline as <see cref="Append"/> does, on a line of its own: with
    /// <paramref name="afterCutLine"/> (the file's last line has no newline: saved so by an editor, or cut short by a
    /// crash) a newline first, or the two lines would run together into one that a reader taking the file line by line
    /// cannot read. The caller tells it from its own read of the file (<see cref="EndsMidLine"/>), once, not a read of
    /// the file per line appended; so writers that append at once must hold a lock of their own from that read on.</summary>
    public static void AppendLine(string path, string line, bool afterCutLine, FileShare share = FileShare.Read)
    {
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(line);
        Append(path, afterCutLine ? $"\n{line}\n" : $"{line}\n", share);
    }

    /// <summary>True when <paramref name="text"/>, a file's contents, ends in a line without its newline: the next line
    /// <see cref="AppendLine"/> writes needs one first.</summary>
    public static bool EndsMidLine(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        return text.Length > 0 && text[^1] != '\n';
    }

    /// <summary>The mode of a file this class creates on Unix: read and write for its owner alone (0600).</summary>
    public const UnixFileMode OwnerOnlyFile = UnixFileMode.UserRead | UnixFileMode.UserWrite;

    /// <summary>Group and other permission bits: a file of secrets with any of them set is open to other users (the
    /// node refuses such a <c>node.key</c>, the CLI such an identity, as ssh refuses such a private key).</summary>
    public const UnixFileMode GroupOrOtherAccess = UnixFileMode.GroupRead | UnixFileMode.GroupWrite | UnixFileMode.GroupExecute
        | UnixFileMode.OtherRead | UnixFileMode.OtherWrite | UnixFileMode.OtherExecute;

    /// <summary>The mode of a directory this class creates on Unix: for its owner alone (0700).</summary>
    public const UnixFileMode OwnerOnlyDirectory = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute;

    /// <summary>Creates the directory <paramref name="path"/>, and any missing parents, owner-only (0700) if it is
    /// missing; with <paramref name="flush"/> the parent of each one created is flushed (from the top down), so the new
    /// names survive a crash. An existing directory keeps its mode.</summary>
    public static void CreateDirectory(string path, bool flush = true)
    {
        ArgumentNullException.ThrowIfNull(path);
        var missing = new Stack<string>();
        for (string? d = Path.GetFullPath(path); d is not null && !Directory.Exists(d); d = Path.GetDirectoryName(d))
        {
            missing.Push(d);
        }

        foreach (string created in missing)
        {
            // One level at a time: given a mode, .NET creates the missing parents with the umask's (0755 as a rule).
            if (OperatingSystem.IsWindows())
            {
                Directory.CreateDirectory(created);
            }
            else
            {
                Directory.CreateDirectory(created, OwnerOnlyDirectory);
            }

            if (flush && Path.GetDirectoryName(created) is { } parent)
            {
                DirectoryFlush.Flush(parent);
            }
        }
    }

    /// <summary>Opens <paramref name="path"/> as <see cref="FileStream"/>'s constructor does, except that a file it
    /// creates is owner-only (0600) on Unix, not the umask's mode (0644 as a rule); an existing file keeps its mode.</summary>
    public static FileStream Open(string path, FileMode mode, FileAccess access, FileShare share = FileShare.None, int bufferSize = 4096)
    {
        ArgumentNullException.ThrowIfNull(path);
        var options = new FileStreamOptions { Mode = mode, Access = access, Share = share, BufferSize = bufferSize };
        if (!OperatingSystem.IsWindows() && mode != FileMode.Open && mode != FileMode.Truncate)
        {
            options.UnixCreateMode = OwnerOnlyFile;
        }

        return new FileStream(path, options);
    }

    /// <summary>Creates <paramref name="path"/> empty and owner-only (0600 on Unix) if nothing is there, for a file then
    /// opened by what takes no mode (<see cref="File.OpenHandle"/>, which creates with the umask's); an existing file is
    /// left as it is.</summary>
    public static void CreateIfMissing(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (!OperatingSystem.IsWindows() && !File.Exists(path))
        {
            // Share as the handle opened next does: another opener of the same file must not be refused meanwhile.
            using FileStream created = Open(path, FileMode.OpenOrCreate, FileAccess.Write, FileShare.ReadWrite | FileShare.Delete, bufferSize: 0);
        }
    }

    /// <summary>True when nothing is at <paramref name="path"/> or a regular file is (not following a symbolic link).
    /// .NET's file information does not tell a device or a pipe from a file, so on Linux statx(2) gives the type; its
    /// layout is the same on every architecture.</summary>
    private static bool IsRegularFileOrNothing(string path)
    {
        var info = new FileInfo(path);
        if (info.LinkTarget is not null)
        {
            return false;
        }

        if (!info.Exists || !OperatingSystem.IsLinux())
        {
            return true;
        }

        // A failed call (a kernel before 4.11, a C library without statx) tells nothing: the file is taken as the
        // regular one it nearly always is.
        return !TryStat(path, out ushort mode, out _, out _) || (mode & TypeMask) == Regular;
    }

    /// <summary>True when <paramref name="path"/>, its symbolic links followed, is a regular file, not a pipe, a device or a
    /// socket; true too where that cannot be told (not Linux, or statx missing), as it nearly always is one. False when
    /// nothing is there.</summary>
    public static bool IsRegularFile(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (!File.Exists(path))
        {
            return false;
        }

        return !OperatingSystem.IsLinux() || !TryStat(path, out ushort mode, out _, out _, followLinks: true) || (mode & TypeMask) == Regular;
    }

    /// <summary>True when <paramref name="path"/> is a regular file (not a link, a pipe or a device) that only its owner
    /// may read or write, and that owner is this process's user: a file this user wrote for itself, which nobody else
    /// can have put there or change. (Owner checked on Linux; elsewhere the permissions alone.)</summary>
    public static bool IsOwnPrivateFile(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        var info = new FileInfo(path);
        if (!info.Exists || info.LinkTarget is not null)
        {
            return false;
        }

        if (OperatingSystem.IsWindows())
        {
            return true; // access lists, not modes: what the directory lets in is what holds there
        }

        if (!OperatingSystem.IsLinux())
        {
            return (info.UnixFileMode & GroupOrOtherAccess) == 0;
        }

        // Where statx cannot tell (see TryStat), nothing can be told, so no.
        const int GroupOrOther = 0x3F;
        return TryStat(path, out ushort mode, out uint owner, out _) && (mode & TypeMask) == Regular && (mode & GroupOrOther) == 0 && owner == GetEffectiveUserId();
    }

    /// <summary>Linux only: whether the file at <paramref name="path"/> (a symbolic link followed) has more than one
    /// hard link or belongs to another user, so that a new file renamed over it would part it from its other names or
    /// take it from its owner. False where that cannot be told (not Linux, statx missing, nothing there).</summary>
    public static bool IsLinkedOrOthers(string path) =>
        OperatingSystem.IsLinux() && TryStat(path, out _, out uint owner, out uint links, followLinks: true) && (links > 1 || owner != GetEffectiveUserId());

    private const int TypeMask = 0xF000, Regular = 0x8000;

    /// <summary>Linux only: the type and mode bits, the owner and the hard link count of <paramref name="path"/>, not
    /// following a symbolic link unless <paramref name="followLinks"/>, from statx(2), whose layout is the same on every architecture; false
    /// when the call failed (a kernel before 4.11, or nothing there) or the C library has no statx (glibc before 2.28).</summary>
    private static unsafe bool TryStat(string path, out ushort mode, out uint owner, out uint links, bool followLinks = false)
    {
        const int AtFdCwd = -100, AtSymlinkNoFollow = 0x100, Mask = 1 | 2 | 4 | 8; // STATX_TYPE | STATX_MODE | STATX_NLINK | STATX_UID
        const int LinksOffset = 16, UidOffset = 20, ModeOffset = 28;
        byte* statx = stackalloc byte[256];
        (mode, owner, links) = (0, 0, 0);
        try
        {
            if (Statx(AtFdCwd, path, followLinks ? 0 : AtSymlinkNoFollow, Mask, statx) != 0)
            {
                return false;
            }
        }
        catch (EntryPointNotFoundException)
        {
            return false;
        }

        (mode, owner, links) = (*(ushort*)(statx + ModeOffset), *(uint*)(statx + UidOffset), *(uint*)(statx + LinksOffset));
        return true;
    }

    [LibraryImport("libc", EntryPoint = "geteuid")]
    private static partial uint GetEffectiveUserId();

    [LibraryImport("libc", EntryPoint = "statx", StringMarshalling = StringMarshalling.Utf8)]
    internal static unsafe partial int Statx(int directory, string path, int flags, uint mask, byte* buffer);

    private static void MoveNoReplace(string temp, string path)
    {
        if (OperatingSystem.IsWindows())
        {
            // MoveFileEx without MOVEFILE_REPLACE_EXISTING: atomic there.
            File.Move(temp, path, overwrite: false);
            return;
        }

        if (Link(temp, path) == 0)
        {
            return;
        }

        int errno = Marshal.GetLastPInvokeError();
        if (errno == AlreadyExists)
        {
            throw new IOException($"The file '{path}' already exists.", AlreadyExists);
        }

        // A file system without hard links (FAT, some FUSE): check, then rename.
        File.Move(temp, path, overwrite: false);
    }

    [LibraryImport("libc", EntryPoint = "link", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int Link(string existing, string name);
}
