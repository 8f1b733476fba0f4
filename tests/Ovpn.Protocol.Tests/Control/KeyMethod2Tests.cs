// SPDX-License-Identifier: MIT
using Ovpn.Protocol.Control;

namespace Ovpn.Protocol.Tests.Control;

public class KeyMethod2Tests
{
    [Fact]
    public void ClientMessageLayout()
    {
        var m = KeyMethod2Message.CreateRandom(isClient: true);
        m.Options = "V4,dev-type tun";
        m.Username = "alice";
        m.PeerInfo = "IV_VER=2.6.14\nIV_PROTO=990\n";
        byte[] b = m.Encode(isClient: true);

        Assert.Equal([0, 0, 0, 0, 2], b[..5]);
        Assert.Equal(m.PreMaster, b[5..53]);
        Assert.Equal(m.Random1, b[53..85]);
        Assert.Equal(m.Random2, b[85..117]);
        int o = 117;
        Assert.Equal(new byte[] { 0, 16 }, b[o..(o + 2)]); // 15 chars + NUL
        Assert.Equal("V4,dev-type tun"u8.ToArray(), b[(o + 2)..(o + 17)]);
        Assert.Equal(0, b[o + 17]);
        o += 18;
        Assert.Equal(new byte[] { 0, 6 }, b[o..(o + 2)]);
        o += 8;
        Assert.Equal(new byte[] { 0, 0 }, b[o..(o + 2)]); // no password
        o += 2;
        Assert.Equal(2 + m.PeerInfo.Length + 1, b.Length - o);

        Assert.True(KeyMethod2Message.TryDecode(b, fromClient: true, out var d, out var err), err);
        Assert.Equal(m.PreMaster, d!.PreMaster);
        Assert.Equal(m.Random1, d.Random1);
        Assert.Equal(m.Random2, d.Random2);
        Assert.Equal(m.Options, d.Options);
        Assert.Equal("alice", d.Username);
        Assert.Null(d.Password);
        Assert.Equal(m.PeerInfo, d.PeerInfo);
    }

    [Fact]
    public void ServerMessageHasNoPreMasterAndEmptyStrings()
    {
        var m = KeyMethod2Message.CreateRandom(isClient: false);
        Assert.Null(m.PreMaster);
        m.Options = "V4,dev-type tun,cipher AES-256-GCM";
        byte[] b = m.Encode(isClient: false);
        Assert.Equal(4 + 1 + 64 + 2 + m.Options.Length + 1 + 6, b.Length);
        Assert.Equal(new byte[6], b[^6..]);
        Assert.True(KeyMethod2Message.TryDecode(b, fromClient: false, out var d, out _));
        Assert.Null(d!.PreMaster);
        Assert.Equal(m.Options, d.Options);
        Assert.Null(d.Username);
        Assert.Null(d.PeerInfo);
        // Decoding the server message as if from a client must not succeed with the same content.
        Assert.True(KeyMethod2Message.TryDecode(b, fromClient: true, out var wrong, out _) is false || wrong!.Options != m.Options);
    }

    [Fact]
    public void TrailingFieldsMayBeOmitted()
    {
        var m = KeyMethod2Message.CreateRandom(true);
        m.Options = "V4";
        byte[] full = m.Encode(true);
        byte[] cut = full[..^6]; // drop username/password/peer-info
        Assert.True(KeyMethod2Message.TryDecode(cut, true, out var d, out _));
        Assert.Equal("V4", d!.Options);
        Assert.Null(d.Username);
    }

    [Fact]
    public void RejectsBadMessages()
    {
        var m = KeyMethod2Message.CreateRandom(true);
        m.Options = "V4";
        byte[] b = m.Encode(true);

        byte[] km1 = (byte[])b.Clone();
        km1[4] = 1;
        Assert.False(KeyMethod2Message.TryDecode(km1, true, out _, out var e1));
        Assert.Contains("key method", e1);

        Assert.False(KeyMethod2Message.TryDecode(b.AsSpan(0, 100), true, out _, out _));
        Assert.False(KeyMethod2Message.TryDecode(b.AsSpan(0, 118), true, out _, out _)); // half a length

        byte[] longOpts = (byte[])b.Clone();
        longOpts[117] = 0x02;
        longOpts[118] = 0x01; // 513 > 512
        Assert.False(KeyMethod2Message.TryDecode(longOpts, true, out _, out var e2));
        Assert.Contains("exceeds", e2);

        byte[] overrun = (byte[])b.Clone();
        overrun[118] = 200; // claims more than available
        Assert.False(KeyMethod2Message.TryDecode(overrun, true, out _, out _));

        var big = KeyMethod2Message.CreateRandom(false);
        big.Options = new string('x', 512);
        Assert.Throws<InvalidOperationException>(() => big.Encode(false));
        big.Options = new string('x', 511);
        Assert.True(KeyMethod2Message.TryDecode(big.Encode(false), false, out var ok, out _));
        Assert.Equal(511, ok!.Options.Length);

        Assert.Throws<InvalidOperationException>(() => new KeyMethod2Message().Encode(isClient: true)); // no pre-master
    }

    [Fact]
    public void DecodeNeverThrowsOnGarbage()
    {
        var rng = new Random(5);
        for (int i = 0; i < 5000; i++)
        {
            var b = new byte[rng.Next(0, 400)];
            rng.NextBytes(b);
            if (b.Length > 4)
            {
                b[4] = 2;
            }

            _ = KeyMethod2Message.TryDecode(b, rng.Next(2) == 0, out _, out _);
        }
    }
}
