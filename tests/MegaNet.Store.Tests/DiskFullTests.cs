using System.Diagnostics;
using System.Globalization;
using MegaNet.Core.Transparency;
using MegaNet.Store;
using Xunit.Abstractions;
using static MegaNet.Store.Tests.StoreTestKit;

namespace MegaNet.Store.Tests;

/// <summary>
/// A real full disk: the writer child runs on a 6 MiB tmpfs of its own (mounted inside a private user and mount
/// namespace, so the test needs no privileges and leaves no mount behind) until the store refuses a write. The store
/// must refuse with an error that says what to do, keep refusing, keep serving reads, and lose nothing it acknowledged:
/// the files as the full disk left them, copied to a disk with room (an operator who freed space), reopen with every
/// acknowledged put, delete and log leaf, and take writes again.
/// </summary>
public sealed class DiskFullTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = NewDirectory();

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public async Task A_full_disk_refuses_writes_with_a_clear_error_and_loses_nothing_acknowledged()
    {
        int seed = StoreTestKit.Seed(1_000_000);
        output.WriteLine($"seed {seed}");
        byte[] key = NewNodeKey();
        string disk = Directory.CreateDirectory(Path.Combine(_dir, "disk")).FullName;
        string copy = Path.Combine(_dir, "copy");
        // The copy is taken inside the namespace, after the child exited: the tmpfs goes away with the namespace.
        const string Script = """
            mount -t tmpfs -o size=6m meganet-full "$1" || exit 90
            dotnet "$2" fill "$1/store" "$3" "$4"
            rc=$?
            cp -a "$1/store" "$5" || exit 91
            exit $rc
            """;
        var psi = new ProcessStartInfo("unshare", ["-Urm", "sh", "-c", Script, "sh", disk, CrashChildPath(), Convert.ToHexString(key), seed.ToString(CultureInfo.InvariantCulture), copy])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        Process process;
        try
        {
            process = Process.Start(psi)!;
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            Assert.Fail($"this test runs the writer on a small tmpfs inside 'unshare -Urm' (util-linux), which could not start: {e.Message}");
            throw;
        }

        using (process)
        {
            Task<string> stdout = process.StandardOutput.ReadToEndAsync();
            Task<string> stderr = process.StandardError.ReadToEndAsync();
            using (var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(3)))
            {
                await process.WaitForExitAsync(timeout.Token);
            }

            string[] lines = (await stdout).Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
            string errors = await stderr;
            Assert.True(process.ExitCode == 0, process.ExitCode switch
            {
                90 => $"could not mount a tmpfs in a private namespace (unprivileged user namespaces off?): {errors}",
                91 => $"could not copy the store off the full tmpfs: {errors}",
                _ => $"the writer exited with {process.ExitCode}: {errors}",
            });

            var acknowledged = new AcknowledgedWrites();
            int acks = acknowledged.Read(lines);
            string Line(string tag) => lines.FirstOrDefault(l => l.StartsWith(tag + " ", StringComparison.Ordinal) || l == tag) ?? "";
            string refused = Line("REFUSED");
            output.WriteLine($"{acks} puts and {acknowledged.Deletes} deletes acknowledged; {refused}; {Line("STILL-REFUSED")}; {Line("CLOSED")}{Line("CLOSE-FAILED")}");
            Assert.True(acks >= 100, $"only {acks} puts were acknowledged before the disk filled; the test proved little");
            Assert.StartsWith("REFUSED StoreUnavailableException ", refused);
            Assert.Contains("Free disk space", refused, StringComparison.Ordinal);
            Assert.Contains("nothing was acknowledged", refused, StringComparison.Ordinal);
            if (refused.Contains("error code 28", StringComparison.Ordinal))
            {
                // FASTER's bare errno, named for the operator.
                Assert.Contains("No space left on device", refused, StringComparison.Ordinal);
            }

            Assert.StartsWith("STILL-REFUSED StoreUnavailableException ", Line("STILL-REFUSED"));
            Assert.DoesNotContain("ACCEPTED-AFTER-REFUSAL", lines);
            // An asked-for checkpoint is not reported taken when the store is refusing.
            Assert.StartsWith("CHECKPOINT-REFUSED StoreUnavailableException ", Line("CHECKPOINT-REFUSED"));
            Assert.StartsWith("READ-OK ", Line("READ-OK"));
            Assert.True(Line("CLOSED") != "" || Line("CLOSE-FAILED").Contains("free disk space", StringComparison.Ordinal), $"the close neither succeeded nor said why not: {Line("CLOSE-FAILED")}");

            // Space freed: the same files reopen with everything acknowledged, and writes work again.
            await using FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(new StoreOptions { DataDirectory = copy, NodeSecretKey = key, MemoryBudgetBytes = 8L << 20 });
            SignedTreeHead head = await acknowledged.AssertHeldByAsync(store, null, "after the full disk");
            PutReceipt receipt = await store.PutAsync(new PutRequest(new byte[300], new byte[32], DateTimeOffset.UtcNow.AddDays(1)));
            Assert.Equal(head.TreeSize, receipt.LogIndex);
            output.WriteLine($"reopened: tree size {head.TreeSize}; a new put took log index {receipt.LogIndex}");
        }
    }
}
