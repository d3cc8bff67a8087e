using System.Reflection;
using MegaNet.Node.Hosting;
using Microsoft.Extensions.Logging;

namespace MegaNet.Node.Tests;

/// <summary>Alerts and log filters key on event ids, so no two of the node's log messages may share one.</summary>
public sealed class LoggerEventIdTests
{
    [Fact]
    public void Every_LoggerMessage_in_the_node_has_its_own_event_id()
    {
        const BindingFlags All = BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Static | BindingFlags.Instance | BindingFlags.DeclaredOnly;
        var messages = (from type in typeof(NodeHost).Assembly.GetTypes()
                        from method in type.GetMethods(All)
                        let attribute = method.GetCustomAttribute<LoggerMessageAttribute>()
                        where attribute is not null
                        select (attribute.EventId, Where: $"{type.FullName}.{method.Name}")).ToList();

        // The node logs from several components; finding none would mean the reflection missed them.
        Assert.True(messages.Count >= 10, $"found only {messages.Count} [LoggerMessage] methods");
        string[] shared = [.. messages.GroupBy(m => m.EventId).Where(g => g.Count() > 1)
            .Select(g => $"{g.Key}: {string.Join(", ", g.Select(m => m.Where))}")];
        Assert.True(shared.Length == 0, "event ids used more than once: " + string.Join("; ", shared));
    }
}
