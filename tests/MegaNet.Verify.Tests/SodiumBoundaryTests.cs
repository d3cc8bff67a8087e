using MegaNet.Core.Interop;

namespace MegaNet.Verify.Tests;

/// <summary>libsodium reads fixed sizes through raw pointers: the interop refuses spans of other lengths instead of
/// letting it read past them.</summary>
public sealed class SodiumBoundaryTests
{
    [Theory]
    [InlineData(63, 32, "signature")]
    [InlineData(0, 32, "signature")]
    [InlineData(64, 31, "publicKey")]
    [InlineData(64, 0, "publicKey")]
    public void Verify_refuses_a_signature_or_key_of_the_wrong_length(int signatureLength, int keyLength, string parameter)
    {
        var e = Assert.Throws<ArgumentException>(() => Sodium.Verify(new byte[signatureLength], "m"u8, new byte[keyLength]));
        Assert.Equal(parameter, e.ParamName);
    }

    [Fact]
    public void Verify_still_answers_for_the_right_lengths()
    {
        byte[] seed = new byte[32], publicKey = new byte[32], secretKey = new byte[64], signature = new byte[64];
        seed[0] = 7;
        Core.Ed25519.Ed25519Signer.KeyPairFromSeed(seed, publicKey, secretKey);
        Core.Ed25519.Ed25519Signer.Sign(secretKey, "m"u8, signature);
        Assert.True(Sodium.Verify(signature, "m"u8, publicKey));
        signature[0] ^= 1;
        Assert.False(Sodium.Verify(signature, "m"u8, publicKey));
    }
}
