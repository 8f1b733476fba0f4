// SPDX-License-Identifier: MIT
using System.Diagnostics;
using System.Net;
using Ovpn.Platform.Linux;
using Ovpn.Testing;

namespace Ovpn.Platform.Tests;

public sealed class TunDeviceTests
{
    private static readonly IPAddress TunAddr = IPAddress.Parse("10.99.0.1");
    private static readonly IPAddress PeerAddr = IPAddress.Parse("10.99.0.2");

    private static TunDevice CreateConfiguredTun(NetNs ns, string name = "tuntest0")
    {
        var tun = ns.RunInNamespace(() => TunDevice.Create(name));
        try
        {
            tun.AddAddress(TunAddr, 24);
            tun.SetUp();
            return tun;
        }
        catch
        {
            tun.Dispose();
            throw;
        }
    }

    [RequiresFact(Requirement.Root, Requirement.Tun)]
    public async Task Ping_EchoRequestArrivesOnTun_AndHandBuiltReplyIsAccepted()
    {
        Requirements.RequireOrFail(Requirement.Root, Requirement.Tun);
        using var ns = new NetNs();
        using var tun = CreateConfiguredTun(ns);

        Assert.Equal("tuntest0", tun.Name);
        var link = ns.ExecChecked("ip", "-o", "addr", "show", "dev", "tun" + "test0");
        Assert.Contains("10.99.0.1/24", link.Stdout);

        // Responder: answer exactly one echo request for 10.99.0.2, skipping anything else the
        // kernel sends on a fresh interface (IPv6 router solicitations, MLD, ...).
        var responder = Task.Factory.StartNew(() =>
        {
            byte[] buf = new byte[2000];
            var sw = Stopwatch.StartNew();
            while (sw.Elapsed < TimeSpan.FromSeconds(10))
            {
                int n = tun.Read(buf);
                var pkt = buf.AsSpan(0, n);
                if (!IcmpPackets.IsIpv4EchoRequest(pkt, PeerAddr))
                    continue;
                Assert.Equal(4, pkt[0] >> 4);
                Assert.Equal(IcmpPackets.ProtoIcmp, pkt[9]);
                Assert.Equal(PeerAddr.GetAddressBytes(), pkt.Slice(16, 4).ToArray());
                Assert.Equal(TunAddr.GetAddressBytes(), pkt.Slice(12, 4).ToArray());
                byte[] reply = IcmpPackets.MakeEchoReply(pkt);
                Assert.Equal(reply.Length, tun.Write(reply));
                return pkt.ToArray();
            }
            throw new TimeoutException("No ICMP echo request for 10.99.0.2 arrived on the TUN.");
        }, TaskCreationOptions.LongRunning);

        var ping = TrafficCheck.Ping(ns, PeerAddr, count: 1, timeout: TimeSpan.FromSeconds(5));
        byte[] request = await responder.WaitAsync(TimeSpan.FromSeconds(15));
        Assert.Equal(1, ping.Received);
        Assert.Equal(0.0, ping.Loss);
        Assert.True(request.Length >= 28);
    }

    [RequiresFact(Requirement.Root, Requirement.Tun)]
    public async Task Dispose_UnblocksBlockedRead_WithinOneSecond_AndDeviceIsGone()
    {
        Requirements.RequireOrFail(Requirement.Root, Requirement.Tun);
        using var ns = new NetNs();
        var tun = CreateConfiguredTun(ns, "tunblock0");
        try
        {
            var started = new ManualResetEventSlim();
            var reader = Task.Factory.StartNew(() =>
            {
                byte[] buf = new byte[2000];
                started.Set();
                // Loop: a fresh interface may deliver IPv6 housekeeping packets first.
                for (int i = 0; i < 1000; i++)
                    tun.Read(buf);
            }, TaskCreationOptions.LongRunning);
            Assert.True(started.Wait(TimeSpan.FromSeconds(5)));
            await Task.Delay(300); // let the reader block in poll()
            Assert.False(reader.IsCompleted);

            var sw = Stopwatch.StartNew();
            tun.Dispose();
            await Assert.ThrowsAsync<ObjectDisposedException>(() => reader.WaitAsync(TimeSpan.FromSeconds(1)));
            Assert.True(sw.Elapsed < TimeSpan.FromSeconds(1), $"Read unblocked after {sw.Elapsed}");
        }
        finally
        {
            tun.Dispose();
        }
        var show = ns.Exec("ip", "link", "show", "tunblock0");
        Assert.NotEqual(0, show.ExitCode);
        Assert.Throws<ObjectDisposedException>(() => tun.Read(new byte[100]));
        Assert.Throws<ObjectDisposedException>(() => tun.Write(new byte[20]));
    }

    [RequiresFact(Requirement.Root, Requirement.Tun)]
    public void Configuration_MtuIpv6AndErrorsCarryErrnoText()
    {
        Requirements.RequireOrFail(Requirement.Root, Requirement.Tun);
        using var ns = new NetNs();
        using var tun = CreateConfiguredTun(ns, "tuncfg0");

        tun.SetMtu(1400);
        Assert.Equal(1400, tun.Mtu);
        Assert.Contains("mtu 1400", ns.ExecChecked("ip", "link", "show", "tuncfg0").Stdout);

        tun.AddAddress("fd00:99::1/64");
        Assert.Contains("fd00:99::1/64", ns.ExecChecked("ip", "-6", "addr", "show", "dev", "tuncfg0").Stdout);

        // Same address twice: the kernel answers EEXIST; the message must say so.
        var ex = Assert.Throws<PlatformException>(() => tun.AddAddress(TunAddr, 24));
        Assert.Equal(17, ex.Errno);
        Assert.Contains("EEXIST", ex.Message);
        Assert.Contains("10.99.0.1/24", ex.Message);

        tun.SetDown();
        Assert.DoesNotContain(",UP", ns.ExecChecked("ip", "link", "show", "tuncfg0").Stdout);

        tun.Delete();
        Assert.NotEqual(0, ns.Exec("ip", "link", "show", "tuncfg0").ExitCode);
    }

    [RequiresFact(Requirement.Root, Requirement.Tun)]
    public void Create_InvalidName_Throws_And_DuplicateSingleQueue_FailsWithErrno()
    {
        Requirements.RequireOrFail(Requirement.Root, Requirement.Tun);
        Assert.Throws<ArgumentException>(() => TunDevice.Create("this-name-is-too-long"));
        using var ns = new NetNs();
        using var tun = ns.RunInNamespace(() => TunDevice.Create("tundup0"));
        // A second attach to a single-queue device that is in use is refused by the kernel (EBUSY).
        var ex = Assert.Throws<PlatformException>(() => ns.RunInNamespace(() => TunDevice.Create("tundup0")));
        Assert.Contains("TUNSETIFF", ex.Message);
        Assert.NotEqual(0, ex.Errno);
        Assert.Throws<InvalidOperationException>(() => tun.OpenQueue());
    }

    [RequiresFact(Requirement.Root, Requirement.Tun)]
    public void MultiQueue_OpenQueue_SharesTheDevice_AndDeviceLivesUntilLastQueueCloses()
    {
        Requirements.RequireOrFail(Requirement.Root, Requirement.Tun);
        using var ns = new NetNs();
        var q0 = ns.RunInNamespace(() => TunDevice.Create("tunmq%d", multiQueue: true));
        TunDevice? q1 = null;
        try
        {
            Assert.Equal("tunmq0", q0.Name);
            Assert.True(q0.IsMultiQueue);
            q1 = q0.OpenQueue();
            Assert.Equal(q0.Name, q1.Name);
            Assert.Equal(q0.Index, q1.Index);
            // The queue was opened from this (host-namespace) thread; it must still attach inside
            // the test namespace and not create a twin device in the host namespace.
            Assert.False(Directory.Exists("/sys/class/net/tunmq0"), "OpenQueue created a device in the host namespace");
            Assert.Equal(0, ns.Exec("ip", "link", "show", "tunmq0").ExitCode);
            q0.Dispose();
            // One queue still open: the interface must still exist and be configurable.
            Assert.Equal(0, ns.Exec("ip", "link", "show", "tunmq0").ExitCode);
            q1.SetMtu(1300);
            Assert.Equal(1300, q1.Mtu);
            q1.Dispose();
            Assert.NotEqual(0, ns.Exec("ip", "link", "show", "tunmq0").ExitCode);
        }
        finally
        {
            q1?.Dispose();
            q0.Dispose();
        }
    }

    [RequiresFact(Requirement.Root, Requirement.Tun)]
    public async Task ReadAsync_ReturnsPacket_AndHonoursCancellation()
    {
        Requirements.RequireOrFail(Requirement.Root, Requirement.Tun);
        using var ns = new NetNs();
        using var tun = CreateConfiguredTun(ns, "tunasync0");
        // Drain whatever housekeeping traffic is already queued (bounded).
        byte[] buf = new byte[2000];
        using (var drain = new CancellationTokenSource(TimeSpan.FromMilliseconds(300)))
        {
            try
            {
                for (int i = 0; i < 100; i++)
                    await tun.ReadAsync(buf, drain.Token);
            }
            catch (OperationCanceledException)
            {
            }
        }

        using var cts = new CancellationTokenSource(TimeSpan.FromMilliseconds(300));
        var sw = Stopwatch.StartNew();
        // Nothing should be sent to the TUN now unless IPv6 housekeeping fires; accept a packet
        // only if it is not ours, and require the loop to end by cancellation.
        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () =>
        {
            for (int i = 0; i < 100; i++)
                await tun.ReadAsync(buf, cts.Token);
        });
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(2), $"cancellation took {sw.Elapsed}");

        var ping = ns.Start("ping", "-n", "-c", "3", "-i", "0.2", PeerAddr.ToString());
        using var cts2 = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        bool seen = false;
        for (int i = 0; i < 100 && !seen; i++)
        {
            int n = await tun.ReadAsync(buf, cts2.Token);
            seen = IcmpPackets.IsIpv4EchoRequest(buf.AsSpan(0, n), PeerAddr);
        }
        Assert.True(seen);
        ping.Dispose();
    }

    [RequiresFact(Requirement.Root, Requirement.Tun)]
    public async Task ConcurrentReadAndWrite_KernelAnswersInjectedEchoRequests()
    {
        Requirements.RequireOrFail(Requirement.Root, Requirement.Tun);
        using var ns = new NetNs();
        using var tun = CreateConfiguredTun(ns, "tunrw0");
        const int count = 50;
        const ushort id = 0x4242;
        // Reader thread: collect the kernel's echo replies to our injected requests.
        var reader = Task.Factory.StartNew(() =>
        {
            var seqs = new HashSet<int>();
            byte[] buf = new byte[2000];
            var sw = Stopwatch.StartNew();
            while (seqs.Count < count && sw.Elapsed < TimeSpan.FromSeconds(10))
            {
                int n = tun.Read(buf);
                var p = buf.AsSpan(0, n);
                if (n >= 28 && (p[0] >> 4) == 4 && p[9] == 1 && p[20] == 0
                    && System.Buffers.Binary.BinaryPrimitives.ReadUInt16BigEndian(p.Slice(24)) == id
                    && p.Slice(16, 4).SequenceEqual(PeerAddr.GetAddressBytes()))
                {
                    int seq = System.Buffers.Binary.BinaryPrimitives.ReadUInt16BigEndian(p.Slice(26));
                    Assert.Equal((byte)(seq + 5), p[28 + 5]); // payload echoed back unchanged
                    seqs.Add(seq);
                }
            }
            return seqs.Count;
        }, TaskCreationOptions.LongRunning);
        // Writer thread (concurrently): inject requests from the "peer" 10.99.0.2 to 10.99.0.1.
        var writer = Task.Factory.StartNew(() =>
        {
            for (ushort seq = 1; seq <= count; seq++)
            {
                byte[] req = IcmpPackets.MakeEchoRequest(PeerAddr, TunAddr, id, seq);
                Assert.Equal(req.Length, tun.Write(req));
            }
        }, TaskCreationOptions.LongRunning);
        await writer.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal(count, await reader.WaitAsync(TimeSpan.FromSeconds(15)));
    }
}
