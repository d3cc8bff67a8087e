using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using MegaNet.Node.Hosting;

using Result = MegaNet.Node.Tests.MeganetProcess.Result;

namespace MegaNet.Node.Tests;

/// <summary>
/// Mistakes an operator makes with the built <c>meganet</c> (an address that is not the node's gRPC one, a setting whose
/// source is not the command line, a key file given as the certificate, a missing argument) each get one line that says
/// what to fix and where the value came from, and a non-zero exit code.
/// </summary>
public sealed class OperatorMistakeTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("meganet-ops-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private Task<Result> Meganet(params string[] args) => MeganetProcess.RunAsync(_dir, null, closeStdout: false, args);

    private Task<Result> Meganet(IReadOnlyDictionary<string, string> environment, params string[] args) =>
        MeganetProcess.RunAsync(_dir, environment, closeStdout: false, args);

    private static void AssertClearError(Result r, string expected, int exitCode = 1)
    {
        Assert.True(r.ExitCode == exitCode, $"exit code {r.ExitCode}, expected {exitCode}; stderr: {r.Stderr}");
        Assert.True(r.Stderr.Contains(expected, StringComparison.Ordinal), $"expected '{expected}' in stderr: {r.Stderr}");
        Assert.DoesNotContain("   at ", r.Stderr, StringComparison.Ordinal);
    }

    /// <summary>A one-connection-at-a-time server on loopback that answers each connection with
    /// <paramref name="reply"/> (after reading what the client sent first, unless <paramref name="speakFirst"/>) and
    /// closes it.</summary>
    private static (TcpListener Listener, Task Serving) Serve(byte[] reply, bool speakFirst, CancellationToken ct)
    {
        var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        Task serving = Task.Run(async () =>
        {
            while (!ct.IsCancellationRequested)
            {
                using TcpClient client = await listener.AcceptTcpClientAsync(ct);
                NetworkStream stream = client.GetStream();
                var buffer = new byte[4096];
                if (!speakFirst)
                {
                    _ = await stream.ReadAsync(buffer, ct);
                }

                if (reply.Length > 0)
                {
                    await stream.WriteAsync(reply, ct);
                    await stream.FlushAsync(ct);
                }

                if (speakFirst)
                {
                    _ = await stream.ReadAsync(buffer, ct);
                }
            }
        }, ct);
        return (listener, serving);
    }

    private const string LostAnswer = "the server at that address did not complete the HTTP/2 handshake: it is no gRPC server (a web server, or the node's --metrics-listen address?), or a node that serves TLS";

    [Theory]
    // The node's own --metrics-listen port (Kestrel, HTTP/1.1 only) answers an HTTP/2 preface with GOAWAY HTTP_1_1_REQUIRED.
    [InlineData("goaway", "the server at that address speaks HTTP/1.1 only, not gRPC (HTTP/2): it is no MegaNet node's gRPC address (the node's --metrics-listen one")]
    // An HTTP/1 web server (python3 -m http.server) answers with an HTTP/1 status line.
    [InlineData("http1", "the server at that address does not speak gRPC (HTTP/2): what it sent back is not HTTP/2")]
    // A node that serves TLS closes a plaintext connection without a word.
    [InlineData("close", "closed the connection before HTTP/2 began: a node that serves TLS (its start line says https://) takes --node https://")]
    // An HTTP/1 server that speaks first: the client's transport usually loses what it said (LostAnswer).
    [InlineData("speaks-first", "the server at that address does not speak gRPC (HTTP/2): what it sent back is not HTTP/2")]
    public async Task A_node_address_that_is_not_a_grpc_endpoint_is_named_as_such(string server, string expected)
    {
        byte[] http1 = Encoding.ASCII.GetBytes("HTTP/1.0 400 Bad request version ('PRI * HTTP/2.0')\r\nContent-Type: text/html\r\n\r\n<html></html>\r\n");
        byte[] reply = server switch
        {
            // GOAWAY frame: length 8, type 7, flags 0, stream 0; last stream id 0, error code 0xd (HTTP_1_1_REQUIRED).
            "goaway" => [0, 0, 8, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0d],
            "http1" or "speaks-first" => http1,
            _ => [],
        };
        using var cts = new CancellationTokenSource();
        (TcpListener listener, Task serving) = Serve(reply, speakFirst: server == "speaks-first", cts.Token);
        try
        {
            string address = $"http://127.0.0.1:{((IPEndPoint)listener.LocalEndpoint).Port}";
            Result r = await Meganet("status", "--node", address, "--timeout", "10s");
            // The client's transport reads while it still writes its preface: when the reader's error closes the
            // connection before the writer has finished (a loaded machine, or a server that speaks first), only the
            // writer's failure is reported and the text can only say the handshake failed. Either text names the fix.
            AssertClearError(r, r.Stderr.Contains(LostAnswer, StringComparison.Ordinal) ? LostAnswer : expected, exitCode: 2);
            Assert.DoesNotContain("HttpRequestException", r.Stderr, StringComparison.Ordinal);
            Assert.DoesNotContain("is 'meganet node' running", r.Stderr, StringComparison.Ordinal);
        }
        finally
        {
            await cts.CancelAsync();
            listener.Stop();
            await Task.WhenAny(serving);
        }
    }

    [Fact]
    public void A_handshake_whose_answer_the_transport_lost_is_named_as_such()
    {
        // Both shapes seen from Grpc.Net.Client when the transport's reader closed the connection under its writer: the
        // writer's IOException (the disposed stream inside) under Unavailable, or only the repeated words under Internal.
        const string Words = "An HTTP/2 connection could not be established because the server did not complete the HTTP/2 handshake.";
        Exception[] chains =
        [
            new System.Net.Http.HttpRequestException("An error occurred while sending the request.", new IOException(Words, new ObjectDisposedException("System.Net.Sockets.NetworkStream"))),
            new System.Net.Http.HttpRequestException(Words),
        ];
        foreach (Exception debug in chains)
        {
            foreach (Grpc.Core.StatusCode code in new[] { Grpc.Core.StatusCode.Unavailable, Grpc.Core.StatusCode.Internal })
            {
                string said = Cli.ClientCommands.Describe(new Grpc.Core.RpcException(new Grpc.Core.Status(code, "Error starting gRPC call. " + debug.Message, debug)));
                Assert.StartsWith(LostAnswer, said, StringComparison.Ordinal);
            }
        }

        // Other transport failures keep their own words.
        var refused = new System.Net.Http.HttpRequestException("Connection refused (127.0.0.1:1)", new SocketException((int)SocketError.ConnectionRefused));
        Assert.StartsWith("cannot reach the node", Cli.ClientCommands.Describe(new Grpc.Core.RpcException(new Grpc.Core.Status(Grpc.Core.StatusCode.Unavailable, "Error connecting to subchannel.", refused))), StringComparison.Ordinal);
    }

    [Fact]
    public async Task No_node_at_the_address_says_why_the_connection_failed()
    {
        Result r = await Meganet("status", "--node", ExternalNode.NoNode);
        AssertClearError(r, $"cannot reach the node at {new Uri(ExternalNode.NoNode)} (Error connecting to subchannel: Connection refused); is 'meganet node' running there?", exitCode: 2);
    }

    [Fact]
    public async Task A_bad_address_or_directory_from_the_settings_file_or_environment_says_where_it_was_set()
    {
        // The numeric settings said "; set in FILE"; these named neither the file nor the variable, and advised flags.
        string config = Path.Combine(_dir, "meganet.json");
        await File.WriteAllTextAsync(config, """{ "MegaNet": { "Listen": "localhost:7821" } }""");
        AssertClearError(await Meganet("node", "--config", config), $"Listen 'localhost:7821': 'localhost' is a host name; give an IP address of this machine, e.g. 127.0.0.1:7821 (or 0.0.0.0 for every address; [::1] for IPv6); set in {config}.");

        AssertClearError(await Meganet(new Dictionary<string, string> { ["MEGANET_MegaNet__Listen"] = "0.0.0.0:7821" }, "node"),
            "or listen on 127.0.0.1; set by the environment variable MEGANET_MegaNet__Listen.");

        string file = Path.Combine(_dir, "afile");
        await File.WriteAllTextAsync(file, "x");
        await File.WriteAllTextAsync(config, """{ "MegaNet": { "Listen": "127.0.0.1:0", "DataDirectory": "afile" } }""");
        Result data = await Meganet("node", "--config", config);
        AssertClearError(data, $"DataDirectory '{file}' is a file, not a directory; give DataDirectory a directory (it is created if missing); set in {config}.");
        Assert.DoesNotContain("--data", data.Stderr, StringComparison.Ordinal);

        await File.WriteAllTextAsync(config, """{ "MegaNet": { "Listen": "127.0.0.1:0", "MetricsListen": "127.0.0.1:7821", "DataDirectory": "d" } }""");
        AssertClearError(await Meganet(new Dictionary<string, string> { ["MEGANET_MegaNet__Listen"] = "127.0.0.1:7821" }, "node", "--config", config),
            $"give MetricsListen a port of its own; set in {config}.");
        Assert.False(Directory.Exists(Path.Combine(_dir, "d")));
    }

    [Fact]
    public async Task A_certificate_setting_given_a_directory_a_key_or_an_encrypted_key_says_which_mistake_it_is()
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        using X509Certificate2 certificate = new CertificateRequest("CN=meganet-test", key, HashAlgorithmName.SHA256)
            .CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(1));
        string cert = Path.Combine(_dir, "cert.pem"), plainKey = Path.Combine(_dir, "key.pem"), encrypted = Path.Combine(_dir, "enc.pem");
        await File.WriteAllTextAsync(cert, certificate.ExportCertificatePem());
        await File.WriteAllTextAsync(plainKey, key.ExportPkcs8PrivateKeyPem());
        await File.WriteAllTextAsync(encrypted, key.ExportEncryptedPkcs8PrivateKeyPem("secret",
            new PbeParameters(PbeEncryptionAlgorithm.Aes256Cbc, HashAlgorithmName.SHA256, 10_000)));
        string data = Path.Combine(_dir, "data");

        // "does not exist" for a directory that exists.
        AssertClearError(await Meganet("node", "--data", data, "--listen", "127.0.0.1:0", "--tls-cert", _dir),
            $"--tls-cert '{_dir}' is a directory; give the certificate's file (PEM, or PFX/P12).");
        AssertClearError(await Meganet("node", "--data", data, "--listen", "127.0.0.1:0", "--tls-cert", cert, "--tls-key", _dir),
            $"--tls-key '{_dir}' is a directory; give the PEM private key's file.");

        // The key given as the certificate was told "a PEM certificate needs its PEM private key".
        Result swapped = await Meganet("node", "--data", data, "--listen", "127.0.0.1:0", "--tls-cert", plainKey);
        AssertClearError(swapped, $"--tls-cert '{plainKey}' holds no certificate (no PEM block labelled CERTIFICATE; it holds a private key)");
        Assert.DoesNotContain("needs its PEM private key", swapped.Stderr, StringComparison.Ordinal);

        // A key under a passphrase was "malformed, or the key does not match the certificate".
        Result locked = await Meganet("node", "--data", data, "--listen", "127.0.0.1:0", "--tls-cert", cert, "--tls-key", encrypted);
        AssertClearError(locked, $"--tls-key '{encrypted}' holds a private key encrypted with a passphrase, which the node cannot ask for: give it the key unencrypted (openssl pkey -in {encrypted}");
        Assert.False(Directory.Exists(data));
    }

    [Fact]
    public async Task Missing_arguments_are_named_once_and_help_takes_a_command()
    {
        Result r = await Meganet("contact", "add");
        AssertClearError(r, "meganet: 'contact add' needs <name> and <card> (meganet contact add <name> <card> [options]).");
        Assert.Equal(2, r.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries).Length); // the line and the usage hint

        AssertClearError(await Meganet("contact", "add", "bob"), "meganet: 'contact add' needs <card> (");

        Result help = await Meganet("help", "node");
        Assert.Equal(0, help.ExitCode);
        Assert.Contains("--metrics-listen", help.Stdout, StringComparison.Ordinal);
        Assert.Equal(0, (await Meganet("help")).ExitCode);
        AssertClearError(await Meganet("help", "nod"), "'nod' is not a command; did you mean 'node'?");
    }

    [Fact]
    public async Task A_whole_number_too_large_and_an_empty_config_are_said_as_such()
    {
        string config = Path.Combine(_dir, "meganet.json");
        await File.WriteAllTextAsync(config, """{ "MegaNet": { "Threads": 99999999999 } }""");
        AssertClearError(await Meganet("node", "--config", config),
            $"Setting MegaNet:Threads (from {config}) is '99999999999', more than it can hold (at most 2,147,483,647;");

        AssertClearError(await Meganet("node", "--config", ""), "meganet node: --config is empty; give a settings file");

        await File.WriteAllTextAsync(config, """{ "MegaNet": { "PowMinBits": 12, "PowMaxBits": 8 } }""");
        AssertClearError(await Meganet("node", "--config", config), "PowMinBits must be 0 to PowMaxBits (8, set in ");
    }

    [Fact]
    public async Task Contact_list_without_an_identity_and_a_missing_client_certificate_are_named()
    {
        // 'contact add' and 'contact remove' refused a mistyped --identity; 'list' said "no contacts" and exited 0.
        string typo = Path.Combine(_dir, "alcie.json");
        AssertClearError(await Meganet("contact", "list", "--identity", typo), $"No identity at {typo}; create one with 'meganet id new --identity {MegaNet.Node.Cli.ClientCommands.ShellQuoted(typo)}'");
        Assert.False(File.Exists(Path.Combine(_dir, "alcie.contacts")));

        // The runtime's "Could not find file '...'" named no option.
        string missing = Path.Combine(_dir, "node.crt");
        AssertClearError(await Meganet("status", "--node", "https://127.0.0.1:1", "--tls-cert", missing), $"--tls-cert {missing} cannot be read (Could not find file");
        // A directory was "Access to the path ... is denied", as if its permissions were what to fix.
        AssertClearError(await Meganet("status", "--node", "https://127.0.0.1:1", "--tls-cert", _dir), $"--tls-cert {_dir} is a directory; give the file of the node's certificate");
    }

    [Fact]
    public void A_mailbox_smaller_than_any_envelope_is_worded_for_a_warning()
    {
        var options = new NodeOptions();
        Assert.Null(options.MailboxMaxBytesWarning);
        options.MailboxMaxBytes = 1_000;
        options.Validate();
        Assert.Contains("MailboxMaxBytes 1,000 is below the", options.MailboxMaxBytesWarning, StringComparison.Ordinal);
        Assert.Contains("every send to this node is refused as to a full mailbox", options.MailboxMaxBytesWarning, StringComparison.Ordinal);
        options.MailboxMaxBytes = NodeOptions.SmallestEnvelopeBytes;
        Assert.Null(options.MailboxMaxBytesWarning);
    }
}
