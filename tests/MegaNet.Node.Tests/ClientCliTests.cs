using System.Diagnostics;
using System.Text;
using MegaNet.Api;

namespace MegaNet.Node.Tests;

/// <summary>
/// The client commands of the built <c>meganet</c>, run as a person runs them (a child process against a real node):
/// what they print, what they leave on disk and in the mailbox, and their exit codes.
/// </summary>
public sealed class ClientCliTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("meganet-client-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private sealed record Result(int ExitCode, string Stdout, string Stderr);

    /// <summary>Runs <c>meganet ARGS</c>; with <paramref name="closeStdout"/> the read end of its standard output is
    /// closed at once, as by a reader that went away (<c>| head -1</c>), so every write to it fails with EPIPE.</summary>
    private async Task<Result> Meganet(bool closeStdout, params string[] args)
    {
        var psi = new ProcessStartInfo("dotnet", [ExternalNode.MeganetPath(), .. args])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            WorkingDirectory = _dir,
        };
        using Process process = Process.Start(psi)!;
        Task<string> stdout;
        if (closeStdout)
        {
            process.StandardOutput.Close();
            stdout = Task.FromResult(string.Empty);
        }
        else
        {
            stdout = process.StandardOutput.ReadToEndAsync();
        }

        Task<string> stderr = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(2));
        try
        {
            await process.WaitForExitAsync(timeout.Token);
        }
        finally
        {
            if (!process.HasExited)
            {
                process.Kill();
            }
        }

        return new Result(process.ExitCode, await stdout, await stderr);
    }

    private Task<Result> Meganet(params string[] args) => Meganet(false, args);

    private static void AssertExit(Result r, int exitCode, string? stderr = null)
    {
        Assert.True(r.ExitCode == exitCode, $"exit code {r.ExitCode}, expected {exitCode}; stderr: {r.Stderr}; stdout: {r.Stdout}");
        if (stderr is not null)
        {
            Assert.Contains(stderr, r.Stderr, StringComparison.Ordinal);
        }

        Assert.DoesNotContain("   at ", r.Stderr, StringComparison.Ordinal);
    }

    private string NewIdentity(string name)
    {
        using Identity id = Identity.Create();
        string path = Path.Combine(_dir, name);
        id.Save(path);
        return path;
    }

    private static byte[] Text(string s) => Encoding.UTF8.GetBytes(s);

    [Fact]
    public async Task Fetch_ack_deletes_nothing_when_standard_output_is_closed()
    {
        await using TestNode node = await TestNode.StartAsync();
        using MegaNetClient client = node.Client();
        string bobPath = NewIdentity("bob.json");
        using Identity alice = Identity.Create(), bob = Identity.Load(bobPath);
        for (int i = 0; i < 3; i++)
        {
            await client.SendAsync(alice, bob.Card, Text($"message {i}"), "text/plain; charset=utf-8");
        }

        // No one reads: the messages cannot have been seen, so none may be deleted.
        string address = node.Address.ToString();
        Result closed = await Meganet(closeStdout: true, "fetch", "-i", bobPath, "--node", address, "--ack");
        AssertExit(closed, 1, "cannot write to standard output");
        Assert.Contains("no message was acknowledged", closed.Stderr, StringComparison.Ordinal);
        Assert.DoesNotContain("acknowledged 3", closed.Stderr, StringComparison.Ordinal);
        Assert.Equal(3, (await client.FetchAsync(bob)).Messages.Count);

        // Read, the same command shows all three and then deletes them.
        Result read = await Meganet("fetch", "-i", bobPath, "--node", address, "--ack");
        AssertExit(read, 0, "acknowledged 3 message(s)");
        Assert.Equal(3, read.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries).Length);
        Assert.Empty((await client.FetchAsync(bob)).Messages);
        node.AssertNoServerErrors();
    }
}
