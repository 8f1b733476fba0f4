// SPDX-License-Identifier: MIT
using System.Security.Cryptography;
using System.Text;

namespace Ovpn.Protocol.Control;

/// <summary>
/// "OpenVPN Static key V1" (256 bytes = key2 { key[0] {cipher[64], hmac[64]}, key[1] {...} }).
/// <code>
/// bytes   0.. 63  S0 = key[0].cipher
/// bytes  64..127  S1 = key[0].hmac
/// bytes 128..191  S2 = key[1].cipher
/// bytes 192..255  S3 = key[1].hmac
/// </code>
/// Immutable. ToString deliberately does not reveal the key.
/// </summary>
public sealed class StaticKey
{
    public const int Size = 256;
    public const int SliceSize = 64;
    private const string BeginLine = "-----BEGIN OpenVPN Static key V1-----";
    private const string EndLine = "-----END OpenVPN Static key V1-----";

    private readonly byte[] _bytes;

    private StaticKey(byte[] bytes) => _bytes = bytes;

    public ReadOnlySpan<byte> Bytes => _bytes;

    /// <summary>Slice i (0..3) = S0..S3, 64 bytes each.</summary>
    public ReadOnlySpan<byte> Slice(int i) => _bytes.AsSpan(i * SliceSize, SliceSize);

    public static StaticKey FromBytes(ReadOnlySpan<byte> bytes)
    {
        if (bytes.Length != Size)
        {
            throw new ArgumentException($"Static key must be {Size} bytes, got {bytes.Length}", nameof(bytes));
        }

        return new StaticKey(bytes.ToArray());
    }

    public static StaticKey Generate() => new(RandomNumberGenerator.GetBytes(Size));

    /// <summary>
    /// Parses the key file text. Lines outside the BEGIN/END markers (comments starting with '#',
    /// blank lines, anything else) are ignored, as OpenVPN does; inside, whitespace is ignored.
    /// Throws <see cref="FormatException"/> on a missing marker, bad hex, or wrong length.
    /// </summary>
    public static StaticKey Parse(string pemText)
    {
        ArgumentNullException.ThrowIfNull(pemText);
        var hex = new StringBuilder(Size * 2);
        bool inside = false, sawBegin = false, sawEnd = false;
        foreach (string raw in pemText.Split('\n'))
        {
            string line = raw.Trim();
            if (!inside)
            {
                if (line == BeginLine)
                {
                    if (sawBegin)
                    {
                        throw new FormatException("Duplicate BEGIN marker in static key");
                    }

                    inside = sawBegin = true;
                }

                continue;
            }

            if (line == EndLine)
            {
                sawEnd = true;
                break;
            }

            if (line.Length == 0 || line[0] == '#')
            {
                continue;
            }

            foreach (char c in line)
            {
                if (char.IsWhiteSpace(c))
                {
                    continue;
                }

                if (!char.IsAsciiHexDigit(c))
                {
                    throw new FormatException("Invalid character in static key hex data");
                }

                hex.Append(c);
            }
        }

        if (!sawBegin || !sawEnd)
        {
            throw new FormatException("Static key BEGIN/END markers not found");
        }

        if (hex.Length != Size * 2)
        {
            throw new FormatException($"Static key must hold {Size} bytes, found {hex.Length / 2.0}");
        }

        return new StaticKey(Convert.FromHexString(hex.ToString()));
    }

    public string ToPem()
    {
        var sb = new StringBuilder();
        sb.Append("#\n# 2048 bit OpenVPN static key\n#\n");
        sb.Append(BeginLine).Append('\n');
        for (int i = 0; i < Size; i += 16)
        {
            sb.Append(Convert.ToHexStringLower(_bytes, i, 16)).Append('\n');
        }

        sb.Append(EndLine).Append('\n');
        return sb.ToString();
    }

    public override string ToString() => "StaticKey(256 bytes, redacted)";
}
