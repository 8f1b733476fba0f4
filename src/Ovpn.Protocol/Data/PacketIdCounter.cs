// SPDX-License-Identifier: MIT
namespace Ovpn.Protocol.Data;

/// <summary>
/// Send-side packet-id counter for one key: hands out 1, 2, 3, ... and refuses (returns false)
/// instead of wrapping, because a repeated packet id would repeat an AEAD nonce
/// (like ovpn's <c>ovpn_pktid_xmit_next</c> returning -ERANGE). Once an id above
/// <see cref="WrapTrigger"/> (0xFF000000, OpenVPN's PACKET_ID_WRAP_TRIGGER) has been handed out,
/// <see cref="RenegotiationDue"/> becomes true so that the control plane starts a new key.
/// The zero value is ready (limit = uint.MaxValue). Not thread-safe: one owner per key slot.
/// </summary>
public struct PacketIdCounter
{
    public const uint WrapTrigger = 0xFF000000;

    private uint _last;
    private uint _limitOverride; // 0 = no override (uint.MaxValue)

    /// <param name="limit">Highest id that may be handed out (inclusive), at least 1.</param>
    /// <param name="start">Last id already used; the next id is start + 1 (for tests / resumption).</param>
    public PacketIdCounter(uint limit, uint start = 0)
    {
        if (limit == 0)
        {
            throw new ArgumentOutOfRangeException(nameof(limit), "limit must be at least 1");
        }

        _limitOverride = limit;
        _last = start;
    }

    public readonly uint Limit => _limitOverride == 0 ? uint.MaxValue : _limitOverride;

    /// <summary>The last id handed out (0 = none yet).</summary>
    public readonly uint Last => _last;

    /// <summary>True once the counter has passed <see cref="WrapTrigger"/>, or is exhausted.</summary>
    public readonly bool RenegotiationDue => _last > WrapTrigger || _last >= Limit;

    public readonly bool Exhausted => _last >= Limit;

    /// <summary>Next packet id, or false when the limit was reached (the key must not be used to send any more).</summary>
    public bool TryNext(out uint id)
    {
        if (_last >= Limit)
        {
            id = 0;
            return false;
        }

        id = ++_last;
        return true;
    }
}
