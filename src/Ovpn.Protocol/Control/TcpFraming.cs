// SPDX-License-Identifier: MIT
using System.Buffers.Binary;

namespace Ovpn.Protocol.Control;

/// <summary>
/// OpenVPN over TCP: every packet is prefixed with its length as u16 big-endian (not counting the
/// 2 length bytes). A length of 0 or above the receive buffer size is fatal for the connection.
/// </summary>
public static class TcpFraming
{
    public const int PrefixSize = 2;
    public const int MaxFrameLength = ushort.MaxValue;

    public static byte[] Frame(ReadOnlySpan<byte> packet)
    {
        var dst = new byte[PrefixSize + packet.Length];
        WriteFrame(packet, dst);
        return dst;
    }

    /// <summary>Writes prefix + packet into dst; returns bytes written.</summary>
    public static int WriteFrame(ReadOnlySpan<byte> packet, Span<byte> dst)
    {
        if (packet.IsEmpty || packet.Length > MaxFrameLength)
        {
            throw new ArgumentException($"TCP frame payload must be 1..{MaxFrameLength} bytes", nameof(packet));
        }

        if (dst.Length < PrefixSize + packet.Length)
        {
            throw new ArgumentException("Destination too small", nameof(dst));
        }

        BinaryPrimitives.WriteUInt16BigEndian(dst, (ushort)packet.Length);
        packet.CopyTo(dst[PrefixSize..]);
        return PrefixSize + packet.Length;
    }
}

public enum TcpFrameStatus { NeedMore, Packet, Error }

/// <summary>
/// Stateful TCP de-framer: <see cref="Feed"/> arbitrary chunks, then call <see cref="TryRead"/>
/// until it returns <see cref="TcpFrameStatus.NeedMore"/>. After an error the decoder stays in the
/// error state (the connection must be closed). Buffers at most one partial frame between calls
/// if the caller drains after each feed. Not thread-safe.
/// </summary>
public sealed class TcpFrameDecoder
{
    private readonly int _maxPacketLength;
    private byte[] _buf;
    private int _start;
    private int _end;

    /// <param name="maxPacketLength">Largest packet accepted (OpenVPN: its receive buffer size).</param>
    public TcpFrameDecoder(int maxPacketLength = 4096)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxPacketLength, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(maxPacketLength, TcpFraming.MaxFrameLength);
        _maxPacketLength = maxPacketLength;
        _buf = new byte[Math.Min(8192, maxPacketLength + TcpFraming.PrefixSize) * 2];
    }

    public string? Error { get; private set; }

    public int BufferedBytes => _end - _start;

    public void Feed(ReadOnlySpan<byte> chunk)
    {
        if (Error is not null || chunk.IsEmpty)
        {
            return;
        }

        if (_buf.Length - _end < chunk.Length)
        {
            // Compact, then grow if still needed.
            int live = _end - _start;
            if (_buf.Length - live < chunk.Length)
            {
                var bigger = new byte[Math.Max(_buf.Length * 2, live + chunk.Length)];
                _buf.AsSpan(_start, live).CopyTo(bigger);
                _buf = bigger;
            }
            else
            {
                _buf.AsSpan(_start, live).CopyTo(_buf);
            }

            _start = 0;
            _end = live;
        }

        chunk.CopyTo(_buf.AsSpan(_end));
        _end += chunk.Length;
    }

    /// <summary>Next whole packet (a fresh array), if buffered.</summary>
    public TcpFrameStatus TryRead(out byte[]? packet)
    {
        packet = null;
        if (Error is not null)
        {
            return TcpFrameStatus.Error;
        }

        int avail = _end - _start;
        if (avail < TcpFraming.PrefixSize)
        {
            return TcpFrameStatus.NeedMore;
        }

        int len = BinaryPrimitives.ReadUInt16BigEndian(_buf.AsSpan(_start, 2));
        if (len == 0 || len > _maxPacketLength)
        {
            Error = $"Bad encapsulated packet length from peer ({len})";
            return TcpFrameStatus.Error;
        }

        if (avail < TcpFraming.PrefixSize + len)
        {
            return TcpFrameStatus.NeedMore;
        }

        packet = _buf.AsSpan(_start + TcpFraming.PrefixSize, len).ToArray();
        _start += TcpFraming.PrefixSize + len;
        if (_start == _end)
        {
            _start = _end = 0;
        }

        return TcpFrameStatus.Packet;
    }
}
