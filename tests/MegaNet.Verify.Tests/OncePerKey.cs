using System.Collections.Concurrent;

namespace MegaNet.Verify.Tests;

/// <summary>
/// A cache that creates each key's value once, also when test classes running in parallel ask for it at the same time.
/// <c>ConcurrentDictionary.GetOrAdd</c> runs the factory in every racing caller and keeps one result: a
/// <c>GpuBatchVerifier</c> dropped that way is never disposed, and ILGPU's finalizer of its context throws
/// (NullReferenceException in <c>ExtensionBase.Dispose</c> on the finalizer thread), which ends the test process
/// (seen in CI: "Test host process crashed" in the no-hwintrinsic tier).
/// </summary>
internal sealed class OncePerKey<TKey, TValue>(IEqualityComparer<TKey>? comparer = null)
    where TKey : notnull
{
    private readonly ConcurrentDictionary<TKey, Lazy<TValue>> _values = new(comparer);

    /// <summary>The value for <paramref name="key"/>, made by <paramref name="create"/> on the first call; callers racing
    /// that call wait for its value.</summary>
    public TValue Get(TKey key, Func<TKey, TValue> create) =>
        _values.GetOrAdd(key, k => new Lazy<TValue>(() => create(k), LazyThreadSafetyMode.ExecutionAndPublication)).Value;
}
