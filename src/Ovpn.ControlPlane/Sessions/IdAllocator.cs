// SPDX-License-Identifier: MIT
namespace Ovpn.ControlPlane.Sessions;

/// <summary>Peer-id allocator: lowest free id below 0xFFFFFF (MAX_PEER_ID means "none"). Thread-safe.</summary>
public sealed class IdAllocator(uint max = 0xFFFFFE)
{
    private readonly SortedSet<uint> _free = [];
    private readonly object _gate = new();
    private uint _next;

    public uint? Allocate()
    {
        lock (_gate)
        {
            if (_free.Count > 0)
            {
                uint id = _free.Min;
                _free.Remove(id);
                return id;
            }

            return _next <= max ? _next++ : null;
        }
    }

    public void Release(uint id)
    {
        lock (_gate)
        {
            if (id < _next)
            {
                _free.Add(id);
            }
        }
    }
}
