// SPDX-License-Identifier: MIT
using System.Buffers.Binary;
using System.Net;

namespace Ovpn.ControlPlane.Sessions;

/// <summary>
/// IPv4 client pool for topology subnet: the first host address is the server, the rest go to
/// clients. Thread-safe.
/// </summary>
public sealed class IpPool
{
    private readonly uint _network;
    private readonly uint _first;
    private readonly uint _last;
    private readonly HashSet<uint> _used = [];
    private readonly object _gate = new();

    public IpPool(IPAddress network, int prefixLength)
    {
        if (prefixLength is < 8 or > 30)
        {
            throw new ArgumentOutOfRangeException(nameof(prefixLength), prefixLength, "pool prefix must be 8..30");
        }

        uint mask = uint.MaxValue << (32 - prefixLength);
        _network = ToUInt(network) & mask;
        PrefixLength = prefixLength;
        Netmask = FromUInt(mask);
        ServerAddress = FromUInt(_network + 1);
        _first = _network + 2;
        _last = (_network | ~mask) - 1;
    }

    public int PrefixLength { get; }

    public IPAddress Netmask { get; }

    public IPAddress ServerAddress { get; }

    public IPAddress Network => FromUInt(_network);

    public int Capacity => (int)(_last - _first + 1);

    public int InUse
    {
        get
        {
            lock (_gate)
            {
                return _used.Count;
            }
        }
    }

    /// <summary>Lowest free address, or null when the pool is exhausted.</summary>
    public IPAddress? Allocate()
    {
        lock (_gate)
        {
            for (uint a = _first; a <= _last; a++)
            {
                if (_used.Add(a))
                {
                    return FromUInt(a);
                }
            }

            return null;
        }
    }

    public void Release(IPAddress address)
    {
        lock (_gate)
        {
            _used.Remove(ToUInt(address));
        }
    }

    /// <summary>
    /// Splits the pool's network into <paramref name="count"/> equal slices (rounded up to a power of
    /// two), one per daemon, as Access Server gives each daemon its own subnet.
    /// </summary>
    public static IReadOnlyList<IpPool> Split(IPAddress network, int prefixLength, int count)
    {
        int bits = 0;
        while ((1 << bits) < count)
        {
            bits++;
        }

        if (prefixLength + bits > 30)
        {
            throw new ArgumentException($"the client network /{prefixLength} is too small for {count} daemons");
        }

        uint baseNet = ToUInt(network) & (uint.MaxValue << (32 - prefixLength));
        uint step = 1u << (32 - prefixLength - bits);
        var list = new List<IpPool>(count);
        for (int i = 0; i < count; i++)
        {
            list.Add(new IpPool(FromUInt(baseNet + (uint)i * step), prefixLength + bits));
        }

        return list;
    }

    public bool Contains(IPAddress address)
    {
        uint a = ToUInt(address);
        return a >= _first && a <= _last;
    }

    private static uint ToUInt(IPAddress a) => BinaryPrimitives.ReadUInt32BigEndian(a.MapToIPv4().GetAddressBytes());

    private static IPAddress FromUInt(uint v)
    {
        var b = new byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(b, v);
        return new IPAddress(b);
    }
}
