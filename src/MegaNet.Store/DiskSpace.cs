namespace MegaNet.Store;

/// <summary>Free space on a file system, as the store's free-space mark reads it.</summary>
public static class DiskSpace
{
    /// <summary>Bytes free to this user on the file system of <paramref name="directory"/> (or of its nearest existing
    /// parent); <see cref="long.MaxValue"/> when that cannot be read (not knowing is no reason to warn or to refuse).</summary>
    public static long FreeBytes(string directory)
    {
        try
        {
            string path = Path.GetFullPath(directory);
            while (!Directory.Exists(path) && Path.GetDirectoryName(path) is { } parent)
            {
                path = parent;
            }

            // statvfs(2) of the directory on Unix (any path on the file system will do); Windows wants the drive.
            return new DriveInfo(OperatingSystem.IsWindows() ? Path.GetPathRoot(path)! : path).AvailableFreeSpace;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException)
        {
            return long.MaxValue;
        }
    }
}
