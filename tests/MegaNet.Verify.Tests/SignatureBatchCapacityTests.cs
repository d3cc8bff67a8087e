using MegaNet.Core.Verification;

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
}
