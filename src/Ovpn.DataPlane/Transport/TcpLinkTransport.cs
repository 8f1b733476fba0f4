// SPDX-License-Identifier: MIT
using System.Buffers;
using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;

namespace Ovpn.DataPlane.Transport;

/// <summary>
/// One TCP connection. Packets are framed with a u16 big-endian length (OpenVPN's
/// packet_size_type).
///
/// Send never blocks: the caller may be an engine thread that serves many peers, and one client
/// that stops reading (full socket buffer) must not stall the others. Pipeline:
///   Send (any thread): under a short lock, the frame (length + packet) is appended whole to the
///     back buffer, unless the bytes queued for this connection would exceed the bound; then the
///     packet is dropped and counted (data), or, for control packets, first allowed into a small
///     reserve above the bound and only dropped (and counted) when that is full too: the control
///     channel's reliability layer resends them.
///   Drain (one at a time per connection): takes the whole back buffer, writes it with the
///     socket's async send (which completes inline while the kernel buffer has room), repeats
///     while frames are waiting, and returns the buffers to the pool when the queue is empty.
/// Frames are copied whole into one contiguous buffer under the lock and buffers are written in
/// order by a single drain, so frames never interleave and are never torn.
/// Close lets the queued frames drain first (an EXIT or RESTART sent just before it still leaves),
/// then shuts the socket down; a peer that does not read gets <see cref="CloseDrainTimeout"/>.
/// </summary>
public sealed class TcpLinkTransport : ILinkTransport
{
    public const int MaxPacket = 2048 + 64;

    /// <summary>Default bound on bytes queued (and being written) per connection.</summary>
    public const int DefaultMaxQueuedBytes = 2 << 20;

    /// <summary>Extra room for control packets above the bound, so a full data queue does not starve the control channel.</summary>
    public const int ControlReserveBytes = 64 << 10;

    /// <summary>How long Close waits for queued frames to leave before it closes the socket anyway.</summary>
    public static readonly TimeSpan CloseDrainTimeout = TimeSpan.FromSeconds(2);

    private const int InitialBufferBytes = 4096;
    private const byte OpDataV1 = 6;
    private const byte OpDataV2 = 9;

    private readonly Socket _socket;
    private readonly object _gate = new();
    private readonly int _maxQueuedBytes;
    private byte[]? _back;       // frames waiting for the drain (pool-rented)
    private int _backLength;
    private int _queuedBytes;    // waiting + being written
    private bool _draining;
    private bool _closeRequested;
    private int _closed;
    private long _droppedData;
    private long _droppedControl;

    public TcpLinkTransport(Socket socket, int maxQueuedBytes = DefaultMaxQueuedBytes)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxQueuedBytes, 2 + 65535);
        _socket = socket;
        _socket.NoDelay = true;
        _maxQueuedBytes = maxQueuedBytes;
        Remote = socket.RemoteEndPoint is IPEndPoint ep && ep.Address.IsIPv4MappedToIPv6
            ? new IPEndPoint(ep.Address.MapToIPv4(), ep.Port)
            : socket.RemoteEndPoint ?? new IPEndPoint(IPAddress.None, 0);
    }

    public Socket Socket => _socket;

    public EndPoint Remote { get; }

    public bool IsTcp => true;

    public bool IsClosed => Volatile.Read(ref _closed) != 0;

    /// <summary>Data packets dropped because the connection's send queue was full.</summary>
    public long DroppedDataPackets => Interlocked.Read(ref _droppedData);

    /// <summary>Control (non-data) packets dropped because the send queue and its control reserve were full.</summary>
    public long DroppedControlPackets => Interlocked.Read(ref _droppedControl);

    /// <summary>Bytes (frames including their length prefix) queued or being written now.</summary>
    public int QueuedBytes
    {
        get
        {
            lock (_gate)
            {
                return _queuedBytes;
            }
        }
    }

    public int MaxQueuedBytes => _maxQueuedBytes;

    public void Send(ReadOnlySpan<byte> packet)
    {
        if (packet.Length is 0 or > 65535)
        {
            return;
        }

        int op = packet[0] >> 3;
        bool isData = op is OpDataV1 or OpDataV2;
        int frame = packet.Length + 2;
        lock (_gate)
        {
            if (_closeRequested)
            {
                return;
            }

            int limit = isData ? _maxQueuedBytes : _maxQueuedBytes + ControlReserveBytes;
            if (_queuedBytes + frame > limit)
            {
                Interlocked.Increment(ref isData ? ref _droppedData : ref _droppedControl);
                return;
            }

            EnsureBackCapacity(_backLength + frame);
            var dst = _back.AsSpan(_backLength);
            BinaryPrimitives.WriteUInt16BigEndian(dst, (ushort)packet.Length);
            packet.CopyTo(dst[2..]);
            _backLength += frame;
            _queuedBytes += frame;
            if (_draining)
            {
                return;
            }

            _draining = true;
        }

        _ = DrainAsync();
    }

    private void EnsureBackCapacity(int needed)
    {
        if (_back is not null && _back.Length >= needed)
        {
            return;
        }

        int size = Math.Max(InitialBufferBytes, (int)Math.Min(int.MaxValue, System.Numerics.BitOperations.RoundUpToPowerOf2((uint)needed)));
        var bigger = ArrayPool<byte>.Shared.Rent(size);
        if (_back is not null)
        {
            _back.AsSpan(0, _backLength).CopyTo(bigger);
            ArrayPool<byte>.Shared.Return(_back);
        }

        _back = bigger;
    }

    /// <summary>Writes queued frames until the queue is empty. Only one runs per connection (<see cref="_draining"/>).</summary>
    private async Task DrainAsync()
    {
        bool first = true;
        while (true)
        {
            byte[]? buf;
            int len;
            lock (_gate)
            {
                if (_backLength == 0 || IsClosed)
                {
                    _draining = false;
                    if (_back is not null)
                    {
                        ArrayPool<byte>.Shared.Return(_back);
                        _back = null;
                        _backLength = 0;
                    }

                    _queuedBytes = 0;
                    if (_closeRequested)
                    {
                        CloseSocket();
                    }

                    return;
                }

                buf = _back;
                len = _backLength;
                _back = null;
                _backLength = 0;
            }

            if (!first)
            {
                // Later passes run off the sender's thread: the first pass may complete inline in
                // Send, but draining frames other threads keep adding is not the caller's job.
                await Task.Yield();
            }

            first = false;
            bool failed = false;
            try
            {
                int sent = 0;
                while (sent < len)
                {
                    int n = await _socket.SendAsync(buf!.AsMemory(sent, len - sent), SocketFlags.None).ConfigureAwait(false);
                    if (n <= 0)
                    {
                        failed = true;
                        break;
                    }

                    sent += n;
                }
            }
            catch (Exception e) when (e is SocketException or ObjectDisposedException)
            {
                failed = true;
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(buf!);
            }

            lock (_gate)
            {
                _queuedBytes -= len;
                if (failed)
                {
                    _closeRequested = true;
                }
            }

            if (failed)
            {
                CloseSocket();
            }
        }
    }

    public string Describe() => $"tcp:{Remote}";

    /// <summary>Closes the connection once the queued frames have left (at most <see cref="CloseDrainTimeout"/>).</summary>
    public void Close()
    {
        bool now;
        lock (_gate)
        {
            _closeRequested = true;
            now = !_draining;
        }

        if (now)
        {
            CloseSocket();
        }
        else
        {
            _ = Task.Delay(CloseDrainTimeout).ContinueWith(_ => CloseSocket(), TaskScheduler.Default);
        }
    }

    private void CloseSocket()
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
