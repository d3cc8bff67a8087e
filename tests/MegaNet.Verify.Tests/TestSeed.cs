using System.Security.Cryptography;

namespace MegaNet.Verify.Tests;

/// <summary>A cryptographically random seed for a test run, printed so a failure can be replayed.</summary>
public static class TestSeed
{
    public static int Next() => Environment.GetEnvironmentVariable("MEGANET_TEST_SEED") is { } s ? int.Parse(s, System.Globalization.CultureInfo.InvariantCulture) : RandomNumberGenerator.GetInt32(int.MaxValue);
}
