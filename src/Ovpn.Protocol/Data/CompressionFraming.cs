// SPDX-License-Identifier: MIT
namespace Ovpn.Protocol.Data;

/// <summary>Which "no compression" stub framing a peer uses (protocol notes 14.4).</summary>
public enum CompressionFramingMode
{
    /// <summary>No framing at all (2.6 default).</summary>
    None,
    /// <summary><c>comp-lzo no</c> (and comp-lzo with nothing compressed): 0xFA prefix.</summary>
    LzoStub,
    /// <summary><c>compress</c> / <c>compress stub</c>: first byte moved to the end, 0xFB in front.</summary>
    CompStub,
    /// <summary><c>compress stub-v2</c>: no byte, unless the payload starts with 0x50 → <c>50 00</c> prefix.</summary>
    CompStubV2,
}

/// <summary>
/// Encode/decode of the stub compression framings. We never compress: a peer that sends
/// really compressed data (LZO 0x66, LZ4 0x69, v2 <c>50 01</c>/<c>50 02</c>/<c>50 03</c>) gets
/// <see cref="DataDropReason.CompressionUnsupported"/>; any other unexpected byte is
/// <see cref="DataDropReason.Malformed"/>. Empty payloads pass through unchanged both ways
/// (as OpenVPN's compstub does).
/// </summary>
public static class CompressionFraming
{
    public const byte NoCompressByte = 0xFA;       // NO_COMPRESS_BYTE
    public const byte NoCompressByteSwap = 0xFB;   // NO_COMPRESS_BYTE_SWAP
    public const byte LzoCompressByte = 0x66;      // LZO_COMPRESS_BYTE
    public const byte Lz4CompressByte = 0x69;      // LZ4_COMPRESS_BYTE
    public const byte V2IndicatorByte = 0x50;      // COMP_ALGV2_INDICATOR_BYTE
    public const byte V2Uncompressed = 0x00;

    /// <summary>Largest number of bytes <see cref="Encode"/> adds.</summary>
    public const int MaxOverhead = 2;

    public static int GetEncodedLength(CompressionFramingMode mode, ReadOnlySpan<byte> payload)
    {
        if (payload.IsEmpty)
        {
            return 0;
        }

        return mode switch
        {
            CompressionFramingMode.None => payload.Length,
            CompressionFramingMode.LzoStub or CompressionFramingMode.CompStub => payload.Length + 1,
            CompressionFramingMode.CompStubV2 => payload[0] == V2IndicatorByte ? payload.Length + 2 : payload.Length,
            _ => throw new ArgumentOutOfRangeException(nameof(mode)),
        };
    }

    /// <summary>Frames <paramref name="payload"/> into <paramref name="dst"/> (must not overlap);
    /// returns the framed length.</summary>
    public static int Encode(CompressionFramingMode mode, ReadOnlySpan<byte> payload, Span<byte> dst)
    {
        int len = GetEncodedLength(mode, payload);
        if (dst.Length < len)
        {
            throw new ArgumentException($"destination too small: need {len}", nameof(dst));
        }

        if (payload.IsEmpty)
        {
            return 0;
        }

        switch (mode)
        {
            case CompressionFramingMode.None:
                payload.CopyTo(dst);
                break;
            case CompressionFramingMode.LzoStub:
                dst[0] = NoCompressByte;
                payload.CopyTo(dst[1..]);
                break;
            case CompressionFramingMode.CompStub:
                // "swap": 0xFB takes the first byte's place, the first byte goes to the end,
                // so the payload after the header keeps its alignment.
                dst[0] = NoCompressByteSwap;
                payload[1..].CopyTo(dst[1..]);
                dst[payload.Length] = payload[0];
                break;
            case CompressionFramingMode.CompStubV2:
                if (payload[0] == V2IndicatorByte)
                {
                    dst[0] = V2IndicatorByte;
                    dst[1] = V2Uncompressed;
                    payload.CopyTo(dst[2..]);
                }
                else
                {
                    payload.CopyTo(dst);
                }

                break;
        }

        return len;
    }

    /// <summary>
    /// Removes the framing in place. On success the original payload is
    /// <c>packet.Slice(offset, length)</c>. For <see cref="CompressionFramingMode.CompStub"/>
    /// the first byte of <paramref name="packet"/> is overwritten (the swap is undone in place).
    /// </summary>
    public static DataDropReason Decode(CompressionFramingMode mode, Span<byte> packet, out int offset, out int length)
    {
        offset = 0;
        length = packet.Length;
        if (packet.IsEmpty)
        {
            return DataDropReason.None;
        }

        byte b = packet[0];
        switch (mode)
        {
            case CompressionFramingMode.None:
                return DataDropReason.None;

            case CompressionFramingMode.LzoStub:
                if (b == NoCompressByte)
                {
                    offset = 1;
                    length = packet.Length - 1;
                    return DataDropReason.None;
                }

                return Reject(b);

            case CompressionFramingMode.CompStub:
                if (b == NoCompressByteSwap)
                {
                    packet[0] = packet[^1];
                    length = packet.Length - 1;
                    return DataDropReason.None;
                }

                return Reject(b);

            case CompressionFramingMode.CompStubV2:
                if (b != V2IndicatorByte)
                {
                    return DataDropReason.None; // uncompressed and not starting with 0x50: no framing
                }

                if (packet.Length < 2)
                {
                    return DataDropReason.Malformed;
                }

                byte alg = packet[1];
                if (alg == V2Uncompressed)
                {
                    offset = 2;
                    length = packet.Length - 2;
                    return DataDropReason.None;
                }

                // 1 = LZ4, 2 = LZO, 3 = Snappy: real compression we do not implement.
                return alg is 1 or 2 or 3 ? DataDropReason.CompressionUnsupported : DataDropReason.Malformed;

            default:
                throw new ArgumentOutOfRangeException(nameof(mode));
        }
    }

    private static DataDropReason Reject(byte b) =>
        b is LzoCompressByte or Lz4CompressByte ? DataDropReason.CompressionUnsupported : DataDropReason.Malformed;
}
