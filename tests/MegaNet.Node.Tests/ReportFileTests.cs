using System.Text;
using MegaNet.Node.Diagnostics;

namespace MegaNet.Node.Tests;

/// <summary>bench's <c>--json</c> and <c>--plot</c> files: checked at the start without touching the path, written at
/// the end in one rename.</summary>
public sealed class ReportFileTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("meganet-report-file-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void A_write_that_fails_part_way_leaves_the_earlier_file_whole()
    {
        // The file was emptied and then written in place: a fault part way (a full disk) left a truncated report where
        // the previous one had been.
        string path = Path.Combine(_dir, "bench.json");
        File.WriteAllText(path, "the earlier report");
        ReportFile file = ReportFile.Check(path, "--json");
        Assert.Equal("the earlier report", File.ReadAllText(path)); // the check changes nothing

        IOException e = Assert.Throws<IOException>(() => file.Write(stream =>
        {
            stream.Write("{\"machine\":"u8);
            stream.Flush();
            throw new IOException("No space left on device");
        }));

        Assert.Equal("the earlier report", File.ReadAllText(path));
        Assert.Equal($"--json {path}: could not write it (No space left on device); any earlier file there is unchanged", e.Message);
        Assert.Equal([path], Directory.GetFiles(_dir)); // no temporary file left beside it

        file.Write(Encoding.UTF8.GetBytes("the new report"));
        Assert.Equal("the new report", File.ReadAllText(path));
        Assert.Equal([path], Directory.GetFiles(_dir));
    }

    [Fact]
    public void A_report_written_through_a_symbolic_link_replaces_its_target_and_keeps_the_link()
    {
        // A rename over the path itself would have put a regular file where the link was.
        string target = Path.Combine(Directory.CreateDirectory(Path.Combine(_dir, "reports")).FullName, "latest.json");
        File.WriteAllText(target, "the earlier report");
        string link = Path.Combine(_dir, "bench.json");
        File.CreateSymbolicLink(link, target);

        ReportFile.Check(link, "--json").Write(Encoding.UTF8.GetBytes("the new report"));

        Assert.Equal(target, new FileInfo(link).LinkTarget);
        Assert.Equal("the new report", File.ReadAllText(target));
    }

    [Fact]
    [System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
    public void A_replaced_file_keeps_its_permissions()
    {
        // The temporary file takes the umask's mode (0644 under 022): a report kept owner-only would have been opened up.
        string path = Path.Combine(_dir, "bench.json");
        File.WriteAllText(path, "the earlier report");
        File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite);

        ReportFile.Check(path, "--json").Write(Encoding.UTF8.GetBytes("the new report"));

        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(path));
    }

    [Fact]
    public void Checking_a_new_path_makes_no_file_there()
    {
        string path = Path.Combine(_dir, "bench.png");
        ReportFile file = ReportFile.Check(path, "--plot");
        Assert.Empty(Directory.GetFileSystemEntries(_dir));

        file.Write([1, 2, 3]);
        Assert.Equal([1, 2, 3], File.ReadAllBytes(path));
    }

    [Fact]
    [System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
    public void A_file_with_another_hard_link_is_written_in_place_and_both_names_show_the_report()
    {
        // A rename put a new file at this name only: the other name kept the earlier report.
        string path = Path.Combine(_dir, "bench.json");
        string other = Path.Combine(_dir, "latest.json");
        File.WriteAllText(path, "the earlier report");
        Run("ln", path, other);

        ReportFile.Check(path, "--json").Write(Encoding.UTF8.GetBytes("the new report"));

        Assert.Equal("the new report", File.ReadAllText(path));
        Assert.Equal("the new report", File.ReadAllText(other));
    }

    [Fact]
    [System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
    public void A_report_to_dev_null_is_written_there()
    {
        // README names /dev/null as written directly; it was truncated first, which a device refuses ("Invalid
        // argument"), so 'bench --json /dev/null' ended a whole sweep with exit code 1.
        using ReportFile devNull = ReportFile.Check("/dev/null", "--json");
        devNull.Write(Encoding.UTF8.GetBytes("the report"));
        Assert.Equal(0, new FileInfo("/dev/null").Length);
    }

    [Fact]
    public void A_file_with_no_room_for_a_temporary_file_beside_it_is_written_in_place()
    {
        // A directory the user may not write does the same; a name too long for the temporary name beside it (the
        // limit is 255 bytes) shows it also as root. The file was refused as one that cannot be written.
        string path = Path.Combine(_dir, new string('b', 240) + ".json");
        File.WriteAllText(path, "the earlier report");

        ReportFile.Check(path, "--json").Write(Encoding.UTF8.GetBytes("the new report"));

        Assert.Equal("the new report", File.ReadAllText(path));
    }

    [Fact]
    [System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
    public async Task A_named_pipe_is_held_open_from_the_check_to_the_write()
    {
        // It was opened at the check and closed again: its reader saw the end and left with nothing, and the write's
        // open then waited for a reader for ever.
        string fifo = Path.Combine(_dir, "bench.json");
        Run("mkfifo", fifo);
        Task<string> reader = Task.Run(() => File.ReadAllText(fifo)); // its open waits for the check's

        ReportFile file = ReportFile.Check(fifo, "--json");
        Task write = Task.Run(() => file.Write(Encoding.UTF8.GetBytes("the report")));
        try
        {
            Assert.Equal("the report", await reader.WaitAsync(TimeSpan.FromSeconds(60)));
            await write.WaitAsync(TimeSpan.FromSeconds(60));
        }
        finally
        {
            if (!write.IsCompleted)
            {
                // Lets a write that waits for a reader go, so that the test run does not hang.
                File.ReadAllText(fifo);
            }

            file.Dispose();
        }
    }

    private static void Run(string program, params string[] args)
    {
        using var process = System.Diagnostics.Process.Start(program, args);
        process.WaitForExit();
        Assert.Equal(0, process.ExitCode);
    }
}
