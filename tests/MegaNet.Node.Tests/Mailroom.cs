using MegaNet.Api;

namespace MegaNet.Node.Tests;

/// <summary>A real node on 127.0.0.1 with a client of it, a sender (alice) and a recipient (bob) whose identity file
/// is saved in a test's directory for the <c>meganet</c> commands it runs.</summary>
internal sealed class Mailroom : IAsyncDisposable
{
    private Mailroom(TestNode node, string bobPath)
    {
        Node = node;
        BobPath = bobPath;
        Client = node.Client();
        Bob.Save(bobPath);
    }

    public TestNode Node { get; }

    /// <summary>The node's address, as the commands take it.</summary>
    public string Url => Node.Address.ToString();

    public MegaNetClient Client { get; }

    public Identity Alice { get; } = Identity.Create();

    public Identity Bob { get; } = Identity.Create();

    /// <summary>Bob's identity file.</summary>
    public string BobPath { get; }

    public static async Task<Mailroom> StartAsync(string directory) => new(await TestNode.StartAsync(), Path.Combine(directory, "bob.json"));

    public void Deconstruct(out TestNode node, out string url, out MegaNetClient client, out Identity alice, out Identity bob, out string bobPath) =>
        (node, url, client, alice, bob, bobPath) = (Node, Url, Client, Alice, Bob, BobPath);

    public async ValueTask DisposeAsync()
    {
        Client.Dispose();
        Alice.Dispose();
        Bob.Dispose();
        await Node.DisposeAsync();
    }
}
