namespace MegaNet.Core.Verification;

/// <summary>Thrown when a backend is asked for by name but cannot run here (no device, not built, missing library, a
/// device that failed to start: then <see cref="Exception.InnerException"/> is that failure).</summary>
public sealed class BackendUnavailableException(string backend, string reason, Exception? innerException = null)
    : InvalidOperationException($"Verifier backend '{backend}' is not available: {reason}", innerException)
{
    /// <summary>The backend asked for.</summary>
    public string Backend { get; } = backend;

    /// <summary>Why it cannot run.</summary>
    public string Reason { get; } = reason;
}

/// <summary>How to make one backend and whether it can run on this machine.</summary>
/// <param name="Name">Registry name.</param>
/// <param name="Summary">One line for <c>--help</c> and listings.</param>
/// <param name="AutoPriority">Higher wins when <c>auto</c> picks; negative means <c>auto</c> never picks it.</param>
/// <param name="Probe">Returns null when the backend can run here, else the reason it cannot.</param>
/// <param name="Create">Creates an instance; may throw <see cref="BackendUnavailableException"/>.</param>
public sealed record BackendDescriptor(
    string Name,
    string Summary,
    int AutoPriority,
    Func<string?> Probe,
    Func<VerifierOptions, IBatchVerifier> Create);

/// <summary>
/// Knows every verifier backend by name and picks the best available one for <c>auto</c>. The host composes it
/// (the node registers the SIMD and GPU backends); core itself registers nothing.
/// </summary>
public sealed class BatchVerifierRegistry
{
    /// <summary>The name that selects the best available backend.</summary>
    public const string Auto = "auto";

    private readonly List<BackendDescriptor> _backends = [];

    /// <summary>Registered backends in registration order.</summary>
    public IReadOnlyList<BackendDescriptor> Backends => _backends;

    /// <summary>Adds a backend; names are unique and case-insensitive.</summary>
    public BatchVerifierRegistry Register(BackendDescriptor descriptor)
    {
        ArgumentNullException.ThrowIfNull(descriptor);
        if (Find(descriptor.Name) is not null || string.Equals(descriptor.Name, Auto, StringComparison.OrdinalIgnoreCase))
        {
            throw new ArgumentException($"A backend named '{descriptor.Name}' is already registered.", nameof(descriptor));
        }

        _backends.Add(descriptor);
        return this;
    }

    /// <summary>The descriptor named <paramref name="name"/>, or null.</summary>
    public BackendDescriptor? Find(string name) =>
        _backends.Find(b => string.Equals(b.Name, name, StringComparison.OrdinalIgnoreCase));

    /// <summary>Resolves <c>auto</c> to the available backend with the highest priority; other names pass through.</summary>
    public string Resolve(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        if (!string.Equals(name, Auto, StringComparison.OrdinalIgnoreCase))
        {
            return Find(name)?.Name ?? throw UnknownBackend(name);
        }

        BackendDescriptor? best = null;
        foreach (BackendDescriptor b in _backends)
        {
            if (b.AutoPriority >= 0 && (best is null || b.AutoPriority > best.AutoPriority) && b.Probe() is null)
            {
                best = b;
            }
        }

        return best?.Name ?? throw new BackendUnavailableException(Auto, "no registered backend can run on this machine.");
    }

    /// <summary>Creates the backend named <paramref name="name"/> (or the best one for <c>auto</c>).</summary>
    /// <exception cref="ArgumentException">No backend has that name.</exception>
    /// <exception cref="BackendUnavailableException">The backend cannot run here; the message says why.</exception>
    public IBatchVerifier Create(string name, VerifierOptions? options = null)
    {
        options = options?.Clone() ?? new VerifierOptions();
        options.Validate();
        return EnsureAvailable(name).Create(options);
    }

    /// <summary>The backend named <paramref name="name"/> (or the best one for <c>auto</c>) if it can run here.</summary>
    /// <exception cref="ArgumentException">No backend has that name.</exception>
    /// <exception cref="BackendUnavailableException">The backend cannot run here; the message says why.</exception>
    public BackendDescriptor EnsureAvailable(string name)
    {
        BackendDescriptor descriptor = Find(Resolve(name))!;
        return descriptor.Probe() is { } reason ? throw new BackendUnavailableException(descriptor.Name, reason) : descriptor;
    }

    private ArgumentException UnknownBackend(string name) =>
        new($"{(string.IsNullOrWhiteSpace(name) ? "The verifier backend name is empty" : $"Unknown verifier backend '{name}'")}. Known: {string.Join(", ", _backends.Select(b => b.Name))}, auto.", nameof(name));
}
