using System.CommandLine;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Google.Protobuf;
using Grpc.Core;
using MegaNet.Api;
using MegaNet.Api.V1;
using MegaNet.Node.Hosting;

namespace MegaNet.Node.Cli;

/// <summary>The client side of the CLI: identities, send, fetch, listen, verify-receipt, status, audit.</summary>
internal static partial class ClientCommands
{
    // DoNotVerify: without it a home directory that does not exist yet gives "", and the default became the relative
    // .meganet/identity.json, so 'id new' wrote a secret key into whatever directory it was run from.
    private static readonly string DefaultIdentity = Path.Combine(
        Environment.GetFolderPath(Environment.SpecialFolder.UserProfile, Environment.SpecialFolderOption.DoNotVerify), ".meganet", "identity.json");

    /// <summary>" --identity PATH" for a command a message suggests, when <paramref name="identityPath"/> is not the
    /// default: the suggestion then acts on the identity the user named, not on the default one.</summary>
    internal static string IdentityFlag(string identityPath) =>
        Path.GetFullPath(identityPath) == Path.GetFullPath(DefaultIdentity) ? string.Empty : $" --identity {ShellQuoted(identityPath)}";

    /// <summary>A word (a name, a path) as a POSIX shell reads it back, for commands a message suggests: in double
    /// quotes where nothing in it is special there (messages put a suggested command in single quotes, which a
    /// single-quoted word inside would close), else in single quotes.</summary>
    internal static string ShellQuoted(string word) =>
        word.Length > 0 && word.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.' or '/') ? word
        : word.IndexOfAny(SpecialInDoubleQuotes) < 0 ? $"\"{word}\""
        : $"'{word.Replace("'", "'\\''", StringComparison.Ordinal)}'";

    /// <summary>Characters a POSIX shell reads specially inside double quotes (<c>!</c> in an interactive bash).</summary>
    internal static readonly char[] SpecialInDoubleQuotes = ['"', '$', '`', '\\', '!'];

    /// <summary>Text that begins as a contact card does (mn1...), as opposed to a contact's name.</summary>
    private static bool LooksLikeCard(string text) => text.TrimStart().StartsWith(ContactCard.Prefix, StringComparison.OrdinalIgnoreCase);

    private static Option<string> IdentityOption()
    {
        var option = new Option<string>("--identity", "-i")
        {
            Description = "Identity file.",
            DefaultValueFactory = _ => DefaultIdentity,
        };
        option.Validators.Add(r =>
        {
            if (r.Tokens is [{ Value.Length: 0 }])
            {
                r.AddError("--identity: give the path of an identity file, not an empty one.");
            }
        });
        return option;
    }

    private static Option<Uri> NodeOption() => new("--node", "-n")
    {
        Description = "Node address.",
        DefaultValueFactory = _ => new Uri("http://127.0.0.1:7700"),
        CustomParser = r => CliParsers.NodeUri(r)!,
    };

    private static Option<bool> JsonOption(string what) => new("--json") { Description = what };

    private static Option<CliDuration> TimeoutOption(string description = "How long to wait for each of the node's answers before giving up (e.g. 30s, 2m).") => new("--timeout")
    {
        Description = description,
        DefaultValueFactory = _ => new(TimeSpan.FromSeconds(30)),
        CustomParser = CliParsers.Duration,
    };

    internal static Option<string?> TlsCertOption() => new("--tls-cert")
    {
        Description = "For an https:// node with a certificate this system does not trust (a self-signed one): the node's certificate " +
            "(PEM or DER, as its operator hands it out), trusted exactly. Certificates the system trusts are accepted as ever.",
    };

    /// <summary>The client settings of a command with <c>--timeout</c> (an expired deadline names that option) and
    /// <c>--tls-cert</c>.</summary>
    private static MegaNetClientOptions ClientOptions(Uri node, TimeSpan timeout, string? tlsCert) => new()
    {
        DefaultDeadline = timeout,
        DeadlineSettingName = "--timeout",
        TrustedCertificate = LoadTlsCertificate(tlsCert, node),
    };

    /// <summary>The certificate of <c>--tls-cert</c> for <paramref name="node"/>, or null without the option.</summary>
    internal static X509Certificate2? LoadTlsCertificate(string? path, Uri node)
    {
        if (path is null)
        {
            return null;
        }

        if (path.Length == 0)
        {
            throw new CliException("--tls-cert needs the node's certificate file.");
        }

        if (node.Scheme != Uri.UriSchemeHttps)
        {
            // Ignored, it would let a user believe the connection checked a certificate.
            throw new CliException($"--tls-cert is for a node reached over TLS (--node https://...); {node} is plain http://, which has no certificate to check.");
        }

        // The runtime's words for a directory are "Access to the path ... is denied", which sent users to its permissions.
        if (Directory.Exists(path))
        {
            throw new CliException($"--tls-cert {path} is a directory; give the file of the node's certificate, as its operator hands it out.");
        }

        // Read here, so a missing or unreadable file is named as such (OpenSSL's loader calls it "not a certificate").
        byte[] bytes;
        try
        {
            bytes = File.ReadAllBytes(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // The runtime's words ("Could not find file '...'") named no option.
            throw new CliException($"--tls-cert {path} cannot be read ({e.Message.TrimEnd('.')}); give the file of the node's certificate, as its operator hands it out.");
        }

        try
        {
            // PEM: the first CERTIFICATE block, whatever else the file holds (an operator's file may hold the key too,
            // before it: X509Certificate2.CreateFromPem looks at the first block only).
            string text = System.Text.Encoding.ASCII.GetString(bytes);
            if (!text.Contains("-----BEGIN", StringComparison.Ordinal))
            {
                return X509CertificateLoader.LoadCertificate(bytes);
            }

            for (ReadOnlySpan<char> rest = text; PemEncoding.TryFind(rest, out PemFields fields); rest = rest[fields.Location.End..])
            {
                if (rest[fields.Label].SequenceEqual("CERTIFICATE"))
                {
                    return X509CertificateLoader.LoadCertificate(Convert.FromBase64String(rest[fields.Base64Data].ToString()));
                }
            }

            throw new CryptographicException("it holds no PEM block labelled CERTIFICATE");
        }
        catch (CryptographicException e)
        {
            throw new CliException($"--tls-cert {path} is not a certificate in PEM or DER form ({e.Message.TrimEnd('.')}); " +
                "give the node's own certificate (from a PFX/P12: openssl pkcs12 -in node.pfx -nokeys -clcerts -out node.crt).");
        }
    }

    private static Option<string?> NodeIdOption() => new("--node-id")
    {
        Description = "The node id (64 hex digits, printed when the node starts) to sign mailbox challenges for. " +
            "Default: the id pinned for this node address in 'known-nodes' beside the identity file, or on first contact the one the node shows.",
    };

    public static IEnumerable<Command> Build()
    {
        yield return IdCommand();
        yield return ContactCommand();
        yield return SendCommand();
        yield return FetchCommand();
        yield return ListenCommand();
        yield return VerifyReceiptCommand();
        yield return StatusCommand();
        yield return AuditCommand();
    }

    private static Command IdCommand()
    {
        var identity = IdentityOption();
        var force = new Option<bool>("--force") { Description = "Overwrite an existing identity file (its keys are lost)." };
        var create = new Command("new", "Create an identity (Ed25519 signing key, X25519 encryption key, sending key) and print its contact card.") { identity, force };
        create.SetAction(parse => Run(() =>
        {
            string path = parse.GetValue(identity)!;
            CheckCanCreate(path);
            if (File.Exists(path) && !parse.GetValue(force))
            {
                throw new CliException($"{path} already exists; use --force to replace it (its keys will be lost) or --identity for another file.");
            }

            using Identity id = Identity.Create();
            try
            {
                // Without --force never over an existing file, also one created since the check above.
                id.Save(path, overwrite: parse.GetValue(force));
            }
            catch (IOException e) when (!parse.GetValue(force) && (e.HResult == MegaNet.Core.Interop.PrivateFile.AlreadyExists || OperatingSystem.IsWindows()) && File.Exists(path))
            {
                // Only for the name taken meanwhile: a failure after this command's own file was in place (flushing the
                // directory) said "already exists" of the file just written, and its card was never shown.
                throw new CliException($"{path} already exists; use --force to replace it (its keys will be lost) or --identity for another file.");
            }

            PrintLine(id.Card.ToString(), $"the identity was written to {path}");
            Console.Error.WriteLine($"identity written to {path}");
            return Task.FromResult(0);
        }));
        var showIdentity = IdentityOption();
        var qr = new Option<string?>("--qr")
        {
            Description = "Also draw the card as a QR code for a phone to scan, above the card: 'dark' (the default) for a terminal with a dark background, " +
                "'light' for a light one (the code must show dark on light; a phone that does not read it may be getting it inverted).",
            Arity = ArgumentArity.ZeroOrOne,
        };
        qr.AcceptOnlyFromAmong("dark", "light");
        var qrPng = new Option<string?>("--qr-png")
        {
            Description = $"Also write the card as a QR code to this PNG file (black on white, {QrPngPixelsPerModule} pixels a module), to print or to send as a picture.",
        };
        var show = new Command("show", "Print the contact card (share it so others can send to you) and the address.") { showIdentity, qr, qrPng };
        show.SetAction(parse => Run(() =>
        {
            using Identity id = LoadIdentity(parse.GetValue(showIdentity)!);
            string card = id.Card.ToString();
            if (parse.GetValue(qrPng) is { } png)
            {
                WriteQrPng(png, card);
            }

            if (parse.GetResult(qr) is not null)
            {
                Print(CardQrCode.ToTerminal(card, darkBackground: parse.GetValue(qr) != "light"));
            }

            PrintLine(card);
            Console.Error.WriteLine($"address {Convert.ToHexString(id.Address).ToLowerInvariant()}");
            return Task.FromResult(0);
        }));
        return new Command("id", "Manage your identity.") { create, show };
    }

    private const int QrPngPixelsPerModule = 8;

    private static void WriteQrPng(string path, string card)
    {
        // Over a PNG only (an earlier code, say): a slip such as --qr-png id.json must not destroy a file.
        if (File.Exists(path) && !IsPng(path))
        {
            throw new CliException($"--qr-png {path} exists and is not a PNG; give another file name (a PNG there is replaced).");
        }

        try
        {
            File.WriteAllBytes(path, CardQrCode.ToPng(card, QrPngPixelsPerModule));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new CliException($"Cannot write the QR code to {path}: {e.Message}");
        }

        Console.Error.WriteLine($"QR code written to {path}");
    }

    private static bool IsPng(string path)
    {
        ReadOnlySpan<byte> signature = [0x89, (byte)'P', (byte)'N', (byte)'G', 0x0D, 0x0A, 0x1A, 0x0A];
        using FileStream file = File.OpenRead(path);
        Span<byte> start = stackalloc byte[8];
        return file.ReadAtLeast(start, 8, throwOnEndOfStream: false) == 8 && start.SequenceEqual(signature);
    }

    private static Command SendCommand()
    {
        var identity = IdentityOption();
        var node = NodeOption();
        var to = new Option<string>("--to") { Description = "Recipient: a contact card (mn1...), or the name of one of your contacts ('meganet contact add').", Required = true };
        var text = new Option<string?>("--text") { Description = "Text to send." };
        var file = new Option<FileInfo?>("--file")
        {
            Description = $"File to send: one envelope holds up to about 64 KiB; a larger one, up to {FileParts.MaxFileLength >> 20} MiB, goes in parts the recipient's fetch or listen puts together. " +
                "A send in parts that stopped part way, run again (the same file and name, by the same identity to the same recipient, through the same node, by node id), sends only the parts the node has not " +
                "acknowledged, and prints the earlier parts' receipts too (kept in IDENTITY.sending/ until the file is accepted whole): envelopes left unanswered go again as they were, " +
                "parts accepted earlier keep the expiry they were sent with (--ttl-days applies to the parts sent now), and expired ones, or ones whose receipt no longer checks against the node, go again; another node gets every part.",
        };
        var fileName = new Option<string?>("--name")
        {
            Description = "With --file: the file name the recipient sees (default: the file's own name). Needed for a pipe, a device or a descriptor's path (--file <(...), /dev/stdin, /dev/fd/N), " +
                $"or anything else that is not a regular file, whose own name (63, stdin) says nothing of the file. A plain name the recipient saves as it is: no path separators, at most {Inbox.MaxSavedNameBytes} bytes (UTF-8); " +
                $"{SentNameRules}.",
        };
        var ttl = new Option<double?>("--ttl-days")
        {
            CustomParser = r => CliParsers.Number(r),
            // No fixed default: a node whose MaxTtlDays is under 7 refused every plain send (and every part of a file).
            Description = "Days relays keep it (more than 0, at most 3,650; the node's MaxTtlDays applies). Default: 7, or a little under the node's MaxTtlDays where that is shorter.",
        };
        var json = JsonOption("Print the receipt as one JSON object (a file sent in parts: one receipt a line, in part order).");
        var timeout = TimeoutOption();
        var tlsCert = TlsCertOption();
        var command = new Command("send", "Seal a message to a contact card and submit it to the node; prints the receipt. A file sent in parts that stopped part way is finished by running the same send again (see --file).") { identity, node, to, text, file, fileName, ttl, json, timeout, tlsCert };
        command.SetAction((parse, ct) => Run(async () =>
        {
            // Every check that needs neither the node nor the file's contents comes first.
            string? message = parse.GetValue(text);
            FileInfo? attachment = parse.GetValue(file);
            if ((message is null) == (attachment is null))
            {
                throw new UsageException("send", "Give exactly one of --text or --file.");
            }

            string? nameSent = parse.GetValue(fileName);
            if (nameSent is not null && attachment is null)
            {
                throw new UsageException("send", "--name names the file sent with --file; a --text message has no file name.");
            }

            if (nameSent is not null && SentFileNameProblem(nameSent) is { } problem)
            {
                throw new UsageException("send", $"--name '{Printable(nameSent, multiline: false)}': {problem}.");
            }

            double? ttlDays = parse.GetValue(ttl);
            if (ttlDays is { } days && !(days > 0 && days <= NodeOptions.MaxTtlDaysLimit))
            {
                throw new UsageException("send", $"--ttl-days must be a number of days above 0 and at most {NodeOptions.MaxTtlDaysLimit} (got {ttlDays}); nodes keep at most their MaxTtlDays (default 30).");
            }

            TimeSpan? lifetime = ttlDays is { } given ? TimeSpan.FromDays(given) : null; // null: the node's default

            if (attachment is not null)
            {
                CheckAttachment(attachment, FileParts.MaxFileLength);
                nameSent ??= DescriptorName(attachment) is { } descriptor
                    ? throw new CliException($"--file {attachment.FullName} is a pipe or a device (as --file <(...) and /dev/stdin give), and its name '{descriptor}' says nothing of the file: " +
                        "give the name the recipient should see with --name, e.g. --name report.pdf.")
                    : attachment.Name;
            }

            string contentType = message is not null ? "text/plain; charset=utf-8" : "application/octet-stream";
            int maxContent = EnvelopeFormat.MaxContentLength(contentType, nameSent);
            if (message is not null && Encoding.UTF8.GetByteCount(message) is var length && length > maxContent)
            {
                throw new CliException($"--text is {length:N0} bytes (UTF-8); at most {maxContent:N0} fit in one envelope.");
            }

            using Identity id = LoadIdentity(parse.GetValue(identity)!);
            ContactCard recipient = Recipient(parse.GetValue(to)!, parse.GetValue(identity)!);
            byte[] content = message is not null ? Encoding.UTF8.GetBytes(message) : await ReadAttachmentAsync(attachment!, FileParts.MaxFileLength, ct);
            // A file larger than one envelope goes in parts (FileParts), each in an envelope of the largest class; told
            // by the bytes read, as a pipe (--file <(...), /dev/stdin) has no length beforehand.
            bool inParts = attachment is not null && content.Length > maxContent;
            using var client = new MegaNetClient(parse.GetValue(node)!, options: ClientOptions(parse.GetValue(node)!, parse.GetValue(timeout), parse.GetValue(tlsCert)));
            if (inParts)
            {
                return await TtlNamedAsync(ttlDays, () => SendInPartsAsync(client, id, parse.GetValue(identity)!, recipient, content, nameSent!, lifetime, parse.GetValue(json), ct));
            }

            Receipt receipt;
            try
            {
                receipt = await TtlNamedAsync(ttlDays, () => client.SendAsync(id, recipient, content, contentType, nameSent, lifetime, ct));
            }
            catch (Exception e) when (ct.IsCancellationRequested && e is not SendInterruptedException
                && e is OperationCanceledException or RpcException { StatusCode: StatusCode.Cancelled })
            {
                // SendAsync tells a submit that was under way, or went unanswered, by SendInterruptedException: here none
                // was, so the node cannot hold the message, and sending it again delivers no copy.
                Console.Error.WriteLine("meganet: interrupted before the message was submitted; it was not sent.");
                return Interruption.ExitCode;
            }

            string sent = $"the message was sent (envelope {Hex(receipt.EnvelopeId)}, log index {receipt.LogIndex})";
            if (parse.GetValue(json))
            {
                PrintLine(ReceiptJson(receipt).ToJsonString(), sent);
            }
            else
            {
                PrintLine($"accepted: envelope {Hex(receipt.EnvelopeId)}, log index {receipt.LogIndex}, tree size {receipt.TreeHead.TreeSize}{(receipt.Duplicate ? " (already accepted before)" : string.Empty)}", sent);
            }

            return 0;
        }, parse.GetValue(node)));
        return command;
    }

    private static Command FetchCommand()
    {
        var identity = IdentityOption();
        var node = NodeOption();
        var after = new Option<ulong>("--after") { Description = "Cursor: only messages after this sequence number. Default 0.", CustomParser = CliParsers.SequenceNumber };
        var ack = new Option<bool>("--ack")
        {
            Description = "Delete the fetched messages from the node afterwards: those written out (flushed to the disk when standard output is a file), the parts of files kept on disk until the file is whole, " +
                "and junk and copies; not a part left on the node for want of room to keep it, nor a file in text output without --save-files (it is only announced).",
        };
        var json = JsonOption("One JSON object per message.");
        var nodeId = NodeIdOption();
        var timeout = TimeoutOption();
        var tlsCert = TlsCertOption();
        var save = SaveFilesOption();
        var command = new Command("fetch", "Fetch, open and print the messages waiting in your mailbox. A message the node's store no longer reads back is named on stderr, " +
            "left on the node (never acknowledged) and passed over; the fetch then ends with exit code 2.") { identity, node, nodeId, after, ack, json, save, timeout, tlsCert };
        command.SetAction((parse, ct) => Run(async () =>
        {
            using Identity id = LoadIdentity(parse.GetValue(identity)!);
            SeenMessages seen = OpenSeen(parse.GetValue(identity)!);
            Inbox inbox = OpenInbox(parse.GetValue(identity)!, parse.GetValue(json), parse.GetValue(save), parse.GetValue(ack) ? Inbox.PartsRelease.WhenAcknowledged : Inbox.PartsRelease.Never);
            return await KnownNodes.RunAsync(parse.GetValue(identity)!, parse.GetValue(node)!, parse.GetValue(nodeId), client => FetchAsync(client, id, seen, inbox, parse.GetValue(after), parse.GetValue(ack), ct), ClientOptions(parse.GetValue(node)!, parse.GetValue(timeout), parse.GetValue(tlsCert)));
        }, parse.GetValue(node)));
        return command;
    }

    /// <summary>Records in <paramref name="received"/> the envelopes (null: not a message shown) of messages the node
    /// confirmed deleted, so that the same envelope coming again (from another node, or submitted anew by whoever kept
    /// it) is reported as a copy. The mail is gone from the node by now: a record that cannot be written costs a line
    /// on <paramref name="errors"/>, not the command's success.</summary>
    internal static void RecordAcknowledged(SeenMessages received, IEnumerable<byte[]?> envelopes, TextWriter errors)
    {
        try
        {
            foreach (byte[]? envelope in envelopes)
            {
                if (envelope is not null)
                {
                    received.Acknowledged(envelope);
                }
            }
        }
        catch (IOException e)
        {
            errors.WriteLine($"meganet: {e.Message}; the messages were acknowledged, but should one come again unchanged it is shown again.");
        }
    }

    /// <summary>Pages one <c>fetch</c> reads at most (100,000 messages): a node that never ends a mailbox gets a bounded
    /// number of signed challenges.</summary>
    private const int MaxFetchPages = 1_000;

    private static async Task<int> FetchAsync(MegaNetClient client, Identity id, SeenMessages received, Inbox inbox, ulong cursor, bool ack, CancellationToken ct)
    {
        var toAcknowledge = new List<ulong>();
        // The envelopes of the messages shown among them, recorded as acknowledged once the node has deleted them.
        var shownEnvelopes = new Dictionary<ulong, byte[]>();
        var damaged = new List<ulong>();
        int entries = 0;
        (FetchResult? page, ulong reached, bool more) = await FetchPagesAsync(client, id, received, cursor, m =>
        {
            entries++;
            if (inbox.Deliver(m, ack ? "no message was acknowledged" : null))
            {
                toAcknowledge.Add(m.Seq);
                shownEnvelopes[m.Seq] = m.EnvelopeId;
            }
        }, m =>
        {
            // Junk anyone sealed to this address, and copies a relay replayed: reported, and deleted with the rest under --ack.
            entries++;
            Inbox.Warn(m);
            toAcknowledge.Add(m.Seq);
        }, (seq, e) =>
        {
            // Never acknowledged: it is not lost, only unreadable until the node's store is restored.
            entries++;
            Console.Error.WriteLine(CouldNotDeliver(seq, e, "fetching the mail after it"));
            damaged.Add(seq);
        }, ct);
        if (entries == 0)
        {
            // Said on stderr (standard output stays empty for scripts): a fetch that printed nothing at all left a person
            // wondering whether it had reached the node.
            Console.Error.WriteLine(cursor > 0 ? $"no mail waiting after seq {cursor}" : "no mail waiting");
        }

        if (more)
        {
            Console.Error.WriteLine($"fetched {MaxFetchPages:N0} pages; more mail may wait after {reached}: run fetch again (with --after {reached} to go on from here)");
        }

        // Everything shown must have reached the reader before the node deletes it: the buffer is written out, and a
        // failed write (a reader that went away) has thrown above, before this point.
        inbox.Flush(ack ? "no message was acknowledged" : null);
        int waiting = page?.WaitingCount ?? 0;
        long waitingBytes = page?.WaitingBytes ?? 0;
        if (ack && toAcknowledge.Count > 0)
        {
            FlushStandardOutputToDisk("no message was acknowledged");
            int deleted;
            try
            {
                deleted = await client.AckAsync(id, toAcknowledge, ct);
            }
            catch (AckIncompleteException e)
            {
                // Calls of 1,000 went through before one failed: that mail is gone from the node, which the error alone
                // did not say, and the files all of whose parts went with it need their kept parts no longer.
                Console.Error.WriteLine($"acknowledged {e.Acknowledged} of {toAcknowledge.Count} message(s) before the acknowledgement failed; " +
                    "the rest may still be on the node, and the next fetch shows those again");
                var settled = new HashSet<ulong>(toAcknowledge.Take(e.Settled));
                inbox.ForgetShown(settled.Contains);
                RecordAcknowledged(received, settled.Select(seq => shownEnvelopes.GetValueOrDefault(seq)), Console.Error);
                // Then the failure itself, as before (its message, and the exit code for it).
                System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(e.InnerException!);
                throw;
            }

            Console.Error.WriteLine($"acknowledged {deleted} message(s)");
            inbox.ForgetShown();
            RecordAcknowledged(received, shownEnvelopes.Values, Console.Error);
            // The bytes the acknowledged ones took are not known here: after an ack the count alone says how full it is.
            waiting -= deleted;
        }

        if (waiting > 0)
        {
            await WarnIfNearlyFullAsync(client, waiting, ack ? null : waitingBytes, ct);
        }

        if (damaged.Count > 0)
        {
            // The rest was shown (and acknowledged), but not all of the mailbox: a script must not take this for a
            // complete fetch. The exit code of a node that failed.
            Console.Error.WriteLine($"meganet: {damaged.Count} message(s) could not be delivered because the node's store is damaged (seq {SeqRanges(damaged)}); " +
                "they stay on the node, and a later fetch gets them once its operator has restored the store.");
            return 2;
        }

        return 0;
    }

    /// <summary>The line for a mailbox entry the node could not deliver because its store no longer reads it back
    /// (<c>DATA_LOSS</c> naming it in <see cref="MegaNetClient.DamagedSeqTrailer"/>): which one, the node's words
    /// (escaped), that it is left on the node, and <paramref name="then"/>, what the command does next.</summary>
    internal static string CouldNotDeliver(ulong seq, RpcException e, string then) =>
        $"meganet: the message at seq {seq} could not be delivered: the node's store is damaged ({Describe(e)}); it stays on the node, not acknowledged; {then}.";

    /// <summary>Ascending sequence numbers as ranges: "16-23, 40".</summary>
    internal static string SeqRanges(IReadOnlyList<ulong> seqs)
    {
        var text = new StringBuilder();
        for (int i = 0; i < seqs.Count;)
        {
            int end = i;
            while (end + 1 < seqs.Count && seqs[end + 1] == seqs[end] + 1)
            {
                end++;
            }

            text.Append(text.Length > 0 ? ", " : "").Append(seqs[i]);
            if (end > i)
            {
                text.Append('-').Append(seqs[end]);
            }

            i = end + 1;
        }

        return text.ToString();
    }

    /// <summary>Reads the mailbox after <paramref name="cursor"/> page by page, handing each message that opened to
    /// <paramref name="message"/>, each that did not to <paramref name="unreadable"/>, and the sequence number of each
    /// entry the node could not deliver because its store is damaged to <paramref name="damaged"/> (with the node's
    /// answer; the fetch goes on after it), until its end or <see cref="MaxFetchPages"/> (such an entry counts as a
    /// page). Returns the last page (null when none came), the cursor after it, and whether it stopped at
    /// <see cref="MaxFetchPages"/> with more perhaps waiting.</summary>
    private static async Task<(FetchResult? Last, ulong Cursor, bool More)> FetchPagesAsync(MegaNetClient client, Identity id, SeenMessages received, ulong cursor,
        Action<ReceivedMessage> message, Action<UnreadableMessage> unreadable, Action<ulong, RpcException> damaged, CancellationToken ct)
    {
        FetchResult? page = null;
        for (int pages = 1; ; pages++)
        {
            try
            {
                page = await client.FetchAsync(id, cursor, 100, ct, received);
            }
            catch (RpcException e) when (MegaNetClient.DamagedSeq(e) is { } seq && seq > cursor)
            {
                // Before, one such entry ended the fetch, and so every later message of the mailbox waited behind it
                // until the store was restored. (A seq at or before the cursor would not move on: that fails as sent.)
                damaged(seq, e);
                cursor = seq;
                if (pages == MaxFetchPages)
                {
                    return (page, cursor, true);
                }

                continue;
            }

            (IReadOnlyList<ReceivedMessage> messages, IReadOnlyList<UnreadableMessage> bad, ulong next) = page;
            foreach (ReceivedMessage m in messages)
            {
                message(m);
            }

            foreach (UnreadableMessage m in bad)
            {
                unreadable(m);
            }

            // A page can be short before the end (entries acked or expired meanwhile): the cursor says when it is, and an
            // empty page is the end (docs/protocol.md), whatever cursor comes with it: a node that kept raising the
            // cursor on empty pages had this loop sign a challenge for each, without end.
            if (next <= cursor || messages.Count + bad.Count == 0)
            {
                return (page, cursor, false);
            }

            cursor = next;
            if (pages == MaxFetchPages)
            {
                return (page, cursor, true);
            }
        }
    }

    /// <summary>
    /// <c>listen</c>: fetches again the parts it left on the node for want of room in the parts spool, once room was made
    /// there for them (<see cref="Inbox.DeferredToFetch"/>: a file of the same sender came whole, parts were handed over
    /// or pruned), as a <c>fetch</c> would get them: the subscription brings each entry once, so without this they waited
    /// for the next fetch, or expired. Only those entries are fetched (<see cref="FetchDeferredAsync"/>) and go through
    /// the inbox again; one that fits is acknowledged under <c>--ack</c>, one that does not stays deferred, one no
    /// longer on the node is forgotten, and one the node's store no longer reads back is named once on
    /// <paramref name="errors"/> and forgotten too, never acknowledged, as the subscription does with such mail. Again while the fetches themselves make room (a deferred part that made its
    /// file whole) or keep parts (the next file not begun). Run after each message, and by <see cref="NextMessageAsync"/>
    /// while it waits for one, on the inbox's schedule. A fetch that fails costs a line, and the parts are tried again
    /// once the node's <c>retry-after-ms</c> or a growing wait (5 s, 10 s … 2 min) has passed.
    /// </summary>
    internal static async Task RetryDeferredAsync(MegaNetClient client, Identity id, SeenMessages seen, Inbox inbox, ListenAcknowledger? acknowledger, TextWriter errors, CancellationToken ct)
    {
        for (List<Inbox.DeferredRun> deferred; (deferred = inbox.DeferredToFetch()).Count > 0;)
        {
            try
            {
                await FetchDeferredAsync(client, id, seen, deferred, m =>
                {
                    if (inbox.Deliver(m, "stopped listening"))
                    {
                        acknowledger?.Add(m.Seq, m.EnvelopeId);
                    }
                }, m =>
                {
                    // Opened before, it no longer does (its record of copies changed): reported and deleted as the
                    // subscription does with such mail.
                    inbox.DeferredGone(m.Seq);
                    Inbox.Warn(m);
                    acknowledger?.Add(m.Seq);
                }, inbox.DeferredGone, (seq, e) =>
                {
                    // As the subscription does with such an entry: named once (no longer deferred, it is not fetched
                    // again), never acknowledged, and the parts after it still come.
                    inbox.DeferredGone(seq);
                    errors.WriteLine(CouldNotDeliver(seq, e, "it was a part left on the node for want of room, and 'meganet fetch' gets it once the node's operator has restored the store"));
                }, ct);
            }
            catch (Exception e) when (!ct.IsCancellationRequested && e is RpcException or NodeSilentException or PowDemandTooHighException or NodeMisbehavedException)
            {
                TimeSpan wait = inbox.DeferredNotFetched(RetryHint(e));
                errors.WriteLine($"meganet: part(s) left on the node for want of room could not be fetched again ({Describe(e)}); tried again in {wait.TotalSeconds:0} s, or 'meganet fetch' gets them.");
                return;
            }

            inbox.DeferredFetched();
        }
    }

    /// <summary>
    /// Fetches the entries <paramref name="runs"/> name (each run ascending, of entries within a page of each other in
    /// the mailbox) and little around them: each run with one <c>Fetch</c> from just before its first entry, limited
    /// to the run's span (more only where the node's page size cut a page short, or entries the run did not know of lay
    /// between), so no entry before it is sent, nor more after it than its span less its own entries gone. Hands each of them that
    /// opened to <paramref name="message"/>, each that did not to <paramref name="unreadable"/>, and each the node no
    /// longer holds (acknowledged by a fetch beside this listen, or expired) to <paramref name="gone"/>, and each its
    /// store no longer reads back (<c>DATA_LOSS</c> naming it in <see cref="MegaNetClient.DamagedSeqTrailer"/>) to
    /// <paramref name="damaged"/>, with the node's answer, going on after it; anything else a page holds is left alone.
    /// </summary>
    internal static async Task FetchDeferredAsync(MegaNetClient client, Identity id, SeenMessages seen, IEnumerable<Inbox.DeferredRun> runs,
        Action<ReceivedMessage> message, Action<UnreadableMessage> unreadable, Action<ulong> gone, Action<ulong, RpcException> damaged, CancellationToken ct)
    {
        foreach ((ulong[] run, int span) in runs)
        {
            var wanted = new HashSet<ulong>(run);
            for (int at = 0; at < run.Length;)
            {
                // Sequence numbers start at 1.
                ulong after = run[at] - 1;
                FetchResult page;
                try
                {
                    page = await client.FetchAsync(id, after, Math.Min(span == run.Length ? run.Length - at : span, Inbox.DeferredPage), ct, seen);
                }
                catch (RpcException e) when (MegaNetClient.DamagedSeq(e) is { } lost && lost > after)
                {
                    // The node's next entry after `after` no longer reads back: what of the run lies before it is gone,
                    // and the next fetch goes on after it. Before, this failed the whole fetch, tried again and again for
                    // as long as the store stayed damaged, and the run's later parts never came. (A seq at or before
                    // `after` would not move on: that fails as sent.)
                    for (; at < run.Length && run[at] <= lost; at++)
                    {
                        if (run[at] == lost)
                        {
                            damaged(lost, e);
                        }
                        else
                        {
                            gone(run[at]);
                        }
                    }

                    continue;
                }

                (IReadOnlyList<ReceivedMessage> messages, IReadOnlyList<UnreadableMessage> bad, ulong next) = page;
                var sent = new HashSet<ulong>();
                foreach (ReceivedMessage m in messages.Where(m => wanted.Contains(m.Seq) && sent.Add(m.Seq)))
                {
                    message(m);
                }

                foreach (UnreadableMessage m in bad.Where(m => wanted.Contains(m.Seq) && sent.Add(m.Seq)))
                {
                    unreadable(m);
                }

                // The node read the mailbox through next: what of the run up to there it did not send is gone, and an
                // empty page (or a cursor that did not move) is the end of the mailbox.
                ulong through = messages.Count + bad.Count == 0 || next <= after ? run[^1] : next;
                for (; at < run.Length && run[at] <= through; at++)
                {
                    if (!sent.Contains(run[at]))
                    {
                        gone(run[at]);
                    }
                }
            }
        }
    }

    /// <summary>Tells the owner when mail waiting on the node has reached the point where senders must add proof of work
    /// (or, with that off, nine tenths of a quota): a mailbox nobody acknowledges fills, and then refuses mail.</summary>
    private static async Task WarnIfNearlyFullAsync(MegaNetClient client, int waiting, long? waitingBytes, CancellationToken ct)
    {
        Limits limits;
        try
        {
            limits = (await client.Relay.StatusAsync(new StatusRequest(), cancellationToken: ct)).Limits;
        }
        catch (RpcException) when (!ct.IsCancellationRequested)
        {
            // The mail was shown (and acknowledged); a node gone since costs only this note, not the command's success.
            return;
        }

        if (limits.MailboxMaxCount <= 0 || limits.MailboxMaxBytes <= 0)
        {
            return;
        }

        // In integers, as the node decides (100 x held >= mark x quota): for a whole mark, the rounded-down percent
        // reaches it exactly when that holds, so the note comes exactly when stamps do.
        long percent = (long)Int128.Max((Int128)100 * waiting / limits.MailboxMaxCount, (Int128)100 * (waitingBytes ?? 0) / limits.MailboxMaxBytes);
        int mark = limits.MailboxPowFromPercent > 0 ? limits.MailboxPowFromPercent : 90;
        if (percent < mark)
        {
            return;
        }

        // After --ack only the count is known: the bytes the acknowledged messages took are not.
        string bytes = waitingBytes is { } b ? $", {b:N0} of {limits.MailboxMaxBytes:N0} bytes" : "";
        string stamps = limits.MailboxPowFromPercent > 0 ? $"from {limits.MailboxPowFromPercent} % senders must add proof of work, and " : "";
        Console.Error.WriteLine($"note: your mailbox on this node holds {waiting:N0} of {limits.MailboxMaxCount:N0} messages{bytes} ({percent} % full): " +
            $"{stamps}a full mailbox refuses new mail. 'meganet fetch --ack' deletes what it shows (files: with --save-files DIR or --json).");
    }


    private static Command ListenCommand()
    {
        var identity = IdentityOption();
        var node = NodeOption();
        var after = new Option<ulong>("--after") { Description = "Cursor: only messages after this sequence number. Default 0 (everything waiting).", CustomParser = CliParsers.SequenceNumber };
        var json = JsonOption("One JSON object per message.");
        var nodeId = NodeIdOption();
        var retryFor = new Option<CliDuration>("--retry-for")
        {
            Description = "After a subscription that worked is lost (the node restarts, the connection dies), subscribe again from the last message, " +
                "waiting 1 s, 2 s, 4 s ... up to 30 s between tries, for at most this long without one that works (mail or a second keepalive comes) (e.g. 30s, 10m, 01:00:00).",
            DefaultValueFactory = _ => new(DefaultRetryFor),
            CustomParser = CliParsers.Duration,
        };
        var ack = new Option<bool>("--ack")
        {
            Description = "Delete each message from the node once it has been written to standard output, or, for a part of a file, kept on disk " +
                "until the file is whole (as fetch --ack does), so a mailbox read only through listen does not fill up; not a file in text output without --save-files (it is only announced).",
        };
        // Not for the subscription: it waits for mail as long as it is open (the node's keepalives tell it is alive).
        var timeout = TimeoutOption("How long to wait for each of the node's answers to a call (the challenge before each subscription, " +
            "the fetch of parts left on the node, acknowledgements) before giving up (e.g. 30s, 2m); the subscription itself stays open for mail.");
        var tlsCert = TlsCertOption();
        var save = SaveFilesOption();
        var command = new Command("listen", "Print messages as they arrive (and those already waiting), until Ctrl+C. A message the node's store no longer reads back " +
            "is named on stderr and passed over (left on the node, never acknowledged).") { identity, node, nodeId, after, ack, json, save, retryFor, timeout, tlsCert };
        command.SetAction((parse, ct) => Run(async () =>
        {
            using Identity id = LoadIdentity(parse.GetValue(identity)!);
            SeenMessages seen = OpenSeen(parse.GetValue(identity)!);
            Inbox inbox = OpenInbox(parse.GetValue(identity)!, parse.GetValue(json), parse.GetValue(save), parse.GetValue(ack) ? Inbox.PartsRelease.WhenWritten : Inbox.PartsRelease.Never);
            Uri address = parse.GetValue(node)!;
            // Every connection listen makes (subscriptions again after a loss, acknowledgements) trusts the same, and
            // names --timeout when a call runs out of it.
            MegaNetClientOptions connection = ClientOptions(address, parse.GetValue(timeout), parse.GetValue(tlsCert));
            return await KnownNodes.RunAsync(parse.GetValue(identity)!, address, parse.GetValue(nodeId),
                (client, pin) => ListenAsync(client, pin, address, connection, id, seen, inbox, parse.GetValue(after), parse.GetValue(ack), parse.GetValue(retryFor), ct), connection);
        }, parse.GetValue(node)));
        return command;
    }

    private static Option<string?> SaveFilesOption() => new("--save-files")
    {
        Description = "Write each file received into this directory (created owner-only if missing) as an owner-only file, under the name the sender gave made safe " +
            "(no path, no control or invisible characters or ones Windows refuses, no leading dot or dash, at most 140 bytes, keeping the extension) and never over a file there " +
            "(\"name (2).ext\"); a file of its own with the same bytes under one of those names counts as saved before; the output then says where, and JSON gives saved_as instead of file_base64.",
    };

    /// <summary>The inbox of <c>fetch</c> and <c>listen</c> for the identity at <paramref name="identityPath"/>.</summary>
    private static Inbox OpenInbox(string identityPath, bool json, string? saveFiles, Inbox.PartsRelease release) =>
        new(json, new ContactsFollower(identityPath), ReceivedParts.Beside(identityPath), Inbox.SaveDirectory(saveFiles), release);

    /// <summary>How long <c>listen</c> tries to subscribe again by default (README).</summary>
    internal static readonly TimeSpan DefaultRetryFor = TimeSpan.FromMinutes(5);

    /// <summary>The longest wait between two tries to subscribe again.</summary>
    private static readonly TimeSpan MaxRetryDelay = TimeSpan.FromSeconds(30);

    /// <summary>The first wait before trying again after a passing failure; it doubles up to <see cref="MaxRetryDelay"/>.</summary>
    internal static readonly TimeSpan FirstRetryDelay = TimeSpan.FromSeconds(1);

    /// <summary>The wait after <paramref name="delay"/>: twice as long, up to <see cref="MaxRetryDelay"/>.</summary>
    internal static TimeSpan NextRetryDelay(TimeSpan delay) => TimeSpan.FromTicks(Math.Min(2 * delay.Ticks, MaxRetryDelay.Ticks));

    private static async Task<int> ListenAsync(MegaNetClient client, Action pin, Uri address, MegaNetClientOptions connection, Identity id, SeenMessages seen, Inbox inbox, ulong after, bool ack,
        TimeSpan retryFor, CancellationToken ct)
    {
        // The node id is known by the first message: the subscription that brought it was signed for that node.
        // Every later connection (a subscription again, the acknowledgements) is held to the node id the first one saw.
        MegaNetClient Reconnect() => new(address, client.NodeId, options: connection);
        ListenAcknowledger? acknowledger = ack ? new ListenAcknowledger(id, Reconnect, seen) : null;
        ulong cursor = after; // the last sequence number printed or reported: a new subscription resumes after it
        bool subscribed = false; // since the last failure
        bool everSubscribed = false;
        int events = 0; // of the current subscription (and those ListenAsync renewed on its own)
        long? failingSince = null; // Environment.TickCount64 of the first failure since a subscription last worked
        TimeSpan delay = FirstRetryDelay;
        MegaNetClient current = client;
        try
        {
            while (true)
            {
                try
                {
                    void Alive()
                    {
                        if (!everSubscribed)
                        {
                            // A first contact is pinned now, not when listen ends: it may end by being killed.
                            pin();
                            everSubscribed = true;
                            // On stderr: a listen that printed nothing until mail came gave no sign it had reached the node.
                            Console.Error.WriteLine($"listening for mail at {address} (Ctrl+C to stop)");
                        }

                        // The first keepalive says the node registered the subscription, not that mail can come: it
                        // reads the mailbox after it, and a read that fails there (its store unreadable just then) ends
                        // the subscription at once. Taken for a working one, that reset the backoff: a subscription
                        // again every second for as long as the failure lasted, and --retry-for never ran out. The next
                        // event (mail, or the keepalive an interval later) says it works.
                        if (++events < 2)
                        {
                            return;
                        }

                        if (!subscribed && failingSince is not null)
                        {
                            Console.Error.WriteLine($"meganet: subscribed again after seq {cursor}.");
                        }

                        subscribed = true;
                        failingSince = null;
                        delay = FirstRetryDelay;
                    }

                    void Skipped(UnreadableMessage m)
                    {
                        // Junk and copies are deleted under --ack too, as fetch --ack deletes them.
                        Inbox.Warn(m);
                        cursor = m.Seq;
                        acknowledger?.Add(m.Seq);
                    }

                    void Damaged(DamagedMail d)
                    {
                        // Never acknowledged. Past the cursor, so a subscription after a failure does not name it again.
                        Console.Error.WriteLine(CouldNotDeliver(d.Seq, d.Error, "listening goes on after it"));
                        cursor = d.Seq;
                    }

                    // Its own token, so that a retry of deferred parts that fails for good can end the subscription
                    // it ran beside before leaving it.
                    using var subscription = CancellationTokenSource.CreateLinkedTokenSource(ct);
                    events = 0;
                    await using IAsyncEnumerator<ReceivedMessage> messages = current.ListenAsync(id, cursor, subscription.Token, Skipped, seen, Alive, Damaged).GetAsyncEnumerator(subscription.Token);
                    MegaNetClient retrying = current;
                    while (await NextMessageAsync(messages, inbox, () => RetryDeferredAsync(retrying, id, seen, inbox, acknowledger, Console.Error, ct), subscription, ct))
                    {
                        ReceivedMessage m = messages.Current;
                        // Each message as it comes (a reader waits for it), and listening ends when no one reads any more.
                        // Deliver flushes: a message is acknowledged only once it has been written out (or a part kept on disk).
                        bool delivered = inbox.Deliver(m, "stopped listening");
                        cursor = m.Seq;
                        if (delivered)
                        {
                            acknowledger?.Add(m.Seq, m.EnvelopeId);
                        }

                        await RetryDeferredAsync(current, id, seen, inbox, acknowledger, Console.Error, ct);
                    }

                    // The node ends a subscription only with an error; an end without one is resumed the same way.
                    throw new RpcException(new Status(StatusCode.Unavailable, "the node ended the subscription"));
                }
                catch (Exception e) when (everSubscribed && !ct.IsCancellationRequested && IsPassing(e))
                {
                    // A subscription that worked once is resumed; one that never worked (a wrong address, no node
                    // there) fails at once, as before.
                    subscribed = false;
                    long now = Environment.TickCount64;
                    failingSince ??= now;
                    TimeSpan failing = TimeSpan.FromMilliseconds(now - failingSince.Value);
                    if (failing >= retryFor)
                    {
                        throw new ListenGaveUpException($"gave up after {failing.TotalSeconds:0} s without a subscription (--retry-for {new CliDuration(retryFor)}): {Describe(e, address)}", e);
                    }

                    TimeSpan wait = WaitBefore(e, delay);
                    wait = wait < retryFor - failing ? wait : retryFor - failing; // never past --retry-for
                    Console.Error.WriteLine($"meganet: subscription lost ({Describe(e, address)}); subscribing again after seq {cursor} in {wait.TotalSeconds:0} s.");
                    await Task.Delay(wait, ct);
                    delay = NextRetryDelay(delay);

                    // A fresh connection: the old one may be the dead one, and the client would reuse it. Held to the
                    // node id the first subscription signed for, so another node at that address is refused.
                    if (current != client)
                    {
                        current.Dispose();
                    }

                    current = Reconnect();
                }
            }
        }
        catch (RpcException e) when (e.StatusCode == StatusCode.Cancelled && ct.IsCancellationRequested)
        {
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
        }
        finally
        {
            if (current != client)
            {
                current.Dispose();
            }

            if (acknowledger is not null)
            {
                await acknowledger.DisposeAsync();
                Console.Error.WriteLine($"acknowledged {acknowledger.Acknowledged} message(s)");
            }
        }

        return 0;
    }

    /// <summary>
    /// The subscription's next message (false at its end), retrying the parts left on the node for want of room
    /// meanwhile whenever the inbox says a check is due (<see cref="Inbox.NextDeferredCheck"/>): room is also made
    /// without mail (another process hands files over, a sender becomes a contact), and a failed fetch's wait ends
    /// without mail too; before, the parts waited for the next message, or expired on the node. Nothing deferred, it
    /// only waits for the message. The retry runs while the subscription is read (the inbox is used by this method's
    /// caller alone, between messages); one that throws cancels <paramref name="subscription"/> and awaits its end
    /// before the exception goes on.
    /// </summary>
    private static async Task<bool> NextMessageAsync(IAsyncEnumerator<ReceivedMessage> messages, Inbox inbox, Func<Task> retry, CancellationTokenSource subscription, CancellationToken ct)
    {
        ValueTask<bool> next = messages.MoveNextAsync();
        if (next.IsCompleted || inbox.NextDeferredCheck() is null)
        {
            return await next;
        }

        Task<bool> message = next.AsTask();
        while (inbox.NextDeferredCheck() is { } wait && !ct.IsCancellationRequested)
        {
            using (var timer = CancellationTokenSource.CreateLinkedTokenSource(ct))
            {
                Task due = Task.Delay(wait, timer.Token);
                if (await Task.WhenAny(message, due) == message || ct.IsCancellationRequested)
                {
                    await timer.CancelAsync();
                    break;
                }
            }

            try
            {
                await retry();
            }
            catch
            {
                await subscription.CancelAsync();
                // Its end, whatever it is, is not the failure to report: seen, so it is not reported as unobserved.
                await Task.WhenAny(message);
                _ = message.Exception;
                throw;
            }
        }

        return await message;
    }

    /// <summary>Failures a later try (of a subscription, or of an acknowledgement) may not meet: those of
    /// <see cref="IsTransient"/>, a node too slow to answer, and a refusal that says when to come back
    /// (RESOURCE_EXHAUSTED with <c>retry-after-ms</c>: the mailbox opened too often).</summary>
    internal static bool IsPassing(Exception e) =>
        IsTransient(e) || e is RpcException { StatusCode: StatusCode.DeadlineExceeded } || RetryHint(e) is not null;

    /// <summary>How long to wait before trying again after <paramref name="e"/>: <paramref name="delay"/>, or the wait
    /// a refusal asks for when that is longer (waited out whole).</summary>
    internal static TimeSpan WaitBefore(Exception e, TimeSpan delay) => RetryHint(e) is { } hint && hint > delay ? hint : delay;

    private static TimeSpan? RetryHint(Exception e) => e is RpcException { StatusCode: StatusCode.ResourceExhausted } r ? r.RetryAfter() : null;

    /// <summary>Failures that a later subscription may not meet: the node unreachable or going down (Unavailable),
    /// a connection that broke (a transport error, which carries a DebugException), or a node gone silent.</summary>
    internal static bool IsTransient(Exception e) => e switch
    {
        NodeSilentException => true,
        RpcException r => r.StatusCode == StatusCode.Unavailable || (r.Status.DebugException is not null && r.StatusCode != StatusCode.Cancelled),
        _ => false,
    };

    /// <summary>What went wrong, as one line after "meganet: " (transport details can hold line breaks, e.g. an
    /// ObjectDisposedException's "Object name:" line). <paramref name="node"/>, where given, is named when it cannot be
    /// reached (a typo in --node, or the default address while the node runs elsewhere).</summary>
    internal static string Describe(Exception e, Uri? node = null) => OneLine(e switch
    {
        // The node's words are the node's: control characters (terminal escapes) in every status detail are shown, not
        // obeyed. A node can send DEADLINE_EXCEEDED worded as the client's own deadline message.
        // The client's own deadline (MegaNetClient says how long it waited), whether or not the transport saw why.
        RpcException { StatusCode: StatusCode.DeadlineExceeded } r when r.Status.Detail.StartsWith("No answer from the node", StringComparison.Ordinal) => Printable(r.Status.Detail, multiline: false),
        // A status the node sent has no DebugException; one made by the client's transport does.
        RpcException r when r.Status.DebugException is null => $"the node said {r.StatusCode}: {Printable(r.Status.Detail, multiline: false)}",
        // Something answers at --node, but not as a gRPC server over HTTP/2 does (the node's metrics port, a web server, a
        // TLS node asked in plain http://): the transport's words named HTTP/2 error codes and asked whether a node runs.
        RpcException r when NotGrpc(r.Status.DebugException) is { } notGrpc => notGrpc,
        RpcException r when r.StatusCode == StatusCode.Unavailable => $"cannot reach the node{(node is null ? "" : $" at {node}")} ({(SocketReason(r.Status.DebugException) is { Length: > 0 } why ? $"{Printable(r.Status.Detail, multiline: false).TrimEnd('.')}: {why}" : Printable(r.Status.Detail, multiline: false))}); is 'meganet node' running {(node is null ? "at that address" : "there")}?",
        // Grpc.Net.Client reports a refused TLS handshake as Internal; a node with a self-signed certificate is the
        // usual cause, and there is an option for it.
        RpcException r when Inner<System.Security.Authentication.AuthenticationException>(r.Status.DebugException) is { } tls => TlsProblem(tls.Message),
        // E.g. Internal for a connection whose pings went unanswered: the node said nothing.
        RpcException r => $"the connection to the node failed ({Printable(r.Status.Detail, multiline: false)}).",
        _ => e.Message,
    });

    private static string OneLine(string text) => text.ReplaceLineEndings(" ");

    /// <summary>What to say when the server at the node address answered, but not in HTTP/2 (a gRPC server's
    /// protocol); null otherwise (no transport error, or another one).</summary>
    internal static string? NotGrpc(Exception? debug)
    {
        const string Fix = "give --node the address the node's start line names ('MegaNet node listening on ...')";
        if (Inner<System.Net.Http.HttpProtocolException>(debug) is { } protocol)
        {
            // HTTP_1_1_REQUIRED: an HTTP/1.1-only server such as the node's own --metrics-listen one (Kestrel) refused the
            // HTTP/2 connection in HTTP/2's words; PROTOCOL_ERROR: what came back is no HTTP/2 at all (an HTTP/1 reply).
            if (protocol.ErrorCode == 0xd)
            {
                return $"the server at that address speaks HTTP/1.1 only, not gRPC (HTTP/2): it is no MegaNet node's gRPC address (the node's --metrics-listen one, or a web server?); {Fix}.";
            }

            if (protocol.ErrorCode == 0x1 && protocol.Message.Contains("sent invalid data", StringComparison.Ordinal))
            {
                return $"the server at that address does not speak gRPC (HTTP/2): what it sent back is not HTTP/2 (a web server, or another program?); {Fix}.";
            }
        }

        if (Inner<System.Net.Http.HttpIOException>(debug) is { HttpRequestError: System.Net.Http.HttpRequestError.InvalidResponse } io
            && io.Message.Contains("HTTP/2 handshake", StringComparison.Ordinal))
        {
            // A node that serves TLS closes a plaintext connection without a word; so does one stopping, or at its
            // connection limit.
            return "the server at that address closed the connection before HTTP/2 began: a node that serves TLS (its start line says https://) " +
                "takes --node https://...; otherwise the node may be stopping, or at its connection limit (MaxConnections, MaxConnectionsPerAddress).";
        }

        if (Handshake(debug) is not null)
        {
            // The client's transport reads the server's first bytes while it still sends its own; when a server answers
            // with something that is not HTTP/2 (or speaks first), the reader's error can close the connection under the
            // writer, and only the writer's failure is reported: what the server sent is lost.
            return "the server at that address did not complete the HTTP/2 handshake: it is no gRPC server (a web server, or the node's " +
                "--metrics-listen address?), or a node that serves TLS (its start line says https://; give --node https://...), or a node " +
                $"stopping or at its connection limit; {Fix}.";
        }

        return null;
    }

    /// <summary>The transport's "did not complete the HTTP/2 handshake" exception in <paramref name="e"/>'s chain, if any
    /// (an <see cref="IOException"/>, or the <see cref="System.Net.Http.HttpRequestException"/> that repeats its words).</summary>
    private static Exception? Handshake(Exception? e)
    {
        for (; e is not null; e = e.InnerException)
        {
            if (e is IOException or System.Net.Http.HttpRequestException && e.Message.Contains("HTTP/2 handshake", StringComparison.Ordinal))
            {
                return e;
            }
        }

        return null;
    }

    /// <summary>The operating system's reason a connection could not be made ("Connection refused", "Name or service
    /// not known"); empty when the transport gave none.</summary>
    private static string SocketReason(Exception? debug) =>
        Inner<System.Net.Sockets.SocketException>(debug) is { } socket ? Printable(socket.Message, multiline: false) : "";

    private static string TlsProblem(string reason) =>
        reason.Contains("RemoteCertificateValidationCallback", StringComparison.Ordinal)
            ? "the node's TLS certificate is neither the one given with --tls-cert nor one this system trusts; get the node's current certificate from its operator."
            : reason.Contains("remote certificate", StringComparison.OrdinalIgnoreCase)
                ? $"the node's TLS certificate was refused ({reason.TrimEnd('.')}); if the node uses a certificate of its own (self-signed), pass it with --tls-cert FILE, as its operator hands it out."
                : $"the TLS handshake with the node failed ({reason.TrimEnd('.')}); is it a TLS (https://) endpoint? A node whose start line says http:// takes --node http://...";

    private static T? Inner<T>(Exception? e)
        where T : Exception
    {
        for (; e is not null; e = e.InnerException)
        {
            if (e is T found)
            {
                return found;
            }
        }

        return null;
    }

    private static Command StatusCommand()
    {
        var node = NodeOption();
        var json = JsonOption("Print one JSON object: node_id (hex) and status (Relay.Status's answer in the proto's JSON mapping with its field names; 64-bit numbers are strings).");
        var timeout = TimeoutOption();
        var tlsCert = TlsCertOption();
        var command = new Command("status",
            "Ask a node what it is and what it demands: version, verifier backend, node id, log size, whether it accepts new mail, admission queue, the proof of work it wants now, and its limits.")
            { node, json, timeout, tlsCert };
        command.SetAction((parse, ct) => Run(async () =>
        {
            using var client = new MegaNetClient(parse.GetValue(node)!, options: ClientOptions(parse.GetValue(node)!, parse.GetValue(timeout), parse.GetValue(tlsCert)));
            StatusResponse status = await client.Relay.StatusAsync(new StatusRequest(), cancellationToken: ct);
            // The node id is the key that signs its tree heads: what known-nodes pins and --node-id names.
            Api.V1.SignedTreeHead head = await client.Relay.GetTreeHeadAsync(new GetTreeHeadRequest(), cancellationToken: ct);
            if (parse.GetValue(json))
            {
                var o = new JsonObject
                {
                    ["node_id"] = Hex(head.NodeKey),
                    // Zeros too (proto3's JSON mapping leaves them out by default): a script reads every field.
                    ["status"] = JsonNode.Parse(StatusJson.Format(status)),
                };
                PrintLine(o.ToJsonString());
            }
            else
            {
                Print(DescribeStatus(parse.GetValue(node)!, status, head));
            }

            return 0;
        }, parse.GetValue(node)));
        return command;
    }

    // The proto's field names (snake_case, as every other --json of this CLI), and zeros written out.
    private static readonly JsonFormatter StatusJson = new(JsonFormatter.Settings.Default.WithFormatDefaultValues(true).WithPreserveProtoFieldNames(true));

    /// <summary>What <c>meganet status</c> prints: one line per subject, every figure with its unit. The node's own words
    /// (version, backend) are made safe to print first: a node could send terminal escapes.</summary>
    internal static string DescribeStatus(Uri node, StatusResponse s, Api.V1.SignedTreeHead head)
    {
        Limits l = s.Limits ?? new Limits();
        string classes = string.Join(", ", l.PayloadClasses.Select(c => c % 1024 == 0 ? $"{c / 1024} KiB" : $"{c} B"));
        string stamps = l.MailboxPowFromPercent > 0 ? $", stamps from {l.MailboxPowFromPercent} % full" : ", no stamps asked for nearly full mailboxes (off)";
        var text = new StringBuilder();
        text.AppendLine($"node      {node.GetLeftPart(UriPartial.Authority)}: MegaNet {Printable(s.Version, multiline: false)}");
        text.AppendLine($"node id   {Hex(head.NodeKey)}");
        text.AppendLine($"verifier  {Printable(s.VerifierBackend, multiline: false)} ({Printable(s.VerifierDescription, multiline: false)}); {s.BatchesVerified:N0} batches, {s.SignaturesVerified:N0} signatures, mean batch {s.MeanBatchSize:N1}");
        text.AppendLine($"log       {s.TreeSize:N0} envelopes");
        text.AppendLine($"new mail  {s.StoreRefusing switch
        {
            "" => "accepted",
            "disk_low" => "REFUSED: the node's disk is below the free space its operator keeps (StoreMinFreeDiskMiB); send through another node or retry later",
            "store_full" => "REFUSED: the node holds all the mail its operator allows (StoreMaxMiB); send through another node or retry later",
            var other => $"REFUSED ({Printable(other, multiline: false)}); send through another node or retry later",
        }}");
        text.AppendLine($"load      {s.QueueDepth:N0} queued for verification; proof of work demanded now: {(s.PowBitsRequired == 0 ? "none" : $"{s.PowBitsRequired} bits")}");
        text.AppendLine($"envelopes at most {l.MaxEnvelopeBytes:N0} bytes, payload classes {classes}, expiry at most {TimeSpan.FromSeconds(l.MaxTtlSeconds).TotalDays:0.##} days (suggested {TimeSpan.FromSeconds(l.DefaultTtlSeconds).TotalDays:0.##})");
        text.AppendLine($"mailbox   at most {l.MailboxMaxCount:N0} envelopes and {l.MailboxMaxBytes:N0} bytes{stamps}");
        text.AppendLine($"senders   {l.SubmitRatePerKey:0.##} envelopes/s per sending key, burst {l.SubmitBurst:N0}; at most {l.MaxBatchEnvelopes:N0} envelopes per batch request, {l.MaxVerifyBatch:N0} items per VerifyBatch");
        return text.ToString();
    }

    private static Command VerifyReceiptCommand()
    {
        var node = NodeOption();
        var identity = IdentityOption();
        var nodeId = new Option<string?>("--node-id")
        {
            Description = "The node id (64 hex digits, printed when the node starts) the receipt's tree head must be signed by. " +
                "Default: the id pinned for this node address in 'known-nodes' beside --identity, else the key the node signs with now.",
        };
        var receiptFile = new Option<string>("--receipt")
        {
            Description = "Receipt JSON as printed by 'send --json' (for a file sent in parts, one a line: each is checked); '-' reads standard input. " +
            "Default '-', but left out on a terminal it says to give one rather than wait for one to be typed.",
            DefaultValueFactory = _ => "-"
        };
        var timeout = TimeoutOption();
        var tlsCert = TlsCertOption();
        var command = new Command("verify-receipt",
            "Check a receipt against the node: its tree head is signed by that node (the id given with --node-id, else the one pinned in known-nodes beside --identity, else the node's own), the envelope's inclusion proof leads to it, and the node's log still extends it.")
            { node, identity, nodeId, receiptFile, timeout, tlsCert };
        command.SetAction((parse, ct) => Run(async () =>
        {
            // One receipt, or one a line (a file sent in parts): each is checked, and one invalid makes the exit 3.
            // Only a --receipt left out is refused on a terminal: '-' given is a receipt about to be typed or pasted.
            bool leftOut = parse.GetResult(receiptFile) is not { Implicit: false };
            string receiptPath = parse.GetValue(receiptFile)!;
            string receiptText = await ReadInputAsync("--receipt", receiptPath, leftOut, "give --receipt FILE (what 'send --json' wrote)", ct);
            IReadOnlyList<Receipt> receipts = ReceiptsFromJson(receiptText, receiptPath == "-" ? "standard input (--receipt -)" : $"--receipt {receiptPath}");
            Uri address = parse.GetValue(node)!;
            string? idHex = parse.GetValue(nodeId);
            byte[]? expected = idHex is not null ? KnownNodes.ParseNodeId(idHex, "--node-id") : KnownNodes.Beside(parse.GetValue(identity)!).Find(address);
            using var client = new MegaNetClient(address, expected, options: ClientOptions(parse.GetValue(node)!, parse.GetValue(timeout), parse.GetValue(tlsCert)));
            string whose = idHex is not null ? "the node id given" : expected is not null ? "the node id pinned in known-nodes" : "not pinned: the key this node signs with now; pass --node-id to check against an id you know";
            int exit = 0;
            foreach (Receipt receipt in receipts)
            {
                if (await client.VerifyReceiptAsync(receipt, ct) is { } found)
                {
                    // It quotes the node's refusal: a carriage return and escapes in it made a failed check look "valid:".
                    string problem = Printable(found, multiline: false);
                    PrintVerdict(receipts.Count == 1 ? $"INVALID: {problem}" : $"INVALID: envelope {Hex(receipt.EnvelopeId)}: {problem}");
                    exit = Invalid;
                    continue;
                }

                // As the INVALID ones: with several receipts (a file's parts), a valid one that could not be written
                // ended the command with exit code 1 before the rest were checked.
                PrintVerdict($"valid: envelope {Hex(receipt.EnvelopeId)} is leaf {receipt.LogIndex} of the log of size {receipt.TreeHead.TreeSize}, signed by node {Hex(receipt.TreeHead.NodeKey)} ({whose}), and the node's log still extends it");
            }

            return exit;
        }, parse.GetValue(node)));
        return command;
    }

    /// <summary>The text of a file option's file, or of standard input for '-'; a directory is refused with
    /// <paramref name="hint"/>, and so is a terminal when <paramref name="leftOut"/> (the option was not given, and
    /// '-' is its default).</summary>
    private static async Task<string> ReadInputAsync(string option, string path, bool leftOut, string hint, CancellationToken ct)
    {
        if (path != "-" && Directory.Exists(path))
        {
            throw new CliException($"{option} {path} is a directory; {hint}.");
        }

        if (path == "-" && leftOut && !Console.IsInputRedirected)
        {
            // verify-receipt reads standard input by default: on a terminal it waited without a word for input that
            // a person who left out --receipt never meant to type.
            throw new CliException($"{option} - reads standard input, which is a terminal here; {hint}, or pipe one in.");
        }

        if (path == "-")
        {
            return await Console.In.ReadToEndAsync(ct);
        }

        try
        {
            return await File.ReadAllTextAsync(path, ct);
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
        {
            // The runtime's words ("Could not find file '...'") named no option.
            throw new CliException($"{option} {path}: no such file; {hint}.");
        }
    }

    internal static JsonObject ReceiptJson(Receipt r) => new()
    {
        ["envelope_id"] = Hex(r.EnvelopeId),
        ["log_index"] = r.LogIndex,
        ["duplicate"] = r.Duplicate,
        ["tree_head"] = HeadJson(r.TreeHead),
    };

    /// <summary>A signed tree head as JSON (hex bytes), as receipts print it: anyone can check it with the node id.</summary>
    private static JsonObject HeadJson(MegaNet.Api.V1.SignedTreeHead head) => new()
    {
        ["tree_size"] = head.TreeSize,
        ["root_hash"] = Hex(head.RootHash),
        ["timestamp_unix_ms"] = head.TimestampUnixMs,
        ["node_key"] = Hex(head.NodeKey),
        ["signature"] = Hex(head.Signature),
    };

    /// <summary>The head <see cref="HeadJson"/> wrote.</summary>
    /// <exception cref="FormatException">A field is missing or malformed; the message names it.</exception>
    private static MegaNet.Api.V1.SignedTreeHead HeadFromJson(JsonNode head)
    {
        JsonObject o = head as JsonObject ?? throw new FormatException("it is not a JSON object");
        return new()
        {
            TreeSize = WholeNumber(o, "tree_size"),
            RootHash = HexField(o, "root_hash"),
            TimestampUnixMs = WholeNumber(o, "timestamp_unix_ms"),
            NodeKey = HexField(o, "node_key"),
            Signature = HexField(o, "signature"),
        };
    }

    private static long WholeNumber(JsonObject o, string name) =>
        o[name] is JsonValue v && v.TryGetValue(out long n) ? n : throw Missing(name, "a whole number");

    private static ByteString HexField(JsonObject o, string name)
    {
        if (o[name] is not JsonValue v || !v.TryGetValue(out string? hex) || hex.Length % 2 != 0 || !hex.All(char.IsAsciiHexDigit))
        {
            throw Missing(name, "hex digits");
        }

        return ByteString.CopyFrom(Convert.FromHexString(hex));
    }

    private static FormatException Missing(string name, string what) => new($"its {name} is missing or not {what}");

    /// <summary>The receipts of <paramref name="text"/>: one JSON object (on one line or several), or one a line, as
    /// <c>send --json</c> prints for a file sent in parts. <paramref name="source"/> names where the text came from
    /// (<c>--receipt FILE</c>, standard input) in the error that says what is wrong with it.</summary>
    internal static IReadOnlyList<Receipt> ReceiptsFromJson(string text, string source)
    {
        if (string.IsNullOrWhiteSpace(text))
        {
            // The parser's "does not contain any JSON tokens ... isFinalBlock" left a person who piped in nothing (or
            // an empty file) guessing what was wanted.
            throw new CliException($"{source} is empty: there is no receipt to check; {GiveReceipt}.");
        }

        // One receipt when the whole text is one JSON value, over however many lines (its tree_head may open a line of
        // its own); else a receipt a line when every line opens an object, so that a line cut short, the first or one
        // in the middle as well as the last, is told as that line. Telling them apart by how lines end took a file
        // with a line cut short before its last for one receipt and refused it as not JSON.
        string[] lines = text.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        bool oneALine = lines.Length > 1 && lines.All(line => line.StartsWith('{')) && !IsOneJsonValue(text);
        return oneALine
            ? lines.Select((line, i) => ReceiptFromJson(line, $"{source}, line {i + 1},", oneLine: true)).ToArray()
            : [ReceiptFromJson(text, source, oneLine: false)];
    }

    private static bool IsOneJsonValue(string text)
    {
        try
        {
            JsonNode.Parse(text);
            return true;
        }
        catch (JsonException)
        {
            return false;
        }
    }

    /// <summary>The receipt of <paramref name="text"/>, one JSON object as <c>send --json</c> prints it (throws
    /// <see cref="CliException"/> saying what is wrong with it).</summary>
    internal static Receipt ReceiptFromJson(string text) => ReceiptFromJson(text, "a receipt", oneLine: false);

    /// <summary>What to give instead of a receipt that cannot be read.</summary>
    private const string GiveReceipt = "give the JSON 'meganet send --json' printed (--receipt FILE, or piped in)";

    private static Receipt ReceiptFromJson(string text, string where, bool oneLine)
    {
        JsonNode? parsed;
        try
        {
            parsed = JsonNode.Parse(text);
        }
        catch (JsonException e)
        {
            throw new CliException(IsCutShort(text)
                ? $"{where} ends before its JSON does (cut short?); {GiveReceipt}, all of it."
                : $"{where} is not JSON: {(oneLine ? string.Empty : $"line {e.LineNumber + 1}, ")}byte {e.BytePositionInLine + 1} is not valid there; {GiveReceipt}.");
        }

        if (parsed is not JsonObject receipt)
        {
            throw new CliException($"{where} is not a receipt: a JSON object with envelope_id, log_index and tree_head was expected, not {Kind(parsed)}; {GiveReceipt}.");
        }

        try
        {
            JsonObject head = receipt["tree_head"] as JsonObject ?? throw Missing("tree_head", "a JSON object");
            return new Receipt
            {
                EnvelopeId = HexField(receipt, "envelope_id"),
                LogIndex = WholeNumber(receipt, "log_index"),
                Duplicate = receipt["duplicate"] switch
                {
                    null => false,
                    JsonValue v when v.TryGetValue(out bool duplicate) => duplicate,
                    _ => throw Missing("duplicate", "true or false"),
                },
                TreeHead = HeadFromJson(head),
            };
        }
        catch (FormatException e)
        {
            throw new CliException($"{where} is not a receipt: {e.Message}; {GiveReceipt}.");
        }

        static string Kind(JsonNode? node) => node?.GetValueKind() switch
        {
            null or JsonValueKind.Null => "null",
            JsonValueKind.Array => "an array",
            JsonValueKind.String => "a string",
            JsonValueKind.Number => "a number",
            _ => "true or false",
        };
    }

    /// <summary>True when <paramref name="text"/> is the start of some JSON, cut off: read as a first block, it
    /// holds no error, only an end too soon.</summary>
    private static bool IsCutShort(string text)
    {
        var reader = new Utf8JsonReader(Encoding.UTF8.GetBytes(text.TrimEnd()), isFinalBlock: false, default);
        try
        {
            while (reader.Read())
            {
            }

            return true;
        }
        catch (JsonException)
        {
            return false;
        }
    }

    /// <summary>Exit code of a check that found the node's word false: a receipt or a log that does not hold
    /// (<c>verify-receipt</c>, <c>audit</c>).</summary>
    private const int Invalid = 3;

    /// <summary>True when <paramref name="done"/> of <paramref name="count"/> crosses one of <paramref name="steps"/>
    /// equal steps: progress lines, a few for any size.</summary>
    internal static bool CrossesStep(int done, int count, int steps) => done * steps / count != (done - 1) * steps / count;

    /// <summary>
    /// Standard output for messages, written with write(2) on descriptor 1. Console.Out and
    /// Console.OpenStandardOutput() drop EPIPE silently (a reader such as <c>head -1</c> that went away looks like one
    /// that read everything, and <c>fetch --ack</c> then deleted mail nobody saw), and a FileStream on descriptor 1
    /// writes at its own offset with pwrite(2), so with <c>&gt; file 2&gt;&amp;1</c> the stderr lines overwrote the
    /// messages (tried: all of stdout was lost). Here every failed write throws, and the shared file offset moves.
    /// </summary>
    internal static StreamWriter StandardOutput() => new(
        OperatingSystem.IsWindows() ? Console.OpenStandardOutput() : new StandardOutputStream(), new UTF8Encoding(false), 16 << 10, leaveOpen: false)
    {
        AutoFlush = false,
    };

    // The standard output of the commands that print a result (a receipt, a card, a verdict), made on first use.
    private static StreamWriter? s_results;

    /// <summary>Prints <paramref name="line"/> and a line break on standard output, written out at once; a failed write
    /// (a reader gone, a full disk) becomes a one-line error that says what was done all the same
    /// (<paramref name="consequence"/>), not a silent exit 0 with the result lost (Console.Out drops EPIPE). (On
    /// Windows standard output is the console's stream, which may drop a broken pipe too.)</summary>
    internal static void PrintLine(string line, string? consequence = null) => Print(line + "\n", consequence);

    /// <summary>Prints a line of a check that found the node's word false (<c>verify-receipt</c>, <c>audit</c>): when
    /// it cannot be written it goes to standard error instead, so that the verdict, and its exit code 3, stand (a
    /// failed write would exit 1 and leave the fork or the bad receipt unsaid).</summary>
    internal static void PrintVerdict(string line)
    {
        try
        {
            PrintLine(line);
        }
        catch (CliException e)
        {
            Console.Error.WriteLine($"meganet: {e.Message}");
            Console.Error.WriteLine(line);
        }
    }

    /// <summary><see cref="PrintLine"/> without the line break.</summary>
    internal static void Print(string text, string? consequence = null)
    {
        StreamWriter output = s_results ??= StandardOutput();
        try
        {
            output.Write(text);
        }
        catch (IOException e)
        {
            throw MailError($"cannot write to standard output ({e.Message})", consequence);
        }

        Flush(output, consequence);
    }

    /// <summary>Writes out what <paramref name="output"/> holds; a failure becomes a one-line error that says what
    /// happened to the mail (<paramref name="consequence"/>).</summary>
    internal static void Flush(TextWriter output, string? consequence)
    {
        try
        {
            output.Flush();
        }
        catch (IOException e)
        {
            throw MailError($"cannot write to standard output ({e.Message})", consequence);
        }
    }

    /// <summary>An error about <paramref name="what"/> failed, ending with what became of the mail
    /// (<paramref name="consequence"/>, e.g. "no message was acknowledged").</summary>
    internal static CliException MailError(string what, string? consequence) =>
        new($"{what}{(consequence is null ? "." : $"; {consequence}.")}");

    /// <summary>Control, format, line- and paragraph-separator characters: they drive a terminal, reorder or hide text
    /// (bidi overrides, zero-width ones), so what a sender chose never shows them as they are.</summary>
    internal static bool IsHidden(Rune rune) => Rune.GetUnicodeCategory(rune) is System.Globalization.UnicodeCategory.Control
        or System.Globalization.UnicodeCategory.Format or System.Globalization.UnicodeCategory.LineSeparator or System.Globalization.UnicodeCategory.ParagraphSeparator;

    /// <summary>Begins every further line of a message's text: a header line ("[seq] ...") never starts with a space, so
    /// text cannot print a line that looks like another message from someone else.</summary>
    internal const string ContinuationPrefix = "    ";

    /// <summary>
    /// What a sender wrote, made safe to print as part of one message. Text from anyone must neither drive the terminal
    /// nor forge output: control characters (escape sequences can rewrite what is on screen or set the window title),
    /// format characters (Unicode category Cf: bidi overrides and isolates reorder what follows, zero-width ones hide
    /// text) and line and paragraph separators are shown as \uXXXX (\UXXXXXXXX beyond the BMP). With
    /// <paramref name="multiline"/> a line break (\n or \r\n) continues on a new line that starts with
    /// <see cref="ContinuationPrefix"/>; without it (a file name), it is escaped too. Tabs stay in text.
    /// </summary>
    internal static string Printable(string text, bool multiline)
    {
        var b = new StringBuilder(text.Length + 16);
        for (int i = 0; i < text.Length;)
        {
            if (multiline && (text[i] == '\n' || (text[i] == '\r' && i + 1 < text.Length && text[i + 1] == '\n')))
            {
                i += text[i] == '\r' ? 2 : 1;
                b.Append('\n').Append(ContinuationPrefix);
                continue;
            }

            // UTF-8 decoding left no lone surrogates, but a replacement character is printed for one all the same.
            Rune rune = Rune.DecodeFromUtf16(text.AsSpan(i), out Rune decoded, out int used) == System.Buffers.OperationStatus.Done ? decoded : Rune.ReplacementChar;
            i += Math.Max(used, 1);
            bool escape = IsHidden(rune) && !(multiline && rune.Value == '\t');
            if (!escape)
            {
                b.Append(rune.ToString());
            }
            else if (rune.IsBmp)
            {
                b.Append(System.Globalization.CultureInfo.InvariantCulture, $"\\u{rune.Value:x4}");
            }
            else
            {
                b.Append(System.Globalization.CultureInfo.InvariantCulture, $"\\U{rune.Value:x8}");
            }
        }

        return b.ToString();
    }

    /// <summary>The messages this identity received (identity file name with <c>.seen</c>), so replays show once.</summary>
    private static SeenMessages OpenSeen(string identityPath) => SeenMessages.Open(SideFiles.Of(identityPath, SideFiles.Seen));

    private static Identity LoadIdentity(string path)
    {
        SideFiles.CheckNotOne(path);
        if (Directory.Exists(path))
        {
            throw new CliException($"--identity {path} is a directory; give the identity's file, the one 'meganet id new' wrote.");
        }

        if (!File.Exists(path))
        {
            // A card pasted where its file was meant: 'id new' under that name would make a secret key named after
            // someone else's card. (A card's text is 94 characters of base64url; mn1-alice.json is a file's name.)
            string flag = IdentityFlag(path);
            throw new CliException(LooksLikeCard(path) && path.Trim().Length >= 90 && path.IndexOfAny(['/', '.']) < 0
                ? "--identity takes an identity file, and was given a contact card's text, the public half of someone's identity: give the file 'meganet id new' wrote (a card goes to --to or 'meganet contact add')."
                : $"No identity at {path}; create one with 'meganet id new{flag}'{(flag.Length == 0 ? " (or pass --identity)" : "")}.");
        }

        // Read first: a file that is no identity (a contact card given for one) is said to be that, not told to be
        // replaced for its mode.
        Identity identity = Identity.Load(path);

        // As the node refuses its node.key: whoever can read the file can read the identity's mail and sign as it.
        if (!OperatingSystem.IsWindows() && File.GetUnixFileMode(path) is var mode && (mode & MegaNet.Core.Interop.PrivateFile.GroupOrOtherAccess) != 0)
        {
            identity.Dispose();
            throw new CliException(
                $"--identity {path} is accessible to other users (mode {Convert.ToString((int)mode, 8)}): whoever reads it can read this identity's mail and sign as it. " +
                $"Run chmod 600 {path} (and if others may have read it, make a new identity with 'meganet id new' and give your contacts its card).");
        }

        return identity;
    }

    /// <summary>Runs a send, naming --ttl-days where the node keeps mail for less than it asked.</summary>
    private static async Task<T> TtlNamedAsync<T>(double? askedDays, Func<Task<T>> send)
    {
        try
        {
            return await send();
        }
        catch (TtlBeyondNodeMaximumException e)
        {
            throw new CliException($"--ttl-days {(askedDays ?? e.Asked.TotalDays).ToString(System.Globalization.CultureInfo.InvariantCulture)} is more than this node keeps mail ({e.NodeMaximum.TotalDays:0.######} days, its MaxTtlDays): " +
                $"an expiry that far away would be refused. This send sent nothing; give at most {Math.Floor(e.NodeMaximum.TotalDays * 100) / 100:0.##}, or leave --ttl-days out (the default fits the node).");
        }
    }

    /// <summary>Sends a file larger than one envelope in parts, saying how far it got on stderr; prints a receipt per part
    /// (with --json one object a line, in part order). What an earlier, stopped send of the same file to the same
    /// recipient through the same node got accepted is not sent again (<see cref="SentParts"/>): its receipts are printed
    /// with the others.</summary>
    private static async Task<int> SendInPartsAsync(MegaNetClient client, Identity id, string identityPath, ContactCard recipient, byte[] file, string name, TimeSpan? ttl, bool json, CancellationToken ct)
    {
        int count;
        byte[] fileId;
        try
        {
            count = FileParts.PartCount(file.Length, name);
            fileId = FileParts.IdOf(file, name);
        }
        catch (ArgumentException e)
        {
            throw new CliException($"--file {name}: {e.Message}");
        }

        Console.Error.WriteLine($"sending '{name}' ({file.Length:N0} bytes) in {count} parts");
        // The node's id, not its address, says which store holds the parts; the log's size tells a node set up anew
        // under the same key (its receipts point past the end).
        MegaNet.Api.V1.SignedTreeHead head = await client.Relay.GetTreeHeadAsync(new MegaNet.Api.V1.GetTreeHeadRequest(), cancellationToken: ct);
        using SentParts journal = SentParts.Open(identityPath, id.Address, recipient.Address, fileId, head.NodeKey.ToByteArray(), count, head.TreeSize, w => Console.Error.WriteLine($"meganet: {w}"));
        // A kept receipt counts only while it still checks against the node (signed head, inclusion, the log extending
        // it): a node restored under the same key from a backup older than the parts, its log grown past their indices
        // since, does not hold them.
        // Eight at a time: three calls each, and a file of 512 parts one after another took minutes on a slow link.
        await Parallel.ForEachAsync(journal.AcceptedParts, new ParallelOptions { MaxDegreeOfParallelism = 8, CancellationToken = ct }, async (kept, token) =>
        {
            if (await client.VerifyReceiptAsync(kept.Receipt, token) is { } problem)
            {
                journal.Distrust(kept.Index);
                Console.Error.WriteLine($"meganet: part {kept.Index + 1} was accepted on an earlier try, but its receipt does not check against the node now ({Printable(problem, multiline: false)}): it is sent again.");
            }
        });

        if (journal.AcceptedCount > 0 || journal.UnansweredCount > 0)
        {
            string unanswered = journal.UnansweredCount > 0
                ? $"; {journal.UnansweredCount} part(s) had no answer then, and go again as the same envelopes (a node that stored one answers with its receipt)"
                : string.Empty;
            Console.Error.WriteLine(journal.AcceptedCount == count
                ? $"all {count} parts were accepted by this node on an earlier try (receipts kept in {journal.Path}): nothing to send"
                : $"{journal.AcceptedCount} of {count} parts were accepted by this node on an earlier try (receipts kept in {journal.Path}): " +
                    $"sending the other {count - journal.AcceptedCount}{unanswered}");
        }

        var progress = new CountProgress(accepted =>
        {
            // About ten lines for a file of any size: how far it got is clear if it stops half way.
            if (CrossesStep(accepted, count, 10))
            {
                Console.Error.WriteLine($"sent {accepted} of {count} parts");
            }
        });
        IReadOnlyList<Receipt> receipts;
        try
        {
            receipts = await client.SendFileInPartsAsync(id, recipient, file, name, journal, ttl, progress, ct);
        }
        // Not for a lifetime beyond the node's: refused before anything is sent, and the same send again would be too.
        catch (Exception e) when (e is not TtlBeyondNodeMaximumException && (progress.Count > 0 || journal.AcceptedCount > 0))
        {
            // A lower bound: the parts in flight when the send stopped were cancelled, and the node may have taken
            // some of them (their envelopes are recorded, so the next try submits them again rather than copies).
            int accepted = Math.Max(progress.Count, journal.AcceptedCount);
            Console.Error.WriteLine($"meganet: {accepted} of {count} parts were accepted (parts in flight when the send stopped may have been too); " +
                $"the recipient cannot put '{name}' together without the rest: run the same send again (through the same node it sends only the parts the node has not " +
                $"acknowledged, recorded in {journal.Path}; a recipient's mailbox that is full takes them once its owner fetched).");
            throw;
        }

        string sent = $"the file was sent ({count} parts, log indices {receipts.Min(r => r.LogIndex)} to {receipts.Max(r => r.LogIndex)}; " +
            $"the same send run again prints the receipts kept in {journal.Path} without sending anything)";
        if (json)
        {
            foreach (Receipt receipt in receipts)
            {
                PrintLine(ReceiptJson(receipt).ToJsonString(), sent);
            }
        }
        else
        {
            PrintLine($"accepted: file '{name}' in {count} parts, envelopes {Hex(receipts[0].EnvelopeId)} to {Hex(receipts[^1].EnvelopeId)}, " +
                $"log indices {receipts.Min(r => r.LogIndex)} to {receipts.Max(r => r.LogIndex)}, tree size {receipts.Max(r => r.TreeHead.TreeSize)}", sent);
        }

        // Only once they are printed: a send whose output was lost prints the receipts again when run again.
        journal.Finish();
        return 0;
    }

    /// <summary>Reports each count to an action at once, on the reporting thread (<see cref="Progress{T}"/> posts them
    /// to the thread pool, where they may run out of order).</summary>
    private sealed class CountProgress(Action<int> report) : IProgress<int>
    {
        private readonly Lock _lock = new();
        private int _count;

        /// <summary>The highest count reported.</summary>
        public int Count => Volatile.Read(ref _count);

        public void Report(int value)
        {
            lock (_lock)
            {
                _count = Math.Max(_count, value);
                report(value);
            }
        }
    }

    /// <summary>Reads <paramref name="attachment"/>, refusing it once more than <paramref name="maxLength"/> bytes came:
    /// a pipe's length (0 to stat) was taken for its size, so a large one went as one envelope the node refused, and
    /// /dev/stdin was read without end.</summary>
    private static async Task<byte[]> ReadAttachmentAsync(FileInfo attachment, long maxLength, CancellationToken ct)
    {
        await using var file = new FileStream(attachment.FullName, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 0);
        using var read = new MemoryStream(file.CanSeek ? (int)Math.Min(file.Length, maxLength) : 0);
        byte[] buffer = System.Buffers.ArrayPool<byte>.Shared.Rent(1 << 16);
        try
        {
            for (int n; (n = await file.ReadAsync(buffer, ct)) > 0;)
            {
                if (read.Length + n > maxLength)
                {
                    throw new CliException($"--file {attachment.FullName} holds more than {maxLength:N0} bytes; at most {maxLength:N0} bytes can be sent (in parts, one file).");
                }

                read.Write(buffer, 0, n);
            }
        }
        finally
        {
            System.Buffers.ArrayPool<byte>.Shared.Return(buffer);
        }

        return read.Length == read.Capacity ? read.GetBuffer() : read.ToArray();
    }

    /// <summary>Refuses a --file that is missing, a directory, or (by the length the file system gives, which a pipe
    /// has not) larger than can be sent, before it is read.</summary>
    private static void CheckAttachment(FileInfo attachment, long maxContent)
    {
        if (Directory.Exists(attachment.FullName))
        {
            throw new CliException($"--file {attachment.FullName} is a directory; give a file.");
        }

        if (!attachment.Exists)
        {
            throw new CliException($"--file {attachment.FullName} does not exist.");
        }

        if (attachment.Length > maxContent)
        {
            throw new CliException($"--file {attachment.FullName} is {attachment.Length:N0} bytes; at most {maxContent:N0} bytes can be sent (in parts, one file).");
        }
    }

    /// <summary>Why <paramref name="name"/> cannot be sent as a file's name (<c>--name</c>), or null: the recipient saves a
    /// file under the name it came with made safe (<see cref="Inbox.SavedName"/>), so a name that would not be saved as
    /// it is given is refused here, where its sender can still choose another.</summary>
    internal static string? SentFileNameProblem(string name)
    {
        if (name.Trim().Length == 0)
        {
            return "a file name cannot be empty";
        }

        if (name.IndexOfAny(['/', '\\']) >= 0)
        {
            return "a file name cannot hold a path separator ('/' or '\\'); give the name alone, e.g. report.pdf";
        }

        if (Encoding.UTF8.GetByteCount(name) is var bytes && bytes > Inbox.MaxSavedNameBytes)
        {
            return $"a file name is at most {Inbox.MaxSavedNameBytes} bytes (UTF-8), and this one is {bytes:N0}; shorten it";
        }

        string saved = Inbox.SavedName(name);
        return saved == name
            ? null
            : $"the recipient would save it as '{Printable(saved, multiline: false)}' ({SentNameRules}); give a name it keeps as it is";
    }

    /// <summary>What <see cref="Inbox.SavedName"/> changes in a file name, so a name given with <c>send --name</c>
    /// must avoid it: said both by <c>send --help</c> and by the refusal of such a name.</summary>
    private const string SentNameRules = "a name cannot start with '.', '-' or a space, end with '.' or a space, or hold control or format characters " +
        "(zero-width or bidi ones), line or paragraph separators, or any of : < > \" | ? *";

    /// <summary>The name of <paramref name="attachment"/> when it names a descriptor or a device, not a file: a pipe
    /// (<c>--file &lt;(...)</c> gives <c>/dev/fd/63</c>), <c>/dev/stdin</c> or another descriptor's path (whatever it is
    /// open on, even a regular file), a device, or anything else that is not a regular file once links are followed (a
    /// named pipe); null for a regular file's own name, wherever it lies (<c>/dev/shm/report.pdf</c> too). Sent as it
    /// is, the recipient got a file called "63" or "stdin".</summary>
    private static string? DescriptorName(FileInfo attachment)
    {
        string full = attachment.FullName;
        return IsDescriptorPath(full) || !MegaNet.Core.Interop.PrivateFile.IsRegularFile(full) ? attachment.Name : null;
    }

    /// <summary>True for a path that names an open descriptor, not a file: <c>/dev/fd/N</c>, <c>/dev/stdin</c>,
    /// <c>/dev/stdout</c>, <c>/dev/stderr</c>, <c>/proc/PID/fd/N</c> (<c>/proc/self/fd/N</c> too) and a thread's
    /// <c>/proc/PID/task/TID/fd/N</c>. Its link may lead to a
    /// regular file (<c>--file /dev/stdin &lt; report.pdf</c>), whose name the path still does not carry.</summary>
    private static bool IsDescriptorPath(string full) =>
        !OperatingSystem.IsWindows()
        && (full is "/dev/stdin" or "/dev/stdout" or "/dev/stderr"
            || full.StartsWith("/dev/fd/", StringComparison.Ordinal)
            || full.Split('/') is ["", "proc", _, "fd", _] or ["", "proc", _, "task", _, "fd", _]);

    /// <summary>Refuses an identity path that is a directory, lies below a file, or is named like a file kept beside
    /// identities, before anything is written.</summary>
    private static void CheckCanCreate(string path)
    {
        SideFiles.CheckNotOne(path);
        string full = Path.GetFullPath(path);
        if (Directory.Exists(full))
        {
            throw new CliException($"--identity {path} is a directory; give a file name, e.g. {Path.Combine(path, "identity.json")}.");
        }

        // The nearest ancestor that exists must be a directory, or the file cannot be created below it.
        for (string? dir = Path.GetDirectoryName(full); dir is not null; dir = Path.GetDirectoryName(dir))
        {
            if (Directory.Exists(dir))
            {
                return;
            }

            if (File.Exists(dir))
            {
                throw new CliException($"--identity {path} cannot be created: {dir} is a file, not a directory.");
            }
        }
    }

    /// <summary>The card <c>--to</c> names: a card itself, or the name of a contact (a name never begins with mn1).</summary>
    private static ContactCard Recipient(string to, string identityPath)
    {
        if (LooksLikeCard(to))
        {
            return ParseCard(to, "--to");
        }

        Contacts contacts = Contacts.Load(identityPath);
        return contacts.Find(to.Trim())
            ?? throw new CliException($"--to: '{Printable(to, multiline: false)}' is neither a contact card (mn1...) nor the name of a contact in {contacts.Path}; " +
                $"save one with 'meganet contact add{IdentityFlag(identityPath)} NAME CARD' ('meganet contact list{IdentityFlag(identityPath)}' shows them).");
    }

    private static ContactCard ParseCard(string text, string option)
    {
        try
        {
            return ContactCard.Parse(text);
        }
        catch (FormatException e)
        {
            throw new CliException($"{option}: {e.Message}");
        }
    }

    private static string Hex(ByteString b) => Convert.ToHexString(b.Span).ToLowerInvariant();


    /// <summary>Runs a command's body and turns its failures into a message and an exit code; <paramref name="node"/>
    /// is the --node of commands that call one.</summary>
    private static async Task<int> Run(Func<Task<int>> body, Uri? node = null)
    {
        try
        {
            return await body();
        }
        catch (Exception e) when (e is CliException or InvalidDataException or IOException)
        {
            // Missing files, a directory where a file was expected, a full disk: the message names the path.
            Console.Error.WriteLine($"meganet: {e.Message}");
            return 1;
        }
        catch (RpcException e) when (e.StatusCode == StatusCode.Cancelled && e.Status.DebugException is not null)
        {
            // Cancelled on this side (Ctrl+C), not by the node.
            Console.Error.WriteLine("meganet: interrupted.");
            return Interruption.ExitCode;
        }
        catch (RpcException e)
        {
            Console.Error.WriteLine($"meganet: {Describe(e, node)}");
            return 2;
        }
        catch (Exception e) when (e is NodeSilentException or ListenGaveUpException or PowDemandTooHighException or NodeMisbehavedException)
        {
            Console.Error.WriteLine($"meganet: {e.Message}");
            return 2;
        }
        catch (SendInterruptedException e)
        {
            Console.Error.WriteLine($"meganet: {e.Message}");
            return Interruption.ExitCode;
        }
        catch (OperationCanceledException)
        {
            Console.Error.WriteLine("meganet: interrupted.");
            return Interruption.ExitCode;
        }
        catch (UnauthorizedAccessException e)
        {
            Console.Error.WriteLine($"meganet: {e.Message} Check the path and its permissions.");
            return 1;
        }
        catch (CryptographicException e)
        {
            Console.Error.WriteLine($"meganet: a cryptographic operation failed: {e.Message}");
            return 1;
        }
        catch (ArgumentException e) when (e is not ArgumentNullException)
        {
            // ArgumentNullException is always a bug here and keeps its stack trace (System.CommandLine prints it).
            Console.Error.WriteLine($"meganet: {ErrorText.Plain(e)}");
            if (e is UsageException usage)
            {
                Console.Error.WriteLine(usage.Hint);
            }

            return 1;
        }
    }

    /// <summary><c>listen</c> could not subscribe again within --retry-for; exit code 2.</summary>
    private sealed class ListenGaveUpException(string message, Exception inner) : Exception(message, inner);

    /// <summary>Descriptor 1 through write(2): every error, EPIPE included, is an <see cref="IOException"/>.</summary>
    private sealed class StandardOutputStream : Stream
    {
        private const int EINTR = 4;
        // errno values differ by system: EAGAIN is 11 on Linux, 35 on macOS (and the BSDs).
        private const int EAGAINLinux = 11, EAGAINMacOS = 35;

        public override bool CanRead => false;

        public override bool CanSeek => false;

        public override bool CanWrite => true;

        public override long Length => throw new NotSupportedException();

        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

        public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));

        public override void Write(ReadOnlySpan<byte> buffer)
        {
            while (!buffer.IsEmpty)
            {
                nint written = SysWrite(1, ref System.Runtime.InteropServices.MemoryMarshal.GetReference(buffer), buffer.Length);
                if (written < 0)
                {
                    int errno = System.Runtime.InteropServices.Marshal.GetLastPInvokeError();
                    if (errno == EINTR)
                    {
                        continue;
                    }

                    if (errno == (OperatingSystem.IsLinux() ? EAGAINLinux : EAGAINMacOS))
                    {
                        // Descriptor 1 left non-blocking by whoever started us: wait a little rather than lose output.
                        Thread.Sleep(1);
                        continue;
                    }

                    throw new IOException(System.Runtime.InteropServices.Marshal.GetPInvokeErrorMessage(errno), errno);
                }

                buffer = buffer[(int)written..];
            }
        }

        public override void Flush()
        {
        }

        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();

        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

        public override void SetLength(long value) => throw new NotSupportedException();

        [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "write", SetLastError = true)]
        private static extern nint SysWrite(int fd, ref byte buffer, nint count);
    }

    /// <summary>
    /// Flushes standard output to the disk when it is a file (<c>fetch --ack &gt; mail.txt</c>): written is not yet
    /// durable, and the node deletes what is acknowledged, so a crash of the machine right after an ack lost the mail. A
    /// pipe or a terminal has nothing to flush (fsync says EINVAL), and costs nothing here. <paramref name="consequence"/>
    /// says, in an error, what became of the mail.
    /// </summary>
    internal static void FlushStandardOutputToDisk(string? consequence)
    {
        int errno = Core.Interop.DirectoryFlush.FlushDescriptor(1);
        // Only what says the bytes did not reach the disk fails: a pipe, a terminal or /dev/null answer EINVAL on Linux
        // and ENOTSUP on macOS, each system with numbers of its own, and they have nothing to flush.
        const int EIO = 5, ENOSPC = 28;
        int edquot = OperatingSystem.IsLinux() ? 122 : 69;
        if (errno != EIO && errno != ENOSPC && errno != edquot)
        {
            return;
        }

        throw MailError($"cannot flush standard output to the disk ({System.Runtime.InteropServices.Marshal.GetPInvokeErrorMessage(errno)})", consequence);
    }
}
