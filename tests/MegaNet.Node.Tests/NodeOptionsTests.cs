using MegaNet.Node.Hosting;

namespace MegaNet.Node.Tests;

/// <summary>Start-up validation: the defaults pass, and each bad setting stops the node with a message naming it.</summary>
public sealed class NodeOptionsTests
{
    [Fact]
    public void DefaultsValidate()
    {
        var options = new NodeOptions();
        options.Validate();
        Assert.Equal(256, options.StreamWindow);
        Assert.Equal("127.0.0.1:7700", options.Listen);
    }

    public static TheoryData<string, Action<NodeOptions>> BadSettings => new()
    {
        { "Threads", o => o.Threads = 0 },
        { "MaxBatch", o => o.MaxBatch = 0 },
        { "GpuThreshold", o => o.GpuThreshold = 0 },
        { "GpuMaxBatch", o => o.GpuMaxBatch = 0 },
        { "FlushMicroseconds", o => o.FlushMicroseconds = -1 },
        { "QueueCapacity", o => o.QueueCapacity = 0 },
        { "StreamWindow", o => o.StreamWindow = 0 },
        { "StreamWindow", o => o.StreamWindow = 65_537 },
        { "PowMinBits", o => o.PowMinBits = 17 },
        { "StoreMemoryMiB", o => o.StoreMemoryMiB = 4 },
        { "MaxConnections", o => o.MaxConnections = 0 },
        { "MaxConnectionsPerAddress", o => o.MaxConnectionsPerAddress = 0 },
        { "KeepaliveSeconds", o => o.KeepaliveSeconds = 0 },
        { "KeepaliveSeconds", o => o.KeepaliveSeconds = 5_000_000 },
        { "TLS certificate", o => o.TlsCertificate = "/nonexistent/cert.pem" },
        { "Listen", o => o.Listen = "localhost" },
        { "--tls-cert", o => o.Listen = "0.0.0.0:7700" },
    };

    [Theory]
    [MemberData(nameof(BadSettings))]
    public void BadSettingIsNamed(string named, Action<NodeOptions> spoil)
    {
        var options = new NodeOptions();
        spoil(options);
        ArgumentException e = Assert.Throws<ArgumentException>(options.Validate);
        Assert.Contains(named, e.Message, StringComparison.Ordinal);
    }
}
