namespace MegaNet.Node.Tests;

/// <summary>The checkout the tests were built from: the directory holding MegaNet.sln above the test binaries.</summary>
internal static class Checkout
{
    /// <summary>A path inside the checkout (<paramref name="relative"/> with '/' separators), which must exist.</summary>
    public static string Path(string relative)
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
        {
            if (File.Exists(System.IO.Path.Combine(d.FullName, "MegaNet.sln")))
            {
                string candidate = System.IO.Path.Combine(d.FullName, relative);
                return File.Exists(candidate) || Directory.Exists(candidate)
                    ? candidate
                    : throw new FileNotFoundException($"No {relative} in the checkout at {d.FullName}.");
            }
        }

        throw new DirectoryNotFoundException($"No MegaNet.sln above {AppContext.BaseDirectory}.");
    }
}
