using MegaNet.Core.Ed25519;
using MegaNet.Store;

namespace MegaNet.Store.Tests;

/// <summary>A clock tests move by hand.</summary>
public sealed class ManualClock(DateTimeOffset start) : TimeProvider
{
    public DateTimeOffset Now { get; set; } = start;

    public override DateTimeOffset GetUtcNow() => Now;
}

/// <summary>Helpers: a fresh data directory and a node key per test.</summary>
public static class StoreTestKit
{
    public static byte[] NewNodeKey(int seed = 1)
    {
        byte[] s = new byte[32];
        new Random(seed).NextBytes(s);
        byte[] pk = new byte[32], sk = new byte[64];
        Ed25519Signer.KeyPairFromSeed(s, pk, sk);
        return sk;
    }

    /// <summary>The writer child process (tests/MegaNet.Store.CrashChild), which runs from its own build output (its own
    /// deps.json), built alongside this project.</summary>
    public static string CrashChildPath()
    {
        string child = Path.Combine(AppContext.BaseDirectory.Replace("MegaNet.Store.Tests", "MegaNet.Store.CrashChild", StringComparison.Ordinal), "MegaNet.Store.CrashChild.dll");
        Assert.True(File.Exists(child), $"{child} is missing; build the solution first");
        return child;
    }

    /// <summary>Copies a store directory of an open store (what a kill -9 at this moment would leave), all files or
    /// those <paramref name="include"/> picks; never the lock file, which the open store holds (and a dead process
    /// leaves unlocked anyway).</summary>
    public static void CopyStoreFiles(string from, string to, Func<string, bool>? include = null)
    {
        foreach (string file in Directory.EnumerateFiles(from, "*", SearchOption.AllDirectories))
        {
            if (Path.GetFileName(file) == "LOCK" || (include is not null && !include(file)))
            {
                continue;
            }

            string target = Path.Combine(to, Path.GetRelativePath(from, file));
            Directory.CreateDirectory(Path.GetDirectoryName(target)!);
            File.Copy(file, target);
        }
    }

    /// <summary>A test's random seed: MEGANET_TEST_SEED when set (to replay a printed one), else a fresh one below
    /// <paramref name="max"/>.</summary>
    public static int Seed(int max = int.MaxValue) =>
        Environment.GetEnvironmentVariable("MEGANET_TEST_SEED") is { } s ? int.Parse(s, System.Globalization.CultureInfo.InvariantCulture)
        : System.Security.Cryptography.RandomNumberGenerator.GetInt32(max);

    public static string NewDirectory() => Directory.CreateTempSubdirectory("meganet-store-").FullName;

    public static StoreOptions Options(string dir, TimeProvider? clock = null) => new()
    {
        DataDirectory = dir,
        NodeSecretKey = NewNodeKey(),
        MemoryBudgetBytes = 8L << 20,
        Clock = clock ?? TimeProvider.System,
    };

    /// <summary>120 envelopes of 60,000 bytes for one recipient under an 8 MiB budget (1 MiB table pages, 4 MiB of
    /// table in memory): the table's first 1.5 MiB, whose records are read from disk, were flushed before they left
    /// memory. Returns the open store, the recipient, the puts and their receipts.</summary>
    public static async Task<(FasterEnvelopeStore Store, byte[] Recipient, List<PutRequest> Puts, List<PutReceipt> Receipts)> FillOneMailboxAsync(string dir, Random random)
    {
        FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(Options(dir));
        byte[] recipient = Bytes(random, 32);
        var puts = Enumerable.Range(0, 120).Select(_ => new PutRequest(Bytes(random, 60_000), recipient, DateTimeOffset.UtcNow.AddDays(1))).ToList();
        var receipts = new List<PutReceipt>();
        foreach (PutRequest[] chunk in puts.Chunk(20))
        {
            receipts.AddRange((await store.PutManyAsync(chunk)).Select(r => r.Receipt!));
        }

        Assert.True(store.TableHeadAddressForTests >= 3 << 19, $"the table holds {store.TableHeadAddressForTests} bytes on disk only");
        return (store, recipient, puts, receipts);
    }

    public static byte[] Bytes(Random random, int length)
    {
        byte[] b = new byte[length];
        random.NextBytes(b);
        return b;
    }

    /// <summary>Native memory aligned for direct I/O (4 KiB); free it with <see cref="Free"/>.</summary>
    public static unsafe IntPtr Aligned(int length) => (IntPtr)System.Runtime.InteropServices.NativeMemory.AlignedAlloc((nuint)length, 4096);

    public static unsafe void Free(IntPtr p) => System.Runtime.InteropServices.NativeMemory.AlignedFree((void*)p);

    /// <summary>The bytes at <paramref name="p"/>.</summary>
    public static unsafe Span<byte> View(IntPtr p, int length) => new((void*)p, length);
}
