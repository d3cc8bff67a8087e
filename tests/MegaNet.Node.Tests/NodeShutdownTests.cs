using Grpc.Core;
using MegaNet.Api;
using Xunit.Abstractions;

namespace MegaNet.Node.Tests;

/// <summary>
/// A stop is reported clean (exit 0, "stopped cleanly") only when the store took its shutdown checkpoint; a node that
/// could not take it (its disk is full) logs why as critical and exits with code 3, as README promises.
/// </summary>
public sealed class NodeShutdownTests(ITestOutputHelper output)
{
    [Fact]
    public async Task Sigterm_on_a_full_disk_exits_3_and_says_no_checkpoint_was_taken()
    {
        string root = Directory.CreateTempSubdirectory("meganet-fullstop-").FullName;
        try
        {
            string disk = Directory.CreateDirectory(Path.Combine(root, "disk")).FullName;
            var environment = new Dictionary<string, string>
            {
                ["MEGANET_MegaNet__SubmitRatePerKey"] = "1000000",
                ["MEGANET_MegaNet__SubmitBurst"] = "1000000",
                ["MEGANET_MegaNet__StoreMemoryMiB"] = "8",
                ["MEGANET_MegaNet__StoreMinFreeDiskMiB"] = "0", // these fill a 10 MiB tmpfs on purpose
            };
            await using ExternalNode node = await ExternalNode.StartAsync(disk, environment, tmpfsMiB: 10, copyTo: Path.Combine(root, "copy"));
            (int receipts, bool refused) = await FillAsync(node.Address);
            Assert.True(refused, $"the disk did not fill within 2 minutes ({receipts} receipts)");
            Assert.True(receipts >= 100, $"only {receipts} receipts before the disk filled; the test proved little");

            using (System.Diagnostics.Process kill = System.Diagnostics.Process.Start("kill", ["-TERM", node.ProcessId.ToString(System.Globalization.CultureInfo.InvariantCulture)]))
            {
                await kill.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(60));
            }

            // The node, not its wrapper, must have exited by itself before the wrapper's exit code is read.
            for (int wait = 0; wait < 900 && IsRunning(node.ProcessId); wait++)
            {
                await Task.Delay(100);
            }

            Assert.False(IsRunning(node.ProcessId), $"the node did not stop within 90 s of SIGTERM: {node.Output}");
            int exitCode = await node.KillAsync();
            output.WriteLine($"{receipts} receipts; exit code {exitCode}; node output:{Environment.NewLine}{node.Output}");
            Assert.Equal(3, exitCode);
            Assert.Contains("closed without its shutdown checkpoint", node.Output, StringComparison.Ordinal);
            Assert.Contains("crit: MegaNet.Node", node.Output, StringComparison.Ordinal);
            Assert.DoesNotContain("stopped cleanly", node.Output, StringComparison.Ordinal);
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }

    private static bool IsRunning(int pid)
    {
        try
        {
            using var process = System.Diagnostics.Process.GetProcessById(pid);
            return !process.HasExited;
        }
        catch (ArgumentException)
        {
            return false;
        }
    }

    /// <summary>Four clients send 3,000-byte messages until the node refuses one (its disk is full), at most 2 minutes.</summary>
    private static async Task<(int Receipts, bool Refused)> FillAsync(Uri address)
    {
        int receipts = 0;
        bool refused = false;
        using var full = new CancellationTokenSource(TimeSpan.FromMinutes(2));
        // Each send is bounded too (the loop's condition is only looked at between sends): a send the node never
        // answers fails the test saying so instead of hanging it.
        using var stuck = new CancellationTokenSource(TimeSpan.FromMinutes(4));
        using Identity recipient = Identity.Create();
        await Task.WhenAll(Enumerable.Range(0, 4).Select(i => Task.Run(async () =>
        {
            using var client = new MegaNetClient(address);
            using Identity sender = Identity.Create();
            var random = new Random(i);
            byte[] content = new byte[3000];
            while (!full.IsCancellationRequested)
            {
                random.NextBytes(content);
                try
                {
                    await client.SendAsync(sender, recipient.Card, content, "application/octet-stream", cancellationToken: stuck.Token);
                    Interlocked.Increment(ref receipts);
                }
                catch (RpcException e) when (e.StatusCode == StatusCode.Cancelled && stuck.IsCancellationRequested)
                {
                    throw new TimeoutException($"a send got no answer within 4 minutes of the first ({Volatile.Read(ref receipts)} receipts, disk full: {Volatile.Read(ref refused)})", e);
                }
                catch (RpcException e) when (e.StatusCode == StatusCode.Unavailable)
                {
                    Volatile.Write(ref refused, true);
                    await full.CancelAsync();
                }
            }
        })));
        return (receipts, refused);
    }
}
