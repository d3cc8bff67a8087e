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
        int seed = Environment.GetEnvironmentVariable("MEGANET_TEST_SEED") is { } s ? int.Parse(s, System.Globalization.CultureInfo.InvariantCulture) : System.Security.Cryptography.RandomNumberGenerator.GetInt32(1_000_000);
        output.WriteLine($"seed {seed}");
        var random = new Random(seed);
        byte[] key = NewNodeKey();
        // The child runs from its own build output (its own deps.json), built alongside this project.
        string child = Path.Combine(AppContext.BaseDirectory.Replace("MegaNet.Store.Tests", "MegaNet.Store.CrashChild", StringComparison.Ordinal), "MegaNet.Store.CrashChild.dll");
        Assert.True(File.Exists(child), $"{child} is missing; build the solution first");
        var acknowledged = new Dictionary<string, (long Index, string Recipient, ulong Seq)>();
        // Deleted by an acknowledged ack (must be gone from the mailbox), and asked to be deleted (either way).
        var deleted = new HashSet<string>();
        var deleting = new HashSet<string>();
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
            };
            process.BeginOutputReadLine();
            Task exited = process.WaitForExitAsync();
            if (await Task.WhenAny(ready.Task, exited, Task.Delay(TimeSpan.FromSeconds(60))) != ready.Task)
            {
                Assert.Fail($"round {round}: the child did not start: {await process.StandardError.ReadToEndAsync()}");
            }

            await Task.Delay(random.Next(50, 600));
            process.Kill(entireProcessTree: true); // SIGKILL on Unix
            await process.WaitForExitAsync();

            int acks = 0;
            lock (lines)
            {
                foreach (string line in lines)
                {
                    string[] parts = line.Split(' ');
                    switch (parts[0])
                    {
                        case "ACK":
                            acknowledged[parts[1]] = (long.Parse(parts[2], System.Globalization.CultureInfo.InvariantCulture), parts[3], ulong.Parse(parts[4], System.Globalization.CultureInfo.InvariantCulture));
                            acks++;
                            break;
                        case "DELETING":
                            deleting.Add(parts[1]);
                            break;
                        case "DELETED":
                            deleted.Add(parts[1]);
                            break;
                    }
                }
            }

            await using FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(new StoreOptions { DataDirectory = _dir, NodeSecretKey = key, MemoryBudgetBytes = 8L << 20 });
            SignedTreeHead head = store.GetTreeHead();
            Assert.True(TreeHeadSignature.Verify(head.NodePublicKey, head.TreeSize, head.RootHash, head.TimestampUnixMs, head.Signature), $"round {round}: tree head signature");
            if (previous is not null)
            {
                Assert.True(head.TreeSize >= previous.TreeSize, $"round {round}: the log shrank from {previous.TreeSize} to {head.TreeSize}");
                Assert.True(MerkleTree.VerifyConsistency(previous.TreeSize, head.TreeSize, previous.RootHash, head.RootHash, store.GetConsistencyProof(previous.TreeSize, head.TreeSize)),
                    $"round {round}: head {head.TreeSize} is not consistent with {previous.TreeSize}");
            }

            var byRecipient = new Dictionary<string, HashSet<ulong>>();
            foreach ((string id, (long index, string recipient, ulong seq)) in acknowledged)
            {
                PutReceipt? receipt = await store.FindAsync(Convert.FromHexString(id));
                Assert.True(receipt is not null, $"round {round}: acknowledged envelope {id} is missing");
                Assert.Equal(index, receipt!.LogIndex);
                Assert.True(index < head.TreeSize);
                Assert.True(MerkleTree.VerifyInclusion(MerkleTree.LeafHash(Convert.FromHexString(id)), index, head.TreeSize, store.GetInclusionProof(index, head.TreeSize), head.RootHash),
                    $"round {round}: leaf {index} is not in the tree");
                if (!byRecipient.TryGetValue(recipient, out HashSet<ulong>? seqs))
                {
                    seqs = [];
                    foreach (MailboxEntry e in (await store.ListAsync(Convert.FromHexString(recipient), 0, 100_000)).Entries)
                    {
                        seqs.Add(e.Seq);
                    }

                    byRecipient[recipient] = seqs;
                }

                if (deleted.Contains(id))
                {
                    Assert.False(seqs.Contains(seq), $"round {round}: mailbox entry {seq} of {recipient} was deleted and is back");
                }
                else if (!deleting.Contains(id))
                {
                    Assert.True(seqs.Contains(seq), $"round {round}: mailbox entry {seq} of {recipient} is missing");
                }
            }

            output.WriteLine($"round {round}: {acks} acknowledged before the kill, {acknowledged.Count} in total ({deleted.Count} deleted), tree size {head.TreeSize}");
            previous = head;
        }

        Assert.True(acknowledged.Count > Rounds && deleted.Count > Rounds / 4, $"the child acknowledged almost nothing ({acknowledged.Count} puts, {deleted.Count} deletes); the test proved little");
    }
}
