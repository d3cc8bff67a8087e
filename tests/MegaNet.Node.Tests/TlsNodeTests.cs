using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using Grpc.Core;
using MegaNet.Api;
using MegaNet.Api.V1;
using static MegaNet.Node.Tests.MeganetProcess;

namespace MegaNet.Node.Tests;

/// <summary>A node serving TLS from its certificate file (as it must beyond loopback; here on 127.0.0.1) with a
/// self-signed certificate for a name that is not the address dialled, as a node at home may have: a client that does
/// not trust it is refused before any call, one given the node's certificate
/// (<see cref="MegaNetClientOptions.TrustedCertificate"/>, <c>--tls-cert</c>, as PEM, PEM with the key, or DER) talks
/// to it whatever name it carries, and a certificate with the same subject and name but another key does not stand in
/// for it.</summary>
public sealed class TlsNodeTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("meganet-tls-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private Task<MeganetProcess.Result> Meganet(params string[] args) => MeganetProcess.RunAsync(_dir, null, false, args);

    [Fact]
    public async Task A_self_signed_node_is_reached_only_by_clients_given_its_certificate()
    {
        (string certificate, string key) = SelfSigned(_dir, "node");
        (string impostor, _) = SelfSigned(_dir, "impostor");
        // The same file forms an operator may hand out: DER, and PEM with the key in it too.
        string der = Path.Combine(_dir, "node.der"), withKey = Path.Combine(_dir, "node-and-key.pem");
        await File.WriteAllBytesAsync(der, X509CertificateLoader.LoadCertificateFromFile(certificate).RawData);
        await File.WriteAllTextAsync(withKey, await File.ReadAllTextAsync(key) + "\n" + await File.ReadAllTextAsync(certificate));
        await using TestNode node = await TestNode.StartAsync(o =>
        {
            o.TlsCertificate = certificate;
            o.TlsKey = key;
        });
        Assert.Equal("https", node.Address.Scheme);

        using (var untrusting = new MegaNetClient(node.Address))
        {
            // Grpc.Net.Client reports the refused handshake as INTERNAL, with the reason inside.
            RpcException refused = await Assert.ThrowsAsync<RpcException>(async () => await untrusting.Relay.StatusAsync(new StatusRequest()));
            Assert.Contains("RemoteCertificateNameMismatch", refused.Status.Detail, StringComparison.Ordinal);
            Assert.Contains("RemoteCertificateChainErrors", refused.Status.Detail, StringComparison.Ordinal);
        }

        using (var wrong = new MegaNetClient(node.Address, options: new MegaNetClientOptions { TrustedCertificate = X509CertificateLoader.LoadCertificateFromFile(impostor) }))
        {
            RpcException rejected = await Assert.ThrowsAsync<RpcException>(async () => await wrong.Relay.StatusAsync(new StatusRequest()));
            Assert.Contains("rejected by the provided RemoteCertificateValidationCallback", rejected.Status.Detail, StringComparison.Ordinal);
        }

        using var client = new MegaNetClient(node.Address, options: new MegaNetClientOptions { TrustedCertificate = X509CertificateLoader.LoadCertificateFromFile(certificate) });
        using Identity alice = Identity.Create(), bob = Identity.Create();
        Receipt receipt = await client.SendAsync(alice, bob.Card, Encoding.UTF8.GetBytes("over TLS"), "text/plain");
        Assert.Null(await client.VerifyReceiptAsync(receipt));
        Assert.Equal("over TLS", Assert.Single((await client.FetchAsync(bob)).Messages).Content.Content.ToStringUtf8());

        // The command line: --tls-cert on a client command, and a file that is no certificate named.
        string bobPath = Path.Combine(_dir, "bob.json");
        bob.Save(bobPath);
        string alicePath = Path.Combine(_dir, "alice.json"), url = node.Address.ToString();
        alice.Save(alicePath);
        Result status = await Meganet("status", "--node", url, "--tls-cert", certificate);
        Assert.True(status.ExitCode == 0, status.Stderr);
        Result sent = await Meganet("send", "-i", alicePath, "--to", bob.Card.ToString(), "--text", "by the command line", "--node", url, "--tls-cert", der, "--json");
        Assert.True(sent.ExitCode == 0, sent.Stderr);
        string receiptPath = Path.Combine(_dir, "receipt.json");
        await File.WriteAllTextAsync(receiptPath, sent.Stdout);
        Result verified = await Meganet("verify-receipt", "-i", alicePath, "--receipt", receiptPath, "--node", url, "--tls-cert", withKey);
        Assert.True(verified.ExitCode == 0, verified.Stderr + verified.Stdout);
        Result fetched = await Meganet("fetch", "-i", bobPath, "--node", url, "--tls-cert", withKey);
        Assert.True(fetched.ExitCode == 0, fetched.Stderr);
        Assert.Contains("over TLS", fetched.Stdout, StringComparison.Ordinal);
        Assert.Contains("by the command line", fetched.Stdout, StringComparison.Ordinal);
        Result audited = await Meganet("audit", "--heads", Path.Combine(_dir, "heads.json"), "--node", url, "--tls-cert", certificate);
        Assert.True(audited.ExitCode == 0, audited.Stderr + audited.Stdout);

        Result untrusted = await Meganet("status", "--node", url);
        Assert.Equal(2, untrusted.ExitCode);
        Assert.Contains("the node's TLS certificate was refused", untrusted.Stderr, StringComparison.Ordinal);
        Assert.Contains("pass it with --tls-cert FILE", untrusted.Stderr, StringComparison.Ordinal);
        Result mistrusted = await Meganet("status", "--node", url, "--tls-cert", impostor);
        Assert.Equal(2, mistrusted.ExitCode);
        Assert.Contains("neither the one given with --tls-cert nor one this system trusts", mistrusted.Stderr, StringComparison.Ordinal);
        Result missing = await Meganet("status", "--node", url, "--tls-cert", Path.Combine(_dir, "nothing.crt"));
        Assert.Equal(1, missing.ExitCode);
        Assert.Contains("nothing.crt", missing.Stderr, StringComparison.Ordinal);
        Assert.DoesNotContain("not a certificate", missing.Stderr, StringComparison.Ordinal);
        Result notACertificate = await Meganet("status", "--node", node.Address.ToString(), "--tls-cert", bobPath);
        Assert.Equal(1, notACertificate.ExitCode);
        Assert.Contains($"--tls-cert {bobPath} is not a certificate", notACertificate.Stderr, StringComparison.Ordinal);
        // A certificate for a plain http:// node would check nothing: refused, not ignored.
        foreach (string[] command in new[] { ["status"], ["fetch", "-i", bobPath], new[] { "listen", "-i", bobPath } })
        {
            Result plain = await Meganet([.. command, "--node", "http://127.0.0.1:9", "--tls-cert", certificate]);
            Assert.Equal(1, plain.ExitCode);
            Assert.Contains("is plain http://, which has no certificate to check", plain.Stderr, StringComparison.Ordinal);
        }

        node.AssertNoServerErrors();
    }

    [Fact]
    public async Task Load_reaches_a_self_signed_node_given_its_certificate()
    {
        (string certificate, string key) = SelfSigned(_dir, "node");
        await using TestNode node = await TestNode.StartAsync(o =>
        {
            o.TlsCertificate = certificate;
            o.TlsKey = key;
        });
        string url = node.Address.ToString();
        using var client = new MegaNetClient(node.Address, options: new MegaNetClientOptions { TrustedCertificate = X509CertificateLoader.LoadCertificateFromFile(certificate) });
        long before = (await client.Relay.GetTreeHeadAsync(new GetTreeHeadRequest())).TreeSize;

        // Every connection it opens trusts the certificate: the clients', the probe's and the forger's.
        Result load = await Meganet("load", "--node", url, "--tls-cert", certificate, "--mode", "both", "--envelopes", "200",
            "--warmup", "0", "--clients", "2", "--connections", "2", "--forged", "20", "--rate", "200", "--no-baseline");
        Assert.True(load.ExitCode == 0, load.Stderr + load.Stdout);
        Assert.Contains("(200/200, 0 refused", load.Stdout, StringComparison.Ordinal);
        Assert.Contains("refused as bad signatures, 0 otherwise refused or unanswered", load.Stdout, StringComparison.Ordinal);
        long after = (await client.Relay.GetTreeHeadAsync(new GetTreeHeadRequest())).TreeSize;
        // The streaming phase's envelopes and the unary phase's (half as many), none of the forged.
        Assert.True(before + 300 == after, $"log grew from {before} to {after}; {load.Stdout}");

        Result untrusted = await Meganet("load", "--node", url, "--envelopes", "10", "--warmup", "0");
        Assert.Equal(2, untrusted.ExitCode);
        Assert.Contains("pass it with --tls-cert FILE", untrusted.Stderr, StringComparison.Ordinal);
        Result embedded = await Meganet("load", "--tls-cert", certificate, "--envelopes", "10");
        Assert.Equal(1, embedded.ExitCode);
        Assert.Contains("--tls-cert is the certificate of a node given with --node https://", embedded.Stderr, StringComparison.Ordinal);
        node.AssertNoServerErrors();
    }

    [Fact]
    public async Task A_full_chain_pem_is_served_whole_so_a_client_that_trusts_only_the_root_builds_the_chain()
    {
        // fullchain.pem as an ACME client writes it (the certificate, then its intermediate): the node read only the
        // first certificate and sent it alone, which no client holding just the root can chain.
        using CertificateChain issued = CertificateChain.Create();
        string fullChain = Path.Combine(_dir, "fullchain.pem"), keyPath = Path.Combine(_dir, "privkey.pem");
        await File.WriteAllTextAsync(fullChain, issued.Leaf.ExportCertificatePem() + "\n" + issued.Intermediate.ExportCertificatePem() + "\n");
        await File.WriteAllTextAsync(keyPath, issued.LeafKey.ExportPkcs8PrivateKeyPem());
        await using TestNode node = await TestNode.StartAsync(o =>
        {
            o.TlsCertificate = fullChain;
            o.TlsKey = keyPath;
        });

        using var tcp = new System.Net.Sockets.TcpClient();
        await tcp.ConnectAsync(System.Net.IPAddress.Loopback, node.Address.Port);
        await using var tls = new System.Net.Security.SslStream(tcp.GetStream());
        X509Certificate2[] presented = [];
        await tls.AuthenticateAsClientAsync(new System.Net.Security.SslClientAuthenticationOptions
        {
            TargetHost = CertificateChain.DnsName,
            ApplicationProtocols = [System.Net.Security.SslApplicationProtocol.Http2],
            // The certificates the server sent besides its own are what .NET adds to the chain's extra store.
            RemoteCertificateValidationCallback = (_, _, chain, _) =>
            {
                presented = [.. chain!.ChainPolicy.ExtraStore.Select(c => X509CertificateLoader.LoadCertificate(c.RawData))];
                return true;
            },
        });

        Assert.Contains(presented, c => c.Thumbprint == issued.Intermediate.Thumbprint);
        using X509Certificate2 served = X509CertificateLoader.LoadCertificate(tls.RemoteCertificate!.GetRawCertData());
        Assert.Equal(issued.Leaf.Thumbprint, served.Thumbprint);
        using var client = new X509Chain();
        client.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        client.ChainPolicy.CustomTrustStore.Add(issued.Root);
        client.ChainPolicy.ExtraStore.AddRange(presented);
        client.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
        Assert.True(client.Build(served), string.Join(", ", client.ChainStatus.Select(s => s.StatusInformation)));
        Assert.Equal(3, client.ChainElements.Count);
        foreach (X509Certificate2 c in presented)
        {
            c.Dispose();
        }

        node.AssertNoServerErrors();
    }

    /// <summary>A self-signed certificate and its key, as PEM files: every one for the same subject and name (not the
    /// address the tests dial), each with a key of its own.</summary>
    internal static (string Certificate, string Key) SelfSigned(string directory, string name)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest("CN=meganet-node", key, HashAlgorithmName.SHA256);
        var names = new SubjectAlternativeNameBuilder();
        names.AddDnsName("node.meganet.invalid");
        request.CertificateExtensions.Add(names.Build());
        using X509Certificate2 certificate = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(30));
        string certificatePath = Path.Combine(directory, $"{name}.crt"), keyPath = Path.Combine(directory, $"{name}.key");
        File.WriteAllText(certificatePath, certificate.ExportCertificatePem());
        File.WriteAllText(keyPath, key.ExportPkcs8PrivateKeyPem());
        return (certificatePath, keyPath);
    }
}

/// <summary>A root CA, an intermediate CA it issued, and a server certificate (serverAuth, for
/// <see cref="DnsName"/>) the intermediate issued, with the server's key; as a public CA issues them.</summary>
internal sealed class CertificateChain : IDisposable
{
    public const string DnsName = "node.meganet.invalid";

    private CertificateChain(X509Certificate2 root, X509Certificate2 intermediate, X509Certificate2 leaf, ECDsa leafKey)
    {
        Root = root;
        Intermediate = intermediate;
        Leaf = leaf;
        LeafKey = leafKey;
    }

    /// <summary>The root, with its key.</summary>
    public X509Certificate2 Root { get; }

    /// <summary>The intermediate, without its key.</summary>
    public X509Certificate2 Intermediate { get; }

    /// <summary>The server's certificate, without its key (<see cref="LeafKey"/>).</summary>
    public X509Certificate2 Leaf { get; }

    public ECDsa LeafKey { get; }

    public static CertificateChain Create(string? leafUsageOid = "1.3.6.1.5.5.7.3.1")
    {
        DateTimeOffset now = DateTimeOffset.UtcNow;
        using var rootKey = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var rootRequest = new CertificateRequest("CN=MegaNet Test Root", rootKey, HashAlgorithmName.SHA256);
        AddCa(rootRequest);
        X509Certificate2 root = rootRequest.CreateSelfSigned(now.AddDays(-3), now.AddDays(30));

        using var intermediateKey = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var intermediateRequest = new CertificateRequest("CN=MegaNet Test Intermediate", intermediateKey, HashAlgorithmName.SHA256);
        AddCa(intermediateRequest);
        intermediateRequest.CertificateExtensions.Add(X509AuthorityKeyIdentifierExtension.CreateFromCertificate(root, includeKeyIdentifier: true, includeIssuerAndSerial: false));
        X509Certificate2 intermediate = intermediateRequest.Create(root, now.AddDays(-2), now.AddDays(20), Serial());

        var leafKey = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var leafRequest = new CertificateRequest("CN=meganet-node", leafKey, HashAlgorithmName.SHA256);
        var names = new SubjectAlternativeNameBuilder();
        names.AddDnsName(DnsName);
        leafRequest.CertificateExtensions.Add(names.Build());
        leafRequest.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, true));
        leafRequest.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.DigitalSignature, true));
        if (leafUsageOid is not null)
        {
            leafRequest.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid(leafUsageOid)], false));
        }

        leafRequest.CertificateExtensions.Add(X509AuthorityKeyIdentifierExtension.CreateFromCertificate(intermediate, includeKeyIdentifier: true, includeIssuerAndSerial: false));
        using X509Certificate2 intermediateWithKey = intermediate.CopyWithPrivateKey(intermediateKey);
        X509Certificate2 leaf = leafRequest.Create(intermediateWithKey, now.AddDays(-1), now.AddDays(10), Serial());
        return new CertificateChain(root, intermediate, leaf, leafKey);

        static void AddCa(CertificateRequest request)
        {
            request.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
            request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign, true));
            request.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(request.PublicKey, false));
        }

        static byte[] Serial()
        {
            byte[] serial = RandomNumberGenerator.GetBytes(8);
            serial[0] &= 0x7f; // positive
            return serial;
        }
    }

    public void Dispose()
    {
        Root.Dispose();
        Intermediate.Dispose();
        Leaf.Dispose();
        LeafKey.Dispose();
    }
}
