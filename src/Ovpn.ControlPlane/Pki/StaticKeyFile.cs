// SPDX-License-Identifier: MIT
using System.Security.Cryptography;
using System.Text;

namespace Ovpn.ControlPlane.Pki;

/// <summary>
/// Writes and reads the OpenVPN static key text format used by tls-crypt / tls-auth:
/// 256 random bytes as 16 lines of 32 lowercase hex digits between
/// "-----BEGIN OpenVPN Static key V1-----" and "-----END OpenVPN Static key V1-----".
/// (Ovpn.Protocol's StaticKey parses the same text; this copy keeps the PKI independent of it.)
/// </summary>
public static class StaticKeyFile
{
    public const string Begin = "-----BEGIN OpenVPN Static key V1-----";
    public const string End = "-----END OpenVPN Static key V1-----";
    public const int KeyBytes = 256;

    public static string Generate()
    {
        var key = RandomNumberGenerator.GetBytes(KeyBytes);
        try
        {
            return Format(key);
        }
        finally
        {
            CryptographicOperations.ZeroMemory(key);
        }
    }

    public static string Format(ReadOnlySpan<byte> key)
    {
        if (key.Length != KeyBytes)
            throw new ArgumentException($"a static key has {KeyBytes} bytes", nameof(key));
        var sb = new StringBuilder();
        sb.Append("#\n# 2048 bit OpenVPN static key\n#\n").Append(Begin).Append('\n');
        for (int i = 0; i < KeyBytes; i += 16)
            sb.Append(Convert.ToHexStringLower(key.Slice(i, 16))).Append('\n');
        sb.Append(End).Append('\n');
        return sb.ToString();
    }

    /// <summary>Parses the text back to 256 bytes; false if the framing or hex is wrong.</summary>
    public static bool TryParse(string text, out byte[] key)
    {
        key = [];
        var lines = text.Split('\n').Select(l => l.Trim()).ToList();
        int b = lines.IndexOf(Begin), e = lines.IndexOf(End);
        if (b < 0 || e < b)
            return false;
        var hex = string.Concat(lines.Skip(b + 1).Take(e - b - 1));
        if (hex.Length != KeyBytes * 2)
            return false;
        try
        {
            key = Convert.FromHexString(hex);
            return true;
        }
        catch (FormatException)
        {
            return false;
        }
    }
}
