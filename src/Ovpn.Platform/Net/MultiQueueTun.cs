// SPDX-License-Identifier: MIT
using Ovpn.DataPlane;
using Ovpn.Platform.Linux;

namespace Ovpn.Platform.Net;

/// <summary>
/// Opens a TUN device with IFF_MULTI_QUEUE and N queues (one fd each) for the offload engine's
/// TUN readers: the kernel spreads flows over the queues, so N threads read in parallel.
/// </summary>
public static class MultiQueueTun
{
    /// <summary>Creates <paramref name="name"/> with <paramref name="queues"/> queues; <paramref name="configure"/>
    /// (MTU, address, up) runs once on the first queue. The returned queues are owned by the caller.</summary>
    public static IReadOnlyList<ITunDevice> Open(string name, int queues, Action<TunDevice>? configure = null)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(queues, 1);
        var first = TunDevice.Create(name, multiQueue: true);
        var list = new List<ITunDevice> { new Queue(first) };
        try
        {
            configure?.Invoke(first);
            for (int i = 1; i < queues; i++)
            {
                list.Add(new Queue(first.OpenQueue()));
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

    /// <summary>One queue as the data plane's TUN port.</summary>
    private sealed class Queue(TunDevice tun) : ITunDevice
    {
        public string Name => tun.Name;

        public int Read(Span<byte> buffer) => tun.Read(buffer);

        public void Write(ReadOnlySpan<byte> packet) => tun.Write(packet);

        public void Dispose() => tun.Dispose();
    }
}
