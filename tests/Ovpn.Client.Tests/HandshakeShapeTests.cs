// SPDX-License-Identifier: MIT
using System.Collections.Concurrent;
using System.Net;
using Ovpn.ControlPlane.Client;
using Ovpn.DataPlane;
using Ovpn.Protocol.Control;
using Ovpn.Protocol.Reliability;
using Ovpn.Protocol.Wire;

namespace Ovpn.Client.Tests;

/// <summary>
/// The client's first packets, checked in memory against a hand-driven server side: the 2.6 UDP
/// server's HMAC cookie (protocol notes 5.2) needs the first client packet after the server reset
/// to ACK it with the server's sid, and we want that ACK on the ClientHello (msg-id 1).
/// </summary>
public sealed class HandshakeShapeTests
{
    private sealed class CaptureLink : ILinkTransport
    {
        public readonly BlockingCollection<byte[]> Sent = new();

        public void Send(ReadOnlySpan<byte> packet) => Sent.Add(packet.ToArray());

        public string Describe() => "udp:test";

        public bool IsTcp => false;

        public EndPoint Remote { get; } = new IPEndPoint(IPAddress.Loopback, 1194);

        public void Close()
        {
        }
    }

    private sealed class NoDataPath : IClientDataPath
    {
        public void Establish(PushedConfig config, KeyConfig firstKey) => throw new InvalidOperationException("not in this test");

        public void InstallSecondary(KeyConfig key) => throw new InvalidOperationException("not in this test");

        public void SwapKeys() => throw new InvalidOperationException("not in this test");
    }

    [Fact]
    public void ClientHelloCarriesTheAckOfTheServerReset()
    {
        var key = StaticKey.Generate();
        var profile = ClientProfile.Parse(
            $"client\ndev tun\nremote 127.0.0.1\nauth-user-pass\n<ca>\n{Certs.CaPem.Trim()}\n</ca>\n<tls-crypt>\n{key.ToPem()}\n</tls-crypt>\n", "/");
        profile.Username = "u";
        profile.Password = "p";
        Assert.Empty(profile.Errors);
        var link = new CaptureLink();
        var conn = new ClientConnection(profile, profile.Remotes[0], link, new NoDataPath());
        var server = ControlWrapper.CreateTlsCrypt(key, isServer: true);
        conn.Start();

        Assert.True(link.Sent.TryTake(out var first, TimeSpan.FromSeconds(5)));
        Assert.True(server.TryUnwrap(first, checkReplay: true, out var reset, out var why), why.ToString());
        Assert.Equal(Opcode.ControlHardResetClientV2, reset!.Opcode);
        Assert.Equal(0u, reset.MessageId);
        Assert.Equal(conn.OwnSessionId, reset.SessionId);

        // The server answers statelessly: its reset ACKs msg-id 0.
        const ulong serverSid = 0x1122334455667788;
        var rel = new ReliableLayer(serverSid, 0);
        Assert.True(rel.OnReceived(reset, 0));
        rel.Queue(Opcode.ControlHardResetServerV2, ReadOnlyMemory<byte>.Empty);
        Assert.True(rel.TryGetPacketToSend(0, out var srvReset));
        Assert.Single(srvReset!.Acks);
        conn.PostPacket(server.Wrap(srvReset, (uint)DateTimeOffset.UtcNow.ToUnixTimeSeconds()));

        // Next client packet (skipping any retransmission of its reset).
        ControlPacket? next = null;
        var deadline = DateTime.UtcNow.AddSeconds(5);
        while (DateTime.UtcNow < deadline && link.Sent.TryTake(out var w, TimeSpan.FromSeconds(1)))
        {
            Assert.True(server.TryUnwrap(w, checkReplay: true, out var p, out why), why.ToString());
            if (p!.Opcode != Opcode.ControlHardResetClientV2)
            {
                next = p;
                break;
            }
        }

        conn.PostStop(ClientExitKind.Stopped, "test done");
        Assert.NotNull(next);
        Assert.Equal(Opcode.ControlV1, next!.Opcode);
        Assert.Equal(1u, next.MessageId);
        Assert.Equal([0u], next.Acks);
        Assert.Equal(serverSid, next.PeerSessionId);
        Assert.True(next.Payload.Length > 5 && next.Payload.Span[0] == 0x16, "payload is a TLS handshake record (ClientHello)");
    }
}
