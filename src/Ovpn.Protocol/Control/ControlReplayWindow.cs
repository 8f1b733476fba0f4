// SPDX-License-Identifier: MIT
namespace Ovpn.Protocol.Control;

/// <summary>
/// Receive-side replay filter for the long-form tls-auth/tls-crypt packet id (u32 counter + u32
/// timestamp), after OpenVPN's packet_id.c with the default window of 64:
/// same timestamp: accept ids above the highest seen, or unseen ids within the last 64;
/// newer timestamp: accept and restart the window; older timestamp: reject; id 0: always reject.
/// The "time backtrack" part of --replay-window (15 s of local time) is not applied because
/// this type is clock-free. Zero value ready; not thread-safe.
/// </summary>
public struct ControlReplayWindow
{
    public const int WindowSize = 64;

    private bool _initialized;
    private uint _time;
    private uint _highest;
    private ulong _seen; // bit i = id (_highest - i) was seen

    public readonly bool Check(uint id, uint time)
    {
        if (id == 0)
        {
            return false;
        }

        if (!_initialized || time > _time)
        {
            return true;
        }

        if (time < _time)
        {
            return false;
        }

        if (id > _highest)
        {
            return true;
        }

        uint diff = _highest - id;
        return diff < WindowSize && (_seen & (1UL << (int)diff)) == 0;
    }

    /// <summary>Records an id that passed <see cref="Check"/>.</summary>
    public void Update(uint id, uint time)
    {
        if (!_initialized || time > _time)
        {
            _initialized = true;
            _time = time;
            _highest = id;
            _seen = 1;
            return;
        }

        if (id > _highest)
        {
            uint shift = id - _highest;
            _seen = shift >= WindowSize ? 1UL : (_seen << (int)shift) | 1UL;
            _highest = id;
        }
        else
        {
            uint diff = _highest - id;
            if (diff < WindowSize)
            {
                _seen |= 1UL << (int)diff;
            }
        }
    }

    public bool CheckAndUpdate(uint id, uint time)
    {
        if (!Check(id, time))
        {
            return false;
        }

        Update(id, time);
        return true;
    }
}
