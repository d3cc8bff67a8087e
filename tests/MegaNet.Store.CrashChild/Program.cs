using MegaNet.Store;

// Usage: CrashChild [fill] DATA_DIR SECRET_KEY_HEX SEED
// Writes random envelopes with several concurrent writers and prints "ACK <envelope id hex> <log index> <recipient hex> <seq>"
// for each put only after PutAsync returned (i.e. after the commit). Every fourth put is then deleted by its owner:
// "DELETING <id>" before AckAsync, "DELETED <id>" after it returned.
// Without "fill" it writes until the parent kills it with SIGKILL. With "fill" (run on a small file system) it writes
// until the store refuses a write, then prints "REFUSED <exception type> <message>", checks that the store keeps
// refusing writes ("STILL-REFUSED ...") and checkpoints ("CHECKPOINT-REFUSED ...") while reads still work ("READ-OK <id>"), closes the store ("CLOSED" or
// "CLOSE-FAILED <exception type> <message>") and exits with 0.
bool fill = args.Length == 4 && args[0] == "fill";
if (fill)
{
    args = args[1..];
}

if (args.Length != 3)
{
    Console.Error.WriteLine("usage: CrashChild [fill] DATA_DIR SECRET_KEY_HEX SEED");
    return 2;
}

int seed = int.Parse(args[2], System.Globalization.CultureInfo.InvariantCulture);
// Checkpoints every 20–200 ms, so the kills also land inside checkpoint cycles (table checkpoint, manifest, log truncation).
var options = new StoreOptions
{
    DataDirectory = args[0],
    NodeSecretKey = Convert.FromHexString(args[1]),
    MemoryBudgetBytes = 8L << 20,
    CheckpointInterval = TimeSpan.FromMilliseconds(20 + (seed % 181)),
    // A full disk cannot take the shutdown checkpoint; the close gives up after this.
    ShutdownTimeout = TimeSpan.FromSeconds(fill ? 2 : 60),
    // The fill runs a small tmpfs full on purpose, past the free-space mark that would otherwise refuse it first.
    MinFreeDiskBytes = fill ? 0 : new StoreOptions().MinFreeDiskBytes,
};
FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(options);
Console.Out.WriteLine("READY " + store.TreeSize);
Console.Out.Flush();
var gate = new object();
Exception? refusal = null;
string? lastAcknowledged = null;
var writers = Enumerable.Range(0, 4).Select(w => Task.Run(async () =>
{
    var random = new Random(seed * 31 + w);
    byte[][] recipients = Enumerable.Range(0, 3).Select(_ => { var r = new byte[32]; random.NextBytes(r); return r; }).ToArray();
    while (Volatile.Read(ref refusal) is null)
    {
        byte[] envelope = new byte[random.Next(64, 2048)];
        random.NextBytes(envelope);
        byte[] recipient = recipients[random.Next(recipients.Length)];
        PutReceipt receipt;
        try
        {
            receipt = await store.PutAsync(new PutRequest(envelope, recipient, DateTimeOffset.UtcNow.AddDays(1)));
        }
        catch (Exception e) when (fill)
        {
            Refused(e);
            return;
        }

        string id = Convert.ToHexString(receipt.EnvelopeId);
        Say($"ACK {id} {receipt.LogIndex} {Convert.ToHexString(recipient)} {receipt.MailboxSeq}");
        lastAcknowledged = id;
        if (random.Next(4) == 0)
        {
            Say($"DELETING {id}");
            try
            {
                await store.AckAsync(recipient, [receipt.MailboxSeq]);
            }
            catch (Exception e) when (fill)
            {
                Refused(e);
                return;
            }

            Say($"DELETED {id}");
        }
    }
})).ToArray();
await Task.WhenAll(writers);

// fill only from here: the disk is full.
await Report(async () => await store.PutAsync(new PutRequest(new byte[100], new byte[32], DateTimeOffset.UtcNow.AddDays(1))), "ACCEPTED-AFTER-REFUSAL", "STILL-REFUSED");
await Report(() => store.CheckpointAsync(), "CHECKPOINT-TAKEN", "CHECKPOINT-REFUSED");

if (lastAcknowledged is not null && await store.FindAsync(Convert.FromHexString(lastAcknowledged)) is not null)
{
    Say($"READ-OK {lastAcknowledged}");
}

await Report(async () => await store.DisposeAsync(), "CLOSED", "CLOSE-FAILED");
return 0;

static string OneLine(string text) => text.ReplaceLineEndings(" ");

// The first refusal of the writers, once.
void Refused(Exception e)
{
    if (Interlocked.CompareExchange(ref refusal, e, null) is null)
    {
        Say($"REFUSED {e.GetType().Name} {OneLine(e.Message)}");
    }
}

// "OK-TAG" when the step succeeds, else "FAILED-TAG <exception type> <message>".
async Task Report(Func<Task> step, string succeeded, string failed)
{
    try
    {
        await step();
        Say(succeeded);
    }
    catch (Exception e)
    {
        Say($"{failed} {e.GetType().Name} {OneLine(e.Message)}");
    }
}

void Say(string line)
{
    lock (gate)
    {
        Console.Out.WriteLine(line);
        Console.Out.Flush();
    }
}
