using MegaNet.Core.Ed25519;
using System.Security.Cryptography;

namespace MegaNet.Node.Hosting;

/// <summary>The node's Ed25519 key: signs tree heads and identifies the node in mailbox challenges.
/// Created on first start as <c>{data}/node.key</c> (32-byte seed, hex, owner-only).</summary>
public sealed class NodeKey
{
    private NodeKey(byte[] publicKey, byte[] secretKey)
    {
        PublicKey = publicKey;
        SecretKey = secretKey;
    }

    /// <summary>32-byte public key (the node id).</summary>
    public byte[] PublicKey { get; }

    /// <summary>64-byte libsodium secret key.</summary>
    public byte[] SecretKey { get; }

    /// <summary>Loads the key from the data directory, creating it on first start.</summary>
    public static NodeKey LoadOrCreate(string dataDirectory)
    {
        Directory.CreateDirectory(dataDirectory);
        string path = Path.Combine(dataDirectory, "node.key");
        byte[] seed;
        if (File.Exists(path))
        {
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
        }
        else
        {
            seed = RandomNumberGenerator.GetBytes(32);
            var options = new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write };
            if (!OperatingSystem.IsWindows())
            {
                options.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
            }

            using (var writer = new StreamWriter(new FileStream(path, options)))
            {
                writer.Write(Convert.ToHexString(seed).ToLowerInvariant());
            }
        }

        byte[] pk = new byte[32], sk = new byte[64];
        Ed25519Signer.KeyPairFromSeed(seed, pk, sk);
        return new NodeKey(pk, sk);
    }
}
