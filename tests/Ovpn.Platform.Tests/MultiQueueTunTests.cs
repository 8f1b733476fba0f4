// SPDX-License-Identifier: MIT
using System.Diagnostics;
using System.Net;
using Ovpn.DataPlane;
using Ovpn.Platform.Linux;
using Ovpn.Platform.Net;
using Ovpn.Testing;

namespace Ovpn.Platform.Tests;

/// <summary>
/// <see cref="MultiQueueTun"/> queues as the engine's TUN reader uses them: drain with TryRead
/// until it reports empty, then block in Read (which then polls before reading,
/// <see cref="TunDevice.ReadPollFirst"/>). A packet that arrives later must still be read, and a
/// Dispose must still unblock the reader. Real TUN devices in a namespace the test creates.
/// </summary>
public sealed class MultiQueueTunTests
{
    private static readonly IPAddress TunAddr = IPAddress.Parse("10.98.0.1");
    private static readonly IPAddress PeerAddr = IPAddress.Parse("10.98.0.2");

    private static IReadOnlyList<ITunDevice> Open(NetNs ns, string name, bool vnet) =>
        ns.RunInNamespace(() => MultiQueueTun.Open(name, 2, t =>
        {
            t.AddAddress(TunAddr, 24);
            t.SetUp();
        }, vnetHeader: vnet));

    [RequiresTheory(Requirement.Root, Requirement.Tun)]
    [InlineData(false)]
    [InlineData(true)]
    public void Read_after_an_empty_TryRead_still_gets_the_next_packet(bool vnet)
    {
        Requirements.RequireOrFail(Requirement.Root, Requirement.Tun);
        using var ns = new NetNs();
        var queues = Open(ns, vnet ? "mqtv0" : "mqtp0", vnet);
        try
        {
            // Ping until one of the queues reads the echo request; each reader first drains its
            // queue with TryRead (so the next Read takes the poll-first path) and then blocks.
            var got = new TaskCompletionSource<byte[]>(TaskCreationOptions.RunContinuationsAsynchronously);
            var readers = queues.Select(q => new Thread(() =>
            {
                var buf = new byte[2000];
                var sw = Stopwatch.StartNew();
                try
                {
                    while (sw.Elapsed < TimeSpan.FromSeconds(15) && !got.Task.IsCompleted)
                    {
                        while (((ITunTryRead)q).TryRead(buf) >= 0)
                        {
                            // housekeeping packets of a fresh interface (IPv6 RS/MLD)
                        }

                        int n = q.Read(buf);
                        if (n > 0 && IcmpPackets.IsIpv4EchoRequest(buf.AsSpan(0, n), PeerAddr))
                        {
                            got.TrySetResult(buf.AsSpan(0, n).ToArray());
                        }
                    }
                }
                catch (ObjectDisposedException)
                {
                    // the other queue's reader is unblocked by the Dispose below
                }
            }) { IsBackground = true }).ToList();
            readers.ForEach(t => t.Start());

            for (int i = 0; i < 10 && !got.Task.IsCompleted; i++)
            {
                TrafficCheck.Ping(ns, PeerAddr, count: 1, timeout: TimeSpan.FromSeconds(1));
            }

            Assert.True(got.Task.Wait(TimeSpan.FromSeconds(5)), "no echo request was read from the TUN queues");
            var pkt = got.Task.Result;
            Assert.Equal(PeerAddr.GetAddressBytes(), pkt.AsSpan(16, 4).ToArray());

            // Both readers may now be blocked in the poll-first Read: Dispose must unblock them.
            foreach (var q in queues)
            {
                q.Dispose();
            }

            foreach (var t in readers)
            {
                Assert.True(t.Join(TimeSpan.FromSeconds(5)), "a reader stayed blocked after Dispose");
            }
        }
        finally
        {
            foreach (var q in queues)
            {
                q.Dispose();
            }
        }
    }
}
