namespace MegaNet.Node.Tests;

/// <summary><c>meganet verify</c> refuses sizes it cannot serve with one line naming the flag, not a stack trace.</summary>
public sealed class VerifyCommandLimitsTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("meganet-verify-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Theory]
    [InlineData("--batch", "2147483647", "--batch must be 1 to 1,048,576")] // allocated its verdicts up front: OutOfMemoryException
    [InlineData("--batch", "0", "--batch must be 1 to 1,048,576")]
    [InlineData("--threads", "0", "--threads must be 1 to 1024")] // printed "(Parameter 'Threads')" and "Actual value was 0."
    public async Task A_size_out_of_range_is_one_line_naming_the_flag(string flag, string value, string expected)
    {
        string input = Path.Combine(_dir, "in.jsonl");
        await File.WriteAllTextAsync(input, "");
        MeganetProcess.Result r = await MeganetProcess.RunAsync(_dir, null, closeStdout: false,
            "verify", "--backend", "simd", "--in", input, "--out", Path.Combine(_dir, "out.jsonl"), flag, value);
        Assert.True(r.ExitCode == 1, $"exit code {r.ExitCode}; stderr: {r.Stderr}");
        Assert.Equal([$"meganet verify: {expected}.", "Run 'meganet verify --help' for usage."], r.Stderr.Trim().Split('\n'));
    }

    [Fact]
    public async Task The_verdicts_of_the_lines_before_a_bad_one_go_out_whatever_the_batch()
    {
        // Before, only whole batches went out: with the default --batch of 16,384 a bad second line left none.
        string input = Path.Combine(_dir, "bad.jsonl");
        await File.WriteAllLinesAsync(input, ["{\"pk\":\"00\",\"sig\":\"00\",\"msg\":\"\"}", "{\"pk\":\"00\",\"sig\":\"00\",\"msg\":\"\"}", "not json"]);
        MeganetProcess.Result r = await MeganetProcess.RunAsync(_dir, null, closeStdout: false, "verify", "--backend", "reference", "--in", input);
        Assert.True(r.ExitCode == 1, $"exit code {r.ExitCode}; stderr: {r.Stderr}");
        Assert.Contains("line 3", r.Stderr, StringComparison.Ordinal);
        Assert.Equal(["{\"valid\":false}", "{\"valid\":false}"], r.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries));
    }

    [Fact]
    public async Task A_backend_that_cannot_be_made_leaves_no_output_file()
    {
        // The output's place is tried before the backend is set up, and nothing is left there when that fails.
        string input = Path.Combine(_dir, "in.jsonl"), output = Path.Combine(_dir, "out.jsonl");
        await File.WriteAllTextAsync(input, "");
        MeganetProcess.Result r = await MeganetProcess.RunAsync(_dir, null, closeStdout: false, "verify", "--backend", "nosuch", "--in", input, "--out", output);
        Assert.True(r.ExitCode == 1, $"exit code {r.ExitCode}; stderr: {r.Stderr}");
        Assert.Contains("nosuch", r.Stderr, StringComparison.Ordinal);
        Assert.Equal(["in.jsonl"], Directory.GetFiles(_dir).Select(Path.GetFileName));
    }
}
