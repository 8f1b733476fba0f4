// SPDX-License-Identifier: MIT
using Ovpn.DataPlane.Offload;

namespace Ovpn.DataPlane.Tests.Offload;

/// <summary>
/// <see cref="InternetChecksum.Sum"/> against a byte-wise RFC 1071 sum that folds after every word
/// (so it cannot overflow), on the lengths the vectorised path handles: whole 32-byte steps, tails,
/// odd bytes, all-0xFF data (largest lane values) and buffers long enough to empty the 32-bit lanes.
/// </summary>
public sealed class InternetChecksumTests
{
    private static ushort Reference(ReadOnlySpan<byte> d, uint initial)
    {
        uint acc = initial;
        for (int i = 0; i < d.Length; i += 2)
        {
            acc += (uint)(d[i] << 8 | (i + 1 < d.Length ? d[i + 1] : 0));
            acc = (acc & 0xFFFF) + (acc >> 16);
        }

        acc = (acc & 0xFFFF) + (acc >> 16);
        return (ushort)acc;
    }

    [Theory]
    [InlineData(0x00)]
    [InlineData(0xFF)]
    [InlineData(0x80)]
    [InlineData(-1)]
    public void Sum_matches_a_folding_reference_at_packet_sizes(int fill)
    {
        var rnd = new Random(7);
        var data = new byte[4096 + 40];
        if (fill < 0)
        {
            rnd.NextBytes(data);
        }
        else
        {
            Array.Fill(data, (byte)fill);
        }

        foreach (int len in new[] { 63, 64, 65, 95, 96, 97, 127, 128, 1279, 1280, 1400, 1459, 1460, 1500, 4095, 4096 })
        {
            for (int off = 0; off < 33; off += 3)
            {
                var span = data.AsSpan(off, len);
                Assert.Equal(Reference(span, 0), InternetChecksum.Sum(span));
                Assert.Equal(Reference(span, 0x1234), InternetChecksum.Sum(span, 0x1234));
            }
        }
    }

    [Theory]
    [InlineData(16384 * 32 - 2)]
    [InlineData(16384 * 32)]
    [InlineData(16384 * 32 + 34)]
    [InlineData(3 * 16384 * 32 + 7)]
    public void Sum_of_all_ones_buffers_longer_than_the_lane_budget_is_exact(int len)
    {
        // Every 16-bit word is 0xFFFF: the lanes grow as fast as they can, so a missed lane flush
        // would overflow and change the result.
        var data = new byte[len];
        Array.Fill(data, (byte)0xFF);
        data[len / 2] = 0x12; // not all ones, so 0 and 0xFFFF cannot be confused
        Assert.Equal(Reference(data, 0), InternetChecksum.Sum(data));
    }

    [Fact]
    public void A_verified_tcp_segment_sums_to_all_ones_and_a_flipped_payload_bit_does_not()
    {
        var p = Tcp.Build(new Tcp.Spec { Payload = 1400 });
        int iphl = (p[0] & 0x0F) * 4;
        ushort pseudo = InternetChecksum.PseudoHeaderSum(p.AsSpan(12, 4), p.AsSpan(16, 4), 6, p.Length - iphl);
        Assert.Equal(0xFFFF, InternetChecksum.Sum(p.AsSpan(iphl), pseudo));
        p[iphl + 20 + 700] ^= 0x04;
        Assert.NotEqual(0xFFFF, InternetChecksum.Sum(p.AsSpan(iphl), pseudo));
    }
}
