using System.Text.Json.Nodes;
using static MegaNet.Node.Tests.MeganetProcess;

namespace MegaNet.Node.Tests;

/// <summary>
/// The JavaScript client's <c>audit</c> and the file of tree heads it keeps: read and rewritten under a lock on
/// <c>FILE.lock</c> beside it, as <c>meganet audit</c>'s <c>LockedFile</c> does, so two audits at once do not lose a
/// head; and a node that does not answer ends the audit after <c>--timeout</c> (30 s by default, as the C# client's).
/// </summary>
public sealed partial class JavaScriptClientTests
{
    [Fact]
    public async Task The_javascript_audit_waits_for_the_lock_another_audit_holds_on_the_heads_file_before_saving()
    {
        // There was no lock: an audit saving while another did could lose the other's head.
        var relay = new ScriptedRelay();
        await using var fake = await FakeRelay<ScriptedRelay>.StartAsync(relay);
        string heads = Path.Combine(_dir, "heads.json");
        string[] audit = ["audit", "--node", fake.Address.ToString(), "--node-id", ScriptedRelay.NodeId, "--heads", heads];
        await Js(audit);
        Assert.False(File.Exists(heads + ".lock"), "the lock was left behind");

        // Another audit, alive (this process), holds the lock; this one has its proof and would save.
        File.WriteAllText(heads + ".lock", $"{Environment.ProcessId}\n");
        relay.Size = 2;
        var proved = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        relay.BeforeProof = () => proved.TrySetResult();
        Task<Result> waiting = RunAsync(Psi(audit));
        if (await Task.WhenAny(proved.Task, waiting) == waiting)
        {
            Assert.Fail($"ended before asking for a proof: {(await waiting).Stderr}");
        }

        // Past the proof, nothing is left but to save: it must not while the lock is held.
        if (await Task.WhenAny(waiting, Task.Delay(TimeSpan.FromSeconds(2))) == waiting)
        {
            Assert.Fail($"ended while another audit held the lock, exit code {(await waiting).ExitCode}: {(await waiting).Stderr}");
        }

        Assert.Equal(1, (long)JsonNode.Parse(File.ReadAllText(heads))![ScriptedRelay.NodeId]!["tree_size"]!);

        File.Delete(heads + ".lock");
        Result saved = await waiting;
        Assert.True(saved.ExitCode == 0, $"exit code {saved.ExitCode}: {saved.Stderr}");
        Assert.Equal(2, (long)JsonNode.Parse(File.ReadAllText(heads))![ScriptedRelay.NodeId]!["tree_size"]!);
        Assert.False(File.Exists(heads + ".lock"), "the lock was left behind");
    }

    [Fact]
    public async Task The_javascript_audit_names_a_lock_left_by_an_audit_that_is_no_longer_running_and_keeps_the_heads_file()
    {
        var relay = new ScriptedRelay();
        await using var fake = await FakeRelay<ScriptedRelay>.StartAsync(relay);
        string heads = Path.Combine(_dir, "heads.json");
        // Above Linux's largest pid: no process has it.
        File.WriteAllText(heads + ".lock", "999999999\n");
        Result result = await RunAsync(Psi("audit", "--node", fake.Address.ToString(), "--node-id", ScriptedRelay.NodeId, "--heads", heads));
        Assert.True(result.ExitCode == 1, $"exit code {result.ExitCode}: {result.Stderr}");
        Assert.False((bool)JsonNode.Parse(result.Stdout)!["remembered"]!);
        Assert.Contains($"meganet.mjs: the head could not be remembered in {heads}: {heads}.lock was left by process 999999999, which is no longer running " +
            "(an audit that was killed while saving): delete it and audit again", result.Stderr, StringComparison.Ordinal);
        Assert.False(File.Exists(heads));
    }

    [Fact]
    public async Task The_javascript_client_gives_up_on_a_node_that_does_not_answer_after_its_timeout()
    {
        // A node that takes the call and never answers: each call waits --timeout at most, as the C# client's.
        var relay = new ScriptedRelay { TreeHeadHangs = true };
        await using var fake = await FakeRelay<ScriptedRelay>.StartAsync(relay);
        string heads = Path.Combine(_dir, "heads.json");
        Result result = await RunAsync(Psi("audit", "--node", fake.Address.ToString(), "--node-id", ScriptedRelay.NodeId, "--heads", heads, "--timeout", "1s"));
        Assert.True(result.ExitCode == 2, $"exit code {result.ExitCode}: {result.Stderr}");
        Assert.Contains("(gRPC DEADLINE_EXCEEDED)", result.Stderr, StringComparison.Ordinal);
        Assert.Contains("no answer from the node within 1 s (--timeout)", result.Stderr, StringComparison.Ordinal);
        Assert.False(File.Exists(heads));

        Result refused = await RunAsync(Psi("status", "--node", fake.Address.ToString(), "--timeout", "soon"));
        Assert.True(refused.ExitCode == 1, $"exit code {refused.ExitCode}: {refused.Stderr}");
        Assert.Contains("--timeout is a duration", refused.Stderr, StringComparison.Ordinal);
    }
}
