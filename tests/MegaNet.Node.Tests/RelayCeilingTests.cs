using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;
using Google.Protobuf;
using Grpc.Core;
using MegaNet.Api;
using MegaNet.Api.V1;

namespace MegaNet.Node.Tests;

/// <summary>
/// perf/MegaNet.RelayCeiling serves the node with its store (and, asked, verification) taken out: it must serve
/// loopback only, keep verifying unless told not to, and delete its temporary data directory (the node key) when it
/// stops.
/// </summary>
public sealed partial class RelayCeilingTests
{
    [Theory]
    [InlineData("--listen", "0.0.0.0:7712", "not a loopback address")]
    [InlineData("--listen", "[::]:7712", "not a loopback address")]
    [InlineData("--listen", "192.0.2.1:7712", "not a loopback address")]
    [InlineData("--without", "verification", "--without takes")]
    public async Task Refuses_what_it_must_not_serve_in_one_line(string option, string value, string expected)
    {
        using Process process = Start([option, value]);
        Task<string> stdout = process.StandardOutput.ReadToEndAsync();
        string stderr = await process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(60));

        Assert.Equal(2, process.ExitCode);
        Assert.Contains(expected, stderr, StringComparison.Ordinal);
        Assert.Single(stderr.Trim().Split('\n'));
        Assert.DoesNotContain("NOT A RELAY", await stdout, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Without_its_store_the_node_still_refuses_a_bad_signature_and_stops_without_leaving_its_key()
    {
        (Process process, Uri url, string data, StringBuilder output) = await StartServingAsync("store");
        using (process)
        {
            using Identity alice = Identity.Create(), bob = Identity.Create();
            using var client = new MegaNetClient(url);
            Envelope valid = Seal(alice, bob);
            Receipt receipt = await client.Relay.SubmitAsync(new SubmitRequest { Envelope = valid });
            Assert.Equal(EnvelopeFormat.EnvelopeId(valid), receipt.EnvelopeId.ToByteArray());

            RpcException refused = await Assert.ThrowsAsync<RpcException>(async () => await client.Relay.SubmitAsync(new SubmitRequest { Envelope = Spoilt(Seal(alice, bob)) }));
            Assert.Equal(StatusCode.InvalidArgument, refused.StatusCode);

            Assert.True(Directory.Exists(data), $"{data} is missing while the node runs");
            await StopAsync(process);
            Assert.Equal(0, process.ExitCode);
            Assert.Contains("stopped after acknowledging 1 puts", Text(output), StringComparison.Ordinal);
            Assert.False(Directory.Exists(data), $"{data} (the node key) was left behind");
        }
    }

    [Fact]
    public async Task Without_store_and_verification_a_bad_signature_is_taken()
    {
        (Process process, Uri url, string data, StringBuilder output) = await StartServingAsync("store,verification");
        using (process)
        {
            Assert.Contains("NOT VERIFYING", Text(output), StringComparison.Ordinal);
            using Identity alice = Identity.Create(), bob = Identity.Create();
            using var client = new MegaNetClient(url);
            Envelope spoilt = Spoilt(Seal(alice, bob));
            Receipt receipt = await client.Relay.SubmitAsync(new SubmitRequest { Envelope = spoilt });
            Assert.Equal(EnvelopeFormat.EnvelopeId(spoilt), receipt.EnvelopeId.ToByteArray());

            await StopAsync(process);
            Assert.Equal(0, process.ExitCode);
            Assert.False(Directory.Exists(data), $"{data} (the node key) was left behind");
        }
    }

    private static Envelope Seal(Identity from, Identity to) =>
        EnvelopeFormat.Seal(from, to.Card, Encoding.UTF8.GetBytes("ceiling"), "text/plain", null, DateTimeOffset.UtcNow.AddDays(1), 0);

    private static Envelope Spoilt(Envelope envelope)
    {
        byte[] signature = envelope.Signature.ToByteArray();
        signature[3] ^= 1;
        envelope.Signature = ByteString.CopyFrom(signature);
        return envelope;
    }

    private static string Text(StringBuilder output)
    {
        lock (output)
        {
            return output.ToString();
        }
    }

    // Starts the tool on a free loopback port and waits for its NOT A RELAY line; returns the address it names and the
    // data directory its start line names.
    private static async Task<(Process Process, Uri Url, string Data, StringBuilder Output)> StartServingAsync(string without)
    {
        Process process = Start(["--without", without, "--listen", "127.0.0.1:0"]);
        var output = new StringBuilder();
        var serving = new TaskCompletionSource<Uri>(TaskCreationOptions.RunContinuationsAsynchronously);
        void OnLine(string? line)
        {
            if (line is null)
            {
                return;
            }

            lock (output)
            {
                output.AppendLine(line);
            }

            if (NotARelay().Match(line) is { Success: true } m)
            {
                serving.TrySetResult(new Uri(m.Groups[1].Value));
            }
        }

        process.OutputDataReceived += (_, e) => OnLine(e.Data);
        process.ErrorDataReceived += (_, e) => OnLine(e.Data);
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        Task exited = process.WaitForExitAsync();
        if (await Task.WhenAny(serving.Task, exited, Task.Delay(TimeSpan.FromSeconds(60))) != serving.Task)
        {
            process.Kill(entireProcessTree: true);
            Assert.Fail($"the tool did not start serving; it printed:\n{Text(output)}");
        }

        Match data = DataDirectory().Match(Text(output));
        Assert.True(data.Success, $"no data directory in its start line:\n{Text(output)}");
        return (process, await serving.Task, data.Groups[1].Value, output);
    }

    private static async Task StopAsync(Process process)
    {
        using (Process kill = Process.Start("kill", ["-TERM", process.Id.ToString(CultureInfo.InvariantCulture)])!)
        {
            await kill.WaitForExitAsync();
        }

        await process.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(60));
    }

    private static Process Start(string[] args) => Process.Start(new ProcessStartInfo("dotnet", [ToolPath(), .. args])
    {
        RedirectStandardOutput = true,
        RedirectStandardError = true,
    })!;

    /// <summary>perf/MegaNet.RelayCeiling's build output, built before this project (see the project reference).</summary>
    private static string ToolPath()
    {
        string path = Path.Combine(AppContext.BaseDirectory.Replace(Path.Combine("tests", "MegaNet.Node.Tests"), Path.Combine("perf", "MegaNet.RelayCeiling"), StringComparison.Ordinal), "MegaNet.RelayCeiling.dll");
        Assert.True(File.Exists(path), $"{path} is missing; build the solution first");
        return path;
    }

    [GeneratedRegex(@"NOT A RELAY: .* at (http://\S+?) \(")]
    private static partial Regex NotARelay();

    [GeneratedRegex(@" data (/\S+); node id")]
    private static partial Regex DataDirectory();
}
