// SPDX-License-Identifier: MIT
namespace Ovpn.Protocol.Keys;

/// <summary>Data-channel ciphers this implementation can negotiate. BF-CBC and other legacy
/// ciphers are deliberately absent: they cannot be parsed and so can never be selected.</summary>
public enum DataCipher
{
    Aes128Gcm,
    Aes256Gcm,
    ChaCha20Poly1305,
    Aes128Cbc,
    Aes256Cbc,
}

/// <summary>OpenSSL-style cipher names as they appear in IV_CIPHERS, `cipher` options and
/// `--data-ciphers` (protocol notes section 11).</summary>
public static class DataCipherNames
{
    /// <summary>Case-insensitive parse of an OpenSSL cipher name. Unknown or refused ciphers
    /// (BF-CBC, AES-192-*, CFB/OFB modes, "none") return false.</summary>
    public static bool TryParse(string? name, out DataCipher c)
    {
        c = default;
        if (name is null)
        {
            return false;
        }

        var n = name.Trim();
        if (n.Equals("AES-128-GCM", StringComparison.OrdinalIgnoreCase)) { c = DataCipher.Aes128Gcm; return true; }
        if (n.Equals("AES-256-GCM", StringComparison.OrdinalIgnoreCase)) { c = DataCipher.Aes256Gcm; return true; }
        if (n.Equals("CHACHA20-POLY1305", StringComparison.OrdinalIgnoreCase)) { c = DataCipher.ChaCha20Poly1305; return true; }
        if (n.Equals("AES-128-CBC", StringComparison.OrdinalIgnoreCase)) { c = DataCipher.Aes128Cbc; return true; }
        if (n.Equals("AES-256-CBC", StringComparison.OrdinalIgnoreCase)) { c = DataCipher.Aes256Cbc; return true; }
        return false;
    }

    public static string ToName(DataCipher c) => c switch
    {
        DataCipher.Aes128Gcm => "AES-128-GCM",
        DataCipher.Aes256Gcm => "AES-256-GCM",
        DataCipher.ChaCha20Poly1305 => "CHACHA20-POLY1305",
        DataCipher.Aes128Cbc => "AES-128-CBC",
        DataCipher.Aes256Cbc => "AES-256-CBC",
        _ => throw new ArgumentOutOfRangeException(nameof(c), c, "unknown data cipher"),
    };

    public static bool IsAead(DataCipher c) => c switch
    {
        DataCipher.Aes128Gcm or DataCipher.Aes256Gcm or DataCipher.ChaCha20Poly1305 => true,
        DataCipher.Aes128Cbc or DataCipher.Aes256Cbc => false,
        _ => throw new ArgumentOutOfRangeException(nameof(c), c, "unknown data cipher"),
    };

    /// <summary>Cipher key length in bytes (the first KeyLength bytes of a 64-byte key2 slice).</summary>
    public static int KeyLength(DataCipher c) => c switch
    {
        DataCipher.Aes128Gcm or DataCipher.Aes128Cbc => 16,
        DataCipher.Aes256Gcm or DataCipher.Aes256Cbc or DataCipher.ChaCha20Poly1305 => 32,
        _ => throw new ArgumentOutOfRangeException(nameof(c), c, "unknown data cipher"),
    };

    /// <summary>Parses a colon-separated list (e.g. IV_CIPHERS); unknown names are skipped,
    /// order and first occurrence are kept.</summary>
    public static List<DataCipher> ParseList(string? list)
    {
        var result = new List<DataCipher>();
        if (string.IsNullOrEmpty(list))
        {
            return result;
        }

        foreach (var part in list.Split(':', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            if (TryParse(part, out var c) && !result.Contains(c))
            {
                result.Add(c);
            }
        }

        return result;
    }
}
