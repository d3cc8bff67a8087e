using MegaNet.Store;

// Usage: CrashChild DATA_DIR SECRET_KEY_HEX SEED
// Writes random envelopes with several concurrent writers and prints "ACK <envelope id hex> <log index> <recipient hex> <seq>"
// for each put only after PutAsync returned (i.e. after the commit). Every fourth put is then deleted by its owner:
// "DELETING <id>" before AckAsync, "DELETED <id>" after it returned. The parent kills this process with SIGKILL.
if (args.Length != 3)
{
    Console.Error.WriteLine("usage: CrashChild DATA_DIR SECRET_KEY_HEX SEED");
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
};
await using FasterEnvelopeStore store = await FasterEnvelopeStore.OpenAsync(options);
Console.Out.WriteLine("READY " + store.TreeSize);
Console.Out.Flush();
var gate = new object();
var writers = Enumerable.Range(0, 4).Select(w => Task.Run(async () =>
{
    var random = new Random(seed * 31 + w);
    byte[][] recipients = Enumerable.Range(0, 3).Select(_ => { var r = new byte[32]; random.NextBytes(r); return r; }).ToArray();
    while (true)
    {
        byte[] envelope = new byte[random.Next(64, 2048)];
        random.NextBytes(envelope);
        byte[] recipient = recipients[random.Next(recipients.Length)];
        PutReceipt receipt = await store.PutAsync(new PutRequest(envelope, recipient, DateTimeOffset.UtcNow.AddDays(1)));
        string id = Convert.ToHexString(receipt.EnvelopeId);
        Say($"ACK {id} {receipt.LogIndex} {Convert.ToHexString(recipient)} {receipt.MailboxSeq}");
        if (random.Next(4) == 0)
        {
            Say($"DELETING {id}");
            await store.AckAsync(recipient, [receipt.MailboxSeq]);
            Say($"DELETED {id}");
        }
    }
})).ToArray();
await Task.WhenAll(writers);
return 0;

void Say(string line)
{
    lock (gate)
    {
        Console.Out.WriteLine(line);
        Console.Out.Flush();
    }
}
