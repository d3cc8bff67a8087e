using System.Text.Json;

namespace MegaNet.Verify.Tests;

/// <summary>One Ed25519 vector from ../shared/vectors with the verdict our rule must give.</summary>
public sealed record Vector(string Set, string Id, byte[] PublicKey, byte[] Signature, byte[] Message, bool Meganet, bool Libsodium)
{
    public override string ToString() => $"{Set}#{Id}";
}

/// <summary>Loads the shared vector files (rfc8032_7_1, wycheproof_v1, sign_input).</summary>
public static class TestVectors
{
    private static readonly Lazy<string> Directory = new(FindDirectory);

    /// <summary>The vectors directory: <c>shared/vectors</c> beside an ancestor of the test binaries.</summary>
    public static string VectorsDirectory => Directory.Value;

    public static IReadOnlyList<Vector> Load(string file)
    {
        var result = new List<Vector>();
        int line = 0;
        foreach (string text in File.ReadLines(Path.Combine(VectorsDirectory, file)))
        {
            line++;
            if (string.IsNullOrWhiteSpace(text))
            {
                continue;
            }

            using JsonDocument doc = JsonDocument.Parse(text);
            JsonElement e = doc.RootElement;
            result.Add(new Vector(
                e.GetProperty("set").GetString()!,
                e.GetProperty("id").ToString(),
                Convert.FromHexString(e.GetProperty("pk").GetString()!),
                Convert.FromHexString(e.GetProperty("sig").GetString()!),
                Convert.FromHexString(e.GetProperty("msg").GetString()!),
                e.GetProperty("meganet").GetBoolean(),
                e.GetProperty("libsodium").GetBoolean()));
        }

        return result.Count > 0 ? result : throw new InvalidDataException($"{file} holds no vectors.");
    }

    public static IEnumerable<string> Files => ["rfc8032_7_1.jsonl", "wycheproof_v1.jsonl", "sign_input.jsonl"];

    private static string FindDirectory()
    {
        for (DirectoryInfo? d = new(AppContext.BaseDirectory); d is not null; d = d.Parent)
        {
            foreach (string candidate in new[] { Path.Combine(d.FullName, "shared", "vectors"), Path.Combine(d.FullName, "..", "shared", "vectors") })
            {
                if (File.Exists(Path.Combine(candidate, "wycheproof_v1.jsonl")))
                {
                    return Path.GetFullPath(candidate);
                }
            }
        }

        throw new DirectoryNotFoundException(
            $"Could not find shared/vectors beside any ancestor of {AppContext.BaseDirectory}; the repository must be checked out with ../shared beside it.");
    }
}
