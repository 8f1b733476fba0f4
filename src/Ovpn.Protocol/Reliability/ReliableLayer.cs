// SPDX-License-Identifier: MIT
using Ovpn.Protocol.Wire;

namespace Ovpn.Protocol.Reliability;

/// <summary>
/// OpenVPN's control-channel reliability layer (protocol notes section 4) for one key state
/// (msg-ids restart at 0 for every key_id). Sans-IO: time comes in as <c>nowMs</c>, output is
/// drained with <see cref="TryGetPacketToSend"/> (plain packets; the caller wraps each one, so a
/// retransmission gets a fresh replay-id). Not thread-safe; owned by one session.
///
/// Send side: at most <see cref="SendWindow"/> msg-ids in flight (next_id - lowest_unacked &lt; 6).
/// Each packet is retransmitted when its timer fires; the timer starts at the initial timeout
/// and doubles with every transmission. Three ACKs for higher msg-ids trigger an early resend.
/// Receive side: msg-ids in [nextRead, nextRead + 12) are stored, duplicates are ACKed again,
/// ids beyond the window are dropped without ACK, payloads are released strictly in order.
/// </summary>
public sealed class ReliableLayer
{
    public const int SendWindow = 6;
    public const int ReceiveWindow = 12;
    public const int MaxAcksPiggyBacked = 4;
    public const int MaxAcksStandalone = 8;
    public const int FastRetransmitAcks = 3;

    /// <summary>Largest wire control packet OpenVPN sends by default (--tls-mtu / TLS_MTU_DEFAULT).</summary>
    public const int DefaultMaxWirePacket = 1250;

    /// <summary>Plain overhead of a ControlV1 packet carrying the maximum piggy-backed ACKs:
    /// opcode + sid + n + 4 acks + peer sid + msg-id.</summary>
    public const int ControlV1MaxPlainOverhead = 1 + 8 + 1 + 4 * MaxAcksPiggyBacked + 8 + 4;

    /// <summary>Bound on distinct ids waiting to be ACKed (duplicates of old ids could otherwise grow it).</summary>
    private const int MaxPendingAcks = 32;

    private readonly ulong _ownSessionId;
    private readonly int _keyId;
    private readonly long _initialTimeoutMs;

    // Send state.
    private readonly List<SendEntry> _inFlight = new(SendWindow); // ordered by msg-id
    private readonly Queue<(Opcode Op, byte[] Payload)> _backlog = new();
    private uint _nextSendId;

    // Receive state.
    private readonly Dictionary<uint, (Opcode Op, byte[] Payload)> _received = new();
    private uint _nextRead;
    private readonly List<uint> _pendingAcks = new();
    private readonly List<uint> _recentAcks = new(MaxAcksStandalone); // MRU of ids already ACKed once

    public ReliableLayer(ulong ownSessionId, int keyId, long initialTimeoutMs = 2000, int maxPayload = 1100)
    {
        if ((uint)keyId > 7)
        {
            throw new ArgumentOutOfRangeException(nameof(keyId));
        }

        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(initialTimeoutMs, 0);
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(maxPayload, 0);
        _ownSessionId = ownSessionId;
        _keyId = keyId;
        _initialTimeoutMs = initialTimeoutMs;
        MaxPayload = maxPayload;
    }

    /// <summary>
    /// Largest payload per packet so that a wrapped ControlV1 (with up to 4 ACKs) stays within
    /// <paramref name="maxWirePacket"/>; pass <c>ControlWrapper.Overhead</c> as the wrap overhead.
    /// </summary>
    public static int MaxPayloadFor(int wrapOverhead, int maxWirePacket = DefaultMaxWirePacket)
    {
        int n = maxWirePacket - wrapOverhead - ControlV1MaxPlainOverhead;
        return n > 0 ? n : throw new ArgumentOutOfRangeException(nameof(maxWirePacket), "No room for payload");
    }

    /// <summary>Peer's session id; learnt from the first packet received if not set before.</summary>
    public ulong PeerSessionId { get; set; }

    public ulong OwnSessionId => _ownSessionId;

    public int KeyId => _keyId;

    /// <summary>Largest payload per control packet used by <see cref="QueueSplit"/>.</summary>
    public int MaxPayload { get; }

    /// <summary>True when <see cref="Queue"/> may be called: the send window has room and no split backlog waits.</summary>
    public bool CanQueue => _backlog.Count == 0 && WindowHasRoom;

    /// <summary>Chunks queued by <see cref="QueueSplit"/> that still wait for send-window room.</summary>
    public int BacklogCount => _backlog.Count;

    /// <summary>Number of msg-ids sent or queued but not yet ACKed.</summary>
    public int InFlightCount => _inFlight.Count;

    public bool AllAcked => _inFlight.Count == 0 && _backlog.Count == 0;

    /// <summary>
    /// True when nothing is in flight, waiting, received-but-unread or owed an ACK: the key state
    /// is quiet and <see cref="TrimIdle"/> may release the windows' storage.
    /// </summary>
    public bool IsIdle => _inFlight.Count == 0 && _backlog.Count == 0 && _received.Count == 0 && _pendingAcks.Count == 0;

    /// <summary>Payload bytes held by the send window, the backlog and the receive window.</summary>
    public int BufferedBytes
    {
        get
        {
            int n = 0;
            foreach (var e in _inFlight)
            {
                n += e.Payload.Length;
            }

            foreach (var (_, payload) in _backlog)
            {
                n += payload.Length;
            }

            foreach (var (_, (_, payload)) in _received)
            {
                n += payload.Length;
            }

            return n;
        }
    }

    /// <summary>
    /// Releases the storage of the (empty) windows of an idle key state; they grow again on the
    /// next message. Msg-id counters and recently ACKed ids are kept, so the protocol state is
    /// unchanged. Returns false (and does nothing) unless <see cref="IsIdle"/>.
    /// </summary>
    public bool TrimIdle()
    {
        if (!IsIdle)
        {
            return false;
        }

        _inFlight.TrimExcess();
        _backlog.TrimExcess();
        _received.TrimExcess();
        _pendingAcks.TrimExcess();
        return true;
    }

    /// <summary>
    /// Earliest time at which <see cref="TryGetPacketToSend"/> has something to do;
    /// <see cref="long.MinValue"/> means "now"; null means nothing is scheduled.
    /// </summary>
    public long? NextDeadlineMs
    {
        get
        {
            if (_pendingAcks.Count > 0 || (_backlog.Count > 0 && WindowHasRoom))
            {
                return long.MinValue;
            }

            long? min = null;
            foreach (var e in _inFlight)
            {
                long d = e.Sent ? e.NextTryMs : long.MinValue;
                if (min is null || d < min)
                {
                    min = d;
                }
            }

            return min;
        }
    }

    private bool WindowHasRoom => _inFlight.Count == 0 || (long)_nextSendId - _inFlight[0].Id < SendWindow;

    /// <summary>Assigns the next msg-id to the payload. Throws if <see cref="CanQueue"/> is false.</summary>
    public void Queue(Opcode op, ReadOnlyMemory<byte> payload)
    {
        if (!CanQueue)
        {
            throw new InvalidOperationException("Reliable send window is full");
        }

        Enqueue(op, payload.ToArray());
    }

    /// <summary>
    /// Splits <paramref name="data"/> into packets of at most <see cref="MaxPayload"/> bytes. Chunks
    /// that do not fit the send window wait in a backlog and enter it as ACKs free room. Returns
    /// the number of chunks (at least 1: empty data still makes one packet).
    /// </summary>
    public int QueueSplit(Opcode op, ReadOnlySpan<byte> data)
    {
        int chunks = 0;
        do
        {
            int n = Math.Min(MaxPayload, data.Length);
            _backlog.Enqueue((op, data[..n].ToArray()));
            data = data[n..];
            chunks++;
        }
        while (!data.IsEmpty);

        FillWindowFromBacklog();
        return chunks;
    }

    /// <summary>
    /// Processes an incoming (already unwrapped) control packet: its ACKs, then its msg-id and
    /// payload. Returns false if the packet is rejected as a whole (wrong key id, session id,
    /// or ACKs addressed to another session id).
    /// </summary>
    public bool OnReceived(ControlPacket p, long nowMs)
    {
        ArgumentNullException.ThrowIfNull(p);
        if (p.KeyId != _keyId)
        {
            return false;
        }

        if (PeerSessionId != 0 && p.SessionId != PeerSessionId)
        {
            return false;
        }

        if (p.Acks.Length > 0 && p.PeerSessionId != _ownSessionId)
        {
            return false; // "ACK read BAD SESSION-ID": the whole packet is dropped
        }

        if (p.Opcode != Opcode.AckV1 && p.MessageId is null)
        {
            return false;
        }

        if (PeerSessionId == 0)
        {
            PeerSessionId = p.SessionId;
        }

        foreach (uint ack in p.Acks)
        {
            ProcessAck(ack, nowMs);
        }

        FillWindowFromBacklog();

        if (p.Opcode == Opcode.AckV1)
        {
            return true;
        }

        uint id = p.MessageId!.Value;
        if (id < _nextRead || _received.ContainsKey(id))
        {
            QueueAck(id); // duplicate: our earlier ACK may have been lost
            return true;
        }

        if ((long)id >= (long)_nextRead + ReceiveWindow)
        {
            return true; // beyond the window: dropped without ACK, the peer will resend
        }

        if (!QueueAck(id))
        {
            return true; // cannot promise an ACK now; let the peer resend
        }

        _received[id] = (p.Opcode, p.Payload.ToArray());
        return true;
    }

    /// <summary>Next payload in msg-id order, if it has arrived.</summary>
    public bool TryRead(out Opcode op, out ReadOnlyMemory<byte> payload)
    {
        if (_received.Remove(_nextRead, out var item))
        {
            _nextRead++;
            op = item.Op;
            payload = item.Payload;
            return true;
        }

        op = default;
        payload = default;
        return false;
    }

    /// <summary>
    /// Next packet to put on the wire now: a due (re)transmission with up to 4 piggy-backed ACKs,
    /// else a standalone AckV1 with up to 8 ACKs. Call until it returns false.
    /// </summary>
    public bool TryGetPacketToSend(long nowMs, out ControlPacket? p)
    {
        FillWindowFromBacklog();
        SendEntry? due = null;
        foreach (var e in _inFlight)
        {
            if (!e.Sent || e.NextTryMs <= nowMs || e.HigherAcks >= FastRetransmitAcks)
            {
                due = e;
                break; // lowest msg-id first
            }
        }

        if (due is not null)
        {
            due.Sent = true;
            due.HigherAcks = 0;
            due.NextTryMs = SaturatingAdd(nowMs, due.TimeoutMs);
            due.TimeoutMs = due.TimeoutMs >= long.MaxValue / 4 ? due.TimeoutMs : due.TimeoutMs * 2;
            due.Transmissions++;
            p = new ControlPacket
            {
                Opcode = due.Op,
                KeyId = _keyId,
                SessionId = _ownSessionId,
                MessageId = due.Id,
                Payload = due.Payload,
            };
            AttachAcks(p, MaxAcksPiggyBacked);
            return true;
        }

        if (_pendingAcks.Count > 0)
        {
            p = new ControlPacket { Opcode = Opcode.AckV1, KeyId = _keyId, SessionId = _ownSessionId };
            AttachAcks(p, MaxAcksStandalone);
            return true;
        }

        p = null;
        return false;
    }

    /// <summary>
    /// Schedules every unacked packet for immediate resend (OpenVPN does this once when the
    /// peer's reset arrives, so a restarted peer catches up quickly).
    /// </summary>
    public void ScheduleAllNow()
    {
        foreach (var e in _inFlight)
        {
            e.HigherAcks = FastRetransmitAcks;
        }
    }

    /// <summary>Number of transmissions so far of an in-flight msg-id (0 if unknown or acked). For diagnostics/tests.</summary>
    public int GetTransmissionCount(uint msgId)
    {
        foreach (var e in _inFlight)
        {
            if (e.Id == msgId)
            {
                return e.Transmissions;
            }
        }

        return 0;
    }

    private void Enqueue(Opcode op, byte[] payload)
    {
        _inFlight.Add(new SendEntry
        {
            Id = _nextSendId++,
            Op = op,
            Payload = payload,
            TimeoutMs = _initialTimeoutMs,
        });
    }

    private void FillWindowFromBacklog()
    {
        while (_backlog.Count > 0 && WindowHasRoom)
        {
            var (op, data) = _backlog.Dequeue();
            Enqueue(op, data);
        }
    }

    private void ProcessAck(uint ack, long nowMs)
    {
        _ = nowMs;
        int idx = _inFlight.FindIndex(e => e.Id == ack);
        if (idx < 0)
        {
            return; // unknown or already acked: ignore
        }

        _inFlight.RemoveAt(idx);
        foreach (var e in _inFlight)
        {
            if (e.Id < ack && e.Sent)
            {
                e.HigherAcks++;
            }
        }
    }

    private bool QueueAck(uint id)
    {
        if (_pendingAcks.Contains(id))
        {
            return true;
        }

        if (_pendingAcks.Count >= MaxPendingAcks)
        {
            return false;
        }

        _pendingAcks.Add(id);
        return true;
    }

    private void AttachAcks(ControlPacket p, int max)
    {
        if (PeerSessionId == 0 && _pendingAcks.Count == 0)
        {
            return;
        }

        var acks = new List<uint>(max);
        int take = Math.Min(max, _pendingAcks.Count);
        for (int i = 0; i < take; i++)
        {
            acks.Add(_pendingAcks[i]);
        }

        _pendingAcks.RemoveRange(0, take);

        // Fill spare slots with recently ACKed ids (as 2.6 does), in case those ACKs were lost.
        foreach (uint r in _recentAcks)
        {
            if (acks.Count >= max)
            {
                break;
            }

            if (!acks.Contains(r))
            {
                acks.Add(r);
            }
        }

        foreach (uint a in acks)
        {
            _recentAcks.Remove(a);
            _recentAcks.Insert(0, a);
        }

        if (_recentAcks.Count > MaxAcksStandalone)
        {
            _recentAcks.RemoveRange(MaxAcksStandalone, _recentAcks.Count - MaxAcksStandalone);
        }

        if (acks.Count > 0)
        {
            p.Acks = acks.ToArray();
            p.PeerSessionId = PeerSessionId;
        }
    }

    private static long SaturatingAdd(long a, long b) => a > long.MaxValue - b ? long.MaxValue : a + b;

    private sealed class SendEntry
    {
        public uint Id;
        public Opcode Op;
        public byte[] Payload = [];
        public bool Sent;
        public long NextTryMs;
        public long TimeoutMs;
        public int HigherAcks;
        public int Transmissions;
    }
}
