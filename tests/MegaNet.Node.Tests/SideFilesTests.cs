using MegaNet.Api;
using MegaNet.Node.Cli;

using static MegaNet.Node.Tests.MeganetResults;
using Result = MegaNet.Node.Tests.MeganetProcess.Result;

namespace MegaNet.Node.Tests;

/// <summary>
/// The files kept beside an identity file (<c>.seen</c>, <c>.contacts</c>, <c>.parts</c>) are that identity's own:
/// identities named like dot-files (<c>~/.alice</c>, <c>~/.bob</c>) shared <c>~/.seen</c>, <c>~/.contacts</c> and
/// <c>~/.parts</c>, so each saw the other's contacts, replay records and parts of files.
/// </summary>
public sealed class SideFilesTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("meganet-sidefiles-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private Task<Result> Meganet(params string[] args) => MeganetProcess.RunAsync(_dir, null, false, args);

    [Theory]
    // The names every identity that did not share its side files had: unchanged.
    [InlineData("bob.json", "bob")]
    [InlineData("bob", "bob")]
    [InlineData("bob.", "bob")]
    [InlineData("a.b.json", "a.b")]
    [InlineData(".alice.json", ".alice")]
    [InlineData("x..json", "x.")]
    // All extension: kept whole, the side file's extension added.
    [InlineData(".alice", ".alice")]
    [InlineData("..alice", "..alice")]
    public void A_side_file_is_named_after_its_identity(string identity, string stem)
    {
        foreach (string extension in new[] { SideFiles.Seen, SideFiles.Contacts, SideFiles.Parts, SideFiles.Sending })
        {
            Assert.Equal(Path.Combine(_dir, stem + extension), SideFiles.Of(Path.Combine(_dir, identity), extension));
        }
    }

    [Fact]
    public void Dot_file_identities_in_one_directory_have_side_files_of_their_own()
    {
        string[] identities = [".alice", ".bob", "..alice", "..bob"];
        foreach (string extension in new[] { SideFiles.Seen, SideFiles.Contacts, SideFiles.Parts, SideFiles.Sending })
        {
            string[] sideFiles = identities.Select(i => SideFiles.Of(Path.Combine(_dir, i), extension)).ToArray();
            Assert.Equal(identities.Length, sideFiles.Distinct(StringComparer.OrdinalIgnoreCase).Count());
            // And none of them is a name an identity may have: the guard still covers every side file there is.
            foreach (string sideFile in sideFiles)
            {
                Assert.Throws<CliException>(() => SideFiles.CheckNotOne(sideFile));
            }
        }
    }

    [Fact]
    public async Task A_contact_saved_for_one_dot_file_identity_is_not_the_other_ones()
    {
        (string alice, _) = TestIdentities.Save(_dir, ".alice");
        (string bob, _) = TestIdentities.Save(_dir, ".bob");
        (_, ContactCard carol) = TestIdentities.Save(_dir, "carol.json");

        AssertExit(await Meganet("contact", "add", "carol", carol.ToString(), "-i", alice), 0, $"saved 'carol' in {Path.Combine(_dir, ".alice.contacts")}");
        Result list = await Meganet("contact", "list", "-i", bob);
        AssertExit(list, 0, $"no contacts in {Path.Combine(_dir, ".bob.contacts")}");
        Assert.Equal(string.Empty, list.Stdout);
        Assert.False(File.Exists(Path.Combine(_dir, ".contacts")));

        // An identity named like the new side files (those of .dave) is refused as the old ones were.
        (string named, _) = TestIdentities.Save(_dir, ".dave.contacts");
        AssertExit(await Meganet("contact", "list", "-i", named), 1, "cannot be named");
    }
}
