using System.Diagnostics;
using static MegaNet.Store.Tests.StoreTestKit;

namespace MegaNet.Store.Tests;

/// <summary>
/// perf/MegaNet.StoreFill deletes directories (its own fill directory, and the one <c>reopen DIR</c> names): it must
/// delete only what a fill created, never a node's data directory, and leave nothing behind when a fill fails.
/// </summary>
public sealed class StoreFillTests : IDisposable
{
    private readonly string _dir = NewDirectory();

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public async Task Reopen_refuses_a_node_data_directory_and_leaves_it_intact()
    {
        string data = Directory.CreateDirectory(Path.Combine(_dir, "data")).FullName;
        File.WriteAllText(Path.Combine(data, "node.key"), "secret");
        // Even with a fill's marker in it (copied by hand, say), a directory with a node key is not deleted.
        File.WriteAllText(Path.Combine(data, ".meganet-storefill"), "");

        (int rc, string stdout, string stderr) = await RunAsync(["reopen", data]);

        Assert.Equal(1, rc);
        Assert.Contains("node.key", stderr, StringComparison.Ordinal);
        Assert.Single(stderr.Trim().Split('\n'));
        Assert.True(File.Exists(Path.Combine(data, "node.key")), $"the node key was deleted; stdout: {stdout}");
    }

    [Fact]
    public async Task Reopen_refuses_a_directory_the_fill_did_not_create()
    {
        string other = Directory.CreateDirectory(Path.Combine(_dir, "other")).FullName;
        File.WriteAllText(Path.Combine(other, "keep.txt"), "mine");

        (int rc, _, string stderr) = await RunAsync(["reopen", other]);

        Assert.Equal(1, rc);
        Assert.Contains("not created by a fill", stderr, StringComparison.Ordinal);
        Assert.True(File.Exists(Path.Combine(other, "keep.txt")));
    }

    [Fact]
    public async Task A_fill_with_exit_hands_over_a_marked_directory_that_reopen_then_deletes()
    {
        string temp = Directory.CreateDirectory(Path.Combine(_dir, "tmp")).FullName;

        (int rc, string stdout, string stderr) = await RunAsync(["2000", "500", "2", "--exit"], temp);

        Assert.True(rc == 0, $"fill failed ({rc}): {stderr}");
        string fill = Assert.Single(Directory.GetDirectories(temp));
        Assert.Contains($"reopen {fill}", stdout, StringComparison.Ordinal);
        Assert.True(File.Exists(Path.Combine(fill, ".meganet-storefill")), "the fill directory carries no marker");

        (rc, stdout, stderr) = await RunAsync(["reopen", fill]);

        Assert.True(rc == 0, $"reopen failed ({rc}): {stderr}");
        Assert.Contains("2,000 leaves", stdout, StringComparison.Ordinal);
        Assert.False(Directory.Exists(fill));
    }

    [Theory]
    [InlineData("--help")]
    [InlineData("-h")]
    public async Task Help_prints_the_usage_with_defaults_and_fills_nothing(string help)
    {
        string temp = Directory.CreateDirectory(Path.Combine(_dir, "tmp")).FullName;

        // Small numbers, so that a build which ignores --help (it once ran a full default fill) fails quickly.
        (int rc, string stdout, string stderr) = await RunAsync(["2000", help], temp);

        Assert.True(rc == 0, $"--help failed ({rc}): {stderr}");
        Assert.Contains("usage: MegaNet.StoreFill [puts] [batch] [producers] [--exit]", stdout, StringComparison.Ordinal);
        Assert.Contains("default 1,000,000", stdout, StringComparison.Ordinal);
        Assert.DoesNotContain("puts in", stdout, StringComparison.Ordinal);
        Assert.Empty(Directory.GetFileSystemEntries(temp));
    }

    [Fact]
    public async Task An_unknown_option_is_refused_in_one_line_before_any_fill()
    {
        string temp = Directory.CreateDirectory(Path.Combine(_dir, "tmp")).FullName;

        (int rc, string stdout, string stderr) = await RunAsync(["2000", "500", "2", "--exti"], temp);

        Assert.Equal(1, rc);
        Assert.Equal("unknown option --exti; the only option is --exit (--help shows the usage)", stderr.Trim());
        Assert.Equal("", stdout);
        Assert.Empty(Directory.GetFileSystemEntries(temp));
    }

    [Fact]
    public async Task Churn_reports_latency_and_pauses_and_removes_its_directory()
    {
        string temp = Directory.CreateDirectory(Path.Combine(_dir, "tmp")).FullName;

        (int rc, string stdout, string stderr) = await RunAsync(["churn", "4", "500"], temp);

        Assert.True(rc == 0, $"churn failed ({rc}): {stderr}\n{stdout}");
        System.Text.RegularExpressions.Match summary = System.Text.RegularExpressions.Regex.Match(
            stdout, @"([\d,]+) puts in 4 s \(0 failed\), ([\d,]+) acknowledged; put call latency from its due time over the whole run: p50 [\d.]+ ms, p99 [\d.]+ ms, p99\.9 [\d.]+ ms, max [\d.]+ ms");
        Assert.True(summary.Success, stdout);
        // 500 a second for 4 s (the pacing catches up after a stall, the last one may be cut short), each acknowledged
        // 2 s after it was stored: about 2,000 puts, about 1,000 of them acknowledged.
        Assert.InRange(int.Parse(summary.Groups[1].Value, System.Globalization.NumberStyles.AllowThousands, System.Globalization.CultureInfo.InvariantCulture), 1_400, 2_000);
        Assert.InRange(int.Parse(summary.Groups[2].Value, System.Globalization.NumberStyles.AllowThousands, System.Globalization.CultureInfo.InvariantCulture), 1, 1_500);
        Assert.Contains("writes held up: checkpoints ", stdout, StringComparison.Ordinal);
        Assert.Empty(Directory.GetFileSystemEntries(temp));
    }

    [Fact]
    public async Task Churn_refuses_exit()
    {
        string temp = Directory.CreateDirectory(Path.Combine(_dir, "tmp")).FullName;

        (int rc, _, string stderr) = await RunAsync(["churn", "3", "500", "--exit"], temp);

        Assert.Equal(1, rc);
        Assert.Contains("churn [seconds] [rate]", stderr, StringComparison.Ordinal);
        Assert.Empty(Directory.GetFileSystemEntries(temp));
    }

    [Fact]
    public async Task A_fill_that_fails_removes_its_directory()
    {
        // A 2 MiB tmpfs (private user and mount namespace, as in DiskFullTests) fills up during the puts, so the
        // store refuses a commit and the fill ends with that exception.
        string disk = Directory.CreateDirectory(Path.Combine(_dir, "disk")).FullName;
        const string Script = """
            mount -t tmpfs -o size=2m meganet-fill "$1" || exit 90
            TMPDIR="$1" dotnet "$2" 2000 500 2
            echo "rc=$?"
            echo "left: $(ls -A "$1")"
            """;
        var psi = new ProcessStartInfo("unshare", ["-Urm", "sh", "-c", Script, "sh", disk, FillPath()])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        using Process process = Process.Start(psi)!;
        Task<string> stdout = process.StandardOutput.ReadToEndAsync();
        Task<string> stderr = process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(120));
        string output = await stdout;

        Assert.True(process.ExitCode == 0, $"the tmpfs could not be mounted ({process.ExitCode}): {await stderr}");
        Assert.DoesNotContain("rc=0", output, StringComparison.Ordinal); // the fill did fail, so the test proved something
        Assert.Contains("left: \n", output, StringComparison.Ordinal);
    }

    private static async Task<(int ExitCode, string Stdout, string Stderr)> RunAsync(string[] args, string? temp = null)
    {
        var psi = new ProcessStartInfo("dotnet", [FillPath(), .. args])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        if (temp is not null)
        {
            psi.Environment["TMPDIR"] = temp;
        }

        using Process process = Process.Start(psi)!;
        Task<string> stdout = process.StandardOutput.ReadToEndAsync();
        Task<string> stderr = process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(120));
        return (process.ExitCode, await stdout, await stderr);
    }

    /// <summary>perf/MegaNet.StoreFill's build output, built before this project (see the project reference).</summary>
    private static string FillPath()
    {
        string testProject = Path.Combine("tests", "MegaNet.Store.Tests");
        string fill = Path.Combine(
            AppContext.BaseDirectory.Replace(testProject, Path.Combine("perf", "MegaNet.StoreFill"), StringComparison.Ordinal),
            "MegaNet.StoreFill.dll");
        Assert.True(File.Exists(fill), $"{fill} is missing; build the solution first");
        return fill;
    }
}
