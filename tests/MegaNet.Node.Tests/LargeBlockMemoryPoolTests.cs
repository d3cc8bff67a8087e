using System.Buffers;
using MegaNet.Api.V1;
using MegaNet.Node.Hosting;
using Microsoft.AspNetCore.Connections;
using Microsoft.Extensions.DependencyInjection;

namespace MegaNet.Node.Tests;

/// <summary>
/// The socket transport's pool of large blocks (<see cref="LargeBlockMemoryPool"/>): whole blocks, reuse, a block given
/// back twice kept once, the cap on what is kept, and a real node's transport reading through it.
/// </summary>
public sealed class LargeBlockMemoryPoolTests
{
    [Fact]
    public void A_rent_gives_a_whole_block_and_a_returned_block_is_rented_again()
    {
        using var pool = new LargeBlockMemoryPool();
        IMemoryOwner<byte> first = pool.Rent(4096);
        Assert.Equal(LargeBlockMemoryPool.BlockSize, first.Memory.Length);
        Memory<byte> memory = first.Memory;
        first.Dispose();
        Assert.Equal(1, pool.KeptBlocks);

        IMemoryOwner<byte> again = pool.Rent();
        Assert.True(again.Memory.Span.Overlaps(memory.Span), "the kept block was not rented again");
        Assert.Equal(0, pool.KeptBlocks);
        Assert.Equal(2, pool.Rented);
    }

    [Fact]
    public void A_block_given_back_twice_is_kept_once_and_unreadable_until_rented_again()
    {
        using var pool = new LargeBlockMemoryPool();
        IMemoryOwner<byte> block = pool.Rent();
        block.Dispose();
        block.Dispose();
        Assert.Equal(1, pool.KeptBlocks);
        Assert.Throws<ObjectDisposedException>(() => block.Memory);

        // Two renters after the double return get two different blocks.
        using IMemoryOwner<byte> a = pool.Rent();
        using IMemoryOwner<byte> b = pool.Rent();
        Assert.False(a.Memory.Span.Overlaps(b.Memory.Span));
    }

    [Fact]
    public void More_than_a_block_is_refused_and_what_is_kept_is_capped()
    {
        using var pool = new LargeBlockMemoryPool();
        Assert.Throws<ArgumentOutOfRangeException>(() => pool.Rent(LargeBlockMemoryPool.BlockSize + 1));

        int cap = (int)(LargeBlockMemoryPool.MaxKeptBytes / LargeBlockMemoryPool.BlockSize);
        var blocks = Enumerable.Range(0, cap + 10).Select(_ => pool.Rent()).ToList();
        blocks.ForEach(b => b.Dispose());
        Assert.Equal(cap, pool.KeptBlocks);
    }

    [Fact]
    public async Task A_node_reads_its_connections_into_large_blocks()
    {
        await using TestNode node = await TestNode.StartAsync();
        var factory = Assert.IsType<LargeBlockMemoryPool.Factory>(node.Services.GetRequiredService<IMemoryPoolFactory<byte>>());
        long before = factory.Made.Sum(p => p.Rented);
        using var client = node.Client();
        StatusResponse status = await client.Relay.StatusAsync(new StatusRequest());
        Assert.NotEmpty(status.Version);
        Assert.NotEmpty(factory.Made);
        Assert.True(factory.Made.Sum(p => p.Rented) > before, "the node's transport did not rent from the large-block pool");
        node.AssertNoServerErrors();
    }
}
