// SPDX-License-Identifier: MIT
using System.Net;
using System.Net.Sockets;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Ovpn.DataPlane.Offload;
using Ovpn.Platform.Interop;

namespace Ovpn.Platform.Net;

/// <summary>
/// Linux batched UDP I/O for the offload engine: one recvmmsg(2) fills up to a whole batch of
/// pooled pinned buffers, one sendmmsg(2) sends a worker's batch. Works on a socket the server
/// bound with ordinary .NET APIs (its fd is borrowed, with a SafeHandle reference held per call so
/// a concurrent Dispose cannot close the number under us).
/// Thread-safety: one thread may call <see cref="ReceiveBatch"/> (its headers are preallocated);
/// <see cref="SendBatch"/> builds its headers on the caller's stack, so several workers may send
/// at once. UDP GSO/GRO are not used (see bench/README.md).
/// </summary>
public sealed unsafe class UdpBatchSocket : IBatchDatagramSocket
{
    private const int MSG_DONTWAIT = 0x40;
    private const int SockaddrMax = 28;
    private const int MaxSendBatch = 128;
    private readonly Socket _socket;
    private readonly SafeHandle _handle;
    private readonly int _maxBatch;
    private readonly MMsgHdr* _rxHdrs;
    private readonly IoVec* _rxIov;
    private readonly byte* _rxNames;
    private int _disposed;

    public UdpBatchSocket(Socket socket, int maxBatch = 64)
    {
        if (socket.SocketType != SocketType.Dgram)
        {
            throw new ArgumentException("a UDP socket is required", nameof(socket));
        }

        _socket = socket;
        _handle = socket.SafeHandle;
        _maxBatch = maxBatch;
        _rxHdrs = (MMsgHdr*)NativeMemory.AllocZeroed((nuint)(maxBatch * sizeof(MMsgHdr)));
        _rxIov = (IoVec*)NativeMemory.AllocZeroed((nuint)(maxBatch * sizeof(IoVec)));
        _rxNames = (byte*)NativeMemory.AllocZeroed((nuint)(maxBatch * SockaddrMax));
    }

    public Socket Socket => _socket;

    /// <summary>
    /// Binds <paramref name="count"/> UDP sockets to the same endpoint with SO_REUSEPORT, so the
    /// kernel spreads clients over them by flow hash (one client always lands on the same socket,
    /// which keeps its packets in order) and each gets its own reader thread.
    /// </summary>
    public static Socket[] BindReusePort(IPEndPoint endPoint, int count, int bufferBytes = 4 << 20)
    {
        var list = new Socket[count];
        for (int i = 0; i < count; i++)
        {
            var s = new Socket(endPoint.AddressFamily, SocketType.Dgram, ProtocolType.Udp);
            if (endPoint.AddressFamily == AddressFamily.InterNetworkV6)
            {
                s.DualMode = true;
            }

            s.SetRawSocketOption(1 /* SOL_SOCKET */, 15 /* SO_REUSEPORT */, BitConverter.GetBytes(1));
            s.ReceiveBufferSize = bufferBytes;
            s.SendBufferSize = bufferBytes;
            s.Bind(endPoint);
            list[i] = s;
        }

        return list;
    }

    public int ReceiveBatch(PacketBuffer[] buffers, int count, int timeoutMs)
    {
        count = Math.Min(count, _maxBatch);
        bool added = false;
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
        _handle.DangerousAddRef(ref added);
        try
        {
            int fd = (int)_handle.DangerousGetHandle();
            ResetHeaders(buffers, count);

            // Under load datagrams are already queued: try first, and only poll when there are
            // none (saves one syscall per batch exactly when it matters).
            int n = NetInterop.RecvMmsg(fd, _rxHdrs, (uint)count, MSG_DONTWAIT, null);
            if (n < 0)
            {
                int errno = Marshal.GetLastPInvokeError();
                if (errno is not (Libc.EAGAIN or Libc.EINTR))
                {
                    throw new SocketException(errno);
                }

                var pfd = new Libc.PollFd { Fd = fd, Events = Libc.POLLIN };
                int pr = Libc.Poll(&pfd, 1, timeoutMs);
                if (pr <= 0)
                {
                    return 0;
                }

                if ((pfd.Revents & Libc.POLLNVAL) != 0)
                {
                    throw new ObjectDisposedException(nameof(UdpBatchSocket));
                }

                ResetHeaders(buffers, count);
                n = NetInterop.RecvMmsg(fd, _rxHdrs, (uint)count, MSG_DONTWAIT, null);
                if (n < 0)
                {
                    errno = Marshal.GetLastPInvokeError();
                    if (errno is Libc.EAGAIN or Libc.EINTR)
                    {
                        return 0;
                    }

                    throw new SocketException(errno);
                }
            }

            for (int i = 0; i < n; i++)
            {
                var b = buffers[i];
                b.Offset = 0;
                b.Length = (int)_rxHdrs[i].Len;
                b.SetAddress(new ReadOnlySpan<byte>(_rxNames + (i * SockaddrMax), (int)_rxHdrs[i].Hdr.NameLen));
            }

            return n;
        }
        finally
        {
            if (added)
            {
                _handle.DangerousRelease();
            }
        }
    }

    private void ResetHeaders(PacketBuffer[] buffers, int count)
    {
        for (int i = 0; i < count; i++)
        {
            var b = buffers[i];
            // The arrays are pinned (GC.AllocateArray pinned: true), so the address is stable.
            _rxIov[i].Base = (byte*)Unsafe.AsPointer(ref b.Array[0]);
            _rxIov[i].Len = (nuint)b.Array.Length;
            ref var h = ref _rxHdrs[i];
            h.Hdr.Name = _rxNames + (i * SockaddrMax);
            h.Hdr.NameLen = SockaddrMax;
            h.Hdr.Iov = &_rxIov[i];
            h.Hdr.IovLen = 1;
            h.Hdr.Control = null;
            h.Hdr.ControlLen = 0;
            h.Hdr.Flags = 0;
            h.Len = 0;
        }
    }

    public int SendBatch(PacketBuffer[] buffers, int count)
    {
        bool added = false;
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
        _handle.DangerousAddRef(ref added);
        try
        {
            int fd = (int)_handle.DangerousGetHandle();
            int total = 0;
            var hdrs = stackalloc MMsgHdr[MaxSendBatch];
            var iov = stackalloc IoVec[MaxSendBatch];
            // Address objects live on the normal heap (not pinned): their sockaddr bytes are copied
            // to the stack so nothing managed has to stay put during the syscall.
            byte* names = stackalloc byte[MaxSendBatch * SockaddrMax];
            while (total < count)
            {
                int chunk = Math.Min(count - total, MaxSendBatch);
                for (int i = 0; i < chunk; i++)
                {
                    var b = buffers[total + i];
                    iov[i].Base = (byte*)Unsafe.AsPointer(ref b.Array[b.Offset]);
                    iov[i].Len = (nuint)b.Length;
                    var addr = b.Address;
                    byte* name = names + (i * SockaddrMax);
                    addr.Buffer.Span[..addr.Size].CopyTo(new Span<byte>(name, SockaddrMax));
                    ref var h = ref hdrs[i];
                    h.Hdr.Name = name;
                    h.Hdr.NameLen = (uint)addr.Size;
                    h.Hdr.Iov = &iov[i];
                    h.Hdr.IovLen = 1;
                    h.Hdr.Control = null;
                    h.Hdr.ControlLen = 0;
                    h.Hdr.Flags = 0;
                    h.Len = 0;
                }

                int sent = SendChunk(fd, hdrs, chunk);
                if (sent <= 0)
                {
                    break;
                }

                total += sent;
            }

            return total;
        }
        finally
        {
            if (added)
            {
                _handle.DangerousRelease();
            }
        }
    }

    private static int SendChunk(int fd, MMsgHdr* hdrs, int chunk)
    {
        for (int attempt = 0; attempt < 3; attempt++)
        {
            int n = NetInterop.SendMmsg(fd, hdrs, (uint)chunk, 0);
            if (n >= 0)
            {
                return n;
            }

            int errno = Marshal.GetLastPInvokeError();
            if (errno == Libc.EINTR)
            {
                continue;
            }

            if (errno != Libc.EAGAIN)
            {
                // ECONNREFUSED from an earlier ICMP and the like: skip this datagram, keep the rest.
                return 1;
            }

            var pfd = new Libc.PollFd { Fd = fd, Events = Libc.POLLOUT };
            Libc.Poll(&pfd, 1, 10);
        }

        return 0;
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        // The socket itself belongs to the server; only the native headers are ours. A reader
        // still inside ReceiveBatch returns within its poll timeout, which the engine waits for
        // before the server disposes this object.
        NativeMemory.Free(_rxHdrs);
        NativeMemory.Free(_rxIov);
        NativeMemory.Free(_rxNames);
    }
}
