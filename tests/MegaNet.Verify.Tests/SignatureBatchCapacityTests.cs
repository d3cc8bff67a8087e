using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using MegaNet.Core.Verification;
using MegaNet.Verify.Simd;

namespace MegaNet.Verify.Tests;

public sealed class SignatureBatchCapacityTests
{
    [Theory]
    [InlineData(SignatureBatch.MaxItems + 1)]
    [InlineData(int.MaxValue)]
    public void A_capacity_above_MaxItems_is_refused_under_its_own_name(int capacity)
    {
        // Before, capacity * 64 overflowed and ArrayPool refused "minimumLength", a parameter the caller never saw.
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => new SignatureBatch(capacity));
        Assert.Equal("capacity", e.ParamName);
        Assert.Contains($"at most {SignatureBatch.MaxItems} items", e.Message, StringComparison.Ordinal);
    }

    /// <summary>A message within 208 bytes of 2 GiB overflowed the GPU kernel's 32-bit SHA-512 counters, which then
    /// hashed nothing (the same k for every R, A and M): messages are held to 1 GiB at the batch, for every backend.</summary>
    [Fact]
    public void A_message_over_1_GiB_is_refused_before_it_is_read()
    {
        // A span with no memory behind it: the refusal must come before any byte is read (and the test needs no 1 GiB).
        int length = SignatureBatch.MaxMessageLength + 1;
        using var batch = new SignatureBatch();
        var e = Assert.Throws<ArgumentException>(() => batch.Add(new byte[32], new byte[64], MemoryMarshal.CreateReadOnlySpan(ref Unsafe.NullRef<byte>(), length)));
        Assert.Equal("message", e.ParamName);
        Assert.Contains("at most 1,073,741,824 bytes", e.Message, StringComparison.Ordinal);
        Assert.Equal(0, batch.Count);
    }

    [Theory]
    [InlineData(VerifierOptions.MaxKeyCacheCapacity + 1)]
    [InlineData(int.MaxValue)]
    public void A_key_cache_too_large_is_refused_rather_than_sized_forever(int capacity)
    {
        // Above 2^30 the cache's power-of-two rounding overflowed to 0 and looped for good.
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => new SimdBatchVerifier(new VerifierOptions { KeyCacheCapacity = capacity }));
        Assert.Equal(nameof(VerifierOptions.KeyCacheCapacity), e.ParamName);
    }
}
