// SPDX-License-Identifier: MIT
using System.Net;
using Ovpn.ControlPlane.Sessions;
using Ovpn.DataPlane;
using Ovpn.Protocol.Keys;

namespace Ovpn.ControlPlane.Tests.Sessions;

public sealed class DataPathTests
{
    [Fact]
    public void PoolGivesServerFirstHostAndClientsTheRest()
    {
        var p = new IpPool(IPAddress.Parse("172.27.224.0"), 20);
        Assert.Equal("172.27.224.1", p.ServerAddress.ToString());
        Assert.Equal("255.255.240.0", p.Netmask.ToString());
        Assert.Equal(4096 - 3, p.Capacity);
        Assert.Equal("172.27.224.2", p.Allocate()!.ToString());
        var b = p.Allocate()!;
        Assert.Equal("172.27.224.3", b.ToString());
        p.Release(IPAddress.Parse("172.27.224.2"));
        Assert.Equal("172.27.224.2", p.Allocate()!.ToString());
        Assert.Equal(2, p.InUse);
    }

    [Fact]
    public void SmallPoolIsExhaustedNotOverflowed()
    {
        var p = new IpPool(IPAddress.Parse("10.0.0.0"), 30);
        Assert.Equal(1, p.Capacity);
        Assert.NotNull(p.Allocate());
        Assert.Null(p.Allocate());
    }

    [Theory]
    [InlineData(1, 20, new[] { "172.27.224.0/20" })]
    [InlineData(2, 21, new[] { "172.27.224.0/21", "172.27.232.0/21" })]
    [InlineData(3, 22, new[] { "172.27.224.0/22", "172.27.228.0/22", "172.27.232.0/22" })]
    public void SplitGivesEachDaemonItsOwnSubnet(int count, int prefix, string[] expected)
    {
        var slices = IpPool.Split(IPAddress.Parse("172.27.224.0"), 20, count);
        Assert.Equal(expected, slices.Select(s => $"{s.Network}/{s.PrefixLength}").ToArray());
        Assert.All(slices, s => Assert.Equal(prefix, s.PrefixLength));
    }

    [Fact]
    public void SplitRefusesSlicesSmallerThanSlash30()
    {
        Assert.Throws<ArgumentException>(() => IpPool.Split(IPAddress.Parse("10.0.0.0"), 29, 4));
    }

    [Fact]
    public void PeerIdsAreReusedLowestFirst()
    {
        var ids = new IdAllocator(max: 3);
        Assert.Equal(0u, ids.Allocate());
        Assert.Equal(1u, ids.Allocate());
        Assert.Equal(2u, ids.Allocate());
        ids.Release(1);
        Assert.Equal(1u, ids.Allocate());
        Assert.Equal(3u, ids.Allocate());
        Assert.Null(ids.Allocate());
    }

    [Theory]
    [InlineData(true, CompressionStub.None, DataCipher.Aes256Gcm, null)]
    [InlineData(false, CompressionStub.None, DataCipher.Aes256Gcm, "DATA_V2")]
    [InlineData(true, CompressionStub.LzoNo, DataCipher.Aes128Gcm, "compression")]
    [InlineData(true, CompressionStub.None, DataCipher.Aes256Cbc, "not AEAD")]
    public void OffloadBlockerNamesTheReason(bool v2, CompressionStub stub, DataCipher c, string? expected)
    {
        var n = new PeerNeeds(v2, stub, c, Tcp: false);
        if (expected is null)
        {
            Assert.Null(n.OffloadBlocker);
        }
        else
        {
            Assert.Contains(expected, n.OffloadBlocker);
        }
    }

    [Fact]
    public void DaemonSelectorSpreadsByTransportAndLoad()
    {
        var u0 = Path("udp#0", "10.0.0.0");
        var u1 = Path("udp#1", "10.0.1.0");
        var t0 = Path("tcp#0", "10.0.2.0");
        var sel = new DaemonSelector([u0, u1], [t0]);
        var udp = new PeerNeeds(true, CompressionStub.None, DataCipher.Aes256Gcm, Tcp: false);
        var tcp = udp with { Tcp = true };
        var first = sel.Select(udp, out _)!;
        Assert.Same(u0, first);
        first.Attach();
        Assert.Same(u1, sel.Select(udp, out _));
        Assert.Same(t0, sel.Select(tcp, out var why));
        Assert.Contains("ovpndco=false", why);
    }

    [Fact]
    public void OffloadSelectorKeepsAeadPeersOffloadedAndSendsOthersToTheDaemon()
    {
        var off = Path("offload", "10.0.0.0");
        var daemon = Path("daemon", "10.0.1.0");
        var sel = new OffloadSelector(off, daemon);
        Assert.Same(off, sel.Select(new PeerNeeds(true, CompressionStub.None, DataCipher.ChaCha20Poly1305, false), out var r1));
        Assert.Null(r1);
        Assert.Same(daemon, sel.Select(new PeerNeeds(true, CompressionStub.StubV2, DataCipher.Aes256Gcm, false), out var r2));
        Assert.Contains("not offloaded: client uses compression framing", r2);
        Assert.Null(new OffloadSelector(off, null).Select(new PeerNeeds(false, CompressionStub.None, DataCipher.Aes256Gcm, false), out var r3));
        Assert.Contains("DATA_V2", r3);
    }

    private static DataPath Path(string name, string net) =>
        new(name, new NullPlane(), new IpPool(IPAddress.Parse(net), 24), isOffload: name == "offload", "tun");

    /// <summary>A data plane that is never used for packets in these selection tests.</summary>
    private sealed class NullPlane : IDataPlane
    {
        public string EngineName => "none";

        public string EngineVersion => "0";

        public IReadOnlyDictionary<string, long> GlobalDrops => new Dictionary<string, long>();

        public void NewPeer(PeerConfig peer) => throw new NotSupportedException("selection test only");

        public void SetPeer(uint peerId, TimeSpan keepaliveInterval, TimeSpan keepaliveTimeout) => throw new NotSupportedException("selection test only");

        public PeerStats? GetPeer(uint peerId) => null;

        public IReadOnlyList<PeerStats> GetPeers() => [];

        public void DeletePeer(uint peerId) => throw new NotSupportedException("selection test only");

        public void NewKey(KeyConfig key) => throw new NotSupportedException("selection test only");

        public void SwapKeys(uint peerId) => throw new NotSupportedException("selection test only");

        public void DeleteKey(uint peerId, KeySlot slot) => throw new NotSupportedException("selection test only");

        public void Dispose()
        {
        }
    }
}
