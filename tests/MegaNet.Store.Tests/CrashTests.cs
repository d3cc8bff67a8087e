using System.Diagnostics;
using MegaNet.Core.Transparency;
using MegaNet.Store;
using Xunit.Abstractions;
using static MegaNet.Store.Tests.StoreTestKit;

namespace MegaNet.Store.Tests;

/// <summary>kill -9 at random moments: every acknowledged envelope, mailbox entry and log leaf survives.</summary>
public sealed class CrashTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = NewDirectory();

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public async Task Acknowledged_writes_and_deletes_survive_sigkill_in_every_round()
    {
        int seed = StoreTestKit.Seed(1_000_000);
        output.WriteLine($"seed {seed}");
        var random = new Random(seed);
        byte[] key = NewNodeKey();
        string child = CrashChildPath();
        var acknowledged = new AcknowledgedWrites();
        SignedTreeHead? previous = null;
        const int Rounds = 20;
        for (int round = 0; round < Rounds; round++)
        {
            var psi = new ProcessStartInfo("dotnet", [child, _dir, Convert.ToHexString(key), (seed + round).ToString(System.Globalization.CultureInfo.InvariantCulture)])
            {
                RedirectStandardOutput = true,
                RedirectStandardError = true,
            };
            using Process process = Process.Start(psi)!;
            var lines = new List<string>();
            var ready = new TaskCompletionSource();
            // The kill lands after a random number of acknowledgements, not a random time after start: under load (CI,
            // three test projects on two cores) the child's first commits took longer than the old 50–600 ms, and 19 of
            // 20 rounds were killed before acknowledging anything.
            int killAfterAcks = random.Next(1, 80);
            int acksSeen = 0;
            var acksReached = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            process.OutputDataReceived += (_, e) =>
            {
                if (e.Data is null)
                {
                    return;
                }

                lock (lines)
                {
                    lines.Add(e.Data);
                }

                if (e.Data.StartsWith("READY", StringComparison.Ordinal))
                {
                    ready.TrySetResult();
                }
                else if (e.Data.StartsWith("ACK ", StringComparison.Ordinal) && Interlocked.Increment(ref acksSeen) >= killAfterAcks)
                {
                    acksReached.TrySetResult();
                }
            };
            process.BeginOutputReadLine();
            Task exited = process.WaitForExitAsync();
            if (await Task.WhenAny(ready.Task, exited, Task.Delay(TimeSpan.FromSeconds(60))) != ready.Task)
            {
                Assert.Fail($"round {round}: the child did not start: {await process.StandardError.ReadToEndAsync()}");
            }

            if (await Task.WhenAny(acksReached.Task, exited, Task.Delay(TimeSpan.FromSeconds(120))) != acksReached.Task)
            {
                Assert.Fail($"round {round}: the child acknowledged {Volatile.Read(ref acksSeen)} of the {killAfterAcks} puts awaited within 2 minutes{(exited.IsCompleted ? $" and exited: {await process.StandardError.ReadToEndAsync()}" : "")}");
            }

            // Then a moment more, so the kill also lands between acknowledgements (inside commits and checkpoints).
            await Task.Delay(random.Next(0, 100));
            process.Kill(entireProcessTree: true); // SIGKILL on Unix
            Task killed = process.WaitForExitAsync();
            Assert.True(await Task.WhenAny(killed, Task.Delay(TimeSpan.FromSeconds(60))) == killed, $"round {round}: the child had not exited 60 s after SIGKILL");

            int acks;
            lock (lines)
            {
                acks = acknowledged.Read(lines);
            }

            await using FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(new StoreOptions { DataDirectory = _dir, NodeSecretKey = key, MemoryBudgetBytes = 8L << 20 });
            SignedTreeHead head = await acknowledged.AssertHeldByAsync(store, previous, $"round {round}");
            output.WriteLine($"round {round}: {acks} acknowledged before the kill, {acknowledged.Puts} in total ({acknowledged.Deletes} deleted), tree size {head.TreeSize}");
            previous = head;
        }

        Assert.True(acknowledged.Puts > Rounds && acknowledged.Deletes > Rounds / 4, $"the child acknowledged almost nothing ({acknowledged.Puts} puts, {acknowledged.Deletes} deletes); the test proved little");
    }
}
