// SPDX-License-Identifier: MIT
namespace Ovpn.Protocol.Data;

/// <summary>
/// Receive-side packet-id replay protection for one key and direction (protocol notes 13.1):
/// the highest id seen plus a 64-bit bitmap of the ids just below it (OpenVPN
/// <c>--replay-window 64</c>). Bit i of the bitmap means "highest - i has been seen".
/// Id 0 is never valid. The zero value is ready to use. Not thread-safe: owned by the single
/// receive path of its key slot. The 15-second time limit of OpenVPN's window is not applied
/// here (this type has no clock); ids within the 64-packet window are accepted whenever they come.
/// Call <see cref="Check"/> before and <see cref="Update"/> only after the tag verified, or use
/// <see cref="CheckAndUpdate"/> once the packet is authentic.
/// </summary>
public struct ReplayWindow
{
    public const int WindowSize = 64;

    private uint _highest;
    private ulong _seen;

    /// <summary>Highest packet id accepted so far (0 = none yet).</summary>
    public readonly uint Highest => _highest;

    /// <summary>True if <paramref name="id"/> would be accepted now. Does not change state.</summary>
    public readonly bool Check(uint id)
    {
        if (id == 0)
        {
            return false;
        }

        if (id > _highest)
        {
            return true;
        }

        uint diff = _highest - id;
        if (diff >= WindowSize)
        {
            return false; // too old to tell: treat as replay
        }

        return (_seen & (1UL << (int)diff)) == 0;
    }

    /// <summary>Records <paramref name="id"/> as seen. Ids that are 0 or older than the window are
    /// ignored; call it only for authenticated packets that passed <see cref="Check"/>.</summary>
    public void Update(uint id)
    {
        if (id == 0)
        {
            return;
        }

        if (id > _highest)
        {
            uint shift = id - _highest;
            _seen = shift >= WindowSize ? 0 : _seen << (int)shift;
            _seen |= 1;
            _highest = id;
            return;
        }

        uint diff = _highest - id;
        if (diff < WindowSize)
        {
            _seen |= 1UL << (int)diff;
        }
    }

    /// <summary>Check and, if accepted, update. For packets whose tag already verified.</summary>
    public bool CheckAndUpdate(uint id)
    {
        if (!Check(id))
        {
            return false;
        }

        Update(id);
        return true;
    }
}
