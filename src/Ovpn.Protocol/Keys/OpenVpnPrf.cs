// SPDX-License-Identifier: MIT
using System.Buffers.Binary;
using System.Security.Cryptography;

namespace Ovpn.Protocol.Keys;

/// <summary>
/// OpenVPN's legacy key expansion (protocol notes section 12.3): the TLS 1.0/1.1 PRF
/// (P_MD5 xor P_SHA1 over the two halves of the secret, RFC 2246 section 5) with the ASCII
/// label placed directly in front of the seed. Used whenever TLS-EKM is not negotiated
/// (all 2.4/2.5 peers). Pure and allocation-light; key material never leaves the returned arrays.
/// </summary>
public static class OpenVpnPrf
{
    public const string MasterSecretLabel = "OpenVPN master secret";
    public const string KeyExpansionLabel = "OpenVPN key expansion";
    public const int PreMasterLength = 48;
    public const int RandomLength = 32;
    public const int MasterLength = 48;
    public const int Key2Length = 256;

    /// <summary>TLS 1.0 PRF: PRF(secret, seed) = P_MD5(S1, seed) xor P_SHA1(S2, seed), where S1
    /// is the first ceil(len/2) bytes and S2 the last ceil(len/2) bytes (they overlap by one byte
    /// for odd lengths). The label, if any, must already be part of <paramref name="seed"/>.</summary>
    public static void Tls1Prf(ReadOnlySpan<byte> secret, ReadOnlySpan<byte> seed, Span<byte> output)
    {
        int half = (secret.Length + 1) / 2;
        ReadOnlySpan<byte> s1 = secret[..half];
        ReadOnlySpan<byte> s2 = secret[(secret.Length - half)..];

        byte[] sha = new byte[output.Length];
        try
        {
            PHash(HashAlgorithmName.MD5, s1, seed, output);
            PHash(HashAlgorithmName.SHA1, s2, seed, sha);
            for (int i = 0; i < output.Length; i++)
            {
                output[i] ^= sha[i];
            }
        }
        finally
        {
            CryptographicOperations.ZeroMemory(sha);
        }
    }

    /// <summary>P_hash(secret, seed) = HMAC(secret, A(1) ‖ seed) ‖ HMAC(secret, A(2) ‖ seed) ‖ …
    /// with A(0) = seed, A(i) = HMAC(secret, A(i-1)).</summary>
    private static void PHash(HashAlgorithmName alg, ReadOnlySpan<byte> secret, ReadOnlySpan<byte> seed, Span<byte> output)
    {
        using var hmac = IncrementalHash.CreateHMAC(alg, secret);
        int hashLen = hmac.HashLengthInBytes;
        Span<byte> a = stackalloc byte[hashLen];
        Span<byte> block = stackalloc byte[hashLen];

        // A(1) = HMAC(secret, seed)
        hmac.AppendData(seed);
        hmac.GetHashAndReset(a);

        int written = 0;
        while (written < output.Length)
        {
            hmac.AppendData(a);
            hmac.AppendData(seed);
            hmac.GetHashAndReset(block);
            int n = Math.Min(hashLen, output.Length - written);
            block[..n].CopyTo(output[written..]);
            written += n;

            hmac.AppendData(a);
            hmac.GetHashAndReset(a);
        }

        CryptographicOperations.ZeroMemory(a);
        CryptographicOperations.ZeroMemory(block);
    }

    /// <summary>
    /// master[48] = PRF(pre_master, "OpenVPN master secret" ‖ c.random1 ‖ s.random1);
    /// key2[256]  = PRF(master, "OpenVPN key expansion" ‖ c.random2 ‖ s.random2 ‖ csid ‖ ssid),
    /// session ids as 8 bytes big-endian, client first.
    /// </summary>
    public static byte[] DeriveKey2(ReadOnlySpan<byte> clientPreMaster, ReadOnlySpan<byte> clientRandom1, ReadOnlySpan<byte> serverRandom1,
        ReadOnlySpan<byte> clientRandom2, ReadOnlySpan<byte> serverRandom2, ulong clientSid, ulong serverSid)
    {
        RequireLength(clientPreMaster, PreMasterLength, nameof(clientPreMaster));
        RequireLength(clientRandom1, RandomLength, nameof(clientRandom1));
        RequireLength(serverRandom1, RandomLength, nameof(serverRandom1));
        RequireLength(clientRandom2, RandomLength, nameof(clientRandom2));
        RequireLength(serverRandom2, RandomLength, nameof(serverRandom2));

        Span<byte> master = stackalloc byte[MasterLength];
        // Labels are pure ASCII; 21 bytes each.
        Span<byte> seed1 = stackalloc byte[MasterSecretLabel.Length + 2 * RandomLength];
        int o = System.Text.Encoding.ASCII.GetBytes(MasterSecretLabel, seed1);
        clientRandom1.CopyTo(seed1[o..]);
        serverRandom1.CopyTo(seed1[(o + RandomLength)..]);
        Tls1Prf(clientPreMaster, seed1, master);

        Span<byte> seed2 = stackalloc byte[KeyExpansionLabel.Length + 2 * RandomLength + 16];
        o = System.Text.Encoding.ASCII.GetBytes(KeyExpansionLabel, seed2);
        clientRandom2.CopyTo(seed2[o..]);
        o += RandomLength;
        serverRandom2.CopyTo(seed2[o..]);
        o += RandomLength;
        BinaryPrimitives.WriteUInt64BigEndian(seed2[o..], clientSid);
        BinaryPrimitives.WriteUInt64BigEndian(seed2[(o + 8)..], serverSid);

        var key2 = new byte[Key2Length];
        Tls1Prf(master, seed2, key2);
        CryptographicOperations.ZeroMemory(master);
        return key2;
    }

    private static void RequireLength(ReadOnlySpan<byte> s, int len, string name)
    {
        if (s.Length != len)
        {
            throw new ArgumentException($"{name} must be {len} bytes, got {s.Length}", name);
        }
    }
}
