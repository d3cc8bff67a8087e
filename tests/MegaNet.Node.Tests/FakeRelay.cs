using MegaNet.Api.V1;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace MegaNet.Node.Tests;

/// <summary>A node that lies, for the tests of what clients make of it: a relay (a
/// <see cref="Relay.RelayBase"/> with the overrides the test needs) served over HTTP/2 on 127.0.0.1.</summary>
internal sealed class FakeRelay<TRelay> : IAsyncDisposable
    where TRelay : Relay.RelayBase
{
    private readonly WebApplication _app;

    private FakeRelay(WebApplication app, Uri address) => (_app, Address) = (app, address);

    /// <summary>Where it listens.</summary>
    public Uri Address { get; }

    public static async Task<FakeRelay<TRelay>> StartAsync(TRelay relay)
    {
        WebApplicationBuilder builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.ConfigureKestrel(k => k.Listen(System.Net.IPAddress.Loopback, 0, l => l.Protocols = HttpProtocols.Http2));
        builder.Services.AddGrpc();
        builder.Services.AddSingleton(relay);
        WebApplication app = builder.Build();
        app.MapGrpcService<TRelay>();
        await app.StartAsync();
        return new FakeRelay<TRelay>(app, new Uri(app.Urls.First()));
    }

    public ValueTask DisposeAsync() => _app.DisposeAsync();
}
