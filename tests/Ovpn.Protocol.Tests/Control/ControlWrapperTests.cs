// SPDX-License-Identifier: MIT
using System.Buffers.Binary;
using System.Security.Cryptography;
using Ovpn.Protocol.Control;
using Ovpn.Protocol.Wire;

namespace Ovpn.Protocol.Tests.Control;

public class ControlWrapperTests
{
    private static readonly StaticKey Key = StaticKey.Generate();

    private static ControlPacket Sample(uint msgId = 3) => new()
    {
        Opcode = Opcode.ControlV1,
        KeyId = 1,
        SessionId = 0x0102030405060708,
        Acks = [1, 2],
        PeerSessionId = 0x1112131415161718,
        MessageId = msgId,
        Payload = new byte[] { 0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5 },
    };

    public static TheoryData<string> Pairs => new() { "none", "crypt", "auth-sha1", "auth-sha256-dir", "auth-sha512-bidir", "auth-sha384" };

    private static (ControlWrapper Client, ControlWrapper Server) MakePair(string kind) => kind switch
    {
        "none" => (ControlWrapper.CreateNone(), ControlWrapper.CreateNone()),
        "crypt" => (ControlWrapper.CreateTlsCrypt(Key, false), ControlWrapper.CreateTlsCrypt(Key, true)),
        "auth-sha1" => (ControlWrapper.CreateTlsAuth(Key, 1, HashAlgorithmName.SHA1), ControlWrapper.CreateTlsAuth(Key, 0, HashAlgorithmName.SHA1)),
        "auth-sha256-dir" => (ControlWrapper.CreateTlsAuth(Key, 1, HashAlgorithmName.SHA256), ControlWrapper.CreateTlsAuth(Key, 0, HashAlgorithmName.SHA256)),
        "auth-sha384" => (ControlWrapper.CreateTlsAuth(Key, 1, HashAlgorithmName.SHA384), ControlWrapper.CreateTlsAuth(Key, 0, HashAlgorithmName.SHA384)),
        _ => (ControlWrapper.CreateTlsAuth(Key, null, HashAlgorithmName.SHA512), ControlWrapper.CreateTlsAuth(Key, null, HashAlgorithmName.SHA512)),
    };

    [Theory]
    [MemberData(nameof(Pairs))]
    public void RoundTripsBothDirections(string kind)
    {
        var (c, s) = MakePair(kind);
        foreach (var (from, to) in new[] { (c, s), (s, c) })
        {
            var p = Sample();
            byte[] wire = from.Wrap(p, 1000);
            Assert.Equal(ControlPacketCodec.GetEncodedLength(p) + from.Overhead, wire.Length);
            Assert.True(to.TryUnwrap(wire, true, out var d, out var reason), reason.ToString());
            Assert.Equal(p.Opcode, d!.Opcode);
            Assert.Equal(p.KeyId, d.KeyId);
            Assert.Equal(p.SessionId, d.SessionId);
            Assert.Equal(p.Acks, d.Acks);
            Assert.Equal(p.PeerSessionId, d.PeerSessionId);
            Assert.Equal(p.MessageId, d.MessageId);
            Assert.Equal(p.Payload.ToArray(), d.Payload.ToArray());
        }
    }

    [Fact]
    public void TlsCryptEncryptsAndLayoutMatchesSpec()
    {
        var (c, _) = MakePair("crypt");
        var p = Sample();
        byte[] wire = c.Wrap(p, 0x11223344);
        Assert.Equal(OpcodeByte.Compose(Opcode.ControlV1, 1), wire[0]);
        Assert.Equal(0x0102030405060708UL, BinaryPrimitives.ReadUInt64BigEndian(wire.AsSpan(1)));
        Assert.Equal(1u, BinaryPrimitives.ReadUInt32BigEndian(wire.AsSpan(9)));
        Assert.Equal(0x11223344u, BinaryPrimitives.ReadUInt32BigEndian(wire.AsSpan(13)));
        // The TLS payload must not appear in clear.
        Assert.True(wire.AsSpan(49).IndexOf(new byte[] { 0x16, 0x03, 0x01, 0x00, 0x05 }) < 0);
        // A wrapper in the same role cannot read it (keys are directional).
        Assert.False(ControlWrapper.CreateTlsCrypt(Key, false).TryUnwrap(wire, false, out _, out var r));
        Assert.Equal(ControlDropReason.BadHmac, r);
    }

    [Theory]
    [MemberData(nameof(Pairs))]
    public void ReplayIdCountsFromOneAndTimestampIsFixed(string kind)
    {
        var (c, _) = MakePair(kind);
        if (c.Mode == ControlWrapMode.None)
        {
            Assert.False(c.TryPeekReplayId(c.Wrap(Sample(), 5), out _, out _));
            return;
        }

        for (uint i = 1; i <= 5; i++)
        {
            byte[] w = c.Wrap(Sample(), 5000 + i * 7); // time moves, but the wire timestamp must not
            Assert.True(c.TryPeekReplayId(w, out uint id, out uint t));
            Assert.Equal(i, id);
            Assert.Equal(5007u, t);
        }
    }

    [Fact]
    public void RetransmissionIsRewrappedWithFreshIdAndAccepted()
    {
        var (c, s) = MakePair("crypt");
        var p = Sample();
        byte[] w1 = c.Wrap(p, 100), w2 = c.Wrap(p, 100);
        Assert.NotEqual(w1, w2);
        Assert.True(s.TryUnwrap(w2, true, out _, out _));
        Assert.True(s.TryUnwrap(w1, true, out _, out _)); // older but inside the window
        Assert.False(s.TryUnwrap(w1, true, out _, out var r));
        Assert.Equal(ControlDropReason.Replay, r);
    }

    [Fact]
    public void ReplayWindowRules()
    {
        var w = new ControlReplayWindow();
        Assert.False(w.Check(0, 10));
        Assert.True(w.CheckAndUpdate(5, 10));
        Assert.False(w.CheckAndUpdate(5, 10));
        Assert.True(w.CheckAndUpdate(3, 10));      // unseen, inside window
        Assert.True(w.CheckAndUpdate(100, 10));
        Assert.True(w.CheckAndUpdate(37, 10));     // 100-37 = 63 < 64
        Assert.False(w.Check(36, 10));             // 64 behind: outside window
        Assert.False(w.Check(101, 9));             // older timestamp
        Assert.True(w.CheckAndUpdate(1, 11));      // newer timestamp restarts
        Assert.False(w.Check(100, 10));
        Assert.True(w.Check(2, 11));
        Assert.False(w.Check(1, 11));
        Assert.True(w.CheckAndUpdate(1000, 11));   // big jump clears the bitmap
        Assert.True(w.Check(999, 11));
        Assert.False(w.Check(1000, 11));
    }

    [Fact]
    public void IndependentTlsAuthHmacIsAcceptedAndReplayIdZeroIsRejected()
    {
        // Build a tls-auth (bidirectional, SHA256) packet by hand from the spec, not via Wrap.
        var s = ControlWrapper.CreateTlsAuth(Key, null, HashAlgorithmName.SHA256);
        byte[] hmacKey = Key.Bytes.Slice(64, 32).ToArray();
        byte[] Build(uint replayId)
        {
            byte[] head = Convert.FromHexString("380102030405060708");
            byte[] pid = new byte[8];
            BinaryPrimitives.WriteUInt32BigEndian(pid, replayId);
            BinaryPrimitives.WriteUInt32BigEndian(pid.AsSpan(4), 777);
            byte[] body = Convert.FromHexString("0000000000");
            byte[] mac = HMACSHA256.HashData(hmacKey, (byte[])[.. pid, .. head, .. body]);
            return [.. head, .. mac, .. pid, .. body];
        }

        Assert.True(s.TryUnwrap(Build(1), false, out var p, out _));
        Assert.Equal(Opcode.ControlHardResetClientV2, p!.Opcode);
        Assert.False(s.TryUnwrap(Build(0), false, out _, out var r0));
        Assert.Equal(ControlDropReason.Replay, r0);
        Assert.False(s.TryUnwrap(Build(0), true, out _, out r0));
        Assert.Equal(ControlDropReason.Replay, r0);
    }

    [Theory]
    [MemberData(nameof(Pairs))]
    public void TruncatedOrGarbageInputIsRejectedWithoutException(string kind)
    {
        var (c, s) = MakePair(kind);
        byte[] wire = c.Wrap(Sample(), 1);
        for (int len = 0; len < wire.Length; len++)
        {
            bool ok = s.TryUnwrap(wire.AsSpan(0, len), false, out var p, out var reason);
            if (kind == "none" && len >= 10)
            {
                continue; // plain packets can legitimately be shorter (payload truncated)
            }

            Assert.False(ok, $"len {len}");
            Assert.Null(p);
            Assert.NotEqual(ControlDropReason.None, reason);
        }

        var rng = new Random(3);
        for (int i = 0; i < 3000; i++)
        {
            var b = new byte[rng.Next(0, 120)];
            rng.NextBytes(b);
            _ = s.TryUnwrap(b, true, out _, out _);
        }
    }

    [Fact]
    public void DataOpcodeIsUnknownOpcode()
    {
        var (_, s) = MakePair("crypt");
        Assert.False(s.TryUnwrap(new byte[] { 0x48, 0, 0, 1, 1, 2, 3, 4, 5, 6, 7, 8 }, false, out _, out var r));
        Assert.Equal(ControlDropReason.UnknownOpcode, r);
    }

    [Fact]
    public void UnsupportedDigestThrowsNotSupported() =>
        Assert.Throws<NotSupportedException>(() => ControlWrapper.CreateTlsAuth(Key, 0, HashAlgorithmName.MD5));

    [Fact]
    public void AesCtrIncrementsWhole128BitCounter()
    {
        using var aes = Aes.Create();
        aes.Key = RandomNumberGenerator.GetBytes(32);
        byte[] iv = Convert.FromHexString("00000000000000fffffffffffffffffe");
        var data = new byte[40];
        var ks = new byte[40];
        ControlWrapper.AesCtrTransform(aes, iv, data, ks);

        byte[][] expectedCounters =
        [
            Convert.FromHexString("00000000000000fffffffffffffffffe"),
            Convert.FromHexString("00000000000000ffffffffffffffffff"),
            Convert.FromHexString("00000000000001000000000000000000"),
        ];
        for (int b = 0; b < 3; b++)
        {
            byte[] block = aes.EncryptEcb(expectedCounters[b], PaddingMode.None);
            int n = Math.Min(16, 40 - b * 16);
            Assert.Equal(block.AsSpan(0, n).ToArray(), ks.AsSpan(b * 16, n).ToArray());
        }

        // Applying the same keystream again restores the plaintext.
        ControlWrapper.AesCtrTransform(aes, iv, ks, ks);
        Assert.All(ks, x => Assert.Equal(0, x));
    }
}
