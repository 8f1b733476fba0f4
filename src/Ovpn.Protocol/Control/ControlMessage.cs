// SPDX-License-Identifier: MIT
using System.Text;

namespace Ovpn.Protocol.Control;

/// <summary>
/// NUL-terminated control-channel strings (PUSH_REQUEST, PUSH_REPLY, AUTH_FAILED, EXIT, ...).
/// Each message is sent in its own TLS record including the trailing NUL; 2.6.11+ receivers also
/// split one record at NULs, which <see cref="SplitRecord"/> mirrors.
/// </summary>
public static class ControlMessage
{
    public static byte[] Encode(string s)
    {
        ArgumentNullException.ThrowIfNull(s);
        if (s.Contains('\0'))
        {
            throw new ArgumentException("Control message must not contain NUL", nameof(s));
        }

        var bytes = new byte[Encoding.UTF8.GetByteCount(s) + 1];
        Encoding.UTF8.GetBytes(s, bytes);
        return bytes;
    }

    /// <summary>Decodes one message: text up to the first NUL, with trailing CR/LF/NUL stripped.</summary>
    public static string Decode(ReadOnlySpan<byte> b)
    {
        int nul = b.IndexOf((byte)0);
        if (nul >= 0)
        {
            b = b[..nul];
        }

        while (!b.IsEmpty && b[^1] is (byte)'\r' or (byte)'\n')
        {
            b = b[..^1];
        }

        return Encoding.UTF8.GetString(b);
    }

    /// <summary>Splits a TLS record into messages at NUL bytes; empty pieces are skipped.</summary>
    public static List<string> SplitRecord(ReadOnlySpan<byte> record)
    {
        var list = new List<string>();
        while (!record.IsEmpty)
        {
            int nul = record.IndexOf((byte)0);
            ReadOnlySpan<byte> piece = nul >= 0 ? record[..nul] : record;
            record = nul >= 0 ? record[(nul + 1)..] : [];
            string s = Decode(piece);
            if (s.Length > 0)
            {
                list.Add(s);
            }
        }

        return list;
    }
}
