using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace MegaNet.Core.Interop;

/// <summary>
/// Which file an open handle is, whatever its name: the device and the file's number there (the inode on Linux, the file
/// index on Windows), and on Linux its birth time where the file system keeps one, as a freed inode number is given to
/// the next file made. A file written under a temporary name and renamed over another is another file: its identity
/// differs from that of the one it replaced, though name, size and contents may be alike.
/// </summary>
/// <param name="Device">The device (volume serial number on Windows).</param>
/// <param name="Index">The file's number on the device.</param>
/// <param name="Birth">When the file was made, in nanoseconds; 0 where unknown.</param>
public readonly partial record struct FileIdentity(ulong Device, ulong Index, long Birth)
{
    /// <summary>The identity of the file open under <paramref name="handle"/>; null where it cannot be told (a system
    /// other than Linux or Windows, a kernel before 4.11 or a C library without statx, a failed call).</summary>
    public static FileIdentity? Of(SafeFileHandle handle)
    {
        ArgumentNullException.ThrowIfNull(handle);
        bool added = false;
        try
        {
            handle.DangerousAddRef(ref added);
            if (OperatingSystem.IsLinux())
            {
                return OfDescriptor((int)handle.DangerousGetHandle());
            }

            if (OperatingSystem.IsWindows())
            {
                return OfWindowsHandle(handle.DangerousGetHandle());
            }

            return null;
        }
        finally
        {
            if (added)
            {
                handle.DangerousRelease();
            }
        }
    }

    /// <summary>The identity of the file <paramref name="path"/> names, not following a symbolic link; null when
    /// nothing is there or it cannot be told (see <see cref="Of"/>; Linux only: elsewhere .NET has no way to look a
    /// name up without opening it).</summary>
    public static FileIdentity? OfPath(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        const int AtFdCwd = -100, AtSymlinkNoFollow = 0x100;
        return OperatingSystem.IsLinux() ? Stat(AtFdCwd, path, AtSymlinkNoFollow) : null;
    }

    /// <summary>statx(2) on the descriptor itself (AT_EMPTY_PATH).</summary>
    private static FileIdentity? OfDescriptor(int fd)
    {
        const int AtEmptyPath = 0x1000;
        return Stat(fd, string.Empty, AtEmptyPath);
    }

    /// <summary>statx(2), whose layout is the same on every architecture.</summary>
    private static unsafe FileIdentity? Stat(int directory, string path, int flags)
    {
        const uint Inode = 0x100, BirthTime = 0x800; // STATX_INO, STATX_BTIME
        const int MaskOffset = 0, InodeOffset = 32, BirthOffset = 80, DevMajorOffset = 136, DevMinorOffset = 140;
        byte* statx = stackalloc byte[256];
        try
        {
            if (PrivateFile.Statx(directory, path, flags, Inode | BirthTime, statx) != 0)
            {
                return null;
            }
        }
        catch (EntryPointNotFoundException)
        {
            return null;
        }

        uint mask = *(uint*)(statx + MaskOffset);
        if ((mask & Inode) == 0)
        {
            return null;
        }

        long birth = (mask & BirthTime) != 0
            ? (*(long*)(statx + BirthOffset) * 1_000_000_000) + *(uint*)(statx + BirthOffset + 8)
            : 0;
        ulong device = ((ulong)*(uint*)(statx + DevMajorOffset) << 32) | *(uint*)(statx + DevMinorOffset);
        return new FileIdentity(device, *(ulong*)(statx + InodeOffset), birth);
    }

    /// <summary>GetFileInformationByHandle: the volume serial number and the 64-bit file index.</summary>
    private static unsafe FileIdentity? OfWindowsHandle(nint handle)
    {
        const int VolumeSerialOffset = 28, IndexHighOffset = 44, IndexLowOffset = 48;
        byte* info = stackalloc byte[52]; // BY_HANDLE_FILE_INFORMATION
        if (!GetFileInformationByHandle(handle, info))
        {
            return null;
        }

        ulong index = ((ulong)*(uint*)(info + IndexHighOffset) << 32) | *(uint*)(info + IndexLowOffset);
        return new FileIdentity(*(uint*)(info + VolumeSerialOffset), index, 0);
    }

    [LibraryImport("kernel32.dll", EntryPoint = "GetFileInformationByHandle")]
    [return: MarshalAs(UnmanagedType.Bool)]
    private static unsafe partial bool GetFileInformationByHandle(nint handle, byte* info);
}
