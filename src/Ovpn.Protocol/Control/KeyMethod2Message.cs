// SPDX-License-Identifier: MIT
using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;

namespace Ovpn.Protocol.Control;

/// <summary>
/// Key-method-2 message, the first TLS application data in each direction (protocol notes §8):
/// <code>
/// 00 00 00 00          u32 literal 0 (the reader does not check it)
/// 02                   key method (low 4 bits = 2, upper bits flags)
/// pre_master[48]       client only
/// random1[32] random2[32]
/// u16 len | options  | 00     (len counts the NUL; max 512)
/// u16 len | username | 00     (absent/empty: 00 00)
/// u16 len | password | 00
/// u16 len | peer-info| 00
/// </code>
/// Holds secrets (pre-master, password): never log it.
/// </summary>
public sealed class KeyMethod2Message
{
    public const int PreMasterSize = 48;
    public const int RandomSize = 32;
    public const int MaxOptionsLength = 512;   // TLS_OPTIONS_LEN, including the NUL
    public const int MaxStringLength = 4096;   // USER_PASS_LEN with PKCS#11; peer-info fits too
    public const int MaxMessageLength = 2048;  // TLS_CHANNEL_BUF_SIZE: must fit one SSL_read
    private const byte KeyMethod = 2;

    public byte[]? PreMaster;
    public byte[] Random1 = new byte[RandomSize];
    public byte[] Random2 = new byte[RandomSize];
    public string Options = "";
    public string? Username;
    public string? Password;
    public string? PeerInfo;

    public static KeyMethod2Message CreateRandom(bool isClient) => new()
    {
        PreMaster = isClient ? RandomNumberGenerator.GetBytes(PreMasterSize) : null,
        Random1 = RandomNumberGenerator.GetBytes(RandomSize),
        Random2 = RandomNumberGenerator.GetBytes(RandomSize),
    };

    public byte[] Encode(bool isClient)
    {
        if (isClient && PreMaster is not { Length: PreMasterSize })
        {
            throw new InvalidOperationException($"Client key-method-2 message needs a {PreMasterSize}-byte pre-master");
        }

        if (Random1.Length != RandomSize || Random2.Length != RandomSize)
        {
            throw new InvalidOperationException($"random1/random2 must be {RandomSize} bytes");
        }

        byte[] options = Encoding.UTF8.GetBytes(Options ?? "");
        if (options.Length + 1 > MaxOptionsLength)
        {
            throw new InvalidOperationException($"Options string longer than {MaxOptionsLength - 1} bytes");
        }

        var ms = new MemoryStream(256);
        Span<byte> u32 = stackalloc byte[4];
        ms.Write(u32); // literal 0
        ms.WriteByte(KeyMethod);
        if (isClient)
        {
            ms.Write(PreMaster);
        }

        ms.Write(Random1);
        ms.Write(Random2);
        WriteString(ms, options);
        WriteString(ms, Username is null ? [] : Encoding.UTF8.GetBytes(Username));
        WriteString(ms, Password is null ? [] : Encoding.UTF8.GetBytes(Password));
        WriteString(ms, PeerInfo is null ? [] : Encoding.UTF8.GetBytes(PeerInfo));
        if (ms.Length > MaxMessageLength)
        {
            throw new InvalidOperationException($"Key-method-2 message exceeds {MaxMessageLength} bytes");
        }

        return ms.ToArray();
    }

    private static void WriteString(MemoryStream ms, byte[] s)
    {
        if (s.AsSpan().IndexOf((byte)0) >= 0)
        {
            throw new InvalidOperationException("Key-method-2 strings must not contain NUL");
        }

        if (s.Length + 1 > MaxStringLength)
        {
            throw new InvalidOperationException($"Key-method-2 string longer than {MaxStringLength - 1} bytes");
        }

        Span<byte> len = stackalloc byte[2];
        if (s.Length == 0)
        {
            ms.Write(len); // 00 00 = absent
            return;
        }

        BinaryPrimitives.WriteUInt16BigEndian(len, (ushort)(s.Length + 1));
        ms.Write(len);
        ms.Write(s);
        ms.WriteByte(0);
    }

    /// <summary>
    /// Length of the key-method-2 message at the start of <paramref name="data"/>, when a TLS read
    /// returned it together with the next control message: u32 0, key method, [pre_master],
    /// random1, random2, then up to four u16-length strings (options, user, password, peer-info).
    /// A "string" whose length does not fit, or that lacks its NUL, is the start of the next message.
    /// </summary>
    public static int MeasureLength(ReadOnlySpan<byte> data, bool fromClient)
    {
        int o = 4 + 1 + (fromClient ? PreMasterSize : 0) + 2 * RandomSize;
        if (data.Length < o)
        {
            return data.Length;
        }

        for (int i = 0; i < 4 && data.Length - o >= 2; i++)
        {
            int len = BinaryPrimitives.ReadUInt16BigEndian(data[o..]);
            if (len > data.Length - o - 2 || (len > 0 && data[o + 2 + len - 1] != 0))
            {
                break;
            }

            o += 2 + len;
        }

        return o;
    }

    /// <summary>
    /// Parses a key-method-2 message. Username, password and peer-info may be missing entirely at
    /// the end (older peers); an empty string field decodes as null (Options as "").
    /// </summary>
    public static bool TryDecode(ReadOnlySpan<byte> src, bool fromClient, out KeyMethod2Message? m, out string? error)
    {
        m = null;
        int fixedLen = 4 + 1 + (fromClient ? PreMasterSize : 0) + 2 * RandomSize;
        if (src.Length < fixedLen)
        {
            error = "key-method-2 message truncated";
            return false;
        }

        // The first 4 bytes are not checked, as in OpenVPN.
        if ((src[4] & 0x0F) != KeyMethod)
        {
            error = $"unsupported key method {src[4] & 0x0F}";
            return false;
        }

        var msg = new KeyMethod2Message();
        int o = 5;
        if (fromClient)
        {
            msg.PreMaster = src.Slice(o, PreMasterSize).ToArray();
            o += PreMasterSize;
        }

        msg.Random1 = src.Slice(o, RandomSize).ToArray();
        o += RandomSize;
        msg.Random2 = src.Slice(o, RandomSize).ToArray();
        o += RandomSize;

        if (!TryReadString(src, ref o, MaxOptionsLength, required: true, out string? options, out error))
        {
            error = "options string: " + error;
            return false;
        }

        msg.Options = options ?? "";
        if (!TryReadString(src, ref o, MaxStringLength, false, out msg.Username, out error)
            || !TryReadString(src, ref o, MaxStringLength, false, out msg.Password, out error)
            || !TryReadString(src, ref o, MaxStringLength, false, out msg.PeerInfo, out error))
        {
            return false;
        }

        m = msg;
        error = null;
        return true;
    }

    private static bool TryReadString(ReadOnlySpan<byte> src, ref int o, int max, bool required, out string? s, out string? error)
    {
        s = null;
        error = null;
        if (o == src.Length && !required)
        {
            return true; // field omitted at the end
        }

        if (src.Length - o < 2)
        {
            error = "string length truncated";
            return false;
        }

        int len = BinaryPrimitives.ReadUInt16BigEndian(src.Slice(o, 2));
        o += 2;
        if (len == 0)
        {
            return true;
        }

        if (len > max)
        {
            error = $"string length {len} exceeds {max}";
            return false;
        }

        if (src.Length - o < len)
        {
            error = "string truncated";
            return false;
        }

        ReadOnlySpan<byte> bytes = src.Slice(o, len);
        o += len;
        // The writer terminates with NUL; OpenVPN forces termination, so cut at the first NUL.
        int nul = bytes.IndexOf((byte)0);
        if (nul >= 0)
        {
            bytes = bytes[..nul];
        }

        s = Encoding.UTF8.GetString(bytes);
        return true;
    }
}
