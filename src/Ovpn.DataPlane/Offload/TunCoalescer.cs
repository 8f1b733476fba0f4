// SPDX-License-Identifier: MIT
namespace Ovpn.DataPlane.Offload;

/// <summary>
/// Userspace GRO in front of a vnet TUN: UDP datagrams go to a <see cref="UdpCoalescer"/> (only when
/// the kernel accepts UDP GSO frames), everything else to a <see cref="TcpCoalescer"/>, which merges
/// TCP and writes any other packet alone. Before a packet that is not a UDP candidate is handed on,
/// the UDP slots between the same two hosts are written, so (as inside each coalescer) nothing
/// overtakes held packets of its own flow or an ICMP error about them. <see cref="Flush"/> writes
/// both. Counters are the sums of both. Not thread-safe: one instance per writer thread.
/// </summary>
public sealed class TunCoalescer
{
    private readonly TcpCoalescer _tcp = new();
    private readonly UdpCoalescer? _udp;

    /// <param name="udp">Merge UDP too (the TUN accepts VIRTIO_NET_HDR_GSO_UDP_L4).</param>
    public TunCoalescer(bool udp)
    {
        _udp = udp ? new UdpCoalescer() : null;
    }

    /// <summary>Whether UDP datagrams are merged.</summary>
    public bool CoalescesUdp => _udp is not null;

    /// <summary>Packets currently held.</summary>
    public int HeldSegments => _tcp.HeldSegments + (_udp?.HeldSegments ?? 0);

    /// <summary>GSO frames of two or more packets written so far (TCP and UDP).</summary>
    public long GsoFramesWritten => _tcp.GsoFramesWritten + (_udp?.GsoFramesWritten ?? 0);

    /// <summary>Packets that went out inside a GSO frame (TCP and UDP).</summary>
    public long SegmentsCoalesced => _tcp.SegmentsCoalesced + (_udp?.SegmentsCoalesced ?? 0);

    /// <summary>UDP GSO frames written so far.</summary>
    public long UdpGsoFramesWritten => _udp?.GsoFramesWritten ?? 0;

    /// <summary>Takes one IP packet; may write frames to <paramref name="sink"/>.</summary>
    public void Add(ReadOnlySpan<byte> packet, IVnetFrameSink sink)
    {
        if (_udp is not null)
        {
            if (_udp.TryAdd(packet, sink))
            {
                return;
            }

            _udp.FlushSameHosts(packet, sink);
        }

        _tcp.Add(packet, sink);
    }

    /// <summary>Writes everything held.</summary>
    public void Flush(IVnetFrameSink sink)
    {
        try
        {
            _tcp.Flush(sink);
        }
        finally
        {
            _udp?.Flush(sink);
        }
    }

    /// <summary>Drops everything held without writing.</summary>
    public void Reset()
    {
        _tcp.Reset();
        _udp?.Reset();
    }
}
