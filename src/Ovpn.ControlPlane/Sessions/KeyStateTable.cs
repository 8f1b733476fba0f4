// SPDX-License-Identifier: MIT
using System.Net.Security;
using Ovpn.ControlPlane.Tls;
using Ovpn.DataPlane;
using Ovpn.Protocol.Control;
using Ovpn.Protocol.Reliability;
using Ovpn.Protocol.Wire;

namespace Ovpn.ControlPlane.Sessions;

/// <summary>
/// One key state (key_id) of a tls session: the part the server session and the client connection
/// share. Each owns a reliability layer, the TLS ciphertext outbox in front of it, the stream an
/// SslStream reads from and writes to, and the handshake/transition bookkeeping the
/// <see cref="KeyStateTable{TKey}"/> decides on. Role-specific state (certificate names, push
/// phase, key-method-2 messages) lives in the owners' subclasses.
///
/// Threading: touched only on the owner's loop, except <see cref="Stream"/>'s write callback (the
/// SslStream's thread), which only enqueues ciphertext and posts <see cref="PumpTlsOutput"/> to
/// the loop.
/// </summary>
internal abstract class KeyState : IDisposable
{
    /// <summary>TLS ciphertext per ControlV1 packet (both roles).</summary>
    public const int TlsPayloadPerPacket = 1100;

    /// <summary>Packets one key state hands to the link per flush at most (bounds one loop turn).</summary>
    private const int MaxPacketsPerFlush = 64;

    public readonly int KeyId;
    public readonly ReliableLayer Rel;
    public readonly TlsOutbox Out = new(TlsPayloadPerPacket);
    public readonly ControlChannelStream Stream;
    public SslStream? Ssl;

    /// <summary>When the handshake (hand-window) clock started; the client restarts it on AUTH_PENDING/INFO.</summary>
    public long StartedMs;

    /// <summary>Data-channel keys were derived from this key state.</summary>
    public bool DataKeysReady;

    /// <summary>Installed as the secondary key; becomes primary once the peer has all we sent on it.</summary>
    public bool SwapPending;

    /// <summary>When this side finished its part of the key exchange (the swap waits a moment after it).</summary>
    public long OwnKeyDoneMs;

    /// <summary>Why the peer's certificate was refused (set from the TLS validation callback).</summary>
    public string? AuthFailure;

    public bool Disposed;

    /// <param name="keyId">0..7.</param>
    /// <param name="ownSessionId">Our session id (stamped on every packet of this key state).</param>
    /// <param name="peerSessionId">The peer's session id, if already known (the client learns it from the server's reset).</param>
    /// <param name="nowMs">The owner's clock, which starts the hand-window.</param>
    /// <param name="post">Runs an action on the owner's loop; TLS output is pumped there.</param>
    protected KeyState(int keyId, ulong ownSessionId, ulong? peerSessionId, long nowMs, Action<Action> post)
    {
        KeyId = keyId;
        Rel = new ReliableLayer(ownSessionId, keyId);
        if (peerSessionId is { } peer)
        {
            Rel.PeerSessionId = peer;
        }

        StartedMs = nowMs;
        Stream = new ControlChannelStream(bytes =>
        {
            Out.Enqueue(bytes);
            post(PumpTlsOutput);
        });
    }

    /// <summary>The handshake did not produce data keys within the hand-window.</summary>
    public bool IsHandshakeExpired(long nowMs, int handWindowSeconds) =>
        !DataKeysReady && nowMs - StartedMs > handWindowSeconds * 1000L;

    /// <summary>A failure of this key state ends the session (first key, or not yet established) rather than just a renegotiation.</summary>
    public bool FailureEndsSession(bool established) => KeyId == 0 || !established;

    /// <summary>The peer has everything we sent on this pending key (so it has our key material) and the swap delay has passed.</summary>
    public bool IsSwapDue(long nowMs) =>
        SwapPending && Rel.AllAcked && nowMs - OwnKeyDoneMs >= KeyStateTable.SwapDelayMs;

    /// <summary>Moves TLS ciphertext into the reliability layer while its send window has room.</summary>
    public void PumpTlsOutput()
    {
        if (!Disposed)
        {
            Out.Pump(Rel);
        }
    }

    /// <summary>
    /// Pumps TLS output, then sends what the reliability layer has due at <paramref name="nowMs"/>
    /// (new packets, retransmissions, ACKs), wrapped, unless <see cref="HoldSend"/> says wait.
    /// </summary>
    public void SendDue(long nowMs, uint unixSeconds, ControlWrapper wrap, ILinkTransport link)
    {
        PumpTlsOutput();
        if (HoldSend(nowMs))
        {
            return;
        }

        int guard = 0;
        while (guard++ < MaxPacketsPerFlush && Rel.TryGetPacketToSend(nowMs, out var p) && p is not null)
        {
            link.Send(wrap.Wrap(p, unixSeconds));
        }
    }

    /// <summary>Whether to keep this flush's packets back (the client holds a lone ACK for its ClientHello).</summary>
    protected virtual bool HoldSend(long nowMs) => false;

    public void Dispose()
    {
        if (Disposed)
        {
            return;
        }

        Disposed = true;
        Stream.CompleteInput();
        try
        {
            Ssl?.Dispose();
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException or InvalidOperationException)
        {
        }

        OnDisposed();
    }

    /// <summary>Role-specific clean-up (wiping key material) after the TLS session is closed.</summary>
    protected virtual void OnDisposed()
    {
    }
}

/// <summary>Role- and type-independent constants of <see cref="KeyStateTable{TKey}"/>.</summary>
internal static class KeyStateTable
{
    /// <summary>key_id is three bits.</summary>
    public const int Capacity = 8;

    /// <summary>How long after its own key exchange a new key waits (all acked) before it becomes primary, like OpenVPN.</summary>
    public const long SwapDelayMs = 1000;

    /// <summary>key_id after <paramref name="keyId"/>: 1..7, wrapping to 1 (0 only ever names the first key).</summary>
    public static int NextKeyId(int keyId) => keyId >= 7 ? 1 : keyId + 1;
}

/// <summary>
/// The key states of one tls session (key_id 0..7) and the decisions about them that do not depend
/// on the role: which key_id comes next, which key states to keep, when a renegotiation may start
/// or is due, when a handshake has run out of time, when a new key becomes primary and when a
/// replaced one is retired. It holds no clock (every decision takes the owner's "now" in
/// milliseconds), logs nothing and sends nothing by itself; the owner (ServerSession,
/// ClientConnection) calls it from its loop and does the logging and the data-plane calls.
///
/// Lifecycle of one slot: <see cref="Add"/> (own reset queued; every older key state but the
/// primary is disposed) -> handshake, DataKeysReady -> (key n) SwapPending ->
/// <see cref="KeyState.IsSwapDue"/> -> <see cref="CompleteSwap"/> makes it primary -> the replaced key is
/// <see cref="IsRetirable"/> after a grace period, or disposed by the next <see cref="Add"/>.
/// </summary>
internal sealed class KeyStateTable<TKey>
    where TKey : KeyState
{
    private readonly TKey?[] _slots = new TKey?[KeyStateTable.Capacity];
    private readonly Opcode _ownHardReset;

    /// <param name="isServer">Picks our hard-reset opcode for key_id 0 (HARD_RESET_SERVER_V2 or HARD_RESET_CLIENT_V2).</param>
    public KeyStateTable(bool isServer) =>
        _ownHardReset = isServer ? Opcode.ControlHardResetServerV2 : Opcode.ControlHardResetClientV2;

    /// <summary>The most recently created key state's id, or -1.</summary>
    public int LatestKeyId { get; private set; } = -1;

    /// <summary>The key state whose keys the data plane sends with, or -1 before the first key.</summary>
    public int PrimaryKeyId { get; private set; } = -1;

    /// <summary>When <see cref="PrimaryKeyId"/> became primary (reneg-sec counts from here).</summary>
    public long PrimarySinceMs { get; private set; }

    public TKey? this[int keyId] => _slots[keyId];

    public TKey? Latest => LatestKeyId >= 0 ? _slots[LatestKeyId] : null;

    public TKey? Primary => PrimaryKeyId >= 0 ? _slots[PrimaryKeyId] : null;

    /// <summary>The reset opcode we queue first on a new key state.</summary>
    public Opcode OwnResetFor(int keyId) => keyId == 0 ? _ownHardReset : Opcode.ControlSoftResetV1;

    /// <summary>
    /// Makes <paramref name="k"/> the latest key state with our reset queued on it. Whatever held its
    /// slot and every other key state except the primary is disposed: at most the primary and the
    /// new key state stay.
    /// </summary>
    public void Add(TKey k)
    {
        var old = _slots[k.KeyId];
        if (!ReferenceEquals(old, k))
        {
            old?.Dispose();
        }

        k.Rel.Queue(OwnResetFor(k.KeyId), ReadOnlyMemory<byte>.Empty);
        _slots[k.KeyId] = k;
        LatestKeyId = k.KeyId;
        for (int i = 0; i < KeyStateTable.Capacity; i++)
        {
            if (i != k.KeyId && i != PrimaryKeyId && _slots[i] is { } other)
            {
                other.Dispose();
                _slots[i] = null;
            }
        }
    }

    /// <summary>Disposes <paramref name="k"/> and frees its slot (retirement of a replaced key).</summary>
    public void Remove(TKey k)
    {
        k.Dispose();
        if (ReferenceEquals(_slots[k.KeyId], k))
        {
            _slots[k.KeyId] = null;
        }
    }

    /// <summary>How long after a failed renegotiation the next one may start.</summary>
    public const long FailedRenegotiationRetryMs = 10_000;

    private long _retryNotBeforeMs = long.MinValue;

    /// <summary>
    /// A renegotiation on <paramref name="k"/> failed (TLS error or hand-window timeout) while the
    /// primary key carries on: <paramref name="k"/> is disposed and its slot freed. The key-id
    /// sequence continues after the failed id (both peers advanced their counters, as OpenVPN's
    /// key_state_init does), the table counts as settled again, and the next attempt may start
    /// <see cref="FailedRenegotiationRetryMs"/> after the failure, so a session whose
    /// renegotiation failed once still renegotiates before its packet-ids wrap instead of being
    /// stuck on the old key for good, without retrying on every tick.
    /// </summary>
    public void RemoveFailed(TKey k, long nowMs)
    {
        Remove(k);
        _retryNotBeforeMs = nowMs + FailedRenegotiationRetryMs;
    }

    /// <summary>
    /// Whether a renegotiation may start now: keys are established, none is running (the latest
    /// key state is the primary, or the latest attempt failed and was removed), the primary still
    /// has its keys, and any retry delay after a failure has passed.
    /// </summary>
    public bool MayStartRenegotiation(long nowMs) => IsSettled && Primary is { DataKeysReady: true } && nowMs >= _retryNotBeforeMs;

    /// <summary>Disposes every key state (the session ends).</summary>
    public void Clear()
    {
        for (int i = 0; i < KeyStateTable.Capacity; i++)
        {
            _slots[i]?.Dispose();
            _slots[i] = null;
        }
    }

    /// <summary>Records that the data plane now sends with <paramref name="keyId"/>.</summary>
    public void SetPrimary(int keyId, long nowMs)
    {
        PrimaryKeyId = keyId;
        PrimarySinceMs = nowMs;
    }

    /// <summary>
    /// Whether a SOFT_RESET from the peer for an unused <paramref name="keyId"/> may open a key
    /// state: it must be the id after the latest one, and the latest must have its keys. (The owner
    /// also requires its session to be established.)
    /// </summary>
    public bool AcceptsPeerSoftReset(int keyId) =>
        LatestKeyId >= 0 && keyId == KeyStateTable.NextKeyId(LatestKeyId)
        && (_slots[LatestKeyId] ?? (LatestKeyId != PrimaryKeyId ? Primary : null)) is { DataKeysReady: true };

    /// <summary>Whether no renegotiation is running: the latest key state is the primary one, or
    /// the latest attempt failed and was removed (<see cref="RemoveFailed"/>).</summary>
    public bool IsSettled => PrimaryKeyId >= 0 && (LatestKeyId == PrimaryKeyId || _slots[LatestKeyId] is null);

    /// <summary>reneg-sec: the settled primary key is older than <paramref name="renegSeconds"/> (0 = never)
    /// and a renegotiation may start now (<see cref="MayStartRenegotiation"/>).</summary>
    public bool IsRenegotiationDue(long nowMs, int renegSeconds) =>
        renegSeconds > 0 && MayStartRenegotiation(nowMs) && nowMs - PrimarySinceMs > renegSeconds * 1000L;

    /// <summary>The owner has swapped keys in the data plane: <paramref name="k"/> is primary from <paramref name="nowMs"/>.</summary>
    public void CompleteSwap(TKey k, long nowMs)
    {
        k.SwapPending = false;
        SetPrimary(k.KeyId, nowMs);
    }

    /// <summary>
    /// A key state replaced by a newer primary whose swap has settled for <paramref name="graceMs"/>
    /// (late retransmissions got their ACKs); the data plane has its own copy of the keys.
    /// </summary>
    public bool IsRetirable(TKey k, long nowMs, long graceMs) =>
        k.KeyId != PrimaryKeyId && k.KeyId != LatestKeyId && k.DataKeysReady && nowMs - PrimarySinceMs >= graceMs;

    /// <summary>Runs every key state's reliability timers: pumps TLS output and sends what is due (see <see cref="KeyState.SendDue"/>).</summary>
    public void SendDue(long nowMs, uint unixSeconds, ControlWrapper wrap, ILinkTransport link)
    {
        for (int i = 0; i < KeyStateTable.Capacity; i++)
        {
            _slots[i]?.SendDue(nowMs, unixSeconds, wrap, link);
        }
    }
}
