// SPDX-License-Identifier: MIT
using Ovpn.Protocol.Keys;

namespace Ovpn.Protocol.Tests.Keys;

public class DataCipherTests
{
    [Theory]
    [InlineData("AES-128-GCM", DataCipher.Aes128Gcm, 16, true)]
    [InlineData("aes-256-gcm", DataCipher.Aes256Gcm, 32, true)]
    [InlineData("ChaCha20-Poly1305", DataCipher.ChaCha20Poly1305, 32, true)]
    [InlineData("AES-128-CBC", DataCipher.Aes128Cbc, 16, false)]
    [InlineData("aes-256-cbc", DataCipher.Aes256Cbc, 32, false)]
    public void Parses_known_names_case_insensitively(string name, DataCipher expected, int keyLen, bool aead)
    {
        Assert.True(DataCipherNames.TryParse(name, out var c));
        Assert.Equal(expected, c);
        Assert.Equal(keyLen, DataCipherNames.KeyLength(c));
        Assert.Equal(aead, DataCipherNames.IsAead(c));
        Assert.Equal(name.ToUpperInvariant(), DataCipherNames.ToName(c));
    }

    [Theory]
    [InlineData("BF-CBC")]
    [InlineData("AES-192-GCM")]
    [InlineData("AES-256-CFB")]
    [InlineData("none")]
    [InlineData("")]
    [InlineData(null)]
    public void Refuses_other_ciphers(string? name)
    {
        Assert.False(DataCipherNames.TryParse(name, out _));
    }

    [Fact]
    public void ParseList_skips_unknown_and_duplicates()
    {
        var l = DataCipherNames.ParseList("BF-CBC:AES-256-GCM:aes-128-gcm:AES-256-GCM:CHACHA20-POLY1305");
        Assert.Equal([DataCipher.Aes256Gcm, DataCipher.Aes128Gcm, DataCipher.ChaCha20Poly1305], l);
    }
}
