using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using MegaNet.Api;
using MegaNet.Api.V1;
using MegaNet.Node.Benchmarking;
using MegaNet.Node.Cli;
using MegaNet.Node.Diagnostics;
using MegaNet.Node.Hosting;
using Microsoft.Extensions.Configuration;

using Result = MegaNet.Node.Tests.MeganetProcess.Result;

namespace MegaNet.Node.Tests;

/// <summary>
/// A person's mistake (a missing file, a bad number, a taken port) ends the built <c>meganet</c> with a non-zero exit
/// code and one line saying what to fix, never a stack trace, and leaves no temporary file behind.
/// </summary>
public sealed class CliErrorTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("meganet-cli-").FullName;

    private static readonly string NoNode = ExternalNode.NoNode;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private Task<Result> Meganet(IReadOnlyDictionary<string, string>? environment, params string[] args) =>
        MeganetProcess.RunAsync(_dir, environment, closeStdout: false, args);

    private Task<Result> Meganet(params string[] args) => Meganet(null, args);

    /// <summary>Exit code 1 (or <paramref name="exitCode"/>), <paramref name="expected"/> on stderr, no stack frame.</summary>
    private static void AssertClearError(Result r, string expected, int exitCode = 1)
    {
        Assert.True(r.ExitCode == exitCode, $"exit code {r.ExitCode}, expected {exitCode}; stderr: {r.Stderr}");
        Assert.Contains(expected, r.Stderr, StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", r.Stderr, StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", r.Stdout, StringComparison.Ordinal);
    }

    private string NewIdentity(string name) => TestIdentities.Save(_dir, name).Path;

    private static string Card()
    {
        using Identity id = Identity.Create();
        return id.Card.ToString();
    }

    [Theory]
    [InlineData("alice.json")]
    [InlineData("my id/alice.json")]
    [InlineData("bob's.json")]
    [InlineData("it's $me")]
    [InlineData("a\"b`c\\d!e")]
    [InlineData("")]
    public async Task A_word_in_a_suggested_command_reads_back_as_given_in_a_shell(string word)
    {
        if (OperatingSystem.IsWindows())
        {
            return; // POSIX quoting
        }

        string quoted = ClientCommands.ShellQuoted(word);
        // Inside the single quotes a message puts around a command, only a word with a quote of its own needs them.
        if (word.IndexOfAny(ClientCommands.SpecialInDoubleQuotes) < 0)
        {
            Assert.False(quoted.StartsWith('\''), quoted);
        }
        using var shell = Process.Start(new ProcessStartInfo("/bin/sh", ["-c", $"printf %s {quoted}"]) { RedirectStandardOutput = true })!;
        string read = await shell.StandardOutput.ReadToEndAsync();
        await shell.WaitForExitAsync();
        Assert.Equal(word, read);
    }

    [Fact]
    public async Task Send_refuses_a_missing_directory_or_oversized_file_before_contacting_the_node()
    {
        string alice = NewIdentity("alice.json");
        string to = Card();
        AssertClearError(await Meganet("send", "-i", alice, "--to", to, "--node", NoNode, "--file", Path.Combine(_dir, "missing.bin")), "does not exist");
        AssertClearError(await Meganet("send", "-i", alice, "--to", to, "--node", NoNode, "--file", _dir), "is a directory");

        // Larger than one envelope goes in parts; larger than parts may carry is refused before anything is read.
        string big = Path.Combine(_dir, "big.bin");
        await using (FileStream file = File.Create(big))
        {
            file.SetLength(FileParts.MaxFileLength + 1);
        }

        AssertClearError(await Meganet("send", "-i", alice, "--to", to, "--node", NoNode, "--file", big), $"at most {FileParts.MaxFileLength:N0} bytes can be sent");
    }

    [Theory]
    [InlineData("../secret.txt", "path separator")]
    [InlineData("dir\\report.pdf", "path separator")]
    [InlineData(" ", "cannot be empty")]
    [InlineData(".bashrc", "the recipient would save it as '_bashrc'")]
    [InlineData("-rf", "the recipient would save it as '_rf'")]
    [InlineData("a:b.txt", "the recipient would save it as 'a_b.txt'")]
    [InlineData("report.", "the recipient would save it as 'report'")]
    [InlineData(" report.pdf", "the recipient would save it as 'report.pdf'")]
    [InlineData("report.pdf ", "the recipient would save it as 'report.pdf'")]
    [InlineData("re\u200Bport.pdf", "the recipient would save it as 're_port.pdf'")]
    [InlineData("x", "at most 140 bytes (UTF-8), and this one is 141")]
    public async Task Send_refuses_a_name_the_recipient_would_not_save_as_given_before_contacting_the_node(string name, string problem)
    {
        // Sent as given, the recipient saved it under another name (or a path made one), unknown to its sender.
        string alice = NewIdentity("alice.json");
        string file = Path.Combine(_dir, "report.pdf");
        await File.WriteAllTextAsync(file, "hi");
        Result r = await Meganet("send", "-i", alice, "--to", Card(), "--node", NoNode, "--file", file, "--name", name == "x" ? new string('x', 141) : name);
        AssertClearError(r, problem);
        Assert.EndsWith("Run 'meganet send --help' for usage.", r.Stderr.TrimEnd(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task Send_refuses_a_name_without_a_file_before_contacting_the_node()
    {
        string alice = NewIdentity("alice.json");
        Result r = await Meganet("send", "-i", alice, "--to", Card(), "--node", NoNode, "--text", "hi", "--name", "note.txt");
        AssertClearError(r, "--name names the file sent with --file");
        Assert.EndsWith("Run 'meganet send --help' for usage.", r.Stderr.TrimEnd(), StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("1e9")]
    [InlineData("NaN")]
    [InlineData("0")]
    [InlineData("-3")]
    public async Task Send_refuses_a_ttl_out_of_range(string days)
    {
        string alice = NewIdentity("alice.json");
        AssertClearError(await Meganet("send", "-i", alice, "--to", Card(), "--node", NoNode, "--text", "hi", "--ttl-days", days), "--ttl-days must be");
    }

    [Fact]
    public async Task Verify_receipt_without_a_receipt_on_a_terminal_says_what_to_give_instead_of_waiting()
    {
        // Standard input a terminal (script(1) gives the command a pseudo-terminal), as for a person who left out
        // --receipt: the command waited without a word for a receipt to be typed.
        var psi = new ProcessStartInfo("script", ["-qec", $"dotnet '{ExternalNode.MeganetPath()}' verify-receipt --node {NoNode}", "/dev/null"])
        {
            WorkingDirectory = _dir,
        };
        Result r = await MeganetProcess.RunAsync(psi);
        // The terminal carries stderr too, so the line is on script's standard output.
        Assert.True(r.ExitCode == 1, $"exit code {r.ExitCode}; output: {r.Stdout}{r.Stderr}");
        Assert.Contains("--receipt - reads standard input, which is a terminal here; give --receipt FILE (what 'send --json' wrote), or pipe one in.", r.Stdout, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(null, "", "standard input (--receipt -) is empty: there is no receipt to check; give the JSON 'meganet send --json' printed (--receipt FILE, or piped in).")]
    [InlineData("-", "", "standard input (--receipt -) is empty: there is no receipt to check")]
    [InlineData("empty.json", null, "--receipt empty.json is empty: there is no receipt to check")]
    [InlineData("blank.json", null, "--receipt blank.json is empty: there is no receipt to check")]
    [InlineData("cut.json", null, "--receipt cut.json ends before its JSON does (cut short?); give the JSON 'meganet send --json' printed (--receipt FILE, or piped in), all of it.")]
    [InlineData(null, "{\"envelope_id\": \"ab", "standard input (--receipt -) ends before its JSON does (cut short?)")]
    [InlineData(null, "Receipt saved.\n", "standard input (--receipt -) is not JSON: line 1, byte 1 is not valid there")]
    [InlineData("parts.json", null, "--receipt parts.json, line 2, ends before its JSON does (cut short?)")]
    [InlineData("cut-first.json", null, "--receipt cut-first.json, line 1, ends before its JSON does (cut short?)")]
    [InlineData("cut-middle.json", null, "--receipt cut-middle.json, line 2, ends before its JSON does (cut short?)")]
    [InlineData("oops.json", null, "--receipt oops.json, line 2, is not JSON: byte 2 is not valid there")]
    [InlineData(null, "[]", "standard input (--receipt -) is not a receipt: a JSON object with envelope_id, log_index and tree_head was expected, not an array")]
    [InlineData(null, "{\"envelope_id\": \"ab\", \"tree_head\": {}}", "standard input (--receipt -) is not a receipt: its log_index is missing or not a whole number")]
    public async Task Verify_receipt_says_what_is_wrong_with_an_empty_cut_or_foreign_receipt(string? receipt, string? stdin, string expected)
    {
        // An empty input gave the parser's own words ("The input does not contain any JSON tokens. Expected the input
        // to start with a valid JSON token, when isFinalBlock is true. LineNumber: 0 | BytePositionInLine: 0.").
        string cut = """{"envelope_id": "00", "log_index": 0, "tree_head": {"tree_size": 1, "root_ha""";
        await File.WriteAllTextAsync(Path.Combine(_dir, "empty.json"), string.Empty);
        await File.WriteAllTextAsync(Path.Combine(_dir, "blank.json"), " \n\n");
        await File.WriteAllTextAsync(Path.Combine(_dir, "cut.json"), cut + "\n");
        string whole = """{"envelope_id": "00", "log_index": 0, "tree_head": {"tree_size": 1, "root_hash": "00", "timestamp_unix_ms": 0, "node_key": "00", "signature": "00"}}""";
        await File.WriteAllTextAsync(Path.Combine(_dir, "parts.json"), whole + "\n" + cut + "\n");
        // A line cut short before the last was taken for part of one receipt over several lines ("is not JSON").
        await File.WriteAllTextAsync(Path.Combine(_dir, "cut-first.json"), cut + "\n" + whole + "\n");
        await File.WriteAllTextAsync(Path.Combine(_dir, "cut-middle.json"), whole + "\n" + cut + "\n" + whole + "\n");
        await File.WriteAllTextAsync(Path.Combine(_dir, "oops.json"), whole + "\n{oops}\n" + whole + "\n");
        ProcessStartInfo psi = MeganetProcess.StartInfo(_dir, ["verify-receipt", "--node", NoNode, .. receipt is null ? Array.Empty<string>() : ["--receipt", receipt]]);
        Result r = await MeganetProcess.RunAsync(psi, stdin: stdin ?? string.Empty);
        AssertClearError(r, "meganet: " + expected);
        Assert.DoesNotContain("BytePositionInLine", r.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Verify_receipt_reads_one_receipt_over_several_lines_whose_tree_head_opens_a_line()
    {
        // Every line opens an object, so it was taken for a receipt a line and refused as "line 1 ... cut short?".
        // The receipt is read whole and checked: its made-up signature is what fails, offline, with exit code 3.
        string receipt = """
            {"envelope_id": "00", "log_index": 0, "tree_head":
            {"tree_size": 1, "root_hash": "00", "timestamp_unix_ms": 0, "node_key": "00", "signature": "00"}}
            """;
        await File.WriteAllTextAsync(Path.Combine(_dir, "wrapped.json"), receipt + "\n");
        Result r = await Meganet("verify-receipt", "--node", NoNode, "--receipt", "wrapped.json");
        Assert.True(r.ExitCode == 3, $"exit code {r.ExitCode}; stdout: {r.Stdout}; stderr: {r.Stderr}");
        Assert.Contains("INVALID: the tree head's signature does not verify with its node key", r.Stdout, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Id_new_refuses_a_directory_or_a_path_below_a_file_and_leaves_no_temporary_file()
    {
        string dir = Path.Combine(_dir, "somedir");
        Directory.CreateDirectory(dir);
        AssertClearError(await Meganet("id", "new", "--identity", dir), "is a directory");
        Assert.Empty(Directory.GetFiles(_dir, "*.tmp"));

        string file = NewIdentity("file.json");
        AssertClearError(await Meganet("id", "new", "--identity", Path.Combine(file, "x")), "is a file, not a directory");
        Assert.Equal(["file.json", "somedir"], Directory.EnumerateFileSystemEntries(_dir).Select(Path.GetFileName).Order(StringComparer.Ordinal));
    }

    [Fact]
    public void Identity_save_that_fails_removes_its_temporary_copy_of_the_keys()
    {
        string dir = Path.Combine(_dir, "taken");
        Directory.CreateDirectory(dir);
        using Identity id = Identity.Create();
        Assert.ThrowsAny<IOException>(() => id.Save(dir));
        Assert.ThrowsAny<IOException>(() => id.Save(dir, overwrite: true));
        Assert.Empty(Directory.GetFiles(_dir, "*.tmp"));
    }

    [Fact]
    public void Max_content_length_seals_and_two_bytes_more_do_not()
    {
        using Identity alice = Identity.Create(), bob = Identity.Create();
        foreach ((string type, string? name) in new[] { ("text/plain; charset=utf-8", (string?)null), ("application/octet-stream", "a-long-file-name.tar.gz") })
        {
            // The limit assumes the longest send-time varint (7 bytes; today's take 6), so it is at most a byte short.
            int max = EnvelopeFormat.MaxContentLength(type, name);
            Envelope fits = EnvelopeFormat.Seal(alice, bob.Card, new byte[max], type, name, DateTimeOffset.UtcNow.AddDays(1));
            Assert.Equal(EnvelopeFormat.PayloadClasses[^1] + EnvelopeFormat.SealOverhead, fits.SealedPayload.Length);
            ArgumentException e = Assert.Throws<ArgumentException>(() => EnvelopeFormat.Seal(alice, bob.Card, new byte[max + 2], type, name, DateTimeOffset.UtcNow.AddDays(1)));
            Assert.Contains($"at most {max} bytes", e.Message, StringComparison.Ordinal);
        }
    }

    [Fact]
    public async Task Node_refuses_a_missing_config_unknown_settings_and_a_file_as_data_directory()
    {
        AssertClearError(await Meganet("node", "--config", Path.Combine(_dir, "nonexistent.json")), "does not exist");

        string config = Path.Combine(_dir, "typo.json");
        await File.WriteAllTextAsync(config, """{ "MegaNet": { "KeepAliveSecs": 5 } }""");
        AssertClearError(await Meganet("node", "--config", config), "Unknown setting MegaNet:KeepAliveSecs");

        // Shapes binding would skip without a word, starting the node on its defaults.
        foreach ((string json, string expected) in new[]
        {
            ("{ \"MegaNet\": 5 }", "\"MegaNet\" in " + config + " must be an object of settings"),
            ("{ \"MegaNet\": [] }", "must be an object of settings"),
            ("{ \"MegaNet\": { \"Threads\": [1, 2] } }", "Setting MegaNet:Threads (from " + config + ") must be a single value"),
            ("{ \"MegaNet\": { \"Backend\": { \"name\": \"simd\" } } }", "Setting MegaNet:Backend (from " + config + ") must be a single value"),
            ("{ \"MegaNet\": { \"Threads\": null } }", "Setting MegaNet:Threads (from " + config + ") is null (or an empty object): give it a value"),
            ("{ \"MegaNet\": { \"Backend\": [] } }", "MegaNet option Backend must be one of auto, simd, gpu, gpu-cpu, reference (got '')"), // an empty list reads as ""

        })
        {
            await File.WriteAllTextAsync(config, json);
            AssertClearError(await Meganet("node", "--config", config), expected);
        }

        AssertClearError(await Meganet(new Dictionary<string, string> { ["MEGANET_MegaNet__Bogus"] = "1" }, "node"), "MEGANET_MegaNet__Bogus");
        // A known setting still binds from the environment (and its range is checked).
        AssertClearError(await Meganet(new Dictionary<string, string> { ["MEGANET_MegaNet__KeepaliveSeconds"] = "5000000" }, "node"), "KeepaliveSeconds must be 1 to");

        string file = Path.Combine(_dir, "afile");
        await File.WriteAllTextAsync(file, "x");
        Result dataFile = await Meganet("node", "--data", file);
        AssertClearError(dataFile, $"meganet node: --data '{file}' is a file, not a directory");
        Assert.EndsWith("Run 'meganet node --help' for usage.", dataFile.Stderr.TrimEnd(), StringComparison.Ordinal);

        // Under a file: refused at validation, before the verifier starts ("The file '…' already exists." after it).
        string under = Path.Combine(file, "sub", "data");
        Result underFile = await Meganet("node", "--data", under);
        AssertClearError(underFile, $"meganet node: --data '{under}' cannot be created: '{file}' is a file, not a directory");
        Assert.DoesNotContain("verifier", underFile.Stdout, StringComparison.OrdinalIgnoreCase);
        Assert.EndsWith("Run 'meganet node --help' for usage.", underFile.Stderr.TrimEnd(), StringComparison.Ordinal);
        if (OperatingSystem.IsLinux())
        {
            // A directory the OS will not make: its words ("Could not find file '/proc/…'") and the setting to change.
            Result proc = await Meganet("node", "--data", "/proc/meganet-data");
            AssertClearError(proc, "meganet node: The data directory /proc/meganet-data could not be created (");
            Assert.EndsWith("Choose another with --data (or DataDirectory in meganet.json).", proc.Stderr.TrimEnd(), StringComparison.Ordinal);
        }

        AssertClearError(await Meganet("node", "--threads", "abc"), "'abc' is not a whole number");
    }

    [Fact]
    public async Task Relative_paths_in_a_settings_file_are_read_from_its_directory()
    {
        // They were read from the current directory: `meganet node --config /etc/meganet/meganet.json` run from
        // anywhere but /etc/meganet missed the certificate beside it and made a data directory where it was run.
        string configDirectory = Directory.CreateDirectory(Path.Combine(_dir, "conf")).FullName;
        string config = Path.Combine(configDirectory, "meganet.json");
        await File.WriteAllTextAsync(config, """{ "MegaNet": { "TlsCertificate": "node-cert.pem" } }""");
        AssertClearError(await Meganet("node", "--config", config), $"'{Path.Combine(configDirectory, "node-cert.pem")}' does not exist");

        await File.WriteAllTextAsync(Path.Combine(configDirectory, "data-file"), "x");
        await File.WriteAllTextAsync(config, """{ "MegaNet": { "DataDirectory": "data-file" } }""");
        AssertClearError(await Meganet("node", "--config", config), $"'{Path.Combine(configDirectory, "data-file")}' is a file, not a directory");

        // From the environment or a flag, a relative path is still the current directory's (here the test's _dir).
        await File.WriteAllTextAsync(config, """{ "MegaNet": { "Threads": 1 } }""");
        AssertClearError(await Meganet(new Dictionary<string, string> { ["MEGANET_MegaNet__TlsCertificate"] = "env-cert.pem" }, "node", "--config", config),
            "'env-cert.pem' does not exist");
        AssertClearError(await Meganet("node", "--config", config, "--tls-cert", "flag-cert.pem"), "--tls-cert 'flag-cert.pem' does not exist");
    }

    [Fact]
    public async Task A_bad_setting_is_named_where_it_was_given_with_what_a_valid_one_looks_like()
    {
        // "Failed to convert configuration value at 'MegaNet:Threads' to type 'System.Int32'" named neither the file
        // nor the variable, nor what would do; and a TlsKey from the settings file was advised to "drop --tls-key".
        string config = Path.Combine(_dir, "bad.json");
        await File.WriteAllTextAsync(config, """{ "MegaNet": { "Threads": "two" } }""");
        AssertClearError(await Meganet("node", "--config", config), $"Setting MegaNet:Threads (from {config}) is 'two', not a whole number: give one such as 2.");
        AssertClearError(await Meganet(new Dictionary<string, string> { ["MEGANET_MegaNet__SubmitRatePerKey"] = "fast" }, "node"),
            "Setting MegaNet:SubmitRatePerKey (from environment variable MEGANET_MegaNet__SubmitRatePerKey) is 'fast', not a number: give one such as 200 or 0.5.");
        AssertClearError(await Meganet(new Dictionary<string, string> { ["MEGANET_MegaNet__GpuInlinePtx"] = "yes" }, "node"),
            "is 'yes', not true or false: give true or false.");

        await File.WriteAllTextAsync(config, """{ "MegaNet": { "TlsKey": "/nonexistent/node-key.pem" } }""");
        Result key = await Meganet("node", "--config", config);
        AssertClearError(key, $"TlsKey '/nonexistent/node-key.pem' (set in {config}) is given without a certificate: give TlsCertificate too");
        Assert.DoesNotContain("--tls-key", key.Stderr, StringComparison.Ordinal);

        await File.WriteAllTextAsync(config, """{ "MegaNet": { "Threads": 0 } }""");
        AssertClearError(await Meganet("node", "--config", config), $"MegaNet option Threads must be 1 to 1024; set in {config}.");
        AssertClearError(await Meganet(new Dictionary<string, string> { ["MEGANET_MegaNet__KeepaliveSeconds"] = "0" }, "node"),
            "MegaNet option KeepaliveSeconds must be 1 to 86,400 (a day); set by the environment variable MEGANET_MegaNet__KeepaliveSeconds.");
    }

    [Fact]
    public async Task Node_refuses_settings_outside_the_MegaNet_section()
    {
        string config = Path.Combine(_dir, "flat.json");
        await File.WriteAllTextAsync(config, """{ "Threads": 1 }""");
        AssertClearError(await Meganet("node", "--config", config), $"Unknown key \"Threads\" at the top of {config}: node settings go in the \"MegaNet\" section");

        await File.WriteAllTextAsync(config, """{ "MegaNett": { "Threads": 1 } }""");
        AssertClearError(await Meganet("node", "--config", config), "Unknown key \"MegaNett\"");

        AssertClearError(await Meganet(new Dictionary<string, string> { ["MEGANET_MEGANET_THREADS"] = "1" }, "node"),
            "Unknown environment variable MEGANET_MEGANET_THREADS: a node setting is MEGANET_MegaNet__<Option>");

        // MEGANET_ variables read elsewhere pass (the start then fails on the bad keepalive, after the check).
        AssertClearError(await Meganet(new Dictionary<string, string> { ["MEGANET_GPU_INLINE_PTX"] = "0", ["MEGANET_GPU_GROUP"] = "64", ["MEGANET_MegaNet__KeepaliveSeconds"] = "0" }, "node"),
            "KeepaliveSeconds must be 1 to");

        // Those the tests read pass too: README has a GPU machine run .ci/run with MEGANET_EXPECT_GPU=1, and the node
        // tests start nodes in that environment.
        AssertClearError(await Meganet(new Dictionary<string, string> { ["MEGANET_EXPECT_GPU"] = "1", ["MEGANET_EXPECT_TIER"] = "Scalar", ["MEGANET_TEST_SEED"] = "1", ["MEGANET_MegaNet__KeepaliveSeconds"] = "0" }, "node"),
            "KeepaliveSeconds must be 1 to");
    }

    [Fact]
    public async Task Node_says_where_its_settings_file_is_malformed_and_lists_every_backend()
    {
        string config = Path.Combine(_dir, "broken.json");
        await File.WriteAllTextAsync(config, "{ \"MegaNet\": { \"Threads\": 2 } x");
        AssertClearError(await Meganet("node", "--config", config), "LineNumber: 0 | BytePositionInLine:");

        Result help = await Meganet("node", "--help");
        Assert.Equal(0, help.ExitCode);
        Assert.Contains("gpu-cpu", help.Stdout, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Node_refuses_a_backend_before_it_creates_a_key_or_a_store()
    {
        // A refused start must not leave a new identity and an empty store in a data directory that may be mistyped.
        string data = Path.Combine(_dir, "data");
        AssertClearError(await Meganet("node", "--data", data, "--backend", "libsodium", "--listen", "127.0.0.1:0"), "applies libsodium's rule");
        Assert.False(Directory.Exists(data), "the refused node created " + string.Join(", ", Directory.Exists(data) ? Directory.GetFileSystemEntries(data) : []));
    }

    [Fact]
    public async Task Node_refuses_a_certificate_it_cannot_load_at_start()
    {
        string pem = Path.Combine(_dir, "bad.pem");
        await File.WriteAllTextAsync(pem, "not a certificate");
        AssertClearError(await Meganet("node", "--data", Path.Combine(_dir, "data"), "--tls-cert", pem), "--tls-key");
        AssertClearError(await Meganet("node", "--data", Path.Combine(_dir, "data"), "--tls-cert", pem, "--tls-key", Path.Combine(_dir, "nokey.pem")), $"--tls-key '{Path.Combine(_dir, "nokey.pem")}' does not exist.");
    }

    [Fact]
    public async Task Node_refuses_a_client_only_certificate_before_it_creates_a_key_or_a_store()
    {
        // Kestrel refused it as it bound, after node.key and the store were made, with a stack trace.
        using CertificateChain clientOnly = CertificateChain.Create(leafUsageOid: "1.3.6.1.5.5.7.3.2");
        string pem = Path.Combine(_dir, "client.pem"), key = Path.Combine(_dir, "client.key"), data = Path.Combine(_dir, "data");
        await File.WriteAllTextAsync(pem, clientOnly.Leaf.ExportCertificatePem());
        await File.WriteAllTextAsync(key, clientOnly.LeafKey.ExportPkcs8PrivateKeyPem());
        Result r = await Meganet("node", "--data", data, "--backend", "simd", "--listen", "127.0.0.1:0", "--tls-cert", pem, "--tls-key", key);
        AssertClearError(r, $"meganet node: --tls-cert '{pem}' may not serve TLS");
        Assert.Contains("leaves out serverAuth (1.3.6.1.5.5.7.3.1)", r.Stderr, StringComparison.Ordinal);
        // The certificate was given by its flag: the refusal, then where the usage is.
        Assert.Equal(2, r.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries).Length);
        Assert.EndsWith("Run 'meganet node --help' for usage.", r.Stderr.TrimEnd(), StringComparison.Ordinal);
        Assert.False(Directory.Exists(data), "the refused node created its data directory");
    }

    [Fact]
    public async Task Node_names_the_metrics_option_when_the_metrics_port_is_taken()
    {
        using var taken = new TcpListener(IPAddress.Loopback, 0);
        taken.Start();
        string metrics = taken.LocalEndpoint.ToString()!;
        Result r = await Meganet("node", "--data", Path.Combine(_dir, "data"), "--backend", "simd", "--listen", "127.0.0.1:0", "--metrics-listen", metrics);
        AssertClearError(r, "--metrics-listen");
        Assert.Contains("address already in use", r.Stderr, StringComparison.Ordinal);
        Assert.DoesNotContain("--listen.", r.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_node_whose_port_is_taken_says_so_and_creates_nothing()
    {
        // The data directory was made, with a new node key and store, before the port turned out to be taken.
        using var taken = new TcpListener(IPAddress.Loopback, 0);
        taken.Start();
        string listen = taken.LocalEndpoint.ToString()!, data = Path.Combine(_dir, "fresh");
        Result r = await Meganet("node", "--data", data, "--backend", "simd", "--listen", listen);
        AssertClearError(r, $"--listen {listen}: address already in use. Another node (or program) listens there");
        Assert.False(Directory.Exists(data), "a node that could not listen created its data directory");
    }

    [Fact]
    public async Task Node_stops_cleanly_on_sigterm_after_its_checkpoint()
    {
        using var node = new RunningMeganet(_dir, "node", "--data", Path.Combine(_dir, "data"), "--backend", "simd", "--listen", "127.0.0.1:0");
        // Two minutes to start: a node's start is slow on a loaded two-core CI machine.
        await node.WaitForAsync("MegaNet node listening", seconds: 120);
        int exitCode = await node.StopAsync(seconds: 90);
        Assert.True(exitCode == 0, $"exit code {exitCode}: {node.Output}");
        Assert.Contains("MegaNet node stopped cleanly (store checkpointed)", node.Output, StringComparison.Ordinal);
        // The stop's steps can take seconds: it says when it begins, not only when it is done.
        int stopping = node.Output.IndexOf("MegaNet node stopping: ending streams, draining admission", StringComparison.Ordinal);
        Assert.InRange(stopping, 0, node.Output.IndexOf("MegaNet node stopped cleanly", StringComparison.Ordinal));
    }

    [Theory]
    [InlineData("--seconds", "1e300", "--seconds must be")]
    [InlineData("--seconds", "-1", "--seconds must be")]
    [InlineData("--threads", "5000", "--threads 5000 is more than 1024")]
    [InlineData("--threads", "abc", "'abc' is not a positive integer")]
    [InlineData("--batch", "34000000", "larger than a batch holds")]
    [InlineData("--batch", "1,8,1", "--batch: 1 is given twice")]
    [InlineData("--threads", "2,1,2", "--threads: 2 is given twice")]
    [InlineData("--check-items", "100000000", "--check-items must be 1 to 1,048,576 (got 100000000)")]
    public async Task Bench_checks_its_arguments_before_any_work(string option, string value, string expected)
    {
        Result r = await Meganet("bench", "--backend", "reference", option, value);
        AssertClearError(r, expected);
        Assert.DoesNotContain("CPU ", r.Stdout, StringComparison.Ordinal); // the header printed once work starts
    }

    [Fact]
    public async Task Bench_refuses_one_file_for_both_json_and_plot_before_any_work()
    {
        // The plot replaced the JSON report after the sweep, and "wrote" was printed for both.
        string both = Path.Combine(_dir, "bench.out");
        Result r = await Meganet("bench", "--backend", "reference", "--batch", "1", "--threads", "1", "--json", both, "--plot", both);
        AssertClearError(r, $"--json and --plot both name {both}; give each a file of its own.");
        Assert.DoesNotContain("CPU ", r.Stdout, StringComparison.Ordinal);
        Assert.False(File.Exists(both));
    }

    [Fact]
    public async Task Bench_names_a_backend_and_auto_resolving_to_it_as_given()
    {
        // It said "simd is given twice" for 'simd,auto', which no one had typed.
        string auto = MegaNet.Node.Verification.VerifierCatalog.Create().Resolve("auto");
        Result r = await Meganet("bench", "--backend", $"{auto},auto", "--batch", "1");
        AssertClearError(r, $"--backend: {auto} and auto are the same backend here ({auto}); name it once.");
    }

    [Theory]
    [InlineData("")]
    [InlineData(",")]
    [InlineData(" , ")]
    public async Task Bench_with_a_backend_list_naming_none_says_so(string backends)
    {
        // It said "no fast backend can run here", as if the machine lacked one.
        Result r = await Meganet("bench", "--backend", backends);
        AssertClearError(r, "--backend names no backend");
        Assert.DoesNotContain("no fast backend", r.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public void Bench_times_single_threaded_backends_once_labelled_one_thread()
    {
        var options = new VerifyBenchmarkOptions
        {
            Backends = ["reference"],
            BatchSizes = [2],
            Threads = [2, 3],
            Duration = TimeSpan.FromMilliseconds(30),
        };
        VerifyBenchmarkReport report = new VerifyBenchmark(Verification.VerifierCatalog.Create(), options).Run();
        VerifyBenchmarkResult reference = Assert.Single(report.Results, r => r.Backend == "reference");
        Assert.Equal(1, reference.Threads);
    }

    [Fact]
    public async Task Verify_leaves_no_temporary_file_after_a_bad_line_or_a_directory_as_output()
    {
        string input = Path.Combine(_dir, "in.jsonl");
        await File.WriteAllTextAsync(input, "{\"pk\":\"00\",\"sig\":\"00\",\"msg\":\"\"}\nnot json\n");
        string output = Path.Combine(_dir, "out.jsonl");
        AssertClearError(await Meganet("verify", "--backend", "reference", "--in", input, "--out", output), "line 2");
        Assert.False(File.Exists(output + ".tmp"));
        Assert.False(File.Exists(output));

        // A string JSON takes but .NET cannot read (a lone surrogate): the line named, no stack trace (it was one).
        await File.WriteAllTextAsync(input, "{\"pk\":\"00\",\"sig\":\"00\",\"msg\":\"\"}\n{\"pk\":\"\\ud800\",\"sig\":\"\",\"msg\":\"\"}\n");
        AssertClearError(await Meganet("verify", "--backend", "reference", "--in", input, "--out", output), "line 2: field \"pk\"");
        Assert.False(File.Exists(output));

        string dir = Path.Combine(_dir, "outdir");
        Directory.CreateDirectory(dir);
        AssertClearError(await Meganet("verify", "--backend", "reference", "--in", input, "--out", dir), "is a directory");
        Assert.False(File.Exists(dir + ".tmp"));
    }

    [Theory]
    [InlineData("{\"pk\":\"00\",\"sig\":\"00\",\"sig\":\"01\",\"msg\":\"\"}", "\"sig\"")]
    [InlineData("{\"pk\":\"00\",\"sig\":\"00\",\"msg\":\"\",\"\\u0073ig\":\"01\"}", "\"sig\"")] // the same name, escaped
    [InlineData("{\"pk\":\"00\",\"sig\":\"00\",\"msg\":\"\",\"note\":1,\"note\":2}", "\"note\"")] // one verify does not read
    public async Task Verify_refuses_a_line_with_a_field_given_twice_naming_the_line_and_the_field(string line, string field)
    {
        // The last of the two counted, silently: the verdict was for one of two signatures, which one unsaid.
        string input = Path.Combine(_dir, "in.jsonl"), output = Path.Combine(_dir, "out.jsonl");
        await File.WriteAllTextAsync(input, "{\"pk\":\"00\",\"sig\":\"00\",\"msg\":\"\"}\n" + line + "\n");
        AssertClearError(await Meganet("verify", "--backend", "reference", "--in", input, "--out", output), $"meganet verify: line 2: field {field} is given twice");
        Assert.Empty(Directory.EnumerateFiles(_dir, "out.jsonl*"));

        // On standard output the line before it still gets its verdict, as before any bad line.
        Result printed = await Meganet("verify", "--backend", "reference", "--in", input);
        AssertClearError(printed, $"line 2: field {field} is given twice");
        Assert.Equal("{\"valid\":false}\n", printed.Stdout);
    }

    [Fact]
    public async Task Verify_refuses_a_field_name_it_cannot_read()
    {
        string input = Path.Combine(_dir, "in.jsonl");
        await File.WriteAllTextAsync(input, "{\"pk\":\"00\",\"sig\":\"00\",\"msg\":\"\",\"\\ud800\":1}\n");
        AssertClearError(await Meganet("verify", "--backend", "reference", "--in", input), "line 1: a field name is not valid text");
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task Ctrl_c_stops_verify_blocked_on_a_standard_input_that_stays_open_and_leaves_no_temporary_file(bool toFile)
    {
        // A read from a pipe whose writer neither writes nor closes cannot be cancelled: Ctrl+C waited out the 5 s grace
        // period, then the process ended under the command and left the --out file's OUT.*.tmp behind.
        // Through env --default-signal=INT, as in ProfileCommandTests: a test run in the background has SIGINT ignored.
        string output = Path.Combine(_dir, "out.jsonl");
        var psi = new ProcessStartInfo("env", ["--default-signal=INT", "dotnet", ExternalNode.MeganetPath(), "verify", "--backend", "reference", "--in", "-", "--batch", "1",
            .. (toFile ? new[] { "--out", output } : Array.Empty<string>())])
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            WorkingDirectory = _dir,
        };
        using Process verify = Process.Start(psi)!;
        var stdout = new StringBuilder();
        var stderr = new StringBuilder();
        verify.OutputDataReceived += (_, e) => Append(stdout, e.Data);
        verify.ErrorDataReceived += (_, e) => Append(stderr, e.Data);
        verify.BeginOutputReadLine();
        verify.BeginErrorReadLine();
        try
        {
            // Lines enough to be written out (a 16 KiB buffer on standard output): then it is past its set-up, in the
            // loop that reads; the pipe stays open.
            const int items = 2_000;
            for (int i = 0; i < items; i++)
            {
                await verify.StandardInput.WriteLineAsync("{\"pk\":\"00\",\"sig\":\"00\",\"msg\":\"\"}");
            }

            await verify.StandardInput.FlushAsync();
            var clock = Stopwatch.StartNew();
            while (toFile
                ? !Directory.EnumerateFiles(_dir, "out.jsonl.*.tmp").Any(f => new FileInfo(f).Length > 0)
                : Read(stdout).Length == 0)
            {
                if (verify.HasExited)
                {
                    Assert.Fail($"verify exited ({verify.ExitCode}) before writing; stderr: {Read(stderr)}");
                }

                Assert.True(clock.Elapsed < TimeSpan.FromMinutes(2), $"verify wrote nothing in 2 minutes; stderr: {Read(stderr)}");
                await Task.Delay(50);
            }

            // The rest verified, it waits for a line that does not come.
            await Task.Delay(500);
            using (Process kill = Process.Start("kill", ["-INT", verify.Id.ToString(System.Globalization.CultureInfo.InvariantCulture)])!)
            {
                await kill.WaitForExitAsync();
            }

            await verify.WaitForExitAsync().WaitAsync(TimeSpan.FromMinutes(1));
            verify.WaitForExit(); // the output's last lines
            string error = Read(stderr);
            Assert.True(verify.ExitCode == 130, $"exit code {verify.ExitCode}; stderr: {error}");
            // Stopped by itself, not ended by the grace period's end (which says it had not stopped); no bound on the
            // time it took, which a loaded machine can stretch.
            Assert.DoesNotContain("had not stopped", error, StringComparison.Ordinal);
            Assert.Empty(Directory.EnumerateFiles(_dir, "out.jsonl*"));
            if (toFile)
            {
                Assert.Contains("meganet verify: interrupted; no --out file was written.", error, StringComparison.Ordinal);
            }
            else
            {
                // Standard output has the verdicts written so far: all of them.
                Assert.Contains("meganet verify: interrupted.", error, StringComparison.Ordinal);
                Assert.Equal(Enumerable.Repeat("{\"valid\":false}", items), Read(stdout).Split('\n', StringSplitOptions.RemoveEmptyEntries));
            }
        }
        finally
        {
            if (!verify.HasExited)
            {
                verify.Kill(entireProcessTree: true);
            }
        }

        static void Append(StringBuilder text, string? line)
        {
            if (line is not null)
            {
                lock (text)
                {
                    text.Append(line).Append('\n');
                }
            }
        }

        static string Read(StringBuilder text)
        {
            lock (text)
            {
                return text.ToString();
            }
        }
    }

    [Theory]
    [InlineData("--connections", "9", "--connections must be between 1 and --clients (8); got 9.")]
    [InlineData("--rate", "Infinity", "--rate must be a finite number")]
    [InlineData("--forged", "-1", "--forged must be a finite number")]
    [InlineData("--mode", "fast", "--mode must be stream, unary, both or mixed (got 'fast').")]
    [InlineData("--envelopes", "0", "--envelopes must be at least 1")]
    [InlineData("--per-request", "257", "--per-request must be 1 to 256 (got 257).")]
    [InlineData("--per-request", "0", "--per-request must be 1 to 256 (got 0).")]
    public async Task Load_names_the_option_out_of_range(string option, string value, string expected) =>
        AssertClearError(await Meganet("load", option, value), expected);

    [Fact]
    public async Task Load_refuses_a_timeline_it_cannot_write_before_it_loads_anything()
    {
        // A folder that does not exist: refused at once, before the node is reached (there is none at this address).
        string path = Path.Combine(_dir, "no-such-folder", "calls.csv");
        AssertClearError(await Meganet("load", "--node", NoNode, "--timeline", path), $"meganet load: cannot write --timeline '{path}': ");
        Assert.False(Directory.Exists(Path.GetDirectoryName(path)));
    }

    [Theory]
    [InlineData("stream", "0", "--floor follows a unary phase; use it with --mode unary or both.")]
    [InlineData("mixed", "100", "--floor follows a unary phase; use it with --mode unary or both.")]
    [InlineData("unary", "0", "--floor needs an open loop: give --rate with --mode unary.")]
    public async Task Load_refuses_a_floor_without_an_open_loop_unary_phase(string mode, string rate, string expected) =>
        AssertClearError(await Meganet("load", "--floor", "--mode", mode, "--rate", rate), expected);

    [Theory]
    [InlineData("--backend picks the embedded node's verifier; a node given with --node uses its own", "load", "--node", "http://127.0.0.1:1", "--backend", "simd")]
    [InlineData("--rate sets the unary phase's offered load; use it with --mode unary, both or mixed.", "load", "--mode", "stream", "--rate", "100")]
    [InlineData("--mixed-share sets the mixed phase's load; use it with --mode mixed.", "load", "--mode", "both", "--mixed-share", "0.25")]
    [InlineData("--mixed-share must be above 0 and at most 1 (got 0); 0.5 is half the streaming rate.", "load", "--mode", "mixed", "--mixed-share", "0")]
    [InlineData("--mixed-share must be above 0 and at most 1 (got 1.5); 0.5 is half the streaming rate.", "load", "--mode", "mixed", "--mixed-share", "1.5")]
    // Out of range and without --mode mixed: the range is said first, as for --rate.
    [InlineData("--mixed-share must be above 0 and at most 1 (got 2); 0.5 is half the streaming rate.", "load", "--mode", "stream", "--mixed-share", "2")]
    [InlineData("--check-items sizes the check that --check runs", "bench", "--check-items", "10")]
    [InlineData("'sned' is not a command; did you mean 'send'?", "sned", "--to", "x")]
    [InlineData("Unrecognized command or argument '--ak'; did you mean '--ack'?", "fetch", "--ak")]
    [InlineData("Unrecognized command or argument '--jsn=1'; did you mean '--json'?", "status", "--jsn=1")]
    [InlineData("--ttl-days: 'abc' is not a number, such as 7 or 0.5.", "send", "--to", "x", "--text", "hi", "--ttl-days", "abc")]
    // Read as 25 (',' a thousands separator) by System.CommandLine's own parse.
    [InlineData("--ttl-days: '2,5' is not a number, such as 7 or 0.5 (no commas: 1000, or 2.5 for two and a half).", "send", "--to", "x", "--text", "hi", "--ttl-days", "2,5")]
    [InlineData("--rate: '1,000' is not a number, such as 7 or 0.5 (no commas: 1000, or 2.5 for two and a half).", "load", "--rate", "1,000")]
    [InlineData("--seconds: '0,5' is not a number, such as 7 or 0.5 (no commas: 1000, or 2.5 for two and a half).", "bench", "--seconds", "0,5")]
    // An option mistyped where a command takes arguments was bound to an argument: the error named other words, or
    // none, and 'contact remove' looked for a contact named '--identiy'.
    [InlineData("Unrecognized command or argument '--identty'; did you mean '--identity'?", "contact", "add", "--identty", "x", "bob", "mn1x")]
    [InlineData("Unrecognized command or argument '--identiy'; did you mean '--identity'?", "contact", "remove", "bob", "--identiy")]
    // The root's --help, two levels down.
    [InlineData("Unrecognized command or argument '--hlp'; did you mean '--help'?", "id", "new", "--hlp")]
    [InlineData("--identity: give the path of an identity file, not an empty one.", "fetch", "--identity", "")]
    [InlineData("--refresh: 'abc' is not a whole number.", "profile", "--refresh", "abc")]
    [InlineData("--duration '10' has no unit: write 10s, 10m, 10h or 10d.", "profile", "--trace", "x.nettrace", "--duration", "10")]
    [InlineData("--retry-for '30' has no unit: write 30s, 30m, 30h or 30d.", "listen", "--retry-for", "30")]
    [InlineData("--timeout must be more than 0, with a unit, such as 30s, 2m or 1h (got '0').", "fetch", "--timeout", "0")] // advised 0s, then refused it
    [InlineData("--retry-for must be more than 0, with a unit, such as 30s, 2m or 1h (got '-5').", "listen", "--retry-for", "-5")]
    [InlineData("a node URL is a scheme, host and port only", "fetch", "--node", "http://127.0.0.1:7700/some/path")]
    [InlineData("--backend must be one of auto, simd, gpu, gpu-cpu, reference (got '')", "node", "--backend", "")]
    public async Task Options_that_would_be_ignored_or_misread_are_refused_in_words(string expected, params string[] args) =>
        AssertClearError(await Meganet(args), expected);

    [Theory]
    [InlineData(Grpc.Core.StatusCode.ResourceExhausted, "full\u001b]52;c;ZXZpbA==\u0007\u001b[2J", "the node said ResourceExhausted: full\\u001b]52;c;ZXZpbA==\\u0007")]
    // Worded as the client's own deadline message, which is printed as it is: the node's is still the node's.
    [InlineData(Grpc.Core.StatusCode.DeadlineExceeded, "No answer from the node\r\u001b[2Kvalid\u0007", "No answer from the node\\u000d\\u001b[2Kvalid\\u0007")]
    public void A_nodes_error_text_is_printed_with_its_control_characters_shown_not_obeyed(Grpc.Core.StatusCode code, string detail, string shown)
    {
        // A node (or anyone on the path of plain http) chooses grpc-message: escape sequences in it rewrote the screen
        // or set the clipboard (OSC 52) when printed raw.
        string line = MegaNet.Node.Cli.ClientCommands.Describe(new Grpc.Core.RpcException(new Grpc.Core.Status(code, detail)));
        Assert.DoesNotContain('\u001b', line);
        Assert.DoesNotContain('\u0007', line);
        Assert.DoesNotContain('\r', line);
        Assert.Contains(shown, line, StringComparison.Ordinal);
    }

    [Fact]
    public void A_nodes_status_is_printed_with_its_control_characters_shown_not_obeyed()
    {
        // 'meganet status' prints the node's version and backend description, which the node chooses.
        var status = new MegaNet.Api.V1.StatusResponse
        {
            Version = "1.0\u001b]52;c;ZXZpbA==\u0007",
            VerifierBackend = "simd\u001b[2J",
            VerifierDescription = "lanes\nnode id   forged",
            Limits = new MegaNet.Api.V1.Limits { MailboxMaxCount = 10, MailboxMaxBytes = 100 },
        };
        var head = new MegaNet.Api.V1.SignedTreeHead { NodeKey = Google.Protobuf.ByteString.CopyFrom(new byte[32]) };
        string text = MegaNet.Node.Cli.ClientCommands.DescribeStatus(new Uri("http://127.0.0.1:7700"), status, head);
        Assert.DoesNotContain('\u001b', text);
        Assert.DoesNotContain('\u0007', text);
        Assert.Contains("MegaNet 1.0\\u001b]52;c;ZXZpbA==\\u0007", text, StringComparison.Ordinal);
        Assert.Single(text.Split('\n'), l => l.StartsWith("node id", StringComparison.Ordinal)); // no line of the node's making
    }

    [Fact]
    public async Task A_node_that_never_answers_ends_a_client_command_at_its_timeout_which_the_error_names()
    {
        // Accepts connections and never answers: the advice used to be "give the call a longer deadline", which the
        // command line had no way to do.
        using var silent = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        silent.Start();
        string address = $"http://127.0.0.1:{((System.Net.IPEndPoint)silent.LocalEndpoint).Port}";
        string alice = NewIdentity("alice"), bob = NewIdentity("bob");
        string card = Card();

        var waited = System.Diagnostics.Stopwatch.StartNew();
        Result r = await Meganet("send", "--identity", alice, "--node", address, "--to", card, "--text", "hi", "--timeout", "1s");
        AssertClearError(r, "No answer from the node within 1 s (the client's default deadline, --timeout)", exitCode: 2);
        Assert.Contains("give --timeout more time", r.Stderr, StringComparison.Ordinal);
        Assert.True(waited.Elapsed < TimeSpan.FromSeconds(25), $"send took {waited.Elapsed.TotalSeconds:F1} s with --timeout 1s");

        AssertClearError(await Meganet("fetch", "--identity", bob, "--node", address, "--timeout", "1s"), "(the client's default deadline, --timeout)", exitCode: 2);

        // listen's calls (the challenge before its subscription here) too: it had no --timeout, and named the library's
        // MegaNetClientOptions.DefaultDeadline after 30 s.
        waited.Restart();
        Result listened = await Meganet("listen", "--identity", bob, "--node", address, "--timeout", "2s");
        AssertClearError(listened, "No answer from the node within 2 s (the client's default deadline, --timeout)", exitCode: 2);
        Assert.DoesNotContain("MegaNetClientOptions", listened.Stderr, StringComparison.Ordinal);
        Assert.True(waited.Elapsed < TimeSpan.FromSeconds(25), $"listen took {waited.Elapsed.TotalSeconds:F1} s with --timeout 2s");
    }

    [Fact]
    public async Task Verify_says_when_its_output_was_lost_and_refuses_a_directory_as_input_or_a_missing_output_directory()
    {
        // Before, `verify | head -1` exited 0 saying every item was verified, with the verdicts lost in a closed pipe.
        string input = Path.Combine(_dir, "items.jsonl");
        string item = "{\"pk\":\"" + new string('0', 64) + "\",\"sig\":\"" + new string('0', 128) + "\",\"msg\":\"\"}";
        await File.WriteAllLinesAsync(input, Enumerable.Repeat(item, 20_000));
        Result closed = await MeganetProcess.RunAsync(_dir, null, closeStdout: true, "verify", "--in", input, "--backend", "reference");
        AssertClearError(closed, "standard output failed");
        Assert.DoesNotContain("items verified", closed.Stderr, StringComparison.Ordinal);

        AssertClearError(await Meganet("verify", "--in", _dir), $"--in {_dir} is a directory");
        string missing = Path.Combine(_dir, "missing", "x.out");
        AssertClearError(await Meganet("verify", "--in", input, "--out", missing), $"the directory {Path.Combine(_dir, "missing")} does not exist");
        Assert.False(Directory.Exists(Path.Combine(_dir, "missing")));
    }

    [Fact]
    public async Task Id_new_force_replaces_a_file_but_not_a_symbolic_link_or_a_directory()
    {
        // Replacing renames over the name: a link (or a device such as /dev/full, when run as root) was swapped for a
        // plain file instead of being written through.
        string target = Path.Combine(_dir, "target.json"), link = Path.Combine(_dir, "link.json");
        await File.WriteAllTextAsync(target, "keep");
        File.CreateSymbolicLink(link, target);
        AssertClearError(await Meganet("id", "new", "--identity", link, "--force"), "is not a regular file");
        Assert.Equal(target, new FileInfo(link).LinkTarget);
        Assert.Equal("keep", await File.ReadAllTextAsync(target));

        AssertClearError(await Meganet("id", "new", "--identity", _dir, "--force"), "is a directory");

        string plain = Path.Combine(_dir, "plain.json");
        await File.WriteAllTextAsync(plain, "old");
        Result replaced = await Meganet("id", "new", "--identity", plain, "--force");
        Assert.True(replaced.ExitCode == 0, replaced.Stderr);
        Assert.NotEqual("old", await File.ReadAllTextAsync(plain));
    }

    [Fact]
    public async Task Load_refuses_batched_requests_without_a_streaming_phase() =>
        AssertClearError(await Meganet("load", "--mode", "unary", "--per-request", "64"), "--per-request batches streamed requests; use it with --mode stream, both or mixed.");

    [Fact]
    public async Task Load_refuses_a_backend_or_an_unreachable_node_before_sealing_and_leaves_no_directory()
    {
        string[] before = Directory.GetDirectories(Path.GetTempPath(), "meganet-load-*");
        AssertClearError(await Meganet("load", "--backend", "libsodium"), "libsodium's rule");
        // The baseline of every bench row: named as a backend too, it came out twice per batch size under one name.
        AssertClearError(await Meganet("bench", "--backend", "simd,libsodium", "--batch", "1"), "libsodium is the baseline");
        // Each names only the backends it takes: the catalog's own list of known names offered libsodium to both.
        AssertClearError(await Meganet("load", "--backend", "nope"), "Unknown verifier backend 'nope'. A node runs one of auto, simd, gpu, gpu-cpu, reference.");
        AssertClearError(await Meganet("bench", "--backend", "simd,nope", "--batch", "1"), "--backend: unknown backend 'nope'; choose from reference, simd, gpu, gpu-cpu, auto (libsodium, the baseline, is timed beside each).");
        Assert.Equal(before.Order(), Directory.GetDirectories(Path.GetTempPath(), "meganet-load-*").Order());

        Result r = await Meganet("load", "--node", NoNode);
        AssertClearError(r, "cannot reach the node", exitCode: 2);
        Assert.DoesNotContain("sealing", r.Stdout, StringComparison.Ordinal);
    }

    [SkippableFact]
    public void Profiler_keeps_processes_not_threads()
    {
        Assert.True(NodeProfiler.IsLiveProcess(Environment.ProcessId));
        Skip.IfNot(OperatingSystem.IsLinux(), "threads have /proc entries of their own on Linux only");

        // Another thread of this process: its id has a /proc entry, but it is no process.
        using var started = new ManualResetEventSlim();
        using var release = new ManualResetEventSlim();
        int threadId = 0;
        var thread = new Thread(() =>
        {
            threadId = Gettid();
            started.Set();
            release.Wait();
        });
        thread.Start();
        started.Wait();
        try
        {
            Assert.NotEqual(Environment.ProcessId, threadId);
            Assert.True(Directory.Exists($"/proc/{threadId}"));
            Assert.False(NodeProfiler.IsLiveProcess(threadId));
        }
        finally
        {
            release.Set();
            thread.Join();
        }

        Assert.False(NodeProfiler.IsLiveProcess(int.MaxValue));
    }

    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "gettid")]
    private static extern int Gettid();

    [Fact]
    public void Every_setting_in_the_readme_table_binds_and_no_other_key_is_accepted()
    {
        string readme = File.ReadAllText(Checkout.Path("README.md"));
        string table = readme[readme.IndexOf("| option | default | meaning |", StringComparison.Ordinal)..];
        table = table[..table.IndexOf("\n\n", StringComparison.Ordinal)];
        string[] documented = table.Split('\n').Skip(2)
            .SelectMany(row => row.Split('|')[1].Split(',').Select(name => name.Trim().Trim('`')))
            .ToArray();
        Assert.True(documented.Length > 20, table);
        string[] undocumented = typeof(NodeOptions).GetProperties(System.Reflection.BindingFlags.Public | System.Reflection.BindingFlags.Instance)
            .Where(p => p.SetMethod is { IsPublic: true })
            .Select(p => p.Name)
            .Except(documented)
            .ToArray();
        Assert.True(undocumented.Length == 0, $"Node options missing from README's table: {string.Join(", ", undocumented)}");
        var values = documented.ToDictionary(name => $"MegaNet:{name}", name => (string?)(name switch
        {
            "DataDirectory" or "TlsCertificate" or "TlsKey" or "Backend" => "x",
            "Listen" or "MetricsListen" => "127.0.0.1:1",
            "GpuInlinePtx" => "true",
            _ => "2",
        }));
        IConfigurationRoot configuration = new ConfigurationBuilder().AddInMemoryCollection(values).Build();
        NodeCommand.RejectUnknownSettings(configuration, "README");
        var options = new NodeOptions();
        configuration.GetSection(NodeCommand.Section).Bind(options);
        Assert.Equal(2, options.KeepaliveSeconds);
        Assert.Equal("x", options.TlsKey);

        values["MegaNet:Keepalive"] = "2";
        ArgumentException e = Assert.Throws<ArgumentException>(() =>
            NodeCommand.RejectUnknownSettings(new ConfigurationBuilder().AddInMemoryCollection(values).Build(), "meganet.json"));
        Assert.Contains("MegaNet:Keepalive ", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Bench_refuses_an_output_it_cannot_write_before_the_sweep()
    {
        string dir = Directory.CreateDirectory(Path.Combine(_dir, "out")).FullName;
        string[] sweep = ["bench", "--backend", "reference", "--batch", "1", "--threads", "1", "--seconds", "0.3"];

        Result r = await Meganet([.. sweep, "--json", dir]);
        AssertClearError(r, $"--json {dir}: is a directory");
        Assert.DoesNotContain("CPU ", r.Stdout, StringComparison.Ordinal); // refused before the sweep's header

        string missing = Path.Combine(_dir, "missing", "bench.png");
        r = await Meganet([.. sweep, "--plot", missing]);
        AssertClearError(r, $"--plot {missing}: cannot write there (the directory {Path.Combine(_dir, "missing")} does not exist)");
        Assert.DoesNotContain("CPU ", r.Stdout, StringComparison.Ordinal);

        // A writable --json beside an unwritable --plot: nothing is made at --json's path.
        string json = Path.Combine(_dir, "bench.json");
        AssertClearError(await Meganet([.. sweep, "--json", json, "--plot", dir]), "--plot");
        Assert.False(File.Exists(json));
    }

    [Fact]
    public async Task Profile_refuses_a_trace_path_it_cannot_write_before_attaching()
    {
        string missing = Path.Combine(_dir, "missing", "x.nettrace");
        Result r = await Meganet("profile", "--trace", missing, "--duration", "1s");
        AssertClearError(r, $"--trace {missing}: cannot write there (the directory {Path.Combine(_dir, "missing")} does not exist)");
        Assert.DoesNotContain("tracing", r.Stdout, StringComparison.Ordinal);

        AssertClearError(await Meganet("profile", "--trace", _dir), "is a directory");

        // Programmatically too, before any session starts (this test process would otherwise be attached to).
        ProfilerException e = await Assert.ThrowsAsync<ProfilerException>(() => NodeProfiler.TraceAsync(Environment.ProcessId, missing, TimeSpan.FromSeconds(1)));
        Assert.Contains("does not exist", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_trace_that_cannot_be_summarised_is_a_one_line_profiler_error()
    {
        string bad = Path.Combine(_dir, "bad.nettrace");
        File.WriteAllText(bad, "not a trace");

        ProfilerException e = Assert.Throws<ProfilerException>(() => TraceSummary.Summarize(bad, 10));

        Assert.Contains($"cannot summarise the trace {bad}", e.Message, StringComparison.Ordinal);
        Assert.DoesNotContain("\n", e.Message, StringComparison.Ordinal);
        Assert.False(File.Exists(Path.ChangeExtension(bad, ".etlx")));
        Assert.Throws<ProfilerException>(() => TraceSummary.Summarize(Path.Combine(_dir, "absent.nettrace"), 10));
    }

    [Theory]
    [InlineData(0)]    // two at once (as `timeout` delivers one): the same signal, the grace period holds
    [InlineData(1500)] // a second one later: the person means it, ended at once
    public async Task A_command_that_does_not_stop_on_sigterm_is_ended_after_its_grace_period_with_143_saying_so(int secondSignalAfterMs)
    {
        // A command stuck where it cannot watch for cancellation: verify blocked writing its verdicts to a standard output
        // nobody reads (SIGTERM ended such a command after 5 s with 130, as if it were Ctrl+C). (A standard input that
        // stays open no longer holds it: it stops waiting for one.) libsodium's rule makes it say so on stderr first,
        // after its signal handling is in place; 100,000 verdicts are 1.6 MB, far more than a pipe holds.
        string input = Path.Combine(_dir, "items.jsonl");
        await File.WriteAllLinesAsync(input, Enumerable.Repeat("{\"pk\":\"\",\"sig\":\"\",\"msg\":\"\"}", 100_000));
        using Process bench = Process.Start(MeganetProcess.StartInfo(_dir, "verify", "--backend", "libsodium", "--in", input, "--batch", "1"))!;
        var errors = new StringBuilder();
        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        Task reading = Task.Run(async () =>
        {
            while (await bench.StandardError.ReadLineAsync() is string line)
            {
                lock (errors)
                {
                    errors.AppendLine(line);
                }

                if (line.Contains("applies libsodium's rule", StringComparison.Ordinal))
                {
                    started.TrySetResult();
                }
            }
        });
        Task<string> stderr = reading.ContinueWith(_ =>
        {
            lock (errors)
            {
                return errors.ToString();
            }
        }, TaskScheduler.Default);
        try
        {
            // Its signal handling is in place once it prints (the line comes after start-up); a moment later the pipe is
            // full (64 KiB: 4,096 verdicts).
            await started.Task.WaitAsync(TimeSpan.FromMinutes(2));
            await Task.Delay(1000);
            var clock = Stopwatch.StartNew();
            string pid = bench.Id.ToString(System.Globalization.CultureInfo.InvariantCulture);
            // Two at once from one kill(1), microseconds apart: a second kill process could start more than the 500 ms
            // that make a second signal deliberate on a loaded machine (seen once in a run of four test classes).
            using (Process kill = Process.Start("kill", secondSignalAfterMs == 0 ? ["-TERM", pid, pid] : ["-TERM", pid])!)
            {
                await kill.WaitForExitAsync();
            }

            if (secondSignalAfterMs > 0)
            {
                await Task.Delay(secondSignalAfterMs);
                using Process kill = Process.Start("kill", ["-TERM", pid])!;
                await kill.WaitForExitAsync();
            }

            await bench.WaitForExitAsync().WaitAsync(TimeSpan.FromMinutes(1));
            string error = await stderr.WaitAsync(TimeSpan.FromSeconds(30));
            Assert.True(bench.ExitCode == 143, $"exit code {bench.ExitCode}; stderr: {error}");
            if (secondSignalAfterMs == 0)
            {
                Assert.Contains("meganet: interrupted; the command had not stopped 5 s after the signal, so it was ended.", error, StringComparison.Ordinal);
                Assert.True(clock.Elapsed > TimeSpan.FromSeconds(4.5), $"exited {clock.Elapsed.TotalSeconds:0.0} s after SIGTERM, before its 5 s grace");
            }
            else
            {
                Assert.Contains("meganet: interrupted again; the command was ended before it had stopped.", error, StringComparison.Ordinal);
            }

            Assert.True(clock.Elapsed < TimeSpan.FromSeconds(40), $"exited {clock.Elapsed.TotalSeconds:0.0} s after SIGTERM (grace 5 s)");
        }
        finally
        {
            if (!bench.HasExited)
            {
                bench.Kill(entireProcessTree: true);
            }
        }

        await reading.WaitAsync(TimeSpan.FromSeconds(30));
        // Read only now, the process gone: what the pipe held.
        await bench.StandardOutput.ReadToEndAsync().WaitAsync(TimeSpan.FromSeconds(30));
    }
}
