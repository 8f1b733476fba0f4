// SPDX-License-Identifier: MIT
using Ovpn.Protocol.Keys;

namespace Ovpn.Protocol.Tests.Keys;

public class OpenVpnPrfTests
{
    // Inputs are deterministic byte patterns: Pattern(n, start, step)[i] = (start + i*step) & 0xff.
    internal static byte[] Pattern(int n, int start, int step)
    {
        var b = new byte[n];
        for (int i = 0; i < n; i++)
        {
            b[i] = (byte)((start + i * step) & 0xff);
        }

        return b;
    }

    // Known answers computed once (2026-11-28) with OpenSSL 3.0.19 on Debian 12:
    //   openssl kdf -keylen 100 -kdfopt digest:MD5-SHA1 -kdfopt hexsecret:<SEC> -kdfopt hexseed:<SEED> TLS1-PRF
    // SEC = Pattern(48, 0, 1), SEED = Pattern(40, 0x80, 3).
    private const string Prf100 =
        "A6E29900782A73CB94B2FAC99FE748F42F5EAD90D415F49A6E65832482E47B013CA33D2F51DC5029CEB3684FFF11944F" +
        "ECB21CA34EFDA3CABF33905CD9848000F9F751DAA7FAEC7C5F57D3F0CCDD0554102E65A5A7BD6C414DD765F46324B5B4A0EAA57D";

    // Same command with -keylen 37 and SEC = Pattern(33, 0x05, 7): odd secret length, the two
    // halves overlap by one byte.
    private const string PrfOdd37 = "52F91AD52E1D7326045FF541CC86D0FE8CA4B777DED4E1960C264C41FA079F7366979582EB";

    // DeriveKey2 vector, two openssl kdf calls (same tool/version as above):
    //   MASTER = kdf(keylen 48, secret = PM, seed = hex("OpenVPN master secret") ‖ CR1 ‖ SR1)
    //   KEY2   = kdf(keylen 256, secret = MASTER, seed = hex("OpenVPN key expansion") ‖ CR2 ‖ SR2 ‖ CSID ‖ SSID)
    // PM = Pattern(48,1,5), CR1 = Pattern(32,0x20,1), SR1 = Pattern(32,0x40,1), CR2 = Pattern(32,0x60,1),
    // SR2 = Pattern(32,0xA0,1), CSID = 0x0102030405060708, SSID = 0xf1e2d3c4b5a69788.
    internal const string Key2Hex =
        "80EEA5BD76F55C1872CBEFCF178F4FF501E4546F2DE8DF797846484B7055D5BC7EDE3354774C4C0317D1997615F67738" +
        "BA40BBDAC921631C81FF1A8F0F5C1F04CA0F3B76AFBEA0CEA2F1D84089D9C3C93A6146D3376F824B14E130AAEB1C4093" +
        "360694F24A4D7579296ED08DE3A4A54A5AF41F34807B950F4A80DA82D5EA20D63567EA15192C7E70298EFAAE4F75102C" +
        "3AA81CE45E4F1ED132502A9CD57CAE91280508A17DB0FF95A0FA0A5FFE0A4246B24AC0C4D5E9EB1A11F63BE6A3ABB07F" +
        "646F27D3A96909FCFBC6B4B9AD70668C98F50CAF7CBFA207812B9096794E96507CF97F818C7AD508DE0F49F22FED5725" +
        "6F1EB85B33F20EB502858E2026667CBD";

    internal const ulong ClientSid = 0x0102030405060708UL;
    internal const ulong ServerSid = 0xf1e2d3c4b5a69788UL;

    internal static byte[] DeriveVectorKey2() => OpenVpnPrf.DeriveKey2(
        Pattern(48, 1, 5), Pattern(32, 0x20, 1), Pattern(32, 0x40, 1),
        Pattern(32, 0x60, 1), Pattern(32, 0xA0, 1), ClientSid, ServerSid);

    [Fact]
    public void Tls1Prf_matches_openssl_even_secret()
    {
        var output = new byte[100];
        OpenVpnPrf.Tls1Prf(Pattern(48, 0, 1), Pattern(40, 0x80, 3), output);
        Assert.Equal(Prf100, Convert.ToHexString(output));
    }

    [Fact]
    public void Tls1Prf_matches_openssl_odd_secret()
    {
        var output = new byte[37];
        OpenVpnPrf.Tls1Prf(Pattern(33, 0x05, 7), Pattern(40, 0x80, 3), output);
        Assert.Equal(PrfOdd37, Convert.ToHexString(output));
    }

    [Fact]
    public void Tls1Prf_prefix_is_stable_across_lengths()
    {
        var a = new byte[100];
        var b = new byte[37];
        OpenVpnPrf.Tls1Prf(Pattern(48, 0, 1), Pattern(40, 0x80, 3), a);
        OpenVpnPrf.Tls1Prf(Pattern(48, 0, 1), Pattern(40, 0x80, 3), b);
        Assert.Equal(a[..37], b);
    }

    [Fact]
    public void DeriveKey2_matches_openssl_two_step_vector()
    {
        Assert.Equal(Key2Hex, Convert.ToHexString(DeriveVectorKey2()));
    }

    [Fact]
    public void DeriveKey2_depends_on_session_id_order()
    {
        var swapped = OpenVpnPrf.DeriveKey2(
            Pattern(48, 1, 5), Pattern(32, 0x20, 1), Pattern(32, 0x40, 1),
            Pattern(32, 0x60, 1), Pattern(32, 0xA0, 1), ServerSid, ClientSid);
        Assert.NotEqual(Key2Hex, Convert.ToHexString(swapped));
    }

    [Fact]
    public void DeriveKey2_rejects_wrong_lengths()
    {
        Assert.Throws<ArgumentException>(() => OpenVpnPrf.DeriveKey2(new byte[47], new byte[32], new byte[32], new byte[32], new byte[32], 1, 2));
        Assert.Throws<ArgumentException>(() => OpenVpnPrf.DeriveKey2(new byte[48], new byte[31], new byte[32], new byte[32], new byte[32], 1, 2));
    }
}
