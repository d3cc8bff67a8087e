using System.CommandLine;
using System.Text;
using System.Text.Json;
using MegaNet.Core.Verification;
using MegaNet.Node.Verification;
using MegaNet.Verify.Simd;

namespace MegaNet.Node.Cli;

/// <summary><c>meganet verify</c>: verdicts for a JSON-lines file of (pk, sig, msg) items on any backend.</summary>
internal static class VerifyCommand
{
    public static Command Build() => Build(VerifierCatalog.Create);

    /// <summary>The command, with its backends from <paramref name="registry"/> (tests give one with a stand-in GPU).</summary>
    internal static Command Build(Func<BatchVerifierRegistry> registry)
    {
        var backend = new Option<string>("--backend", "-b")
        {
            Description = $"Verifier backend: {string.Join(", ", VerifierCatalog.Names)} or auto (best available).",
            DefaultValueFactory = _ => BatchVerifierRegistry.Auto,
        };
        var input = new Option<string>("--in", "-i")
        {
            Description = "Input JSON lines {\"pk\":hex,\"sig\":hex,\"msg\":hex}; '-' reads standard input.",
            Required = true,
        };
        var output = new Option<string>("--out", "-o")
        {
            Description = "Output JSON lines {\"valid\":true|false}, one per input line in order; '-' writes standard output.",
            DefaultValueFactory = _ => "-",
        };
        var threads = new Option<int>("--threads", "-t")
        {
            Description = "Worker threads for CPU backends.",
            DefaultValueFactory = _ => Environment.ProcessorCount,
        };
        var batchSize = new Option<int>("--batch")
        {
            Description = $"Items verified per backend call, 1 to {MaxBatch:N0}.",
            DefaultValueFactory = _ => 16_384,
        };
        var command = new Command("verify",
            "Verify Ed25519 items from a JSON-lines file with any backend and write one verdict line per input line, in order. " +
            "Keys or signatures of the wrong length get {\"valid\":false}; a line that is not such an object (one with a field given twice included) is an error naming its line number.")
        {
            backend, input, output, threads, batchSize,
        };
        command.SetAction((parse, ct) =>
        {
            try
            {
                return Task.FromResult(Run(registry(), parse.GetValue(backend)!, parse.GetValue(input)!, parse.GetValue(output)!, parse.GetValue(threads), parse.GetValue(batchSize), ct));
            }
            catch (Exception e) when (e is InputException or BackendUnavailableException or ArgumentException or IOException or UnauthorizedAccessException)
            {
                Console.Error.WriteLine($"meganet verify: {ErrorText.Plain(e)}");
                if (e is UsageException usage)
                {
                    Console.Error.WriteLine(usage.Hint);
                }

                return Task.FromResult(1);
            }
            catch (OperationCanceledException) when (ct.IsCancellationRequested)
            {
                // The temporary --out file was deleted on the way out; standard output has the verdicts written so far.
                Console.Error.WriteLine(parse.GetValue(output) == "-" ? "meganet verify: interrupted." : "meganet verify: interrupted; no --out file was written.");
                return Task.FromResult(Interruption.ExitCode);
            }
        });
        return command;
    }

    /// <summary>The largest <c>--batch</c>: the GPU backend's largest launch, and more than any CPU backend gains from.</summary>
    internal const int MaxBatch = 1 << 20;

    private static int Run(BatchVerifierRegistry registry, string backendName, string inputPath, string outputPath, int threads, int batchSize, CancellationToken ct)
    {
        // The verdict array is allocated up front: an unchecked --batch 2147483647 died of OutOfMemoryException.
        if (batchSize is < 1 or > MaxBatch)
        {
            throw new UsageException("verify", $"--batch must be 1 to {MaxBatch:N0}.");
        }

        if (threads is < 1 or > 1024)
        {
            throw new UsageException("verify", "--threads must be 1 to 1024.");
        }

        // The paths first: a backend (a GPU's context and kernels) is not set up only to report a bad path.
        if (outputPath != "-" && Directory.Exists(outputPath))
        {
            throw new ArgumentException($"--out {outputPath} is a directory; give a file name.");
        }

        if (inputPath != "-" && Directory.Exists(inputPath))
        {
            // Opening a directory reads as "Access to the path is denied", a permissions problem it is not.
            throw new ArgumentException($"--in {inputPath} is a directory; give a JSON-lines file.");
        }

        if (outputPath != "-" && Path.GetDirectoryName(Path.GetFullPath(outputPath)) is { } outDir && !Directory.Exists(outDir))
        {
            throw new ArgumentException($"--out {outputPath}: the directory {outDir} does not exist.");
        }

        // Both files open before the backend is set up (a GPU's kernels take seconds to compile): a missing input or an
        // output that cannot be written is said at once.
        // Read on a thread of its own (InputLines), which also disposes it.
        using var lines = new InputLines(inputPath == "-" ? Console.In : new StreamReader(inputPath, Encoding.UTF8), ct);
        // Write to a temporary file and move it into place, so a bad line never leaves a half-written --out file.
        // Its name is this run's own, made only if nothing is there (not through a link, not over a file a name like
        // OUT.tmp could be, nor shared with another run writing the same --out).
        string? temp = outputPath == "-" ? null : $"{outputPath}.{Convert.ToHexStringLower(System.Security.Cryptography.RandomNumberGenerator.GetBytes(8))}.tmp";
        if (temp is not null)
        {
            // Written and removed at once: a place that cannot take the output is said before the backend is set up, and
            // nothing is left there if that set-up (which cannot be interrupted) is cut short by a second Ctrl+C.
            new FileStream(temp, FileMode.CreateNew, FileAccess.Write).Dispose();
            File.Delete(temp);
        }

        try
        {
            using IBatchVerifier verifier = OpenBackend(registry, backendName, new VerifierOptions { Threads = threads });
            TextWriter writer = temp is null ? ClientCommands.StandardOutput() : new StreamWriter(new FileStream(temp, FileMode.CreateNew, FileAccess.Write), new UTF8Encoding(false));
            if (verifier.Rule != VerificationRule.MegaNet)
            {
                Console.Error.WriteLine($"meganet verify: note: backend '{verifier.Name}' applies libsodium's rule, not MegaNet's (docs/verification.md).");
            }

            try
            {
                WriteVerdicts(verifier, lines, writer, temp, batchSize, ct);
            }
            catch (Exception e) when (!VerifierStartup.IsAuto(backendName) && VerifierStartup.IsGpu(verifier) && IsDeviceFault(e))
            {
                // A named GPU is what is being checked (perf/gpu/device-check.sh compares its verdicts with the
                // vectors'): finishing on SIMD would pass that check on SIMD's verdicts.
                throw new BackendUnavailableException(verifier.Name, $"it faulted ({e.GetType().Name}: {ErrorText.Plain(e)}); " +
                    (temp is null ? "the verdicts before that batch were written" : "no --out file was written") + "; --backend auto finishes such a run on simd.", e);
            }

            if (temp is not null)
            {
                File.Move(temp, outputPath, overwrite: true);
            }
        }
        catch when (temp is not null && File.Exists(temp))
        {
            // ... nor a temporary file beside it.
            File.Delete(temp);
            throw;
        }

        return 0;
    }

    /// <summary>
    /// The backend as a node starts it (VerifierStartup): a GPU is held to the reference first and, under <c>auto</c>,
    /// replaced by SIMD when it fails to start or to agree (named, it is refused). Under <c>auto</c> it then runs
    /// behind the node's router, so batches under <see cref="VerifierOptions.GpuThreshold"/> go to SIMD and a batch the
    /// GPU fails on is verified again on SIMD, as is every later one; a named GPU verifies every batch itself, and its
    /// fault ends the run in one line. Created directly, a GPU with a miscompiling driver wrote wrong verdicts
    /// unflagged, and a device fault ended the run with ILGPU's exception and a stack trace.
    /// </summary>
    private static IBatchVerifier OpenBackend(BatchVerifierRegistry registry, string backendName, VerifierOptions options)
    {
        IBatchVerifier verifier = VerifierStartup.CreateChecked(registry, backendName, options, new CommandLogger("verify"));
        if (!VerifierStartup.IsAuto(backendName))
        {
            // Named, it verifies every batch itself: routed, batches under the GPU threshold (all of the vector files')
            // went to SIMD, and a check of the GPU's verdicts checked SIMD's.
            return verifier;
        }

        return VerifierStartup.RouteGpu(verifier, options, registry.Create, e =>
            Console.Error.WriteLine($"meganet verify: the {verifier.Name} backend faulted ({e.GetType().Name}: {ErrorText.Plain(e)}); that batch and every later one were verified on {SimdBatchVerifier.BackendName}."));
    }

    /// <summary>What a backend's own failure looks like, as against the command's errors and Ctrl+C.</summary>
    private static bool IsDeviceFault(Exception e) =>
        e is not (OperationCanceledException or InputException or IOException or UnauthorizedAccessException or BackendUnavailableException);

    // Standard output goes through write(2) (ClientCommands.StandardOutput): Console's stream drops EPIPE, so
    // `verify | head -1` reported every item verified and exited 0 with the verdicts lost.
    private static void WriteVerdicts(IBatchVerifier verifier, InputLines lines, TextWriter writer, string? temp, int batchSize, CancellationToken ct)
    {
        long total = 0;
        RoutedTo ran = RoutedTo.None;
        try
        {
            using var batch = new SignatureBatch(Math.Min(batchSize, 65_536));
            bool[] verdicts = new bool[batchSize];
            long lineNumber = 0;
            string? line;
            while ((line = lines.ReadLine()) is not null)
            {
                ct.ThrowIfCancellationRequested();
                lineNumber++;
                try
                {
                    if (string.IsNullOrWhiteSpace(line))
                    {
                        throw new InputException($"line {lineNumber}: empty line; every line must be an object {{\"pk\",\"sig\",\"msg\"}}.");
                    }

                    AddLine(batch, line, lineNumber);
                }
                catch (InputException) when (temp is null)
                {
                    // On standard output every line before the bad one gets its verdict out, whatever --batch is (an
                    // --out file is not written at all). A failure of that last flush does not hide the bad line.
                    try
                    {
                        total += Flush(verifier, batch, verdicts, writer, ref ran);
                    }
                    catch (Exception e) when (e is IOException or BackendUnavailableException or InvalidOperationException)
                    {
                    }

                    throw;
                }

                // Also by the bytes of the messages held: a batch of --batch long messages grew to gigabytes, then
                // failed at SignatureBatch's 2 GiB without naming a line.
                if (batch.Count == batchSize || batch.MessageBytes >= MaxBatchMessageBytes)
                {
                    total += Flush(verifier, batch, verdicts, writer, ref ran);
                }
            }

            total += Flush(verifier, batch, verdicts, writer, ref ran);
            writer.Flush();
        }
        catch (IOException e) when (temp is null)
        {
            // "Broken pipe" alone read as a problem with the input.
            throw new IOException($"standard output failed ({e.Message}): the verdicts from there on were not written.", e);
        }
        finally
        {
            // Standard output is flushed, not disposed: after a failed write, disposing would throw again over the
            // error above (as fetch does). The verdicts before a bad input line still go out.
            if (temp is not null)
            {
                writer.Dispose();
            }
            else
            {
                try
                {
                    writer.Flush();
                }
                catch (IOException)
                {
                    // Reported above, or about to be by the input error this finally runs for.
                }
            }
        }

        // The backends that gave the verdicts, as VerifyBatch answers: under auto the router is named after the GPU while
        // batches under its threshold, and every one after a fault, go to simd.
        string names = verifier is RoutingBatchVerifier router ? router.NamesOf(ran) : verifier.Name;
        Console.Error.WriteLine($"meganet verify: {total} items verified with {names} ({verifier.Description}).");
    }

    private static int Flush(IBatchVerifier verifier, SignatureBatch batch, bool[] verdicts, TextWriter writer, ref RoutedTo ran)
    {
        int count = batch.Count;
        if (verifier is RoutingBatchVerifier router)
        {
            ran |= router.VerifyReporting(batch, 0, count, verdicts);
        }
        else
        {
            verifier.Verify(batch, verdicts);
        }

        for (int i = 0; i < count; i++)
        {
            writer.Write(verdicts[i] ? "{\"valid\":true}\n" : "{\"valid\":false}\n");
        }

        batch.Clear();
        return count;
    }

    private static void AddLine(SignatureBatch batch, string line, long lineNumber)
    {
        try
        {
            using JsonDocument doc = JsonDocument.Parse(line);
            JsonElement root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
            {
                throw new InputException($"line {lineNumber}: expected a JSON object {{\"pk\",\"sig\",\"msg\"}}.");
            }

            // JsonDocument keeps both of a field given twice and TryGetProperty takes the last: a verdict for one of two
            // signatures, chosen silently (names compared unescaped, so "sig" and "\u0073ig" are the same field).
            var names = new HashSet<string>(StringComparer.Ordinal);
            foreach (JsonProperty property in root.EnumerateObject())
            {
                string name = FieldName(property, lineNumber);
                if (!names.Add(name))
                {
                    // As JSON (escaped, cut short): the name is the input's, and goes to a terminal.
                    int shown = name.Length <= 64 ? name.Length : char.IsHighSurrogate(name[63]) ? 63 : 64;
                    throw new InputException($"line {lineNumber}: field {JsonSerializer.Serialize(name[..shown])}{(shown < name.Length ? " (cut short)" : string.Empty)} is given twice; give each field once.");
                }
            }

            batch.Add(Hex(root, "pk", lineNumber), Hex(root, "sig", lineNumber), Hex(root, "msg", lineNumber));
        }
        catch (JsonException e)
        {
            throw new InputException($"line {lineNumber}: not valid JSON ({e.Message}).");
        }
    }

    private static string FieldName(JsonProperty property, long lineNumber)
    {
        try
        {
            return property.Name;
        }
        catch (InvalidOperationException)
        {
            // A name JSON accepts but .NET cannot read (a lone surrogate escape, \ud800), as for values in Hex.
            throw new InputException($"line {lineNumber}: a field name is not valid text (a lone surrogate escape).");
        }
    }

    /// <summary>Message bytes a batch holds at most before it is verified, whatever <c>--batch</c> says (a line holds
    /// at most about 512 MiB of message: a .NET string's length, so a batch stays under SignatureBatch's 2 GiB).</summary>
    private const int MaxBatchMessageBytes = 64 << 20;

    private static byte[] Hex(JsonElement root, string name, long lineNumber)
    {
        if (!root.TryGetProperty(name, out JsonElement value) || value.ValueKind != JsonValueKind.String)
        {
            throw new InputException($"line {lineNumber}: missing string field \"{name}\".");
        }

        try
        {
            return Convert.FromHexString(value.GetString()!);
        }
        catch (Exception e) when (e is FormatException or InvalidOperationException)
        {
            // InvalidOperationException: a string JSON accepts but .NET cannot read (a lone surrogate escape, \ud800),
            // which went out as a stack trace.
            throw new InputException($"line {lineNumber}: field \"{name}\" is not hexadecimal (even number of 0-9a-f digits).");
        }
    }

    private sealed class InputException(string message) : Exception(message);

    /// <summary>
    /// The input's lines, read ahead on a thread of their own. A read from a pipe whose writer neither writes nor
    /// closes cannot be cancelled: Ctrl+C waited out its grace period, and the process then ended under the command,
    /// leaving the --out file's temporary file behind. Waiting here is cancelled instead, so the command stops and
    /// cleans up as it does between lines; the reading thread, a background one, is left blocked and ends with the
    /// process.
    /// </summary>
    private sealed class InputLines : IDisposable
    {
        /// <summary>Lines read ahead at most, and their characters: a file of long lines is not held all at once (the
        /// command reads two such queues' worth ahead at most, the one it takes lines from and the one being filled).</summary>
        private const int MaxLines = 4096;
        private const long MaxChars = 4 << 20;

        private readonly object _gate = new();
        private readonly CancellationToken _ct;
        private readonly CancellationTokenRegistration _wake;
        private Queue<string> _incoming = new(), _taken = new();
        private long _incomingChars;
        private bool _ended, _stopped;
        private System.Runtime.ExceptionServices.ExceptionDispatchInfo? _failure;

        public InputLines(TextReader reader, CancellationToken ct)
        {
            _ct = ct;
            _wake = ct.Register(Wake);
            new Thread(() => Read(reader)) { IsBackground = true, Name = "meganet verify input" }.Start();
        }

        /// <summary>The next line, or null at the end of the input; throws what reading it threw, and
        /// <see cref="OperationCanceledException"/> once the token is cancelled while no line is there.</summary>
        public string? ReadLine()
        {
            if (_taken.Count > 0)
            {
                return _taken.Dequeue();
            }

            lock (_gate)
            {
                while (_incoming.Count == 0 && !_ended)
                {
                    _ct.ThrowIfCancellationRequested();
                    Monitor.Wait(_gate);
                }

                if (_incoming.Count == 0)
                {
                    _failure?.Throw();
                    return null;
                }

                // All that was read, at once: one lock a queue, not one a line.
                (_taken, _incoming, _incomingChars) = (_incoming, _taken, 0);
                Monitor.PulseAll(_gate);
            }

            return _taken.Dequeue();
        }

        public void Dispose()
        {
            _wake.Dispose();
            lock (_gate)
            {
                _stopped = true;
                Monitor.PulseAll(_gate);
            }
        }

        private void Wake()
        {
            lock (_gate)
            {
                Monitor.PulseAll(_gate);
            }
        }

        private void Read(TextReader reader)
        {
            try
            {
                // Disposed here, not by the command: disposing a reader while a read blocks in it waits for that read
                // (Console.In is synchronised) or closes the file under it.
                using (reader)
                {
                    while (reader.ReadLine() is string line)
                    {
                        lock (_gate)
                        {
                            while (!_stopped && _incoming.Count > 0 && (_incoming.Count >= MaxLines || _incomingChars >= MaxChars))
                            {
                                Monitor.Wait(_gate);
                            }

                            if (_stopped)
                            {
                                return;
                            }

                            _incoming.Enqueue(line);
                            _incomingChars += line.Length;
                            Monitor.PulseAll(_gate);
                        }
                    }
                }
            }
            catch (Exception e)
            {
                // Thrown to the command after the lines read before it, where a read on its own thread would have
                // thrown it.
                lock (_gate)
                {
                    _failure = System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(e);
                }
            }
            finally
            {
                lock (_gate)
                {
                    _ended = true;
                    Monitor.PulseAll(_gate);
                }
            }
        }
    }
}
