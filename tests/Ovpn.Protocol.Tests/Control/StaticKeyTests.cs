// SPDX-License-Identifier: MIT
using Ovpn.Protocol.Control;

namespace Ovpn.Protocol.Tests.Control;

public class StaticKeyTests
{
    [Fact]
    public void ParsesOpenVpnGeneratedKey()
    {
        var k = StaticKey.Parse(OpenVpnCaptures.StaticKeyText);
        Assert.Equal(256, k.Bytes.Length);
        Assert.Equal(0x69, k.Bytes[0]);
        Assert.Equal(0xa1, k.Bytes[255]);
        Assert.Equal("6986ec9283d53214cb0b665762619804", Convert.ToHexStringLower(k.Bytes[..16]));
    }

    [Fact]
    public void ToPemRoundTripsAndToleratesCommentsCrLfAndBlankLines()
    {
        var k = StaticKey.Generate();
        string pem = k.ToPem();
        Assert.Equal(k.Bytes.ToArray(), StaticKey.Parse(pem).Bytes.ToArray());

        string messy = "# leading comment\r\n\r\n" + pem.Replace("\n", "\r\n").Replace(
            "-----BEGIN OpenVPN Static key V1-----\r\n", "-----BEGIN OpenVPN Static key V1-----\r\n\r\n# inner comment\r\n") + "\r\n# trailing\r\n";
        Assert.Equal(k.Bytes.ToArray(), StaticKey.Parse(messy).Bytes.ToArray());
        Assert.DoesNotContain(Convert.ToHexStringLower(k.Bytes[..8]), k.ToString());
    }

    [Fact]
    public void GenerateIsRandom() => Assert.NotEqual(StaticKey.Generate().Bytes.ToArray(), StaticKey.Generate().Bytes.ToArray());

    [Theory]
    [InlineData("no markers at all")]
    [InlineData("-----BEGIN OpenVPN Static key V1-----\n00\n-----END OpenVPN Static key V1-----\n")]
    public void RejectsBadInput(string text) => Assert.Throws<FormatException>(() => StaticKey.Parse(text));

    [Fact]
    public void RejectsBadHexAndMissingEnd()
    {
        string pem = StaticKey.Generate().ToPem();
        int i = pem.IndexOf("-----\n", StringComparison.Ordinal) + 6;
        Assert.Throws<FormatException>(() => StaticKey.Parse(pem[..i] + "zz" + pem[(i + 2)..]));
        Assert.Throws<FormatException>(() => StaticKey.Parse(pem.Replace("-----END OpenVPN Static key V1-----", "")));
        Assert.Throws<FormatException>(() => StaticKey.Parse(pem.Replace(pem.Substring(i, 33), "")));
    }
}
