using System.Buffers;
using System.Diagnostics.CodeAnalysis;
using System.Reflection;
using Google.Protobuf;
using Grpc.AspNetCore.Server.Model;
using Grpc.Core;
using MegaNet.Api.V1;
using MegaNet.Node.Admission;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;

namespace MegaNet.Node.Hosting;

/// <summary>
/// Binds each gRPC service the node maps as Grpc.AspNetCore's own binder does (the generated <c>BindService</c>, and
/// the service type's overrides as handlers), except that a request message that is not valid protobuf is refused
/// with INVALID_ARGUMENT and a detail that says so. Grpc.AspNetCore parses a unary or server-streaming request before
/// any interceptor or handler runs; a parse failure there was answered UNKNOWN ("Exception was thrown by handler.") and
/// logged by the node as a server error, so any client could fill the operator's log by sending garbage.
/// </summary>
internal sealed class MalformedRequestMethodProvider<[DynamicallyAccessedMembers(ServiceMembers)] TService> : IServiceMethodProvider<TService>
    where TService : class
{
    // What the binding reads of a service type by reflection (as Grpc.AspNetCore's binder declares).
    internal const DynamicallyAccessedMemberTypes ServiceMembers = DynamicallyAccessedMemberTypes.PublicConstructors | DynamicallyAccessedMemberTypes.PublicMethods;

    /// <inheritdoc/>
    public void OnServiceMethodDiscovery(ServiceMethodProviderContext<TService> context)
    {
        // The generated base class names its binder: [BindServiceMethod(typeof(Relay), "BindService")], a static
        // BindService(ServiceBinderBase, RelayBase) that calls AddMethod once per method, with no handlers when given
        // no service instance (the handler is the service type's override, on a per-call instance).
        for (Type? type = typeof(TService); type is not null; type = type.BaseType)
        {
            // Not inherited: the generated base is the type that carries it.
            if (type.GetCustomAttribute<BindServiceMethodAttribute>(inherit: false) is { } bind)
            {
                MethodInfo method = bind.BindType.GetMethod(bind.BindMethodName, BindingFlags.Public | BindingFlags.Static, [typeof(ServiceBinderBase), type])
                    ?? throw new InvalidOperationException($"{bind.BindType}.{bind.BindMethodName}(ServiceBinderBase, {type.Name}) named by {type} was not found.");
                method.Invoke(null, [new Binder(context, type), null]);
                return;
            }
        }
    }

    private sealed class Binder(ServiceMethodProviderContext<TService> context, Type generatedBase) : ServiceBinderBase
    {
        public override void AddMethod<TRequest, TResponse>(Method<TRequest, TResponse> method, UnaryServerMethod<TRequest, TResponse>? handler) =>
            context.AddUnaryMethod(Refusing(method), Metadata(method.Name, out MethodInfo m, typeof(TRequest), typeof(ServerCallContext)),
                m.CreateDelegate<UnaryServerMethod<TService, TRequest, TResponse>>());

        public override void AddMethod<TRequest, TResponse>(Method<TRequest, TResponse> method, ServerStreamingServerMethod<TRequest, TResponse>? handler) =>
            context.AddServerStreamingMethod(Refusing(method), Metadata(method.Name, out MethodInfo m, typeof(TRequest), typeof(IServerStreamWriter<TResponse>), typeof(ServerCallContext)),
                m.CreateDelegate<ServerStreamingServerMethod<TService, TRequest, TResponse>>());

        public override void AddMethod<TRequest, TResponse>(Method<TRequest, TResponse> method, ClientStreamingServerMethod<TRequest, TResponse>? handler) =>
            context.AddClientStreamingMethod(Refusing(method), Metadata(method.Name, out MethodInfo m, typeof(IAsyncStreamReader<TRequest>), typeof(ServerCallContext)),
                m.CreateDelegate<ClientStreamingServerMethod<TService, TRequest, TResponse>>());

        public override void AddMethod<TRequest, TResponse>(Method<TRequest, TResponse> method, DuplexStreamingServerMethod<TRequest, TResponse>? handler) =>
            context.AddDuplexStreamingMethod(Refusing(method), Metadata(method.Name, out MethodInfo m, typeof(IAsyncStreamReader<TRequest>), typeof(IServerStreamWriter<TResponse>), typeof(ServerCallContext)),
                m.CreateDelegate<DuplexStreamingServerMethod<TService, TRequest, TResponse>>());

        /// <summary>The service type's override of the generated method, and the endpoint metadata Grpc.AspNetCore's
        /// binder gives it (the type's attributes, then the method's, then POST with CORS preflight).</summary>
        private List<object> Metadata(string name, out MethodInfo handler, params Type[] parameters)
        {
            handler = Override(name, parameters) ?? throw new InvalidOperationException($"{typeof(TService)} does not override {generatedBase}.{name}.");
            var metadata = new List<object>();
            metadata.AddRange(typeof(TService).GetCustomAttributes(inherit: true));
            metadata.AddRange(handler.GetCustomAttributes(inherit: true));
            metadata.Add(new HttpMethodMetadata(["POST"], acceptCorsPreflight: true));
            return metadata;
        }

        private MethodInfo? Override(string name, Type[] parameters)
        {
            // A method that hides the generated one (same name, not an override) is not the handler: look further down.
            for (Type? type = typeof(TService); type is not null; type = type.BaseType)
            {
                MethodInfo? candidate = type.GetMethod(name, BindingFlags.Public | BindingFlags.Instance, parameters);
                if (candidate is null)
                {
                    return null;
                }

                if (candidate.IsVirtual && candidate.GetBaseDefinition().DeclaringType == generatedBase)
                {
                    return candidate;
                }
            }

            return null;
        }
    }

    /// <summary>The method with a request deserializer that turns a protobuf parse failure into INVALID_ARGUMENT: an
    /// <see cref="RpcException"/> thrown while the request is read is the call's status, and is not logged as a
    /// server error. (In a client-streaming call the handler sees it on its read, as it saw the parse error.) A tag of
    /// wire type 6 or 7, which that parser would pass over, is refused the same way (<see cref="RequestWireScan"/>). It
    /// drops unknown fields, having first marked the envelopes that carry any for admission to refuse
    /// (<see cref="UndefinedFieldCheck"/>).</summary>
    private static Method<TRequest, TResponse> Refusing<TRequest, TResponse>(Method<TRequest, TResponse> method) =>
        new(method.Type, method.ServiceName, method.Name, RefusingMarshaller(method.RequestMarshaller, method.Name), method.ResponseMarshaller);

    /// <summary>The request marshaller of <see cref="Refusing"/> for the method named <paramref name="methodName"/>,
    /// given the generated one.</summary>
    internal static Marshaller<TRequest> RefusingMarshaller<TRequest>(Marshaller<TRequest> generated, string methodName)
    {
        RequestItemLimit? limit = RequestItemLimit.For<TRequest>();
        // A type with an item limit is scanned for invalid wire types on the limit's pass, so a large VerifyBatch is
        // read once.
        RequestWireScan? wireScan = limit is null ? RequestWireScan.For(typeof(TRequest)) : null;
        UndefinedFieldCheck? undefinedFields = UndefinedFieldCheck.For<TRequest>();
        Func<DeserializationContext, TRequest> parse = UndefinedFieldCheck.DiscardingParser(typeof(TRequest)) is { } lean
            ? context => (TRequest)lean.ParseFrom(context.PayloadAsReadOnlySequence())
            : generated.ContextualDeserializer;
        // The submit methods' envelopes into one pooled buffer instead of an array per byte field (PooledSubmitParser);
        // the handler gives the buffer back.
        Func<ReadOnlySequence<byte>, object?>? pooled = PooledSubmitParser.For<TRequest>();
        string detail = $"The {methodName} request is not a valid {typeof(TRequest).Name} message";
        return new Marshaller<TRequest>(generated.ContextualSerializer, context =>
        {
            // Counted before parsing: parsed, a request of too many (empty) items costs many times its size.
            string? invalidWireType = null;
            if (limit?.Refusal(context.PayloadAsReadOnlySequence(), out invalidWireType) is { } tooMany)
            {
                throw new RpcException(new Status(StatusCode.InvalidArgument, tooMany));
            }

            // A request the pooled parser takes holds only fields version 1 defines, each with its own wire type: the
            // scans below would find nothing in it, so they are left to the requests it does not take.
            if (pooled?.Invoke(context.PayloadAsReadOnlySequence()) is TRequest taken)
            {
                return taken;
            }

            // Not protobuf, though the parser that drops unknown fields would pass over it as if nothing were there.
            if ((invalidWireType ?? wireScan?.InvalidWireType(context.PayloadAsReadOnlySequence(), [])) is { } invalid)
            {
                throw new RpcException(new Status(StatusCode.InvalidArgument, $"{detail} ({invalid}); nothing was done with it."));
            }

            // Refused, not dropped: the protocol refuses an envelope with fields it does not define. Such envelopes are
            // only marked here, and admission refuses each on its own, so a stream goes on. A field in a batch request
            // itself is no envelope's and refuses the request, counted among the malformed envelopes as admission
            // counts its refusals.
            UndefinedFields? undefined = undefinedFields?.Find(context.PayloadAsReadOnlySequence(), methodName);
            if (undefined?.WholeRequestRefusal is { } refusal)
            {
                throw AdmissionPipeline.Reject("malformed", StatusCode.InvalidArgument, refusal);
            }

            try
            {
                TRequest request = parse(context);
                if (undefined is not null)
                {
                    UndefinedFieldCheck.Mark(request!, undefined);
                }

                return request;
            }
            catch (InvalidProtocolBufferException e)
            {
                throw new RpcException(new Status(StatusCode.InvalidArgument, $"{detail} ({e.Message.TrimEnd('.')}); nothing was done with it."));
            }
        });
    }
}

/// <summary>Puts <see cref="MalformedRequestMethodProvider{TService}"/> in place of Grpc.AspNetCore's binder.</summary>
internal static class MalformedRequestRegistration
{
    private const string GrpcBinder = "Grpc.AspNetCore.Server.Model.Internal.BinderServiceMethodProvider`1";

    /// <summary>Call after <c>AddGrpc</c>. Both binders registered would map every method twice, so a Grpc.AspNetCore
    /// whose binder has another name stops the node here instead.</summary>
    public static IServiceCollection RefuseMalformedRequests(this IServiceCollection services)
    {
        int removed = 0;
        for (int i = services.Count - 1; i >= 0; i--)
        {
            if (services[i].ServiceType == typeof(IServiceMethodProvider<>) && services[i].ImplementationType?.FullName == GrpcBinder)
            {
                services.RemoveAt(i);
                removed++;
            }
        }

        if (removed != 1)
        {
            throw new InvalidOperationException($"Grpc.AspNetCore's {GrpcBinder} was registered {removed} times, not once: this Grpc.AspNetCore binds services differently from 2.85, and MalformedRequestMethodProvider must be brought up to date with it.");
        }

        services.AddSingleton(typeof(IServiceMethodProvider<>), typeof(MalformedRequestMethodProvider<>));
        return services;
    }
}
