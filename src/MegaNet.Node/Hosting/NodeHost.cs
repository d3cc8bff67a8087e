using System.Net;
using MegaNet.Core.Diagnostics;
using MegaNet.Core.Transparency;
using MegaNet.Core.Verification;
using MegaNet.Node.Admission;
using MegaNet.Node.Services;
using MegaNet.Node.Verification;
using MegaNet.Store;
using MegaNet.Verify.Gpu;
using MegaNet.Verify.Simd;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.AspNetCore.Server.Kestrel.Https;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace MegaNet.Node.Hosting;

/// <summary>Registers the node's services.</summary>
public static partial class NodeServiceCollectionExtensions
{
    // Log event ids are unique across the node (LoggerEventIdTests checks): 1-49 hosting and connections, 100-199
    // admission, 200-299 the verifiers (201 and 202 are VerifierStartup's). Alerts and filters key on them, so an id
    // once given keeps its meaning.
    [LoggerMessage(EventId = 200, Level = LogLevel.Error, Message = "The GPU verifier faulted; the batch was verified again on the CPU, which takes every batch {Until}")]
    private static partial void LogGpuFault(ILogger logger, string until, Exception exception);

    [LoggerMessage(EventId = 205, Level = LogLevel.Warning, Message = "The GPU verifier passed its start-up check again after a fault and takes batches of GpuThreshold or more again")]
    private static partial void LogGpuBack(ILogger logger);

    [LoggerMessage(EventId = 206, Level = LogLevel.Warning, Message = "The GPU verifier, off after a fault, failed its check again ({Reason}); the CPU goes on " +
        "verifying, and the GPU is checked again in {Minutes:F0} min")]
    private static partial void LogGpuStillFailing(ILogger logger, string reason, double minutes);

    [LoggerMessage(EventId = 203, Level = LogLevel.Warning, Message = "{Warning}")]
    private static partial void LogGpuUnused(ILogger logger, string warning);

    // The first line of a start: a GPU backend's kernel compile and self-check take a while before anything else is said.
    [LoggerMessage(EventId = 204, Level = LogLevel.Information, Message = "Starting the verifier (backend {Backend})")]
    private static partial void LogStartingVerifier(ILogger logger, string backend);

    /// <summary>Adds the verifier, the store, admission and the gRPC services for <paramref name="options"/> (validated here, so a
    /// bad configuration fails at start with a message naming the option).</summary>
    public static IServiceCollection AddMegaNetNode(this IServiceCollection services, NodeOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        services.TryAddSingleton(options);
        services.TryAddSingleton(TimeProvider.System);
        services.TryAddSingleton(sp => new ConnectionGate(options.MaxConnections, options.MaxConnectionsPerAddress, Core.Interop.OpenFileLimit.Current(),
            sp.GetRequiredService<ILoggerFactory>().CreateLogger("MegaNet.Node")));
        services.TryAddSingleton(_ => NodeKey.LoadForNode(options.DataDirectory));
        services.TryAddSingleton(sp =>
        {
            var verifierOptions = new VerifierOptions
            {
                Threads = options.Threads,
                GpuThreshold = options.GpuThreshold,
                GpuMaxBatch = options.GpuMaxBatch,
                GpuInlinePtx = options.GpuInlinePtx,
            };
            BatchVerifierRegistry registry = VerifierCatalog.Create();
            ILogger logger = sp.GetRequiredService<ILoggerFactory>().CreateLogger("MegaNet.Verify");
            LogStartingVerifier(logger, options.Backend);
            // The rule is refused here as well as by admission: before the node key and the store are created.
            IBatchVerifier verifier = VerifierStartup.CreateChecked(registry, options.Backend, verifierOptions, logger, AdmissionPipeline.RequireMegaNetRule);
            if (VerifierStartup.IsGpu(verifier) && options.GpuThresholdWarning is { } warning)
            {
                LogGpuUnused(logger, warning);
            }

            // A transient fault (a driver reset, memory another process held) must not cost the GPU until a restart: the
            // same check that let it serve at start lets it serve again. A batch that faulted is verified again on SIMD
            // either way, so no verdict depends on this.
            AcceleratorRetry? retry = options.GpuRetryMinutes == 0 ? null : new AcceleratorRetry
            {
                Check = () => VerifierStartup.SelfCheckFailure(verifier),
                FirstDelay = TimeSpan.FromMinutes(options.GpuRetryMinutes),
                MaxDelay = TimeSpan.FromMinutes(options.GpuRetryMaxMinutes),
                Checked = (failure, next) =>
                {
                    if (failure is null)
                    {
                        LogGpuBack(logger);
                    }
                    else
                    {
                        LogGpuStillFailing(logger, failure, next!.Value.TotalMinutes);
                    }
                },
            };
            string until = retry is null
                ? "until the node restarts (GpuRetryMinutes 0)"
                : $"until the GPU passes its start-up check again (tried {options.GpuRetryMinutes} min after a first fault, the wait doubling at every fault and " +
                  $"failed check up to {options.GpuRetryMaxMinutes} min: GpuRetryMinutes, GpuRetryMaxMinutes)";
            return NodeHost.Compose(verifier, verifierOptions, (name, o) => registry.Create(name, o), e => LogGpuFault(logger, until, e), retry);
        });
        services.TryAddSingleton(sp => sp.GetRequiredService<NodeVerifiers>().Node);
        services.TryAddSingleton<NodeStartCancellation>();
        services.TryAddSingleton<IEnvelopeStore>(sp =>
        {
            NodeKey key = sp.GetRequiredService<NodeKey>();
            FasterEnvelopeStore store = FasterEnvelopeStore.OpenAsync(new StoreOptions
            {
                DataDirectory = options.DataDirectory,
                NodeSecretKey = key.SecretKey,
                MemoryBudgetBytes = (long)options.StoreMemoryMiB << 20,
                GroupsInFlight = options.StoreGroupsInFlight,
                ApplyThreads = options.StoreApplyThreads,
                MinFreeDiskBytes = (long)options.StoreMinFreeDiskMiB << 20,
                MaxHeldBytes = options.StoreMaxBytes,
                CheckpointLogBytes = (long)options.CheckpointLogMiB << 20,
                MaxTtl = TimeSpan.FromDays(options.MaxTtlDays),
                DefaultTtl = TimeSpan.FromDays(Math.Min(14, options.MaxTtlDays)),
                MailboxMaxCount = options.MailboxMaxCount,
                MailboxMaxBytes = options.MailboxMaxBytes,
                MailboxReportedFromPercent = options.MailboxPowFrom == 0 ? 100 : options.MailboxPowFrom,
                MaxEnvelopeBytes = options.MaxEnvelopeBytes,
                Clock = sp.GetRequiredService<TimeProvider>(),
                // A large store takes seconds to minutes to recover: said as it goes, not only once the node listens.
                RecoveryProgress = new StoreRecoveryLog(sp.GetRequiredService<ILoggerFactory>().CreateLogger("MegaNet.Store")),
                RecoveryProgressInterval = options.StoreRecoveryProgressInterval,
            }, sp.GetRequiredService<NodeStartCancellation>().Token).GetAwaiter().GetResult();
            // Damage a compaction went past is logged and turns the health check off, as damage a read finds does.
            StoreDamage damage = sp.GetRequiredService<StoreDamage>();
            store.TableDamageFound += damage.Report;
            return store;
        });
        services.TryAddSingleton<AdmissionPipeline>();
        services.TryAddSingleton(sp => new MailboxAuthenticator(sp.GetRequiredService<NodeKey>(), sp.GetRequiredService<NodeVerifiers>().Auth, sp.GetRequiredService<TimeProvider>()));
        services.TryAddSingleton<MailboxNotifier>();
        services.TryAddSingleton<StoreDamage>();
        services.TryAddSingleton(sp => new DelegatedVerificationGate(sp.GetRequiredService<NodeVerifiers>().Delegated, ownsVerifier: false));
        services.TryAddSingleton(_ => new ProofGate());
        services.AddHostedService(sp => new SiteSweeper(sp.GetRequiredService<MailboxAuthenticator>(), sp.GetRequiredService<DelegatedVerificationGate>(), sp.GetRequiredService<ProofGate>(),
            sp.GetRequiredService<ILoggerFactory>().CreateLogger("MegaNet.Node")));
        services.TryAddSingleton(sp => new RequestMessageGuard(options, sp.GetRequiredService<TimeProvider>()));
        services.TryAddSingleton(_ => new UnsentReplyGuard(options));
        services.AddGrpc(o =>
        {
            // The largest any method takes; RequestMessageGuard holds each method to its own, smaller, limit.
            o.MaxReceiveMessageSize = RequestMessageGuard.VerifyBatchMessageBytes;
            // No compressed requests: the guard's limits read the size on the wire, and a 64 KiB gzip message could
            // inflate to 16 MiB. (MegaNet's payloads are sealed, so compression gains nothing.)
            o.CompressionProviders = [];
            o.EnableDetailedErrors = false;
            o.Interceptors.Add<ClientGoneInterceptor>();
            o.Interceptors.Add<ServiceStreamLimits>(); // reflection's and health's streams; the relay's calls pass through
        }).AddServiceOptions<Grpc.Reflection.ReflectionServiceImpl>(o => o.Interceptors.Add<StopEndsReflectionInterceptor>()); // reflection's calls only
        // One instance for every call (they hold no state), not one activated per call.
        services.TryAddSingleton<ClientGoneInterceptor>();
        services.TryAddSingleton<StopEndsReflectionInterceptor>();
        services.TryAddSingleton<ServiceStreamLimits>();
        services.RefuseMalformedRequests();
        services.AddGrpcReflection();
        services.AddGrpcHealthChecks().AddCheck<StoreHealthCheck>("store");
        return services;
    }
}

/// <summary>The node's verifiers: admission's, mailbox logins' (the same backends, counted apart) and the one delegated
/// verification runs on; disposing this disposes them, in any order (the container also disposes admission's,
/// registered as <see cref="IBatchVerifier"/>; disposing twice does nothing): with a GPU the others borrow admission's
/// GPU and never dispose it, and mailbox logins borrow its CPU backend too.</summary>
internal sealed class NodeVerifiers(IBatchVerifier node, IBatchVerifier auth, IBatchVerifier delegated, IDisposable? gpuServing = null) : IDisposable
{
    /// <summary>Admission's verifier (metrics tag <c>purpose="admission"</c>).</summary>
    public IBatchVerifier Node { get; } = node;

    /// <summary>Mailbox logins' verifier, over admission's backends (<c>purpose="auth"</c>).</summary>
    public IBatchVerifier Auth { get; } = auth;

    /// <summary>Delegated verification's (VerifyBatch) verifier (<c>purpose="delegated"</c>).</summary>
    public IBatchVerifier Delegated { get; } = delegated;

    public void Dispose()
    {
        gpuServing?.Dispose();
        Delegated.Dispose();
        Auth.Dispose();
        Node.Dispose();
    }
}

/// <summary>Builds and runs the node: the Generic Host with Kestrel serving HTTP/2 gRPC.</summary>
public static partial class NodeHost
{
    /// <summary>Connections the metrics listener holds at most; one more is closed at once.</summary>
    internal const int MaxMetricsConnections = 16;

    /// <summary>Request headers one request may carry, in all (Kestrel's default is 32 KiB).</summary>
    internal const int MaxRequestHeadersBytes = 8 << 10;

    /// <summary>How long an HTTP/2 connection may send nothing before the node pings it (as the client library pings the node).</summary>
    internal static readonly TimeSpan KeepAlivePingDelay = TimeSpan.FromSeconds(30);

    /// <summary>How long the node waits for any frame after a ping before it closes the connection.</summary>
    internal static readonly TimeSpan KeepAlivePingTimeout = TimeSpan.FromSeconds(20);

    /// <summary>Builds the node application (not started). Only <paramref name="options"/> configure it: the host's
    /// own configuration sources (environment variables, appsettings.json) are dropped.</summary>
    public static WebApplication Build(NodeOptions options, Action<ILoggingBuilder>? logging = null) => Build(options, logging, services: null);

    /// <summary>As <see cref="Build(NodeOptions, Action{ILoggingBuilder}?)"/>, with <paramref name="services"/> added
    /// after the node's own (tests add a background service that fails).</summary>
    internal static WebApplication Build(NodeOptions options, Action<ILoggingBuilder>? logging, Action<IServiceCollection>? services)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        // Content root = the install directory, not the working directory: the host watches its content root for
        // appsettings changes, and with the default ./data under the working directory every store write woke that
        // watcher (measured: the hottest managed frames of an idle node were FileSystemWatcher's).
        WebApplicationBuilder builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { ContentRootPath = AppContext.BaseDirectory });
        // The default sources (every environment variable, appsettings.json beside the binary) reach Kestrel's
        // "Kestrel" section: Kestrel__Endpoints__X__Url=http://0.0.0.0:7800 added a plaintext listener beside --listen,
        // past the TLS rule and the connection caps. The node's settings come from NodeOptions (meganet.json, MEGANET_
        // variables, flags) only, so the listeners are the two configured below and nothing else.
        builder.Configuration.Sources.Clear();
        // The host's own start lines named the content root (the install directory, which holds no setting or data:
        // meganet.json and --data are read from the working directory) and "Hosting environment: Production", which
        // means nothing here; the node's "listening on" line says what is true.
        builder.Services.Configure<Microsoft.Extensions.Hosting.ConsoleLifetimeOptions>(o => o.SuppressStatusMessages = true);
        builder.Logging.ClearProviders();
        builder.Logging.AddSimpleConsole(o =>
        {
            o.SingleLine = true;
            o.TimestampFormat = "HH:mm:ss ";
        });
        builder.Logging.SetMinimumLevel(LogLevel.Information);
        builder.Logging.AddFilter("Microsoft.AspNetCore", LogLevel.Warning);
        // Hosting starts an Activity and a logging scope for every request whenever this category logs at all (even
        // at Critical), and it logs nothing above Information (request start and finish); unhandled exceptions come
        // from Kestrel's category. Off: 1.1 % of the node's CPU samples at 10,000 unary Submits/s went there (2026-12-01).
        builder.Logging.AddFilter("Microsoft.AspNetCore.Hosting.Diagnostics", LogLevel.None);
        builder.Logging.AddFilter("Grpc", LogLevel.Warning);
        logging?.Invoke(builder.Logging);
        // Blocks of 64 KiB instead of Kestrel's 4 KiB: a socket read takes up to a block, so fewer reads (system calls)
        // carry the same bytes (LargeBlockMemoryPool). The socket transport takes its pool factory from the container,
        // where the last registration wins.
        builder.Services.AddSingleton<IMemoryPoolFactory<byte>, LargeBlockMemoryPool.Factory>();
        builder.WebHost.ConfigureKestrel(kestrel =>
        {
            IPEndPoint endpoint = options.ListenEndPoint;
            ConnectionGate gate = kestrel.ApplicationServices.GetRequiredService<ConnectionGate>();
            kestrel.Listen(endpoint, listen =>
            {
                listen.Protocols = HttpProtocols.Http2;
                // Before TLS: a connection beyond a cap costs no handshake. The metrics listener has a cap of its own
                // (below), so an operator can still see why clients are refused.
                listen.Use(gate.Admit);
                if (!string.IsNullOrEmpty(options.TlsCertificate))
                {
                    TlsServerCertificate tls = options.LoadTlsCertificate();
                    // The intermediates of a full chain are sent after the certificate; without them Kestrel sends
                    // only what it finds in this machine's stores, and clients that trust the root alone refuse the node.
                    listen.UseHttps(new HttpsConnectionAdapterOptions
                    {
                        ServerCertificate = tls.Certificate,
                        ServerCertificateChain = tls.Chain.Count == 0 ? null : tls.Chain,
                    });
                }
            });
            if (options.MetricsEndPoint is { } metrics)
            {
                // Prometheus scrapes over HTTP/1.1; the gRPC port speaks HTTP/2 only, so metrics get their own listener.
                // Outside the gRPC gate (an operator can still see why clients are refused), but capped: it may listen
                // beyond loopback, and idle connections without end would take the descriptors the node needs.
                int metricsOpen = 0;
                kestrel.Listen(metrics, listen =>
                {
                    listen.Protocols = HttpProtocols.Http1;
                    listen.Use(next => async connection =>
                    {
                        try
                        {
                            if (Interlocked.Increment(ref metricsOpen) <= MaxMetricsConnections)
                            {
                                await next(connection).ConfigureAwait(false);
                            }
                        }
                        finally
                        {
                            Interlocked.Decrement(ref metricsOpen);
                        }
                    });
                });
            }

            kestrel.Limits.MaxRequestBodySize = 64 << 20;
            // Each open stream holds its request headers: at Kestrel's 32 KiB, 78 KB a stream against 10 KB with a
            // gRPC client's few hundred bytes. MegaNet carries nothing in headers (auth is in the messages).
            kestrel.Limits.MaxRequestHeadersTotalSize = MaxRequestHeadersBytes;
            // Pings on a connection that has sent nothing for a while: a client gone without a word (a NAT that dropped
            // the mapping, a phone that lost its network) is closed within about a minute instead of when TCP gives up
            // (~15 min), and so frees the Subscribe slot (16 per mailbox) its stream held. Kestrel sends none by default.
            kestrel.Limits.Http2.KeepAlivePingDelay = KeepAlivePingDelay;
            kestrel.Limits.Http2.KeepAlivePingTimeout = KeepAlivePingTimeout;
        });
        builder.Services.AddMegaNetNode(options);
        var stopOutcome = new NodeStopOutcome();
        builder.Services.AddSingleton(stopOutcome);
        builder.Services.Configure<HostOptions>(o => o.ShutdownTimeout = TimeSpan.FromSeconds(30));
        services?.Invoke(builder.Services);

        WebApplication app = builder.Build();
        // Before the gRPC endpoints, so that every request message is held to its method's limit as it arrives.
        RequestMessageGuard guard = app.Services.GetRequiredService<RequestMessageGuard>();
        // First: a VerifyBatch call the gate would refuse is answered before any of its message is read. The gate is
        // looked up at the first request, not here: it needs the verifier, which StartAsync builds as a step a signal
        // can stop after (building it here ran a GPU's kernel compile before `meganet node` handled any signal).
        // (Two first requests at once may each make one: it holds nothing but the gate.)
        EarlyVerifyBatchRefusal? earlyRefusal = null;
        app.Use((HttpContext context, RequestDelegate next) => (earlyRefusal ??= new EarlyVerifyBatchRefusal(app.Services.GetRequiredService<DelegatedVerificationGate>())).InvokeAsync(context, next));
        app.Use(guard.InvokeAsync);
        // Fetch replies are charged until they have left the node (a client that does not read them held them for good).
        app.Use(app.Services.GetRequiredService<UnsentReplyGuard>().InvokeAsync);
        app.MapGrpcService<RelayService>();
        app.MapGrpcReflectionService();
        app.MapGrpcHealthChecksService();
        if (!string.IsNullOrEmpty(options.MetricsListen))
        {
            var exporter = new Diagnostics.PrometheusExporter();
            app.Lifetime.ApplicationStopped.Register(exporter.Dispose);
            // Only on the metrics listener (HTTP/1.1): the gRPC port, which may face the internet, speaks HTTP/2 only
            // and must not hand out the node's load figures.
            app.MapGet("/metrics", (HttpContext context) => HttpProtocol.IsHttp2(context.Request.Protocol)
                ? Results.NotFound()
                : Results.Text(exporter.Render(), "text/plain; version=0.0.4"));
        }

        // Registered before the stop's log line, so it runs after it (a token's callbacks run last registered first).
        app.Lifetime.ApplicationStopping.Register(() => BoundServerStop(app));

        // The host stops when a background service fails and logs why under its own category, which `meganet node`
        // mutes (its "Hosting failed to start" repeats the one line the command prints): the node says it itself.
        app.Lifetime.ApplicationStopping.Register(() =>
        {
            foreach ((string service, Exception error) in FailedBackgroundServices(app.Services))
            {
                LogBackgroundServiceFailed(app.Services.GetRequiredService<ILoggerFactory>().CreateLogger("MegaNet.Node"), service, error);
            }

            // Said as the stop begins: its steps (a stream whose client stopped reading is reset only 5 s in, the final
            // checkpoint of a large table) can take seconds, and the node said nothing until "stopped cleanly".
            LogStopping(app.Services.GetRequiredService<ILoggerFactory>().CreateLogger("MegaNet.Node"), app.Services.GetRequiredService<AdmissionPipeline>().QueueDepth);
        });

        // Open the store and start admission before the first request. On shutdown, once the server has stopped
        // (unary calls answered; streams end when stopping begins, see RelayService), drain admission, then close the
        // store: closing them while calls still run refused those calls with the wrong status.
        app.Lifetime.ApplicationStopped.Register(() =>
        {
            try
            {
                app.Services.GetRequiredService<AdmissionPipeline>().DisposeAsync().AsTask().GetAwaiter().GetResult();
            }
            catch (Exception e)
            {
                // Logged here, not left to the host: `meganet node` mutes the host's category, and the node said it
                // had stopped cleanly and exited 0.
                LogAdmissionStopFailed(app.Services.GetRequiredService<ILoggerFactory>().CreateLogger("MegaNet.Node"), e);
                stopOutcome.Failed(NodeStopOutcome.DrainFailed);
            }
            finally
            {
                // Whatever admission's end threw, the store is closed: its final checkpoint, its lock file and exit
                // code 3 must not depend on admission stopping cleanly.
                try
                {
                    app.Services.GetRequiredService<IEnvelopeStore>().DisposeAsync().AsTask().GetAwaiter().GetResult();
                }
                catch (StoreUnavailableException e)
                {
                    // The process still exits (a stuck store must not hold it), with a failing exit code and the reason.
                    LogStoreShutdownFailed(app.Services.GetRequiredService<ILoggerFactory>().CreateLogger("MegaNet.Node"), e.Message);
                    stopOutcome.Failed(NodeStopOutcome.StoreFailed);
                }
            }
        });
        return app;
    }

    /// <summary>The node's verifiers around <paramref name="verifier"/> (checked already): admission's, mailbox logins'
    /// (the same backends), and delegated verification's, which runs one thread per call on the CPU (the gate's slots
    /// bound the cores it takes) and with a GPU shares the GPU and its fault state over a one-thread SIMD backend. A GPU
    /// backend (<c>gpu</c>, and <c>gpu-cpu</c> the same way, so that a machine without a GPU runs a GPU node's whole
    /// path: router, threshold, fallback, shared device) takes the big batches and SIMD the small ones, and SIMD takes
    /// over if the GPU faults: for good, or with <paramref name="retry"/> until the GPU passes its check again. Every
    /// verification is counted by the backend that did it: instrumented behind the router, a GPU node's small batches
    /// were counted as the GPU's (and a batch's time included its wait for the GPU's lock). And by what it was for (<see cref="VerificationPurpose"/>): counted together, a client's VerifyBatch
    /// of bad signatures (a normal answer) raised the invalid count an alert on forged envelopes watches, and mailbox
    /// logins' one-item batches pulled down the batch sizes operators tune admission's batching by.
    /// <paramref name="create"/> makes a backend by name.</summary>
    internal static NodeVerifiers Compose(IBatchVerifier verifier, VerifierOptions verifierOptions, Func<string, VerifierOptions, IBatchVerifier> create, Action<Exception> onGpuFault,
        AcceleratorRetry? retry = null)
    {
        VerifierOptions oneThread = verifierOptions.Clone();
        oneThread.Threads = 1;
        if (VerifierStartup.IsGpu(verifier))
        {
            // The same router `meganet verify` runs a GPU behind, each side instrumented.
            var gpu = new InstrumentedBatchVerifier(verifier, VerificationPurpose.Admission);
            InstrumentedBatchVerifier? simd = null;
            var router = (RoutingBatchVerifier)VerifierStartup.RouteGpu(gpu, verifierOptions,
                (name, o) => simd = new InstrumentedBatchVerifier(create(name, o), VerificationPurpose.Admission), Counted(onGpuFault), Counted(retry));
            return new NodeVerifiers(router,
                router.WithCpu(simd!.ForPurpose(VerificationPurpose.Auth), gpu.ForPurpose(VerificationPurpose.Auth)),
                router.WithCpu(new InstrumentedBatchVerifier(create(SimdBatchVerifier.BackendName, oneThread), VerificationPurpose.Delegated),
                    gpu.ForPurpose(VerificationPurpose.Delegated)),
                MegaNetMetrics.ObserveGpuServing(() => router.AcceleratorFailed ? 0 : 1));
        }

        var node = new InstrumentedBatchVerifier(verifier, VerificationPurpose.Admission);
        return new NodeVerifiers(node, node.ForPurpose(VerificationPurpose.Auth),
            new InstrumentedBatchVerifier(create(verifier.Name, oneThread), VerificationPurpose.Delegated));
    }

    // The GPU's faults and checks as instruments (MegaNetMetrics), beside what the caller does with them (the log).
    private static Action<Exception> Counted(Action<Exception> onGpuFault) => e =>
    {
        MegaNetMetrics.GpuFaults.Add(1);
        onGpuFault(e);
    };

    private static AcceleratorRetry? Counted(AcceleratorRetry? retry) => retry is null ? null : retry with
    {
        Checked = (failure, next) =>
        {
            MegaNetMetrics.GpuChecks.Add(1, new KeyValuePair<string, object?>("outcome", failure is null ? "passed" : "failed"));
            retry.Checked?.Invoke(failure, next);
        },
    };

    /// <summary>Starts the node and returns the address it listens on (useful with port 0). <paramref name="cancellationToken"/>
    /// stops the start between its steps (the verifier; the node key and the store; serving) and during the store's
    /// replay with an <see cref="OperationCanceledException"/>; what was opened is released when <paramref name="app"/> is
    /// disposed.</summary>
    public static async Task<Uri> StartAsync(WebApplication app, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(app);
        // Resolve the heavy singletons now so configuration and store errors surface at start, not at the first call.
        // The verifier first: a backend refused here (no GPU, a failed self-check) must not leave a new node key and
        // an empty store behind in a data directory the operator may have mistyped.
        cancellationToken.ThrowIfCancellationRequested();
        _ = app.Services.GetRequiredService<NodeVerifiers>();
        // The key and the store as one step, never stopped between them: a new key without the store it starts would
        // make the next start refuse the data directory ("node.key is from an earlier start, but store is empty").
        // The store's open creates its files before it looks at the token, and stops its replay when it is cancelled.
        cancellationToken.ThrowIfCancellationRequested();
        app.Services.GetRequiredService<NodeStartCancellation>().Token = cancellationToken;
        _ = app.Services.GetRequiredService<MailboxNotifier>();
        AdmissionPipeline admission = app.Services.GetRequiredService<AdmissionPipeline>();
        cancellationToken.ThrowIfCancellationRequested();
        await app.StartAsync(cancellationToken).ConfigureAwait(false);
        string[] addresses = [.. app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses];
        // The gRPC endpoint is the first listener configured; a metrics listener, if any, comes second.
        string address = addresses[0];
        ILogger logger = app.Services.GetRequiredService<ILoggerFactory>().CreateLogger("MegaNet.Node");
        NodeOptions options = app.Services.GetRequiredService<NodeOptions>();
        if (options.MetricsEndPoint is { } metrics)
        {
            if (!IPAddress.IsLoopback(metrics.Address))
            {
                LogMetricsExposed(logger, options.MetricsListen!);
            }

            // With port 0 this line is the only place the chosen port shows.
            LogMetricsListening(logger, $"{addresses[1].TrimEnd('/')}/metrics");
        }

        if (options.PowMinBitsWarning is { } warning)
        {
            LogClientsLockedOut(logger, warning);
        }

        if (options.MailboxMaxBytesWarning is { } mailboxWarning)
        {
            LogMailboxTooSmall(logger, mailboxWarning);
        }

        admission.StoreRefusals.CheckAtStart();

        LogMerkleHashing(logger, MerkleTree.HashImplementation);
        // The address as bound: [::] and 0.0.0.0 mean every address of the machine, which is what the operator should
        // read (https://127.0.0.1 for --listen [::]:7700 said the node was reachable on loopback only).
        LogStarted(logger, address, admission.Verifier.Name, admission.Verifier.Description, Path.GetFullPath(options.DataDirectory),
            Convert.ToHexString(app.Services.GetRequiredService<NodeKey>().PublicKey).ToLowerInvariant());
        // The caller (the load command, the tests) dials what is returned: an IPv6 wildcard is reached on loopback.
        return new Uri(address.Replace("[::]", "127.0.0.1", StringComparison.Ordinal));
    }

    /// <summary>The exit code for a node that has stopped: 3 when its store could not shut down cleanly, 1 when draining
    /// admission failed (both recorded for this node by its stop, never in the process-wide
    /// <see cref="Environment.ExitCode"/>: a node embedded in tests or <c>meganet load</c> must not decide how that
    /// process exits) or a background service failed and so stopped it, else 0. <c>meganet node</c> exits with it.</summary>
    internal static int ExitCode(WebApplication app)
    {
        ArgumentNullException.ThrowIfNull(app);
        if (app.Services.GetRequiredService<NodeStopOutcome>().ExitCode is not 0 and int failed)
        {
            return failed;
        }

        return FailedBackgroundServices(app.Services).Count > 0 ? 1 : 0;
    }

    /// <summary>How long a stop lets the server's calls end and their answers leave before it closes the connections
    /// left: a stream whose client stopped reading has its writes cancelled <see cref="WriteDeadline.StopGrace"/> in,
    /// and a unary call in flight has had its answer long before this.</summary>
    internal static readonly TimeSpan ServerStopDrain = TimeSpan.FromSeconds(10);

    /// <summary>Starts the server's stop, under <see cref="ServerStopDrain"/>, as the node's stop begins; the host's own
    /// stop of the server, which comes next, waits for this one. The host would give the server its whole
    /// ShutdownTimeout (30 s), and a call whose handler has ended still holds it until its answer has left: after the
    /// status, which a client that stopped reading (HTTP/2 flow control) never takes. A Subscribe ended by the stop
    /// just as its last write went into the stream's buffer (its window full) held stops for 30 s, about one in
    /// four under load (3 of 14 and 4 of 16 runs beside two busy loops), found by NodeShutdownTests.</summary>
    private static void BoundServerStop(WebApplication app)
    {
        var drain = new CancellationTokenSource(ServerStopDrain);
        Task stop = app.Services.GetRequiredService<IServer>().StopAsync(drain.Token);
        _ = stop.ContinueWith(stopped =>
        {
            // (A failure is the host's to report: its own stop of the server awaits this one and throws the same.)
            _ = stopped.Exception;
            if (drain.IsCancellationRequested)
            {
                LogServerStopDrainOver(app.Services.GetRequiredService<ILoggerFactory>().CreateLogger("MegaNet.Node"), ServerStopDrain.TotalSeconds);
            }

            drain.Dispose();
        }, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
    }

    /// <summary>Background services whose work ended in an exception (the host then stops), with that exception.</summary>
    internal static IReadOnlyList<(string Service, Exception Error)> FailedBackgroundServices(IServiceProvider services) =>
        [.. services.GetServices<IHostedService>().OfType<BackgroundService>()
            .Where(s => s.ExecuteTask is { IsFaulted: true })
            .Select(s => (s.GetType().Name, (Exception)(s.ExecuteTask!.Exception!.InnerExceptions is [{ } one] ? one : s.ExecuteTask.Exception!)))];

    [LoggerMessage(EventId = 5, Level = LogLevel.Information, Message = "Metrics served at {Address}")]
    private static partial void LogMetricsListening(ILogger logger, string address);

    [LoggerMessage(EventId = 6, Level = LogLevel.Critical, Message = "The node's background service {Service} failed, which stops the node")]
    private static partial void LogBackgroundServiceFailed(ILogger logger, string service, Exception exception);

    [LoggerMessage(EventId = 16, Level = LogLevel.Information, Message = "MegaNet node stopping: ending streams, draining admission ({Queued} submissions queued), " +
        "then the store's final checkpoint")]
    private static partial void LogStopping(ILogger logger, int queued);

    [LoggerMessage(EventId = 17, Level = LogLevel.Information, Message = "Connections still busy {Seconds} s into the stop were closed " +
        "(a client not reading its answers, or a call that had not ended); their clients see the call fail and may retry")]
    private static partial void LogServerStopDrainOver(ILogger logger, double seconds);

    [LoggerMessage(EventId = 9, Level = LogLevel.Error, Message = "Draining admission at shutdown failed; the store is closed all the same")]
    private static partial void LogAdmissionStopFailed(ILogger logger, Exception exception);

    [LoggerMessage(EventId = 8, Level = LogLevel.Warning, Message = "{Warning}")]
    private static partial void LogClientsLockedOut(ILogger logger, string warning);

    [LoggerMessage(EventId = 15, Level = LogLevel.Warning, Message = "{Warning}")]
    private static partial void LogMailboxTooSmall(ILogger logger, string warning);

    [LoggerMessage(EventId = 4, Level = LogLevel.Warning, Message = "Metrics listen on {Address}, reachable beyond this machine in plaintext without authentication: " +
        "whoever reaches it reads the node's load figures. Listen on 127.0.0.1, or firewall the port to the scraper")]
    private static partial void LogMetricsExposed(ILogger logger, string address);

    [LoggerMessage(EventId = 2, Level = LogLevel.Critical, Message = "{Reason}")]
    private static partial void LogStoreShutdownFailed(ILogger logger, string reason);

    [LoggerMessage(EventId = 18, Level = LogLevel.Information, Message = "Transparency log hashing: {Implementation}")]
    private static partial void LogMerkleHashing(ILogger logger, string implementation);

    [LoggerMessage(EventId = 1, Level = LogLevel.Information, Message = "MegaNet node listening on {Address}; verifier {Backend} ({Description}); data {DataDirectory}; node id {NodeId}")]
    private static partial void LogStarted(ILogger logger, string address, string backend, string description, string dataDirectory, string nodeId);
}

/// <summary>The token that stops the store's open (its replay) while the node starts: set by <see cref="NodeHost.StartAsync"/>
/// before it opens the store, which the container does on first use.</summary>
internal sealed class NodeStartCancellation
{
    public CancellationToken Token { get; set; }
}

/// <summary>How one node's stop went, for <see cref="NodeHost.ExitCode"/>: set by the stop's own steps (draining
/// admission, closing the store), which run in the host's stopped callback and cannot return it.</summary>
internal sealed class NodeStopOutcome
{
    /// <summary>Draining admission failed.</summary>
    public const int DrainFailed = 1;

    /// <summary>The store could not shut down cleanly (no final checkpoint); outranks <see cref="DrainFailed"/>.</summary>
    public const int StoreFailed = 3;

    private int _exitCode;

    /// <summary>0, or the most serious failure recorded.</summary>
    public int ExitCode => Volatile.Read(ref _exitCode);

    /// <summary>Records <paramref name="exitCode"/> unless a more serious failure was recorded already.</summary>
    public void Failed(int exitCode)
    {
        for (int current = Volatile.Read(ref _exitCode); exitCode > current; current = Volatile.Read(ref _exitCode))
        {
            if (Interlocked.CompareExchange(ref _exitCode, exitCode, current) == current)
            {
                return;
            }
        }
    }
}

/// <summary>Unhealthy once the store refuses writes (a failed commit, e.g. a full disk), or a proof or a mailbox read
/// found it damaged (<see cref="StoreDamage"/>), until the node restarts.</summary>
internal sealed class StoreHealthCheck(IEnvelopeStore store, StoreDamage damage) : Microsoft.Extensions.Diagnostics.HealthChecks.IHealthCheck
{
    public Task<Microsoft.Extensions.Diagnostics.HealthChecks.HealthCheckResult> CheckHealthAsync(
        Microsoft.Extensions.Diagnostics.HealthChecks.HealthCheckContext context, CancellationToken cancellationToken = default) =>
        Task.FromResult(store is FasterEnvelopeStore { FaultReason: { } reason }
            ? Microsoft.Extensions.Diagnostics.HealthChecks.HealthCheckResult.Unhealthy($"The store refuses writes until the node restarts: {reason}")
            : damage.Reason is { } damaged
            ? Microsoft.Extensions.Diagnostics.HealthChecks.HealthCheckResult.Unhealthy($"The store is damaged ({damage.Count} requests failed on it): {damaged}")
            : Microsoft.Extensions.Diagnostics.HealthChecks.HealthCheckResult.Healthy());
}
