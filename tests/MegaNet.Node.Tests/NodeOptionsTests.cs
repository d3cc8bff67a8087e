using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
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
        Assert.Equal(512, options.StreamWindow);
        Assert.Equal(16_384, options.StoreInFlight);
        Assert.Equal(2, options.StoreGroupsInFlight);
        Assert.Equal(1, options.StoreApplyThreads);
        Assert.Equal(300, options.StreamIdleSeconds);
        Assert.Equal(3_600, options.SubscriptionLifetimeSeconds);
        Assert.Equal(256, options.ArrivingMessageMiB);
        Assert.Equal(256, options.UnsentReplyMiB);
        Assert.Equal(256, options.CheckpointLogMiB);
        Assert.Equal("127.0.0.1:7700", options.Listen);
        Assert.Equal((5, 60), (options.GpuRetryMinutes, options.GpuRetryMaxMinutes));
        new NodeOptions { GpuRetryMinutes = 0 }.Validate(); // never: the GPU stays off after a fault until a restart
        new NodeOptions { GpuRetryMinutes = 60, GpuRetryMaxMinutes = 60 }.Validate();
    }

    public static TheoryData<string, Action<NodeOptions>> BadSettings => new()
    {
        { "Threads", o => o.Threads = 0 },
        { "MaxBatch", o => o.MaxBatch = 0 },
        { "GpuThreshold", o => o.GpuThreshold = 0 },
        { "GpuMaxBatch", o => o.GpuMaxBatch = 0 },
        { "GpuRetryMinutes", o => o.GpuRetryMinutes = -1 },
        { "GpuRetryMinutes", o => o.GpuRetryMinutes = 10_081 },
        { "GpuRetryMaxMinutes", o => o.GpuRetryMaxMinutes = 4 },
        { "GpuRetryMaxMinutes", o => (o.GpuRetryMinutes, o.GpuRetryMaxMinutes) = (0, 0) },
        { "GpuRetryMaxMinutes", o => o.GpuRetryMaxMinutes = 10_081 },
        { "FlushMicroseconds", o => o.FlushMicroseconds = -1 },
        { "QueueCapacity", o => o.QueueCapacity = 0 },
        { "StreamWindow", o => o.StreamWindow = 0 },
        { "StreamWindow", o => o.StreamWindow = 65_537 },
        { "StoreInFlight", o => o.StoreInFlight = 0 },
        { "StoreInFlight", o => o.StoreInFlight = (1 << 20) + 1 },
        { "StoreGroupsInFlight", o => o.StoreGroupsInFlight = 0 },
        { "StoreGroupsInFlight", o => o.StoreGroupsInFlight = 9 },
        { "StoreApplyThreads", o => o.StoreApplyThreads = 0 },
        { "StoreApplyThreads", o => o.StoreApplyThreads = 9 },
        { "StreamIdleSeconds", o => o.StreamIdleSeconds = 0 },
        { "ArrivingMessageMiB", o => o.ArrivingMessageMiB = 127 },
        { "UnsentReplyMiB", o => o.UnsentReplyMiB = 15 },
        { "UnsentReplyMiB", o => o.UnsentReplyMiB = (1 << 20) + 1 },
        { "StreamIdleSeconds", o => o.StreamIdleSeconds = 86_401 },
        { "PowMinBits", o => o.PowMinBits = 17 },
        { "MailboxPowFromPercent", o => o.MailboxPowFromPercent = 100 },
        { "MailboxPowFromPercent", o => o.MailboxPowFromPercent = -1 },
        { "StoreMaxMiB", o => o.StoreMaxMiB = -1 },
        { "StoreMaxMiB", o => o.StoreMaxMiB = (1L << 40) + 1 },
        { "StoreMemoryMiB", o => o.StoreMemoryMiB = 4 },
        { "CheckpointLogMiB", o => o.CheckpointLogMiB = 15 },
        { "CheckpointLogMiB", o => o.CheckpointLogMiB = 16_385 },
        { "MaxConnections", o => o.MaxConnections = 0 },
        { "MaxConnectionsPerAddress", o => o.MaxConnectionsPerAddress = 0 },
        { "KeepaliveSeconds", o => o.KeepaliveSeconds = 0 },
        { "KeepaliveSeconds", o => o.KeepaliveSeconds = 5_000_000 },
        { "SubscriptionLifetimeSeconds", o => o.SubscriptionLifetimeSeconds = 0 },
        { "SubscriptionLifetimeSeconds", o => o.SubscriptionLifetimeSeconds = 86_401 },
        { "MaxSubscriptions", o => o.MaxSubscriptions = 0 },
        { "MaxSubscriptionsPerSite", o => o.MaxSubscriptionsPerSite = 0 },
        { "TLS certificate", o => o.TlsCertificate = "/nonexistent/cert.pem" },
        { "Listen", o => o.Listen = "localhost" },
        { "--tls-cert", o => o.Listen = "0.0.0.0:7700" },
        // No port written: IPEndPoint.TryParse alone took these for port 0, a random port.
        { "Listen '127.0.0.1' is not ADDRESS:PORT", o => o.Listen = "127.0.0.1" },
        { "Listen '::1' is not ADDRESS:PORT", o => o.Listen = "::1" },
        { "Listen '::1:7700' is not ADDRESS:PORT", o => o.Listen = "::1:7700" },
        { "Listen '127.0.0.1:' is not ADDRESS:PORT", o => o.Listen = "127.0.0.1:" },
        { "MetricsListen '127.0.0.1' is not ADDRESS:PORT", o => o.MetricsListen = "127.0.0.1" },
        // The form right, one part wrong: said which part (both read "is not ADDRESS:PORT").
        { "Listen '127.0.0.1:70000': port 70000 is out of range; a port is 0 to 65535", o => o.Listen = "127.0.0.1:70000" },
        { "Listen 'localhost:7700': 'localhost' is a host name; give an IP address of this machine, e.g. 127.0.0.1:7700", o => o.Listen = "localhost:7700" },
        { "MetricsListen '[::1]:99999': port 99999 is out of range", o => o.MetricsListen = "[::1]:99999" },
        // Digits and dots: an IPv4 address written wrong, not a host name.
        { "Listen '999.1.1.1:7700': '999.1.1.1' is not an IPv4 address; each of its four parts is 0 to 255, e.g. 127.0.0.1:7700.", o => o.Listen = "999.1.1.1:7700" },
        { "MetricsListen '127.0.0.256:9700': '127.0.0.256' is not an IPv4 address; each of its four parts is 0 to 255", o => o.MetricsListen = "127.0.0.256:9700" },
        // The gRPC address again: Kestrel called that "address already in use", as if another program held it.
        { "MetricsListen 127.0.0.1:7700 is the gRPC address", o => o.MetricsListen = "127.0.0.1:7700" },
        { "MetricsListen 0.0.0.0:7700 is the gRPC address", o => o.MetricsListen = "0.0.0.0:7700" },
        // [::] is bound dual-stack: it holds the IPv4 port too.
        { "MetricsListen [::]:7700 is the gRPC address", o => o.MetricsListen = "[::]:7700" },
        { "MetricsListen [::1]:7701 is the gRPC address", o => (o.Listen, o.TlsCertificate, o.MetricsListen) = ("[::]:7701", "/nonexistent/cert.pem", "[::1]:7701") },
        { "MailboxMaxCount must be at least 1", o => o.MailboxMaxCount = 0 },
        // Below the smallest envelope every submission would be refused as oversize.
        { "MaxEnvelopeBytes must be between 2048", o => o.MaxEnvelopeBytes = 1_500 },
        { "SubmitBurst must be at least 1", o => o.SubmitBurst = 0 },
        { "SubmitRatePerKey must be a finite number above 0", o => o.SubmitRatePerKey = double.PositiveInfinity },
        { "SubmitRatePerKey must be a finite number above 0", o => o.SubmitRatePerKey = double.NaN },
        { "SubmitRatePerKey must be a finite number above 0", o => o.SubmitRatePerKey = 0 },
        { "MailboxMaxBytes must be at least 1", o => o.MailboxMaxBytes = -5 },
        { "DataDirectory is empty; give --data", o => o.DataDirectory = "" },
        { "TlsKey '/nonexistent/key.pem' is given without a certificate: give TlsCertificate too", o => o.TlsKey = "/nonexistent/key.pem" },
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

    [Theory]
    [InlineData("127.0.0.1:0")]
    [InlineData("[::1]:0")]
    [InlineData("[::1]:7701")]
    public void A_written_port_validates_including_0(string listen)
    {
        var options = new NodeOptions { Listen = listen, MetricsListen = "127.0.0.1:0" };
        options.Validate();
        Assert.Equal(listen, options.ListenEndPoint.ToString());
    }

    [Theory]
    [InlineData("0.0.0.0:7799", "[::1]:7799")]
    [InlineData("127.0.0.1:7799", "[::1]:7799")]
    [InlineData("127.0.0.1:7799", "127.0.0.2:7799")]
    public void Metrics_on_the_same_port_of_another_address_validates(string listen, string metrics)
    {
        // An IPv4 wildcard holds no IPv6 address: Kestrel binds both ("is the gRPC address" was refused before).
        string dir = Directory.CreateTempSubdirectory("meganet-options-").FullName;
        try
        {
            (string certificate, string key) = TlsNodeTests.SelfSigned(dir, "node");
            var options = new NodeOptions { Listen = listen, MetricsListen = metrics, TlsCertificate = certificate, TlsKey = key, DataDirectory = Path.Combine(dir, "data") };
            options.Validate();
            Assert.Equal(metrics, options.MetricsEndPoint!.ToString());
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void Files_in_the_way_and_mismatched_tls_files_are_named()
    {
        string dir = Directory.CreateTempSubdirectory("meganet-options-").FullName;
        try
        {
            // A file where the store's directory belongs ("Could not find a part of the path '…/store/commits'" before).
            File.WriteAllText(Path.Combine(dir, "store"), "x");
            AssertNamed($"DataDirectory '{dir}' holds a file named store", new NodeOptions { DataDirectory = dir });

            // A key that is not the certificate's ("The provided key does not match the public key for this
            // certificate." before, naming neither file).
            using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
            using var other = ECDsa.Create(ECCurve.NamedCurves.nistP256);
            using X509Certificate2 certificate = new CertificateRequest("CN=meganet-test", key, HashAlgorithmName.SHA256)
                .CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(1));
            string pem = Path.Combine(dir, "cert.pem"), wrongKey = Path.Combine(dir, "other.key"), pfx = Path.Combine(dir, "cert.pfx");
            File.WriteAllText(pem, certificate.ExportCertificatePem());
            File.WriteAllText(wrongKey, other.ExportPkcs8PrivateKeyPem());
            File.WriteAllBytes(pfx, certificate.Export(X509ContentType.Pkcs12));
            AssertNamed($"TLS certificate '{pem}' with key '{wrongKey}' could not be loaded (The provided key does not match",
                new NodeOptions { DataDirectory = Path.Combine(dir, "data"), TlsCertificate = pem, TlsKey = wrongKey });

            // A .pfx holds its own key: a --tls-key beside it was silently ignored.
            AssertNamed($"TlsKey '{wrongKey}' is given with '{pfx}', which holds its own key (PKCS#12): remove TlsKey",
                new NodeOptions { DataDirectory = Path.Combine(dir, "data"), TlsCertificate = pfx, TlsKey = wrongKey });
            new NodeOptions { DataDirectory = Path.Combine(dir, "data"), TlsCertificate = pfx }.Validate();

            // Given by flags, each is named by its flag, and the command adds where the usage is.
            Dictionary<string, string> flags = new()
            {
                [nameof(NodeOptions.DataDirectory)] = "--data",
                [nameof(NodeOptions.TlsCertificate)] = "--tls-cert",
                [nameof(NodeOptions.TlsKey)] = "--tls-key",
            };
            AssertFlagged($"--data '{dir}' holds a file named store", new NodeOptions { DataDirectory = dir, Flags = flags });
            AssertFlagged($"--tls-cert '{pem}' with --tls-key '{wrongKey}' could not be loaded (The provided key does not match",
                new NodeOptions { DataDirectory = Path.Combine(dir, "data"), TlsCertificate = pem, TlsKey = wrongKey, Flags = flags });
            AssertFlagged($"--tls-key '{wrongKey}' is given with '{pfx}', which holds its own key (PKCS#12): remove --tls-key",
                new NodeOptions { DataDirectory = Path.Combine(dir, "data"), TlsCertificate = pfx, TlsKey = wrongKey, Flags = flags });
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }

        static void AssertNamed(string expected, NodeOptions options)
        {
            ArgumentException e = Assert.Throws<ArgumentException>(options.Validate);
            Assert.Contains(expected, e.Message, StringComparison.Ordinal);
        }

        static void AssertFlagged(string expected, NodeOptions options) =>
            Assert.StartsWith(expected, Assert.Throws<MegaNet.Node.Cli.UsageException>(options.Validate).Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_certificate_whose_extended_key_usage_leaves_out_server_authentication_is_refused_at_validation()
    {
        // Kestrel refused it only when it bound, after the node key and the store were created, with an
        // InvalidOperationException that reached the operator as a stack trace.
        string dir = Directory.CreateTempSubdirectory("meganet-options-").FullName;
        try
        {
            using CertificateChain clientOnly = CertificateChain.Create(leafUsageOid: "1.3.6.1.5.5.7.3.2");
            string pem = Path.Combine(dir, "client.pem"), key = Path.Combine(dir, "client.key");
            File.WriteAllText(pem, clientOnly.Leaf.ExportCertificatePem());
            File.WriteAllText(key, clientOnly.LeafKey.ExportPkcs8PrivateKeyPem());
            var options = new NodeOptions { DataDirectory = Path.Combine(dir, "data"), TlsCertificate = pem, TlsKey = key };
            ArgumentException e = Assert.Throws<ArgumentException>(options.Validate);
            Assert.Contains($"TLS certificate '{pem}' may not serve TLS: its Extended Key Usage (", e.Message, StringComparison.Ordinal);
            Assert.Contains("1.3.6.1.5.5.7.3.2) leaves out serverAuth (1.3.6.1.5.5.7.3.1)", e.Message, StringComparison.Ordinal);
            Assert.Contains("extendedKeyUsage = serverAuth", e.Message, StringComparison.Ordinal);
            Assert.False(Directory.Exists(options.DataDirectory));

            // With serverAuth, and without the extension at all (any use), it serves.
            using CertificateChain server = CertificateChain.Create();
            File.WriteAllText(pem, server.Leaf.ExportCertificatePem());
            File.WriteAllText(key, server.LeafKey.ExportPkcs8PrivateKeyPem());
            options.Validate();
            using CertificateChain unrestricted = CertificateChain.Create(leafUsageOid: null);
            File.WriteAllText(pem, unrestricted.Leaf.ExportCertificatePem());
            File.WriteAllText(key, unrestricted.LeafKey.ExportPkcs8PrivateKeyPem());
            options.Validate();
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void The_certificates_after_the_servers_own_in_its_file_come_with_it()
    {
        string dir = Directory.CreateTempSubdirectory("meganet-options-").FullName;
        try
        {
            using CertificateChain issued = CertificateChain.Create();
            // PEM: the certificate, its intermediate, and the key in the same file (blocks of other kinds are skipped).
            string pem = Path.Combine(dir, "fullchain-and-key.pem");
            File.WriteAllText(pem, issued.Leaf.ExportCertificatePem() + "\n" + issued.Intermediate.ExportCertificatePem() + "\n" + issued.LeafKey.ExportPkcs8PrivateKeyPem() + "\n");
            using (TlsServerCertificate loaded = new NodeOptions { TlsCertificate = pem }.LoadTlsCertificate())
            {
                Assert.Equal(issued.Leaf.Thumbprint, loaded.Certificate.Thumbprint);
                Assert.True(loaded.Certificate.HasPrivateKey);
                Assert.Equal([issued.Intermediate.Thumbprint], loaded.Chain.Select(c => c.Thumbprint));
            }

            // PKCS#12 exported with its chain: the one with the key serves, the rest follow it, whatever their order.
            string pfx = Path.Combine(dir, "chain.pfx");
            using X509Certificate2 leafWithKey = issued.Leaf.CopyWithPrivateKey(issued.LeafKey);
            File.WriteAllBytes(pfx, new X509Certificate2Collection { issued.Intermediate, leafWithKey, issued.Root }.Export(X509ContentType.Pkcs12)!);
            using (TlsServerCertificate loaded = new NodeOptions { TlsCertificate = pfx }.LoadTlsCertificate())
            {
                Assert.Equal(issued.Leaf.Thumbprint, loaded.Certificate.Thumbprint);
                Assert.True(loaded.Certificate.HasPrivateKey);
                Assert.Equal([issued.Intermediate.Thumbprint, issued.Root.Thumbprint], loaded.Chain.Select(c => c.Thumbprint));
            }

            // A single certificate: no chain.
            string single = Path.Combine(dir, "single.pem");
            File.WriteAllText(single, issued.Leaf.ExportCertificatePem() + "\n" + issued.LeafKey.ExportPkcs8PrivateKeyPem());
            using (TlsServerCertificate loaded = new NodeOptions { TlsCertificate = single }.LoadTlsCertificate())
            {
                Assert.Empty(loaded.Chain);
            }
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void Settings_that_defeat_their_purpose_are_allowed_but_worded_for_a_warning()
    {
        var options = new NodeOptions();
        Assert.Null(options.GpuThresholdWarning);
        Assert.Null(options.PowMinBitsWarning);

        // Above every batch admission (MaxBatch) or a VerifyBatch chunk (4,096) makes: the GPU never gets one.
        options.GpuThreshold = 4_097;
        options.Validate();
        Assert.Contains("GpuThreshold 4,097 is above the largest batch the node verifies (4,096", options.GpuThresholdWarning, StringComparison.Ordinal);
        Assert.Contains("no batch reaches the GPU", options.GpuThresholdWarning, StringComparison.Ordinal);
        options.MaxBatch = 8_192;
        Assert.Null(options.GpuThresholdWarning);
        options.MaxBatch = 1_024;
        options.GpuThreshold = 4_096; // VerifyBatch chunks still reach it
        Assert.Null(options.GpuThresholdWarning);

        // The shipped clients pay at most 24 bits (MegaNetClientOptions.MaxPowBits, the JavaScript client).
        options.PowMaxBits = 32;
        options.PowMinBits = 24;
        Assert.Null(options.PowMinBitsWarning);
        options.PowMinBits = 25;
        options.Validate();
        Assert.Contains("PowMinBits 25 is above the 24 bits the shipped clients pay at most", options.PowMinBitsWarning, StringComparison.Ordinal);
        Assert.Equal(new MegaNet.Api.MegaNetClientOptions().MaxPowBits, NodeOptions.ClientMaxPowBits);
        Assert.Contains($"const MAX_POW_BITS = {NodeOptions.ClientMaxPowBits};", File.ReadAllText(Checkout.Path("examples/javascript/meganet.mjs")), StringComparison.Ordinal);
    }
}
