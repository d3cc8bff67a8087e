using System.Security.Cryptography;
using System.Text;
using MegaNet.Core.Ed25519;
using MegaNet.Core.Interop;

namespace MegaNet.Node.Hosting;

/// <summary>The node's Ed25519 key: signs tree heads and identifies the node in mailbox challenges.
/// Created on first start as <c>{data}/node.key</c> (32-byte seed, hex, owner-only).</summary>
public sealed class NodeKey
{
    /// <summary>The key's file name in the data directory.</summary>
    public const string FileName = "node.key";

    private NodeKey(byte[] publicKey, byte[] secretKey)
    {
        PublicKey = publicKey;
        SecretKey = secretKey;
    }

    /// <summary>32-byte public key (the node id).</summary>
    public byte[] PublicKey { get; }

    /// <summary>64-byte libsodium secret key.</summary>
    public byte[] SecretKey { get; }

    /// <summary>Loads the key from the data directory, creating it on first start: only while the data directory holds
    /// no store yet, since a store's log and receipts are signed with the key it was started with.</summary>
    /// <exception cref="InvalidDataException">The key is missing beside an existing store, readable by other users, a
    /// directory, or not a hex seed; the message says what to do.</exception>
    public static NodeKey LoadOrCreate(string dataDirectory) => LoadOrCreate(dataDirectory, out _);

    /// <summary>What a node starts with: <see cref="LoadOrCreate(string)"/>, which also refuses a key an earlier start
    /// made when its store is gone (no <c>store/</c>, or an empty one).</summary>
    /// <exception cref="InvalidDataException">As <see cref="LoadOrCreate(string)"/>, or the key was there before this
    /// start but the store is not; the message says what to do.</exception>
    public static NodeKey LoadForNode(string dataDirectory)
    {
        NodeKey key = LoadOrCreate(dataDirectory, out bool existed);
        string store = Path.Combine(dataDirectory, StoreDirectoryName);
        if (existed && !HoldsStore(store))
        {
            // The store would be created empty and the node would sign a new log under the old id: to clients that
            // audited it or hold its receipts, a log that shrank (a fork), with nothing on the node to say why.
            string path = Path.Combine(dataDirectory, FileName);
            throw new InvalidDataException(
                $"{path} is from an earlier start, but {store} {(Directory.Exists(store) ? "is empty" : "is missing")} (deleted, a file system not mounted there, " +
                $"or only {FileName} restored): started now, the node would sign a new, empty log under its old id, which clients' 'meganet audit' reports as a fork " +
                $"and under which the receipts it gave no longer verify. Restore {store} from a backup (or mount it); to start a new log deliberately, " +
                $"move {path} aside as well, and the node starts under a new id.");
        }

        return key;
    }

    /// <summary>The store's directory in the data directory (FasterEnvelopeStore's name for it).</summary>
    private const string StoreDirectoryName = "store";

    /// <summary>Whether <paramref name="store"/> holds anything a store wrote: the first open of a store creates
    /// <c>commits/</c> and <c>LOCK</c> in it at once. A new file system's <c>lost+found</c> does not count (a
    /// freshly made file system mounted at an empty store/).</summary>
    private static bool HoldsStore(string store) =>
        Directory.Exists(store) && Directory.EnumerateFileSystemEntries(store).Any(e => Path.GetFileName(e) != "lost+found");

    private static NodeKey LoadOrCreate(string dataDirectory, out bool existed)
    {
        ArgumentNullException.ThrowIfNull(dataDirectory);
        // Owner-only from the start: the store's files hold every envelope, recipient address and sending key, which
        // other users of the machine have no business reading. (An existing directory keeps its mode.)
        try
        {
            PrivateFile.CreateDirectory(dataDirectory);
        }
        catch (IOException e)
        {
            // The OS's words name a path, not the setting that chose it ("Could not find file '/proc/x'").
            throw new DataDirectoryException($"The data directory {Path.GetFullPath(dataDirectory)} could not be created ({e.Message}).", e);
        }

        string path = Path.Combine(dataDirectory, FileName);
        if (Directory.Exists(path))
        {
            throw new InvalidDataException($"{path} is a directory; it must be the node's key file. Move it aside (restore node.key from a backup if this data directory holds a store).");
        }

        existed = File.Exists(path);
        if (!existed)
        {
            // An empty store/ (or one holding only a new file system's lost+found) was never started with any key:
            // a freshly mounted store file system must not stop the first start. A file named store is no store,
            // but not for this key to pass over either.
            string store = Path.Combine(dataDirectory, StoreDirectoryName);
            if (File.Exists(store) || HoldsStore(store))
            {
                // A new key here would be a new node serving the old log: clients that pinned the node id would refuse
                // it, and receipts signed by the old key would no longer verify.
                throw new InvalidDataException(
                    $"{path} is missing, but {store} holds a store started with it (the node id and every tree-head signature come from that key). " +
                    $"Restore {FileName} from a backup, or move {store} aside to start a new node with a new identity.");
            }

            Create(path);
        }

        if (!OperatingSystem.IsWindows() && File.GetUnixFileMode(path) is var mode && (mode & PrivateFile.GroupOrOtherAccess) != 0)
        {
            throw new InvalidDataException(
                $"{path} is accessible to other users (mode {Convert.ToString((int)mode, 8)}): whoever reads it can sign as this node. " +
                $"Run chmod 600 {path} (and if others may have read it, treat the key as disclosed).");
        }

        byte[] seed;
        try
        {
            seed = Convert.FromHexString(File.ReadAllText(path).Trim());
        }
        catch (FormatException)
        {
            throw new InvalidDataException($"{path} is not a hex seed; restore it from a backup (the node's identity and tree-head signatures depend on it).");
        }

        if (seed.Length != 32)
        {
            throw new InvalidDataException($"{path} must hold a 32-byte seed in hex; restore it from a backup.");
        }

        byte[] pk = new byte[32], sk = new byte[64];
        Ed25519Signer.KeyPairFromSeed(seed, pk, sk);
        CryptographicOperations.ZeroMemory(seed);
        return new NodeKey(pk, sk);
    }

    /// <summary>
    /// Writes a new seed through <see cref="PrivateFile"/>: never seen half-written (a second node started at the same
    /// moment read an empty file and failed), durable once the node has started, and a key another node created first
    /// is kept (this one then reads it).
    /// </summary>
    private static void Create(string path)
    {
        byte[] seed = RandomNumberGenerator.GetBytes(32);
        byte[] hex = Encoding.ASCII.GetBytes(Convert.ToHexString(seed).ToLowerInvariant());
        CryptographicOperations.ZeroMemory(seed);
        try
        {
            PrivateFile.Write(path, stream => stream.Write(hex), replace: false);
        }
        catch (IOException e) when (e.HResult == PrivateFile.AlreadyExists || File.Exists(path))
        {
            // Another node created the key first: this one reads it.
        }
        finally
        {
            CryptographicOperations.ZeroMemory(hex);
        }
    }
}

/// <summary>The data directory could not be created; <see cref="Cli.NodeCommand"/> adds which setting to change.</summary>
internal sealed class DataDirectoryException(string message, Exception inner) : IOException(message, inner);
