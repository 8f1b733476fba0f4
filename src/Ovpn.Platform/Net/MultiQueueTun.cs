// SPDX-License-Identifier: MIT
using Ovpn.DataPlane;
using Ovpn.DataPlane.Offload;
using Ovpn.Platform.Linux;

namespace Ovpn.Platform.Net;

/// <summary>
/// Opens a TUN device with IFF_MULTI_QUEUE and N queues (one fd each) for the offload engine's
/// TUN readers: the kernel spreads flows over the queues, so N threads read in parallel.
/// With <c>vnetHeader: true</c> every queue is opened with IFF_VNET_HDR and implements
/// <see cref="IVnetTunDevice"/>, which lets the engine write coalesced TCP and (kernel 6.2+) UDP super-packets.
/// </summary>
public static class MultiQueueTun
{
    /// <summary>Creates <paramref name="name"/> with <paramref name="queues"/> queues; <paramref name="configure"/>
    /// (MTU, address, up) runs once on the first queue. The returned queues are owned by the caller.</summary>
    /// <param name="tcpOffload">With <paramref name="vnetHeader"/>: ask the kernel for TCP super-packets
    /// on read (<see cref="IVnetTunDevice.ReadsTcpGso"/>; the engine segments them itself).</param>
    public static IReadOnlyList<ITunDevice> Open(string name, int queues, Action<TunDevice>? configure = null, bool vnetHeader = false,
        bool tcpOffload = false)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(queues, 1);
        var first = TunDevice.Create(name, multiQueue: true, vnetHeader: vnetHeader, tcpOffload: tcpOffload && vnetHeader);
        var list = new List<ITunDevice> { Wrap(first) };
        try
        {
            configure?.Invoke(first);
            for (int i = 1; i < queues; i++)
            {
                list.Add(Wrap(first.OpenQueue()));
            }
        }
        catch
        {
            foreach (var q in list)
            {
                q.Dispose();
            }

            throw;
        }

        return list;
    }

    private static ITunDevice Wrap(TunDevice tun) => tun.HasVnetHeader ? new VnetQueue(tun) : new Queue(tun);

    /// <summary>
    /// One queue as the data plane's TUN port. One reader thread per queue (the engine's contract):
    /// a <see cref="Read"/> right after a <see cref="TryRead"/> that found the queue empty polls
    /// before reading (<see cref="TunDevice.ReadPollFirst"/>), so a reader that drains the queue and
    /// then blocks pays one failed read per wake-up instead of two.
    /// </summary>
    private class Queue(TunDevice tun) : ITunDevice, ITunTryRead
    {
        protected bool SawEmpty { get; set; }

        protected TunDevice Tun => tun;

        public string Name => tun.Name;

        public int Read(Span<byte> buffer)
        {
            if (SawEmpty)
            {
                SawEmpty = false;
                return tun.ReadPollFirst(buffer);
            }

            return tun.Read(buffer);
        }

        public int TryRead(Span<byte> buffer)
        {
            int n = tun.TryRead(buffer);
            SawEmpty = n < 0;
            return n;
        }

        public void Write(ReadOnlySpan<byte> packet) => tun.Write(packet);

        public void Dispose() => tun.Dispose();
    }

    /// <summary>A queue opened with IFF_VNET_HDR: plain Read/Write plus frames with a header.</summary>
    private sealed class VnetQueue(TunDevice device) : Queue(device), IVnetTunDevice
    {
        public void WriteFrame(ReadOnlySpan<byte> frame) => Tun.WriteFrame(frame);

        public bool AcceptsUdpGso => Tun.SupportsUdpGso;

        public string? UdpGsoUnsupportedReason => Tun.UdpGsoUnsupportedReason;

        public bool ReadsTcpGso => Tun.ReadsTcpGso;

        public string? TcpGsoReadUnsupportedReason => Tun.TcpGsoReadUnsupportedReason;

        public int ReadFrame(Span<byte> frame)
        {
            bool pollFirst = SawEmpty;
            SawEmpty = false;
            return Tun.ReadFrame(frame, pollFirst);
        }

        public int TryReadFrame(Span<byte> frame)
        {
            int n = Tun.TryReadFrame(frame);
            SawEmpty = n < 0;
            return n;
        }
    }
}
