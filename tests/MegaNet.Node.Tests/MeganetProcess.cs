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
        ProcessStartInfo psi = StartInfo(directory, args);
        foreach ((string name, string value) in environment ?? new Dictionary<string, string>())
        {
            psi.Environment[name] = value;
        }

        return await RunAsync(psi, closeStdout);
    }

    /// <summary><c>meganet ARGS</c> in <paramref name="directory"/>, its standard output and error redirected.</summary>
    public static ProcessStartInfo StartInfo(string directory, params string[] args) =>
        new("dotnet", [ExternalNode.MeganetPath(), .. args])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            WorkingDirectory = directory,
        };

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

/// <summary>A <c>meganet</c> that keeps running (listen, node), its output lines collected as they come.</summary>
internal sealed class RunningMeganet : IDisposable
{
    private readonly List<string> _stdout = [], _stderr = [];

    /// <summary>Starts <c>meganet ARGS</c> in <paramref name="directory"/>.</summary>
    public RunningMeganet(string directory, params string[] args)
        : this(MeganetProcess.StartInfo(directory, args))
    {
    }

    /// <summary>Starts another program the same way (<paramref name="psi"/> with its output redirected).</summary>
    public RunningMeganet(ProcessStartInfo psi)
    {
        Process = Process.Start(psi)!;
        Process.OutputDataReceived += (_, e) => Add(_stdout, e.Data);
        Process.ErrorDataReceived += (_, e) => Add(_stderr, e.Data);
        Process.BeginOutputReadLine();
        Process.BeginErrorReadLine();
    }

    public Process Process { get; }

    public string[] Stdout => Lines(_stdout);

    public string[] Stderr => Lines(_stderr);

    /// <summary>Both outputs, for a failure message or a check that does not mind which one a line is on.</summary>
    public string Output => $"stdout:\n{string.Join('\n', Stdout)}\nstderr:\n{string.Join('\n', Stderr)}";

    /// <summary>Waits until a line of stdout (or stderr) contains <paramref name="text"/>.</summary>
    public async Task WaitForAsync(string text, bool stderr = false, int seconds = 60)
    {
        var clock = Stopwatch.StartNew();
        while (!(stderr ? Stderr : Stdout).Any(line => line.Contains(text, StringComparison.Ordinal)))
        {
            Assert.True(clock.Elapsed < TimeSpan.FromSeconds(seconds) && !Process.HasExited,
                $"no line with '{text}' on {(stderr ? "stderr" : "stdout")} after {clock.Elapsed.TotalSeconds:0} s (exited: {Process.HasExited})\n{Output}");
            await Task.Delay(50);
        }
    }

    /// <summary>Sends SIGTERM (a test run in the background has SIGINT ignored, so Ctrl+C cannot be sent) and returns the
    /// exit code once it has exited and its output has ended, failing after <paramref name="seconds"/>.</summary>
    public async Task<int> StopAsync(int seconds = 60)
    {
        using (Process kill = Process.Start("kill", ["-TERM", Process.Id.ToString(System.Globalization.CultureInfo.InvariantCulture)]))
        {
            await kill.WaitForExitAsync();
        }

        // With its output read as it comes, this waits for the output's last lines too.
        Task exited = Process.WaitForExitAsync();
        Assert.True(await Task.WhenAny(exited, Task.Delay(TimeSpan.FromSeconds(seconds))) == exited,
            $"not stopped {seconds} s after SIGTERM (exited: {Process.HasExited})\n{Output}");
        return Process.ExitCode;
    }

    public void Dispose()
    {
        if (!Process.HasExited)
        {
            Process.Kill(entireProcessTree: true);
        }

        Process.Dispose();
    }

    private static void Add(List<string> lines, string? line)
    {
        if (line is not null)
        {
            lock (lines)
            {
                lines.Add(line);
            }
        }
    }

    private static string[] Lines(List<string> lines)
    {
        lock (lines)
        {
            return [.. lines];
        }
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
