// SPDX-License-Identifier: MIT
using System.Collections.Concurrent;
using System.Net;
using System.Security.Cryptography;
using Ovpn.DataPlane;
using Ovpn.DataPlane.Engine;
using Ovpn.Protocol.Data;
using Ovpn.Protocol.Keys;

namespace Ovpn.Client.Tests;

/// <summary>ManagedDataPlane in client (P2P) mode: one peer gets all TUN traffic; any inner source is accepted.</summary>
public sealed class ClientModeDataPlaneTests
{
    private sealed class FakeTun : ITunDevice
    {
        public readonly BlockingCollection<byte[]> ToRead = new();
        public readonly BlockingCollection<byte[]> Written = new();

        public string Name => "faketun";

        public int Read(Span<byte> buffer)
        {
            if (!ToRead.TryTake(out var p, 5000))
            {
                return 0;
            }

            p.CopyTo(buffer);
            return p.Length;
        }

        public void Write(ReadOnlySpan<byte> packet) => Written.Add(packet.ToArray());

        public void Dispose() => ToRead.CompleteAdding();
    }

    private sealed class FakeLink : ILinkTransport
    {
        public readonly BlockingCollection<byte[]> Sent = new();

        public void Send(ReadOnlySpan<byte> packet) => Sent.Add(packet.ToArray());

        public string Describe() => "udp:fake";

        public bool IsTcp => false;

        public EndPoint Remote { get; } = new IPEndPoint(IPAddress.Loopback, 1194);

        public void Close()
        {
        }
    }

    private sealed class NoEvents : IDataPlaneEvents
    {
        public void OnPeerDeleted(uint peerId, PeerDeleteReason reason)
        {
        }

        public void OnKeyRenegotiationDue(uint peerId, int keyId)
        {
        }

        public void OnControlPacket(ILinkTransport link, ReadOnlySpan<byte> packet)
        {
        }

        public void OnPeerFloated(uint peerId, ILinkTransport newLink)
        {
        }
    }

    private static byte[] Ipv4(string src, string dst, int payload)
    {
        var p = new byte[20 + payload];
        p[0] = 0x45;
        p[2] = (byte)(p.Length >> 8);
        p[3] = (byte)p.Length;
        p[8] = 64;
        p[9] = 17;
        IPAddress.Parse(src).GetAddressBytes().CopyTo(p, 12);
        IPAddress.Parse(dst).GetAddressBytes().CopyTo(p, 16);
        RandomNumberGenerator.Fill(p.AsSpan(20));
        return p;
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void ClientModeForwardsEverythingServerModeChecksSources(bool clientMode)
    {
        var key2 = RandomNumberGenerator.GetBytes(256);
        var serverKeys = DataChannelKeys.FromKey2(key2, DataCipher.Aes256Gcm, isServer: true);
        var clientKeys = DataChannelKeys.FromKey2(key2, DataCipher.Aes256Gcm, isServer: false);
        using var serverSeal = new AeadCodec(DataCipher.Aes256Gcm, serverKeys.EncryptKey, serverKeys.EncryptImplicitIv);
        using var serverOpen = new AeadCodec(DataCipher.Aes256Gcm, serverKeys.DecryptKey, serverKeys.DecryptImplicitIv);
        var tun = new FakeTun();
        var link = new FakeLink();
        using var dp = new ManagedDataPlane(tun, new NoEvents()) { ClientMode = clientMode };
        dp.NewPeer(new PeerConfig(5, link, IPAddress.Parse("10.8.0.2"), null));
        dp.NewKey(new KeyConfig(5, KeySlot.Primary, 0, DataCipher.Aes256Gcm,
            new KeyDirection(clientKeys.EncryptKey, clientKeys.EncryptImplicitIv), new KeyDirection(clientKeys.DecryptKey, clientKeys.DecryptImplicitIv)));
        dp.Start();

        // Server -> client: a packet from somewhere on the internet, to the client's VPN address.
        var inbound = Ipv4("192.0.2.55", "10.8.0.2", 100);
        var wire = new byte[256];
        int n = serverSeal.SealDataV2(wire, 0, 5, 1, inbound);
        dp.OnLinkPacket(link, wire.AsSpan(0, n), new byte[4096]);
        if (clientMode)
        {
            Assert.True(tun.Written.TryTake(out var got, 2000));
            Assert.Equal(inbound, got);
        }
        else
        {
            Assert.False(tun.Written.TryTake(out _, 300)); // server mode: source must be the peer's VPN address
        }

        // Client -> server: any destination goes to the single peer in client mode.
        var outbound = Ipv4("10.8.0.2", "198.51.100.7", 60);
        tun.ToRead.Add(outbound);
        if (clientMode)
        {
            Assert.True(link.Sent.TryTake(out var sent, 2000));
            var plain = new byte[256];
            Assert.Equal(DataDropReason.None, serverOpen.Open(sent, plain, out int len, out uint pid));
            Assert.Equal(1u, pid);
            Assert.Equal(outbound, plain.AsSpan(0, len).ToArray());
            Assert.Equal(5u, (uint)(sent[1] << 16 | sent[2] << 8 | sent[3])); // DATA_V2 with our peer-id
        }
        else
        {
            Assert.False(link.Sent.TryTake(out _, 300)); // no route for 198.51.100.7 in server mode
        }
    }
}
