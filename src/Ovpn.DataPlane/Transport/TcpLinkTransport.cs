// SPDX-License-Identifier: MIT
using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;

namespace Ovpn.DataPlane.Transport;

/// <summary>
/// One TCP connection from a client. Packets are framed with a u16 big-endian length (OpenVPN's
/// packet_size_type). Send is thread-safe (a lock serialises writers so frames never interleave).
/// </summary>
public sealed class TcpLinkTransport : ILinkTransport
{
    public const int MaxPacket = 2048 + 64;
    private readonly Socket _socket;
    private readonly object _sendLock = new();
    private readonly byte[] _sendBuffer = new byte[2 + 65535];
    private int _closed;

    public TcpLinkTransport(Socket socket)
    {
        _socket = socket;
        _socket.NoDelay = true;
        Remote = socket.RemoteEndPoint is IPEndPoint ep && ep.Address.IsIPv4MappedToIPv6
            ? new IPEndPoint(ep.Address.MapToIPv4(), ep.Port)
            : socket.RemoteEndPoint ?? new IPEndPoint(IPAddress.None, 0);
    }

    public Socket Socket => _socket;

    public EndPoint Remote { get; }

    public bool IsTcp => true;

    public bool IsClosed => Volatile.Read(ref _closed) != 0;

    public void Send(ReadOnlySpan<byte> packet)
    {
        if (packet.Length is 0 or > 65535 || IsClosed)
        {
            return;
        }

        lock (_sendLock)
        {
            BinaryPrimitives.WriteUInt16BigEndian(_sendBuffer, (ushort)packet.Length);
            packet.CopyTo(_sendBuffer.AsSpan(2));
            try
            {
                int total = packet.Length + 2, sent = 0;
                while (sent < total)
                {
                    sent += _socket.Send(_sendBuffer.AsSpan(sent, total - sent), SocketFlags.None);
                }
            }
            catch (Exception e) when (e is SocketException or ObjectDisposedException)
            {
                Close();
            }
        }
    }

    public string Describe() => $"tcp:{Remote}";

    public void Close()
    {
        if (Interlocked.Exchange(ref _closed, 1) != 0)
        {
            return;
        }

        try
        {
            _socket.Shutdown(SocketShutdown.Both);
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException)
        {
        }

        _socket.Dispose();
    }

    public override string ToString() => Describe();
}
