// SPDX-License-Identifier: MIT
using System.Security.Cryptography;
using Ovpn.Protocol.Control;
using Ovpn.Protocol.Wire;

namespace Ovpn.Protocol.Tests.Control;

/// <summary>Server-side unwrap of HARD_RESET_CLIENT_V2 packets captured from openvpn 2.6.</summary>
public class OpenVpnKnownAnswerTests
{
    private static StaticKey Key => StaticKey.Parse(OpenVpnCaptures.StaticKeyText);

    public static TheoryData<string> Modes => new() { "crypt", "auth256", "auth1", "auth512" };

    private static (Func<ControlWrapper> Server, string[] Packets, int ExpectedLength) Setup(string mode) => mode switch
    {
        "crypt" => (() => ControlWrapper.CreateTlsCrypt(Key, isServer: true), OpenVpnCaptures.TlsCrypt, 54),
        "auth256" => (() => ControlWrapper.CreateTlsAuth(Key, 0, HashAlgorithmName.SHA256), OpenVpnCaptures.TlsAuthSha256Dir1, 54),
        "auth1" => (() => ControlWrapper.CreateTlsAuth(Key, 0, HashAlgorithmName.SHA1), OpenVpnCaptures.TlsAuthSha1Dir1, 42),
        "auth512" => (() => ControlWrapper.CreateTlsAuth(Key, null, HashAlgorithmName.SHA512), OpenVpnCaptures.TlsAuthSha512NoDir, 86),
        _ => throw new ArgumentException(mode),
    };

    [Theory]
    [MemberData(nameof(Modes))]
    public void ServerUnwrapsCapturedClientResets(string mode)
    {
        var (create, packets, len) = Setup(mode);
        var server = create();
        ulong? sid = null;
        uint? firstTime = null;
        for (int i = 0; i < packets.Length; i++)
        {
            byte[] wire = Convert.FromHexString(packets[i]);
            Assert.Equal(len, wire.Length);
            Assert.True(server.TryUnwrap(wire, checkReplay: true, out var p, out var reason), $"packet {i}: {reason}");
            Assert.Equal(ControlDropReason.None, reason);
            Assert.NotNull(p);
            Assert.Equal(Opcode.ControlHardResetClientV2, p.Opcode);
            Assert.Equal(0, p.KeyId);
            Assert.Equal(0u, p.MessageId);
            Assert.Empty(p.Acks);
            Assert.True(p.Payload.IsEmpty);
            Assert.NotEqual(0UL, p.SessionId);
            sid ??= p.SessionId;
            Assert.Equal(sid, p.SessionId);

            Assert.True(server.TryPeekReplayId(wire, out uint id, out uint time));
            Assert.Equal((uint)(i + 1), id);
            firstTime ??= time;
            Assert.Equal(firstTime, time);
        }

        // Same packets again are replays now.
        foreach (string hex in packets)
        {
            Assert.False(server.TryUnwrap(Convert.FromHexString(hex), true, out var p, out var reason));
            Assert.Null(p);
            Assert.Equal(ControlDropReason.Replay, reason);
        }
    }

    [Theory]
    [MemberData(nameof(Modes))]
    public void PreCheckWithoutReplayDoesNotChangeState(string mode)
    {
        var (create, packets, _) = Setup(mode);
        var server = create();
        byte[] wire = Convert.FromHexString(packets[0]);
        for (int i = 0; i < 3; i++)
        {
            Assert.True(server.TryUnwrap(wire, checkReplay: false, out _, out _));
        }

        // The replay window is still empty, so the real check accepts it once.
        Assert.True(server.TryUnwrap(wire, checkReplay: true, out _, out _));
        Assert.False(server.TryUnwrap(wire, checkReplay: true, out _, out var reason));
        Assert.Equal(ControlDropReason.Replay, reason);
    }

    [Theory]
    [MemberData(nameof(Modes))]
    public void EveryFlippedByteIsRejected(string mode)
    {
        var (create, packets, _) = Setup(mode);
        byte[] orig = Convert.FromHexString(packets[1]);
        for (int pos = 0; pos < orig.Length; pos++)
        {
            byte[] wire = (byte[])orig.Clone();
            wire[pos] ^= 0x01;
            var server = create();
            Assert.False(server.TryUnwrap(wire, checkReplay: false, out var p, out var reason), $"flip at {pos} accepted");
            Assert.Null(p);
            // Flipping the opcode byte 0x38 -> 0x39 only changes key_id, so it is an HMAC failure too.
            Assert.Equal(ControlDropReason.BadHmac, reason);
        }
    }

    [Fact]
    public void WrongRoleOrDirectionOrDigestIsRejected()
    {
        byte[] crypt = Convert.FromHexString(OpenVpnCaptures.TlsCrypt[0]);
        Assert.False(ControlWrapper.CreateTlsCrypt(Key, isServer: false).TryUnwrap(crypt, false, out _, out var r1));
        Assert.Equal(ControlDropReason.BadHmac, r1);

        byte[] auth = Convert.FromHexString(OpenVpnCaptures.TlsAuthSha256Dir1[0]);
        Assert.False(ControlWrapper.CreateTlsAuth(Key, 1, HashAlgorithmName.SHA256).TryUnwrap(auth, false, out _, out var r2));
        Assert.Equal(ControlDropReason.BadHmac, r2);
        Assert.False(ControlWrapper.CreateTlsAuth(Key, null, HashAlgorithmName.SHA256).TryUnwrap(auth, false, out _, out _));
        Assert.False(ControlWrapper.CreateTlsAuth(Key, 0, HashAlgorithmName.SHA1).TryUnwrap(auth, false, out _, out _));
    }

    [Theory]
    [MemberData(nameof(Modes))]
    public void OurClientWrapReproducesTheCapturedBytes(string mode)
    {
        // Decode the captured packet, re-wrap it with a client-side wrapper and the same timestamp:
        // the first packet (replay-id 1) must come out byte-identical to what openvpn sent.
        var (create, packets, _) = Setup(mode);
        byte[] wire = Convert.FromHexString(packets[0]);
        Assert.True(create().TryUnwrap(wire, false, out var p, out _));
        var client = mode switch
        {
            "crypt" => ControlWrapper.CreateTlsCrypt(Key, isServer: false),
            "auth256" => ControlWrapper.CreateTlsAuth(Key, 1, HashAlgorithmName.SHA256),
            "auth1" => ControlWrapper.CreateTlsAuth(Key, 1, HashAlgorithmName.SHA1),
            _ => ControlWrapper.CreateTlsAuth(Key, null, HashAlgorithmName.SHA512),
        };
        Assert.True(client.TryPeekReplayId(wire, out _, out uint time));
        Assert.Equal(packets[0], Convert.ToHexStringLower(client.Wrap(p!, time)));
        Assert.Equal(packets[1], Convert.ToHexStringLower(client.Wrap(p!, time + 100)));
    }

    [Theory]
    [InlineData("crypt")]
    [InlineData("auth256")]
    public void ClientUnwrapsServerResetFromOpenVpn(string mode)
    {
        string reply = mode == "crypt" ? OpenVpnCaptures.TlsCryptServerReply : OpenVpnCaptures.TlsAuthSha256Dir0ServerReply;
        string clientReset = mode == "crypt" ? OpenVpnCaptures.TlsCrypt[0] : OpenVpnCaptures.TlsAuthSha256Dir1[0];
        var client = mode == "crypt"
            ? ControlWrapper.CreateTlsCrypt(Key, isServer: false)
            : ControlWrapper.CreateTlsAuth(Key, 1, HashAlgorithmName.SHA256);
        var server = mode == "crypt"
            ? ControlWrapper.CreateTlsCrypt(Key, isServer: true)
            : ControlWrapper.CreateTlsAuth(Key, 0, HashAlgorithmName.SHA256);
        Assert.True(server.TryUnwrap(Convert.FromHexString(clientReset), false, out var reset, out _));

        byte[] wire = Convert.FromHexString(reply);
        Assert.Equal(66, wire.Length);
        Assert.True(client.TryUnwrap(wire, checkReplay: true, out var p, out var reason), reason.ToString());
        Assert.Equal(Opcode.ControlHardResetServerV2, p!.Opcode);
        Assert.Equal(0, p.KeyId);
        Assert.Equal(0u, p.MessageId);
        Assert.Equal([0u], p.Acks);
        Assert.Equal(reset!.SessionId, p.PeerSessionId);
        Assert.NotEqual(0UL, p.SessionId);
        Assert.True(p.Payload.IsEmpty);
        Assert.True(client.TryPeekReplayId(wire, out uint id, out _));
        Assert.Equal(1u, id);

        // The server-role wrapper must not accept its own direction, and re-wrapping with a
        // server-side wrapper at the same timestamp reproduces openvpn's bytes exactly.
        Assert.False(server.TryUnwrap(wire, false, out _, out _));
        var fresh = mode == "crypt"
            ? ControlWrapper.CreateTlsCrypt(Key, isServer: true)
            : ControlWrapper.CreateTlsAuth(Key, 0, HashAlgorithmName.SHA256);
        Assert.True(client.TryPeekReplayId(wire, out _, out uint time));
        Assert.Equal(reply, Convert.ToHexStringLower(fresh.Wrap(p, time)));
    }
}
