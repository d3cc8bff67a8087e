using System.Diagnostics;
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
    [InlineData("--backend", "fastest", "must be one of auto, simd")]
    public async Task Refuses_what_it_must_not_serve_in_one_line(string option, string value, string expected)
    {
        MeganetProcess.Result r = await MeganetProcess.RunAsync(StartInfo(option, value));

        Assert.Equal(2, r.ExitCode);
        Assert.Contains(expected, r.Stderr, StringComparison.Ordinal);
        Assert.Single(r.Stderr.Trim().Split('\n'));
        Assert.DoesNotContain("NOT A RELAY", r.Stdout, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Without_its_store_the_node_still_refuses_a_bad_signature_and_stops_without_leaving_its_key()
    {
        using var tool = new RunningMeganet(StartInfo("--without", "store", "--listen", "127.0.0.1:0"));
        (Uri url, string data) = await ServingAsync(tool);
        using Identity alice = Identity.Create(), bob = Identity.Create();
        using var client = new MegaNetClient(url);
        Envelope valid = Seal(alice, bob);
        Receipt receipt = await client.Relay.SubmitAsync(new SubmitRequest { Envelope = valid });
        Assert.Equal(EnvelopeFormat.EnvelopeId(valid), receipt.EnvelopeId.ToByteArray());

        RpcException refused = await Assert.ThrowsAsync<RpcException>(async () => await client.Relay.SubmitAsync(new SubmitRequest { Envelope = Spoilt(Seal(alice, bob)) }));
        Assert.Equal(StatusCode.InvalidArgument, refused.StatusCode);

        Assert.True(Directory.Exists(data), $"{data} is missing while the node runs");
        Assert.Equal(0, await tool.StopAsync());
        Assert.Contains("stopped after acknowledging 1 puts", tool.Output, StringComparison.Ordinal);
        Assert.False(Directory.Exists(data), $"{data} (the node key) was left behind");
    }

    [Fact]
    public async Task Without_store_and_verification_a_bad_signature_is_taken()
    {
        using var tool = new RunningMeganet(StartInfo("--without", "store,verification", "--listen", "127.0.0.1:0"));
        (Uri url, string data) = await ServingAsync(tool);
        Assert.Contains("NOT VERIFYING", tool.Output, StringComparison.Ordinal);
        using Identity alice = Identity.Create(), bob = Identity.Create();
        using var client = new MegaNetClient(url);
        Envelope spoilt = Spoilt(Seal(alice, bob));
        Receipt receipt = await client.Relay.SubmitAsync(new SubmitRequest { Envelope = spoilt });
        Assert.Equal(EnvelopeFormat.EnvelopeId(spoilt), receipt.EnvelopeId.ToByteArray());

        Assert.Equal(0, await tool.StopAsync());
        Assert.False(Directory.Exists(data), $"{data} (the node key) was left behind");
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

    // Waits for the tool's NOT A RELAY line; returns the address it names and the data directory its start line names.
    private static async Task<(Uri Url, string Data)> ServingAsync(RunningMeganet tool)
    {
        await tool.WaitForAsync("NOT A RELAY");
        Match url = NotARelay().Match(tool.Output);
        Match data = DataDirectory().Match(tool.Output);
        Assert.True(url.Success && data.Success, $"no address or data directory in its output:\n{tool.Output}");
        return (new Uri(url.Groups[1].Value), data.Groups[1].Value);
    }

    private static ProcessStartInfo StartInfo(params string[] args) => new("dotnet", [ToolPath(), .. args])
    {
        RedirectStandardOutput = true,
        RedirectStandardError = true,
    };

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
