using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using Grpc.Core;
using MegaNet.Api;
using MegaNet.Api.V1;
using static MegaNet.Node.Tests.MeganetProcess;

namespace MegaNet.Node.Tests;

/// <summary>A node serving TLS from its certificate file (as it must beyond loopback; here on 127.0.0.1) with a
/// self-signed certificate, as a node at home would have: a client that does not trust it is refused before any call,
/// one given the node's certificate (<see cref="MegaNetClientOptions.TrustedCertificate"/>, <c>--tls-cert</c>) talks to
/// it, and another self-signed certificate does not stand in for it.</summary>
public sealed class TlsNodeTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("meganet-tls-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public async Task A_self_signed_node_is_reached_only_by_clients_given_its_certificate()
    {
        (string certificate, string key) = SelfSigned("node");
        (string impostor, _) = SelfSigned("impostor");
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
            Assert.Contains("UntrustedRoot", refused.Status.Detail, StringComparison.Ordinal);
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
        Result status = await RunAsync(_dir, null, false, "status", "--node", node.Address.ToString(), "--tls-cert", certificate);
        Assert.True(status.ExitCode == 0, status.Stderr);
        Result fetched = await RunAsync(_dir, null, false, "fetch", "-i", bobPath, "--node", node.Address.ToString(), "--tls-cert", certificate);
        Assert.True(fetched.ExitCode == 0, fetched.Stderr);
        Assert.Contains("over TLS", fetched.Stdout, StringComparison.Ordinal);
        Result untrusted = await RunAsync(_dir, null, false, "status", "--node", node.Address.ToString());
        Assert.Equal(2, untrusted.ExitCode);
        Assert.Contains("the node's TLS certificate was refused", untrusted.Stderr, StringComparison.Ordinal);
        Assert.Contains("pass it with --tls-cert FILE", untrusted.Stderr, StringComparison.Ordinal);
        Result notACertificate = await RunAsync(_dir, null, false, "status", "--node", node.Address.ToString(), "--tls-cert", bobPath);
        Assert.Equal(1, notACertificate.ExitCode);
        Assert.Contains($"--tls-cert {bobPath} is not a certificate", notACertificate.Stderr, StringComparison.Ordinal);
        node.AssertNoServerErrors();
    }

    /// <summary>A self-signed certificate for 127.0.0.1 and its key, as PEM files.</summary>
    private (string Certificate, string Key) SelfSigned(string name)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest($"CN=meganet-{name}", key, HashAlgorithmName.SHA256);
        var names = new SubjectAlternativeNameBuilder();
        names.AddIpAddress(System.Net.IPAddress.Loopback);
        request.CertificateExtensions.Add(names.Build());
        using X509Certificate2 certificate = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(30));
        string certificatePath = Path.Combine(_dir, $"{name}.crt"), keyPath = Path.Combine(_dir, $"{name}.key");
        File.WriteAllText(certificatePath, certificate.ExportCertificatePem());
        File.WriteAllText(keyPath, key.ExportPkcs8PrivateKeyPem());
        return (certificatePath, keyPath);
    }
}
