using System.Diagnostics;
using MegaNet.Api;

namespace MegaNet.Node.Tests;

/// <summary>Runs the built <c>meganet</c> as a person would: a child process, its output and exit code.</summary>
internal static class MeganetProcess
{
    public sealed record Result(int ExitCode, string Stdout, string Stderr);

    /// <summary>Runs <c>meganet ARGS</c> in <paramref name="directory"/> (at most 2 minutes); with
    /// <paramref name="closeStdout"/> the read end of its standard output is closed at once, as by a reader that went
    /// away (<c>| head -1</c>), so every write to it fails with EPIPE.</summary>
    public static async Task<Result> RunAsync(string directory, IReadOnlyDictionary<string, string>? environment, bool closeStdout, params string[] args)
    {
        var psi = new ProcessStartInfo("dotnet", [ExternalNode.MeganetPath(), .. args])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            WorkingDirectory = directory,
        };
        foreach ((string name, string value) in environment ?? new Dictionary<string, string>())
        {
            psi.Environment[name] = value;
        }

        return await RunAsync(psi, closeStdout);
    }

    /// <summary>Runs <paramref name="psi"/> (its output redirected here) to its end, at most 2 minutes, killing what
    /// is left after that; see <see cref="RunAsync(string, IReadOnlyDictionary{string, string}?, bool, string[])"/>.
    /// With <paramref name="stdin"/> its standard input is a pipe that carries that text, then ends.</summary>
    public static async Task<Result> RunAsync(ProcessStartInfo psi, bool closeStdout = false, string? stdin = null)
    {
        psi.RedirectStandardOutput = true;
        psi.RedirectStandardError = true;
        psi.RedirectStandardInput = stdin is not null;
        using Process process = Process.Start(psi)!;
        if (stdin is not null)
        {
            await process.StandardInput.WriteAsync(stdin);
            process.StandardInput.Close();
        }

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
        catch (OperationCanceledException) when (timeout.IsCancellationRequested)
        {
            // Killed, its output is complete: the failure says which command hung and what it had printed.
            process.Kill(entireProcessTree: true);
            string output = await stdout.WaitAsync(TimeSpan.FromSeconds(30));
            string error = await stderr.WaitAsync(TimeSpan.FromSeconds(30));
            throw new TimeoutException($"'{psi.FileName} {string.Join(' ', psi.ArgumentList)}' had not exited after 2 minutes (killed); stdout: {output}\nstderr: {error}");
        }
        finally
        {
            if (!process.HasExited)
            {
                process.Kill(entireProcessTree: true);
            }
        }

        // Its output ends with it (unless a child it left holds the pipes open): bounded all the same.
        return new Result(process.ExitCode, await stdout.WaitAsync(TimeSpan.FromMinutes(1)), await stderr.WaitAsync(TimeSpan.FromMinutes(1)));
    }
}

/// <summary>Checks on what a <c>meganet</c> run left, shared by the tests that run it.</summary>
internal static class MeganetResults
{
    /// <summary>Asserts the exit code, that stderr holds <paramref name="stderr"/> when given, and that no stack trace
    /// reached the user.</summary>
    public static void AssertExit(MeganetProcess.Result r, int exitCode, string? stderr = null)
    {
        Assert.True(r.ExitCode == exitCode, $"exit code {r.ExitCode}, expected {exitCode}; stderr: {r.Stderr}; stdout: {r.Stdout}");
        if (stderr is not null)
        {
            Assert.Contains(stderr, r.Stderr, StringComparison.Ordinal);
        }

        Assert.DoesNotContain("   at ", r.Stderr, StringComparison.Ordinal);
    }

    /// <summary>Standard output as the JSON objects of its lines (<c>--json</c>).</summary>
    public static System.Text.Json.Nodes.JsonObject[] JsonLines(MeganetProcess.Result r) =>
        r.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(line => System.Text.Json.Nodes.JsonNode.Parse(line)!.AsObject()).ToArray();
}

/// <summary>Identity files the tests hand to <c>meganet</c>.</summary>
internal static class TestIdentities
{
    /// <summary>Creates an identity and saves it as <paramref name="name"/> in <paramref name="directory"/>.</summary>
    public static (string Path, ContactCard Card) Save(string directory, string name)
    {
        using Identity id = Identity.Create();
        string path = System.IO.Path.Combine(directory, name);
        id.Save(path);
        return (path, id.Card);
    }
}

/// <summary>Files of random bytes for tests, their seed printed so that a failure can be run again.</summary>
internal static class TestFiles
{
    /// <summary><paramref name="length"/> random bytes, the seed written to <paramref name="output"/>.</summary>
    public static byte[] Random(Xunit.Abstractions.ITestOutputHelper output, int length)
    {
        int seed = System.Security.Cryptography.RandomNumberGenerator.GetInt32(int.MaxValue);
        output.WriteLine($"file of {length} bytes from seed {seed}");
        byte[] file = new byte[length];
        new System.Random(seed).NextBytes(file);
        return file;
    }
}

/// <summary>File parts as a fetch hands them to the parts spool, for tests of <c>ReceivedParts</c>.</summary>
internal static class TestParts
{
    /// <summary>Part <paramref name="content"/> of file <paramref name="name"/> from <paramref name="from"/>, opened
    /// from the envelope <paramref name="envelopeId"/> (zeros when not given) at mailbox sequence <paramref name="seq"/>.</summary>
    public static MegaNet.Api.ReceivedMessage Part(MegaNet.Api.Identity from, byte[] content, string name, ulong seq = 1, byte[]? envelopeId = null) =>
        new(seq, envelopeId ?? new byte[32], from.Card, new MegaNet.Api.V1.SealedContent
        {
            SenderSigningKey = Google.Protobuf.ByteString.CopyFrom(from.Card.SigningKey),
            SenderEncryptionKey = Google.Protobuf.ByteString.CopyFrom(from.Card.EncryptionKey),
            ContentType = MegaNet.Api.FileParts.ContentType,
            FileName = name,
            Content = Google.Protobuf.ByteString.CopyFrom(content),
        }, LogIndex: 0);
}
