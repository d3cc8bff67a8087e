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

    // Group and other permission bits: a key file with any of them set is refused, as ssh refuses such a private key.
    private const UnixFileMode NotOwner = UnixFileMode.GroupRead | UnixFileMode.GroupWrite | UnixFileMode.GroupExecute
        | UnixFileMode.OtherRead | UnixFileMode.OtherWrite | UnixFileMode.OtherExecute;

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
    public static NodeKey LoadOrCreate(string dataDirectory)
    {
        ArgumentNullException.ThrowIfNull(dataDirectory);
        // Owner-only from the start: the store's files hold every envelope, recipient address and sending key, which
        // other users of the machine have no business reading. (An existing directory keeps its mode.)
        PrivateFile.CreateDirectory(dataDirectory);
        string path = Path.Combine(dataDirectory, FileName);
        if (Directory.Exists(path))
        {
            throw new InvalidDataException($"{path} is a directory; it must be the node's key file. Move it aside (restore node.key from a backup if this data directory holds a store).");
        }

        if (!File.Exists(path))
        {
            string store = Path.Combine(dataDirectory, "store");
            if (Path.Exists(store))
            {
                // A new key here would be a new node serving the old log: clients that pinned the node id would refuse
                // it, and receipts signed by the old key would no longer verify.
                throw new InvalidDataException(
                    $"{path} is missing, but {store} holds a store started with it (the node id and every tree-head signature come from that key). " +
                    $"Restore {FileName} from a backup, or move {store} aside to start a new node with a new identity.");
            }

            Create(path);
        }

        if (!OperatingSystem.IsWindows() && File.GetUnixFileMode(path) is var mode && (mode & NotOwner) != 0)
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
