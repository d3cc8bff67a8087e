using System.Buffers;

namespace MegaNet.Core.Verification;

/// <summary>
/// A batch of (public key, signature, message) items held in flat pooled buffers: all public keys back to back
/// (32 bytes each), all signatures back to back (64 bytes each), and all messages concatenated with an offset
/// table of <see cref="Count"/> + 1 entries. Adding an item copies its bytes and allocates nothing once the
/// buffers have grown to the working size. An item whose key is not 32 bytes or whose signature is not 64 bytes
/// is kept (so verdicts stay aligned with the caller's items) but marked malformed: its slots hold an encoding no
/// backend accepts (y ≥ p) and <see cref="BatchVerifierBase"/> forces its verdict to false. Not thread-safe for writers; any number of readers may share a batch
/// that is no longer being written.
/// </summary>
public sealed class SignatureBatch : IDisposable
{
    /// <summary>Size of an Ed25519 public key in bytes.</summary>
    public const int PublicKeySize = 32;

    /// <summary>Size of an Ed25519 signature in bytes.</summary>
    public const int SignatureSize = 64;

    /// <summary>Most items one batch holds (its signatures fill one array of at most 2 GiB).</summary>
    public const int MaxItems = (int.MaxValue / SignatureSize) - 1;

    /// <summary>Longest message one item may have: 1 GiB. Every backend counts the bytes of R ‖ A ‖ M and its SHA-512
    /// padding in 32 bits (the GPU kernel's counters overflowed for a message within 208 bytes of 2 GiB, and hashed
    /// nothing); a longer message is signed through a digest of it.</summary>
    public const int MaxMessageLength = 1 << 30;

    private byte[] _keys;
    private byte[] _signatures;
    private byte[] _messages;
    private int[] _offsets;
    private int _count;
    private bool _disposed;

    // Indexes of malformed items; rare, so a set beats a per-item flag array on the hot path.
    private readonly HashSet<int> _malformed = [];

    /// <summary>Most bytes of messages the batch holds in all: <see cref="Array.MaxLength"/>. Lowered only by tests,
    /// which reach the refusal without allocating 2 GiB.</summary>
    internal int MessageSpace { get; init; } = Array.MaxLength;

    /// <summary>Creates an empty batch with room for <paramref name="capacity"/> items and
    /// <paramref name="messageCapacity"/> bytes of messages before it has to grow.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="capacity"/> is negative or above <see cref="MaxItems"/>,
    /// or <paramref name="messageCapacity"/> is negative.</exception>
    public SignatureBatch(int capacity = 64, int messageCapacity = 64 * 256)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(capacity);
        if (capacity > MaxItems)
        {
            // Checked here: capacity * SignatureSize would overflow, and ArrayPool would refuse a negative length
            // under its own parameter name, which says nothing to the caller.
            throw new ArgumentOutOfRangeException(nameof(capacity), capacity, $"A batch holds at most {MaxItems} items.");
        }

        ArgumentOutOfRangeException.ThrowIfNegative(messageCapacity);
        capacity = Math.Max(capacity, 1);
        _keys = ArrayPool<byte>.Shared.Rent(capacity * PublicKeySize);
        _signatures = ArrayPool<byte>.Shared.Rent(capacity * SignatureSize);
        _messages = ArrayPool<byte>.Shared.Rent(Math.Max(messageCapacity, 16));
        _offsets = ArrayPool<int>.Shared.Rent(capacity + 1);
        _offsets[0] = 0;
    }

    /// <summary>Number of items in the batch.</summary>
    public int Count => _count;

    /// <summary>Total bytes of all messages.</summary>
    public int MessageBytes => _offsets[_count];

    /// <summary>All public keys, <see cref="PublicKeySize"/> bytes per item, in item order.</summary>
    public ReadOnlySpan<byte> PublicKeys => _keys.AsSpan(0, _count * PublicKeySize);

    /// <summary>All signatures, <see cref="SignatureSize"/> bytes per item (R then S), in item order.</summary>
    public ReadOnlySpan<byte> Signatures => _signatures.AsSpan(0, _count * SignatureSize);

    /// <summary>All messages concatenated; item i is <c>MessageData[MessageOffsets[i]..MessageOffsets[i + 1]]</c>.</summary>
    public ReadOnlySpan<byte> MessageData => _messages.AsSpan(0, _offsets[_count]);

    /// <summary><see cref="Count"/> + 1 offsets into <see cref="MessageData"/>; the first is 0.</summary>
    public ReadOnlySpan<int> MessageOffsets => _offsets.AsSpan(0, _count + 1);

    /// <summary>Number of malformed items (wrong key or signature length); their verdict is always false.</summary>
    public int MalformedCount { get; private set; }

    /// <summary>True if item <paramref name="index"/> had a key or signature of the wrong length.</summary>
    public bool IsMalformed(int index)
    {
        CheckIndex(index);
        return MalformedCount > 0 && _malformed.Contains(index);
    }

    /// <summary>Appends an item and returns its index. A key or signature of the wrong length is accepted and
    /// marked malformed (verdict false), so one bad item never fails a whole batch.</summary>
    /// <exception cref="ArgumentException"><paramref name="message"/> is longer than <see cref="MaxMessageLength"/>, or
    /// the batch's messages would pass <see cref="Array.MaxLength"/> bytes (just under 2 GiB).</exception>
    public int Add(ReadOnlySpan<byte> publicKey, ReadOnlySpan<byte> signature, ReadOnlySpan<byte> message)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (message.Length > MaxMessageLength)
        {
            throw new ArgumentException($"A message in a batch is at most {MaxMessageLength:N0} bytes (1 GiB); this one has {message.Length:N0}. Sign a digest of a longer message.", nameof(message));
        }

        if (publicKey.Length != PublicKeySize || signature.Length != SignatureSize)
        {
            // 0xFF.. is y = 2^255 − 1 ≥ p: non-canonical, rejected by the rule itself as a second line of defence.
            Span<byte> filler = stackalloc byte[SignatureSize];
            filler.Fill(0xFF);
            int index = AddCore(filler[..PublicKeySize], filler, message);
            // Marked only once added: an AddCore that throws (message space) must not leave the mark on the next item.
            _malformed.Add(index);
            MalformedCount++;
            return index;
        }

        return AddCore(publicKey, signature, message);
    }

    private int AddCore(ReadOnlySpan<byte> publicKey, ReadOnlySpan<byte> signature, ReadOnlySpan<byte> message)
    {
        int index = _count;
        EnsureItemCapacity(index + 1);
        int start = _offsets[index];
        // Array.MaxLength, not int.MaxValue: past it the buffer's growth asked for an array .NET cannot make, and the
        // batch threw OutOfMemoryException, which callers let through as fatal.
        if (message.Length > MessageSpace - start)
        {
            throw new ArgumentException($"The batch cannot hold more than {MessageSpace:N0} bytes of messages in all; verify this item in another batch.", nameof(message));
        }

        EnsureMessageCapacity(start + message.Length);
        publicKey.CopyTo(_keys.AsSpan(index * PublicKeySize));
        signature.CopyTo(_signatures.AsSpan(index * SignatureSize));
        message.CopyTo(_messages.AsSpan(start));
        _offsets[index + 1] = start + message.Length;
        _count = index + 1;
        return index;
    }

    /// <summary>The public key of item <paramref name="index"/>.</summary>
    public ReadOnlySpan<byte> GetPublicKey(int index)
    {
        CheckIndex(index);
        return _keys.AsSpan(index * PublicKeySize, PublicKeySize);
    }

    /// <summary>The signature of item <paramref name="index"/>.</summary>
    public ReadOnlySpan<byte> GetSignature(int index)
    {
        CheckIndex(index);
        return _signatures.AsSpan(index * SignatureSize, SignatureSize);
    }

    /// <summary>The message of item <paramref name="index"/>.</summary>
    public ReadOnlySpan<byte> GetMessage(int index)
    {
        CheckIndex(index);
        int start = _offsets[index];
        return _messages.AsSpan(start, _offsets[index + 1] - start);
    }

    /// <summary>Removes all items; keeps the buffers for reuse.</summary>
    public void Clear()
    {
        _count = 0;
        _malformed.Clear();
        MalformedCount = 0;
        _offsets[0] = 0;
    }

    /// <summary>Returns the buffers to the pool.</summary>
    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        ArrayPool<byte>.Shared.Return(_keys);
        ArrayPool<byte>.Shared.Return(_signatures);
        ArrayPool<byte>.Shared.Return(_messages);
        ArrayPool<int>.Shared.Return(_offsets);
        _keys = _signatures = _messages = [];
        _offsets = [0];
        _count = 0;
    }

    private void CheckIndex(int index)
    {
        if ((uint)index >= (uint)_count)
        {
            throw new ArgumentOutOfRangeException(nameof(index), index, $"The batch has {_count} items.");
        }
    }

    private void EnsureItemCapacity(int items)
    {
        if (items > MaxItems)
        {
            throw new InvalidOperationException($"A batch holds at most {MaxItems} items.");
        }

        // All three checked: rentals past the pool's largest bucket are exact, so the signatures' buffer (twice the
        // keys' bytes) can hold fewer items than the keys' and offsets' buffers.
        if (items * PublicKeySize > _keys.Length || items * SignatureSize > _signatures.Length || items + 1 > _offsets.Length)
        {
            int target = (int)Math.Min(MaxItems, Math.Max(items, 2L * _offsets.Length));
            Grow(ref _keys, target * PublicKeySize, _count * PublicKeySize);
            Grow(ref _signatures, target * SignatureSize, _count * SignatureSize);
            int[] offsets = ArrayPool<int>.Shared.Rent(target + 1);
            _offsets.AsSpan(0, _count + 1).CopyTo(offsets);
            ArrayPool<int>.Shared.Return(_offsets);
            _offsets = offsets;
        }
    }

    private void EnsureMessageCapacity(int bytes)
    {
        if (bytes > _messages.Length)
        {
            Grow(ref _messages, (int)Math.Min(MessageSpace, Math.Max(bytes, (long)_messages.Length * 2)), _offsets[_count]);
        }
    }

    private static void Grow(ref byte[] buffer, int size, int used)
    {
        byte[] bigger = ArrayPool<byte>.Shared.Rent(size);
        buffer.AsSpan(0, used).CopyTo(bigger);
        ArrayPool<byte>.Shared.Return(buffer);
        buffer = bigger;
    }
}
