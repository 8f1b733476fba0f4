// SPDX-License-Identifier: MIT
using System.Diagnostics;
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
/// <para>
/// UDP segmentation offload, invisible to the caller (one <see cref="PacketBuffer"/> is always one
/// datagram):
/// </para>
/// <list type="bullet">
/// <item><b>Send (GSO, UDP_SEGMENT)</b>: runs of consecutive buffers to the same address with equal
/// lengths (the last may be shorter) become one message whose iovecs point at the buffers (a
/// gather, no copy) plus a UDP_SEGMENT cmsg; the kernel cuts it back into datagrams as late as
/// possible (in the NIC with UDP segmentation offload, else just before the driver; on loopback at
/// the receiving socket unless it has GRO on). The gather needs no per-socket send area, so
/// concurrent senders stay independent. Several such messages and plain singles still go out in one
/// sendmmsg. A GSO message the kernel refuses is resent as plain
/// datagrams in the same call (nothing is lost) and remembered: EINVAL/EMSGSIZE mostly mean the
/// segment is above the path MTU (datagrams the kernel would fragment, e.g. OpenVPN's default
/// 1500-byte tun MTU on a 1500-byte link), so only runs of that size or larger go plain from then
/// on (<see cref="GsoMaxSegment"/>); EIO (device without checksum offload, IPsec route) or
/// <see cref="MaxGsoRefusals"/> refusals switch GSO off for the socket (<see cref="GsoFallbackReason"/>).</item>
/// <item><b>Receive (GRO, UDP_GRO)</b>: the kernel may hand one message holding several datagrams
/// of one sender, all of the segment size from the UDP_GRO cmsg except a shorter last one. Such a
/// message can be up to 64 KiB, more than a PacketBuffer holds, so with GRO on recvmmsg goes into
/// <c>groBuffers</c> native 64 KiB areas and every datagram is copied into its own PacketBuffer
/// (memory per socket: groBuffers x 64 KiB). Datagrams that do not fit into the caller's buffers
/// stay here and come first on the next call (nothing is dropped).</item>
/// </list>
/// <para>
/// <b>Receive moderation</b> (<see cref="RxModerationMicros"/>, off unless set): what a NIC's
/// interrupt coalescing (rx-usecs) does, in the reader. A client that sends one datagram per
/// syscall (the stock openvpn client) otherwise costs the reader one poll sleep and wake-up, two
/// recvmmsg calls and one TUN write per datagram; profiled on the tunnel bench, the sleep/wake-up
/// alone was ~20 % of the server's CPU. While datagrams are streaming in (one arrived within the
/// last <see cref="ModerationStreamWindowMicros"/>, by default two intervals), a receive that
/// finds the socket empty sleeps for the moderation interval (a timer, not a wake-up per datagram)
/// and takes whatever queued up meanwhile in one recvmmsg; only if that finds nothing does it fall back to poll(2). An idle
/// socket is never delayed (the first datagram after a pause is read at once), so the added
/// latency is at most the interval plus the thread's timer slack (set to 1 us on the reader).
/// </para>
/// Thread-safety: one thread may call <see cref="ReceiveBatch"/> (its headers and the GRO
/// carry-over are per socket); <see cref="SendBatch"/> builds headers, iovecs and cmsgs on the
/// caller's stack, so several workers may send at once.
/// </summary>
public sealed unsafe class UdpBatchSocket : IBatchDatagramSocket
{
    /// <summary>Size of one GRO receive area: the largest message UDP GRO can build.</summary>
    public const int GroBufferBytes = 65536;

    /// <summary>Default number of GRO receive areas (1 MiB per socket).</summary>
    public const int DefaultGroBuffers = 16;

    /// <summary>Refusals (EINVAL/EMSGSIZE at ever smaller segment sizes) after which GSO is off.</summary>
    public const int MaxGsoRefusals = 4;

    private const int SockaddrMax = 28;
    private const int MaxSendBatch = 128;

    // Largest UDP payload of one IPv4 message (65535 - 20 IP - 8 UDP); the kernel applies it to a
    // GSO message as a whole.
    private const int MaxGsoBytes = 65507;

    // Room for the UDP_GRO cmsg (24 bytes) and anything else the kernel might add.
    private const int RxCtrlBytes = 64;
    private const int GsoCtrlBytes = 24; // CMSG_SPACE(sizeof(u16))

    private readonly Socket _socket;
    private readonly SafeHandle _handle;
    private readonly int _maxBatch;

    // Plain receive: headers pointing straight at the caller's pinned buffers.
    private readonly MMsgHdr* _rxHdrs;
    private readonly IoVec* _rxIov;
    private readonly byte* _rxNames;

    // GRO receive: native areas, their headers and the not yet handed out remainder.
    private readonly bool _gro;
    private readonly int _groSlots;
    private readonly byte* _groData;
    private readonly MMsgHdr* _groHdrs;
    private readonly IoVec* _groIov;
    private readonly byte* _groNames;
    private readonly byte* _groCtrl;
    private readonly int* _groSeg;
    private int _pendMsgs;
    private int _pendMsg;
    private int _pendOff;

    private int _gso; // 1 while GSO is used; flips to 0 once (EIO, or too many refusals)
    private int _gsoMaxSegment = MaxGsoBytes; // runs with larger datagrams go out one by one
    private int _gsoRefusals;
    private string? _gsoFallbackReason;
    private int _disposed;

    // Receive moderation (reader thread only): interval, and when a datagram last arrived.
    private long _moderationNs;
    private long _lastRxTimestamp = long.MinValue / 2;
    private long _moderatedWaits;
    private bool _sawEmpty; // the last receive found the socket empty (reader thread only)
    private long _windowTicks = Stopwatch.Frequency / 1000;
    private bool _windowSet;
    [ThreadStatic]
    private static bool t_timerSlackSet;

    // Receive counters: one reader thread, plain fields. Send counters: Interlocked, once per call.
    private long _rxDatagrams;
    private long _rxSyscalls;
    private long _groMessages;
    private long _groDatagrams;
    private long _txDatagrams;
    private long _txSyscalls;
    private long _gsoMessages;
    private long _gsoDatagrams;
    private long _gsoFallbacks;

    /// <param name="socket">A bound UDP socket; it stays the caller's (never closed here), but
    /// with <paramref name="gro"/> its UDP_GRO option is switched on.</param>
    /// <param name="maxBatch">Most datagrams one plain recvmmsg fills.</param>
    /// <param name="gso">Use UDP_SEGMENT on send when the kernel has it.</param>
    /// <param name="gro">Use UDP_GRO on receive when the kernel has it.</param>
    /// <param name="groBuffers">64 KiB receive areas (messages per recvmmsg) with GRO on.</param>
    public UdpBatchSocket(Socket socket, int maxBatch = 64, bool gso = true, bool gro = true, int groBuffers = DefaultGroBuffers)
    {
        if (socket.SocketType != SocketType.Dgram)
        {
            throw new ArgumentException("a UDP socket is required", nameof(socket));
        }

        ArgumentOutOfRangeException.ThrowIfLessThan(maxBatch, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(groBuffers, 1);
        _socket = socket;
        _handle = socket.SafeHandle;
        _maxBatch = maxBatch;
        GsoRequested = gso;
        GroRequested = gro;
        int fd = (int)_handle.DangerousGetHandle();

        // Probe once: getsockopt(UDP_SEGMENT) exists exactly on kernels that accept the cmsg
        // (4.18+). Whether the egress device can do it only shows on the first send.
        if (gso)
        {
            int v = 0;
            uint len = sizeof(int);
            if (NetInterop.GetSockOpt(fd, NetInterop.SOL_UDP, NetInterop.UDP_SEGMENT, &v, &len) == 0)
            {
                _gso = 1;
            }
            else
            {
                _gsoFallbackReason = $"getsockopt(UDP_SEGMENT) failed, errno {Marshal.GetLastPInvokeError()}";
            }
        }

        if (gro)
        {
            int one = 1;
            _gro = NetInterop.SetSockOpt(fd, NetInterop.SOL_UDP, NetInterop.UDP_GRO, &one, sizeof(int)) == 0;
        }

        if (_gro)
        {
            _groSlots = groBuffers;
            _groData = (byte*)NativeMemory.AlignedAlloc((nuint)groBuffers * GroBufferBytes, 64);
            _groHdrs = (MMsgHdr*)NativeMemory.AllocZeroed((nuint)(groBuffers * sizeof(MMsgHdr)));
            _groIov = (IoVec*)NativeMemory.AllocZeroed((nuint)(groBuffers * sizeof(IoVec)));
            _groNames = (byte*)NativeMemory.AllocZeroed((nuint)(groBuffers * SockaddrMax));
            _groCtrl = (byte*)NativeMemory.AllocZeroed((nuint)(groBuffers * RxCtrlBytes));
            _groSeg = (int*)NativeMemory.AllocZeroed((nuint)(groBuffers * sizeof(int)));
        }
        else
        {
            _rxHdrs = (MMsgHdr*)NativeMemory.AllocZeroed((nuint)(maxBatch * sizeof(MMsgHdr)));
            _rxIov = (IoVec*)NativeMemory.AllocZeroed((nuint)(maxBatch * sizeof(IoVec)));
            _rxNames = (byte*)NativeMemory.AllocZeroed((nuint)(maxBatch * SockaddrMax));
        }
    }

    public Socket Socket => _socket;

    /// <summary>GSO was asked for in the constructor.</summary>
    public bool GsoRequested { get; }

    /// <summary>GRO was asked for in the constructor.</summary>
    public bool GroRequested { get; }

    /// <summary>Sends currently use UDP_SEGMENT (false when not requested, not supported, or after
    /// the kernel refused a GSO send).</summary>
    public bool GsoEnabled => Volatile.Read(ref _gso) != 0;

    /// <summary>The socket has UDP_GRO on and receives through the coalescing path.</summary>
    public bool GroEnabled => _gro;

    /// <summary>Largest segment size still sent with GSO (lowered below a size the kernel refused).</summary>
    public int GsoMaxSegment => Volatile.Read(ref _gsoMaxSegment);

    /// <summary>Why GSO is off or limited although it was requested (null while on or not requested).</summary>
    public string? GsoFallbackReason => Volatile.Read(ref _gsoFallbackReason);

    /// <summary>A receive counts as "streaming" (and may be moderated) while the last datagram is
    /// at most this many microseconds old (at least 1; unless set, twice <see cref="RxModerationMicros"/>).</summary>
    public long ModerationStreamWindowMicros
    {
        get => Volatile.Read(ref _windowTicks) * 1_000_000 / Stopwatch.Frequency;
        set
        {
            ArgumentOutOfRangeException.ThrowIfLessThan(value, 1);
            _windowSet = true;
            Volatile.Write(ref _windowTicks, Math.Max(1, (long)(value * (Stopwatch.Frequency / 1e6))));
        }
    }

    /// <summary>
    /// Receive moderation interval in microseconds (0 = off, the default; at most 1000): see the
    /// class remarks. Set before the reader starts or from the reader thread.
    /// </summary>
    public int RxModerationMicros
    {
        get => (int)(Volatile.Read(ref _moderationNs) / 1000);
        set
        {
            ArgumentOutOfRangeException.ThrowIfNegative(value);
            ArgumentOutOfRangeException.ThrowIfGreaterThan(value, 1000);
            Volatile.Write(ref _moderationNs, value * 1000L);
            if (!_windowSet && value > 0)
            {
                // Moderate only when datagrams come faster than one per two intervals: at lower
                // rates the wait would mostly find nothing and cost a timer wake-up on top of the
                // poll wake-up it was meant to save.
                Volatile.Write(ref _windowTicks, Math.Max(1, (long)(2 * value * (Stopwatch.Frequency / 1e6))));
            }
        }
    }

    /// <summary>Receives that slept for the moderation interval instead of polling (exact when read
    /// from the reader thread or after it stopped).</summary>
    public long ModeratedWaits => Volatile.Read(ref _moderatedWaits);

    /// <summary>Counters since construction (receive fields are exact only when read from the
    /// reader thread or after it stopped).</summary>
    public UdpBatchCounters Counters => new(
        Interlocked.Read(ref _txDatagrams),
        Interlocked.Read(ref _txSyscalls),
        Interlocked.Read(ref _gsoMessages),
        Interlocked.Read(ref _gsoDatagrams),
        Interlocked.Read(ref _gsoFallbacks),
        Volatile.Read(ref _rxDatagrams),
        Volatile.Read(ref _rxSyscalls),
        Volatile.Read(ref _groMessages),
        Volatile.Read(ref _groDatagrams));

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
        count = Math.Min(count, buffers.Length);
        bool added = false;
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
        _handle.DangerousAddRef(ref added);
        try
        {
            int fd = (int)_handle.DangerousGetHandle();
            int n = _gro ? ReceiveGro(fd, buffers, count, timeoutMs) : ReceivePlain(fd, buffers, Math.Min(count, _maxBatch), timeoutMs);
            _rxDatagrams += n;
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

    private int ReceivePlain(int fd, PacketBuffer[] buffers, int count, int timeoutMs)
    {
        if (count <= 0)
        {
            return 0;
        }

        int n = Recv(fd, _rxHdrs, buffers, count, timeoutMs, throwOnError: true);
        for (int i = 0; i < n; i++)
        {
            var b = buffers[i];
            b.Offset = 0;
            b.Length = (int)_rxHdrs[i].Len;
            b.SetAddress(new ReadOnlySpan<byte>(_rxNames + (i * SockaddrMax), (int)_rxHdrs[i].Hdr.NameLen));
        }

        return n;
    }

    /// <summary>
    /// GRO path: first what the previous call could not hand out, then (only if room is left) one
    /// recvmmsg into the native areas, split into datagrams. Does not block when it already has
    /// datagrams for the caller.
    /// </summary>
    private int ReceiveGro(int fd, PacketBuffer[] buffers, int count, int timeoutMs)
    {
        int filled = DrainGro(buffers, 0, count);
        if (filled == count)
        {
            return filled;
        }

        // The carry-over is empty here, so the areas may be overwritten.
        int n = Recv(fd, _groHdrs, null, _groSlots, filled > 0 ? 0 : timeoutMs, throwOnError: filled == 0);
        if (n <= 0)
        {
            return filled;
        }

        for (int k = 0; k < n; k++)
        {
            int len = (int)_groHdrs[k].Len;
            int seg = GroSegmentSize(k);
            if (seg <= 0 || seg >= len)
            {
                seg = 0; // one datagram
            }
            else
            {
                _groMessages++;
                _groDatagrams += (len + seg - 1) / seg;
            }

            _groSeg[k] = seg;
        }

        _pendMsgs = n;
        _pendMsg = 0;
        _pendOff = 0;
        return DrainGro(buffers, filled, count);
    }

    /// <summary>The UDP_GRO cmsg's segment size of received message <paramref name="k"/>, or 0.</summary>
    private int GroSegmentSize(int k)
    {
        byte* ctrl = _groCtrl + (k * RxCtrlBytes);
        int ctrlLen = (int)Math.Min(_groHdrs[k].Hdr.ControlLen, (nuint)RxCtrlBytes);
        int off = 0;
        while (off + sizeof(CMsgHdr) <= ctrlLen)
        {
            var c = (CMsgHdr*)(ctrl + off);
            int clen = (int)c->Len;
            if (clen < sizeof(CMsgHdr) || off + clen > ctrlLen)
            {
                break;
            }

            if (c->Level == NetInterop.SOL_UDP && c->Type == NetInterop.UDP_GRO && clen >= NetInterop.CmsgLen(sizeof(int)))
            {
                return *(int*)(c + 1);
            }

            off += NetInterop.CmsgAlign(clen);
        }

        return 0;
    }

    /// <summary>Copies pending datagrams into buffers[filled..count); returns the new fill level.</summary>
    private int DrainGro(PacketBuffer[] buffers, int filled, int count)
    {
        while (filled < count && _pendMsg < _pendMsgs)
        {
            int k = _pendMsg;
            int len = (int)_groHdrs[k].Len;
            int seg = _groSeg[k] == 0 ? len : _groSeg[k];
            int piece = Math.Min(seg, len - _pendOff);
            var b = buffers[filled++];
            // A datagram larger than the buffer is cut, as recvmmsg would cut it (MSG_TRUNC);
            // the engine then rejects it like any malformed packet.
            int copy = Math.Min(piece, b.Array.Length);
            new ReadOnlySpan<byte>(_groData + ((long)k * GroBufferBytes) + _pendOff, copy).CopyTo(b.Array);
            b.Offset = 0;
            b.Length = copy;
            b.SetAddress(new ReadOnlySpan<byte>(_groNames + (k * SockaddrMax), (int)_groHdrs[k].Hdr.NameLen));
            _pendOff += piece;
            if (_pendOff >= len)
            {
                _pendMsg++;
                _pendOff = 0;
            }
        }

        return filled;
    }

    /// <summary>
    /// recvmmsg into <paramref name="hdrs"/>: under load datagrams are already queued, so try first
    /// and only poll when there are none (saves one syscall per batch exactly when it matters).
    /// But when the previous call already found the socket empty (the engine asks with timeout 0
    /// before it flushes its TUN frames, then again with a timeout), poll first: a recvmmsg now
    /// would almost always fail with EAGAIN too, and poll returns at once if something came in.
    /// <paramref name="buffers"/> null means the GRO areas.
    /// </summary>
    private int Recv(int fd, MMsgHdr* hdrs, PacketBuffer[]? buffers, int count, int timeoutMs, bool throwOnError)
    {
        int n;
        int errno;
        if (!(_sawEmpty && timeoutMs != 0))
        {
            ResetHeaders(buffers, count);
            n = NetInterop.RecvMmsg(fd, hdrs, (uint)count, NetInterop.MSG_DONTWAIT, null);
            _rxSyscalls++;
            if (n > 0)
            {
                _sawEmpty = false;
                _lastRxTimestamp = Stopwatch.GetTimestamp();
                return n;
            }

            if (n == 0)
            {
                return 0;
            }

            errno = Marshal.GetLastPInvokeError();
            if (errno is not (Libc.EAGAIN or Libc.EINTR))
            {
                return throwOnError ? throw new SocketException(errno) : 0;
            }

            if (timeoutMs == 0)
            {
                _sawEmpty = true;
                return 0;
            }
        }

        _sawEmpty = false;
        long modNs = _moderationNs;
        if (modNs > 0 && Stopwatch.GetTimestamp() - _lastRxTimestamp < _windowTicks)
        {
            // Streaming: let the interval's datagrams queue up and take them in one call.
            ModerationSleep(modNs);
            _moderatedWaits++;
            ResetHeaders(buffers, count);
            n = NetInterop.RecvMmsg(fd, hdrs, (uint)count, NetInterop.MSG_DONTWAIT, null);
            _rxSyscalls++;
            if (n > 0)
            {
                _lastRxTimestamp = Stopwatch.GetTimestamp();
                return n;
            }
        }

        var pfd = new Libc.PollFd { Fd = fd, Events = Libc.POLLIN };
        int pr = Libc.Poll(&pfd, 1, timeoutMs);
        if (pr <= 0)
        {
            _sawEmpty = true;
            return 0;
        }

        if ((pfd.Revents & Libc.POLLNVAL) != 0)
        {
            throw new ObjectDisposedException(nameof(UdpBatchSocket));
        }

        ResetHeaders(buffers, count);
        n = NetInterop.RecvMmsg(fd, hdrs, (uint)count, NetInterop.MSG_DONTWAIT, null);
        _rxSyscalls++;
        if (n < 0)
        {
            errno = Marshal.GetLastPInvokeError();
            if (errno is Libc.EAGAIN or Libc.EINTR || !throwOnError)
            {
                return 0;
            }

            throw new SocketException(errno);
        }

        if (n > 0)
        {
            _lastRxTimestamp = Stopwatch.GetTimestamp();
        }

        return n;
    }

    /// <summary>Sleeps <paramref name="ns"/> on CLOCK_MONOTONIC. The calling (reader) thread's timer
    /// slack is lowered to 1 us once: the default 50 us would stretch every moderated wait.</summary>
    private static void ModerationSleep(long ns)
    {
        if (!t_timerSlackSet)
        {
            t_timerSlackSet = true;
            _ = NetInterop.Prctl(NetInterop.PR_SET_TIMERSLACK, 1000, 0, 0, 0);
        }

        var ts = new NetInterop.TimeSpec { Seconds = ns / 1_000_000_000, Nanoseconds = ns % 1_000_000_000 };
        _ = NetInterop.ClockNanosleep(NetInterop.CLOCK_MONOTONIC, 0, &ts, null);
    }

    private void ResetHeaders(PacketBuffer[]? buffers, int count)
    {
        for (int i = 0; i < count; i++)
        {
            ref var h = ref (buffers is null ? ref _groHdrs[i] : ref _rxHdrs[i]);
            if (buffers is null)
            {
                _groIov[i].Base = _groData + ((long)i * GroBufferBytes);
                _groIov[i].Len = GroBufferBytes;
                h.Hdr.Name = _groNames + (i * SockaddrMax);
                h.Hdr.Iov = &_groIov[i];
                h.Hdr.Control = _groCtrl + (i * RxCtrlBytes);
                h.Hdr.ControlLen = RxCtrlBytes;
            }
            else
            {
                var b = buffers[i];
                // The arrays are pinned (GC.AllocateArray pinned: true), so the address is stable.
                _rxIov[i].Base = (byte*)Unsafe.AsPointer(ref b.Array[0]);
                _rxIov[i].Len = (nuint)b.Array.Length;
                h.Hdr.Name = _rxNames + (i * SockaddrMax);
                h.Hdr.Iov = &_rxIov[i];
                h.Hdr.Control = null;
                h.Hdr.ControlLen = 0;
            }

            h.Hdr.NameLen = SockaddrMax;
            h.Hdr.IovLen = 1;
            h.Hdr.Flags = 0;
            h.Len = 0;
        }
    }

    /// <summary>
    /// Sends buffers[0..count). Returns how many datagrams were dealt with (sent, or skipped after
    /// a hard per-message error such as a pending ICMP error); the rest were not sent because the
    /// socket stayed full.
    /// </summary>
    public int SendBatch(PacketBuffer[] buffers, int count)
    {
        bool added = false;
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
        _handle.DangerousAddRef(ref added);
        try
        {
            int fd = (int)_handle.DangerousGetHandle();
            var hdrs = stackalloc MMsgHdr[MaxSendBatch];
            var iov = stackalloc IoVec[MaxSendBatch];
            // Address objects live on the normal heap (not pinned): their sockaddr bytes are copied
            // to the stack so nothing managed has to stay put during the syscall.
            byte* names = stackalloc byte[MaxSendBatch * SockaddrMax];
            byte* ctrl = stackalloc byte[MaxSendBatch * GsoCtrlBytes];
            int* dgrams = stackalloc int[MaxSendBatch];
            int done = 0;
            long sent = 0, syscalls = 0, gsoMsgs = 0, gsoDgrams = 0;
            while (done < count)
            {
                int chunk = Math.Min(count - done, MaxSendBatch);
                int msgs = BuildMessages(buffers, done, chunk, GsoEnabled ? GsoMaxSegment : 0, hdrs, iov, names, ctrl, dgrams);
                int m = 0;
                int stalls = 0;
                while (m < msgs)
                {
                    int n = NetInterop.SendMmsg(fd, hdrs + m, (uint)(msgs - m), 0);
                    syscalls++;
                    if (n > 0)
                    {
                        for (int k = m; k < m + n; k++)
                        {
                            done += dgrams[k];
                            sent += dgrams[k];
                            if (hdrs[k].Hdr.ControlLen != 0)
                            {
                                gsoMsgs++;
                                gsoDgrams += dgrams[k];
                            }
                        }

                        m += n;
                        stalls = 0;
                        continue;
                    }

                    int errno = n < 0 ? Marshal.GetLastPInvokeError() : Libc.EAGAIN;
                    if (errno == Libc.EINTR)
                    {
                        continue;
                    }

                    if (hdrs[m].Hdr.ControlLen != 0 && errno is NetInterop.EIO or NetInterop.EINVAL or NetInterop.EMSGSIZE)
                    {
                        // Nothing of this message went out: remember the refusal and rebuild the
                        // rest of the batch from here (this run then goes out plain).
                        GsoRefused(errno, (int)hdrs[m].Hdr.Iov[0].Len);
                        break;
                    }

                    if (errno == Libc.EAGAIN)
                    {
                        if (++stalls >= 3)
                        {
                            AddSendCounters(sent, syscalls, gsoMsgs, gsoDgrams);
                            return done;
                        }

                        var pfd = new Libc.PollFd { Fd = fd, Events = Libc.POLLOUT };
                        Libc.Poll(&pfd, 1, 10);
                        continue;
                    }

                    // ECONNREFUSED from an earlier ICMP and the like: skip this message, keep the rest.
                    done += dgrams[m];
                    m++;
                }
            }

            AddSendCounters(sent, syscalls, gsoMsgs, gsoDgrams);
            return done;
        }
        finally
        {
            if (added)
            {
                _handle.DangerousRelease();
            }
        }
    }

    /// <summary>
    /// Turns buffers[start..start+chunk) into messages: for segment sizes up to
    /// <paramref name="gsoMaxSegment"/> (0: no GSO), a run of
    /// buffers to one address with equal lengths (the last may be shorter; at most
    /// UDP_MAX_SEGMENTS and 65507 bytes) is one message with one iovec per buffer and a
    /// UDP_SEGMENT cmsg; everything else is a plain one-datagram message. Returns the message
    /// count; <paramref name="dgrams"/>[m] says how many datagrams message m carries.
    /// </summary>
    private static int BuildMessages(PacketBuffer[] buffers, int start, int chunk, int gsoMaxSegment,
        MMsgHdr* hdrs, IoVec* iov, byte* names, byte* ctrl, int* dgrams)
    {
        int msgs = 0;
        int end = start + chunk;
        int i = start;
        while (i < end)
        {
            var first = buffers[i];
            int seg = first.Length;
            int j = i + 1;
            if (seg > 0 && seg <= gsoMaxSegment)
            {
                var a = first.Address;
                var aBytes = a.Buffer.Span[..a.Size];
                int total = seg;
                while (j < end && j - i < NetInterop.UdpMaxSegments)
                {
                    var c = buffers[j];
                    int len = c.Length;
                    if (len > seg || len == 0 || total + len > MaxGsoBytes)
                    {
                        break;
                    }

                    var ca = c.Address;
                    if (ca.Size != a.Size || !ca.Buffer.Span[..ca.Size].SequenceEqual(aBytes))
                    {
                        break;
                    }

                    total += len;
                    j++;
                    if (len < seg)
                    {
                        break; // a shorter datagram can only end a run
                    }
                }
            }

            for (int k = i; k < j; k++)
            {
                var b = buffers[k];
                iov[k - start].Base = (byte*)Unsafe.AsPointer(ref b.Array[b.Offset]);
                iov[k - start].Len = (nuint)b.Length;
            }

            var addr = first.Address;
            byte* name = names + (msgs * SockaddrMax);
            addr.Buffer.Span[..addr.Size].CopyTo(new Span<byte>(name, SockaddrMax));
            ref var h = ref hdrs[msgs];
            h.Hdr.Name = name;
            h.Hdr.NameLen = (uint)addr.Size;
            h.Hdr.Iov = &iov[i - start];
            h.Hdr.IovLen = (nuint)(j - i);
            h.Hdr.Flags = 0;
            h.Len = 0;
            if (j - i > 1)
            {
                byte* cm = ctrl + (msgs * GsoCtrlBytes);
                var c = (CMsgHdr*)cm;
                c->Len = (nuint)NetInterop.CmsgLen(sizeof(ushort));
                c->Level = NetInterop.SOL_UDP;
                c->Type = NetInterop.UDP_SEGMENT;
                *(ushort*)(c + 1) = (ushort)seg;
                h.Hdr.Control = cm;
                h.Hdr.ControlLen = GsoCtrlBytes;
            }
            else
            {
                h.Hdr.Control = null;
                h.Hdr.ControlLen = 0;
            }

            dgrams[msgs++] = j - i;
            i = j;
        }

        return msgs;
    }

    /// <summary>The kernel refused a GSO message with segment size <paramref name="seg"/>.</summary>
    private void GsoRefused(int errno, int seg)
    {
        Interlocked.Increment(ref _gsoFallbacks);
        int refusals = Interlocked.Increment(ref _gsoRefusals);
        string reason;
        if (errno == NetInterop.EIO || refusals >= MaxGsoRefusals)
        {
            if (Interlocked.Exchange(ref _gso, 0) == 0)
            {
                return; // another sender got there first
            }

            reason = $"kernel refused UDP_SEGMENT sends (errno {errno}, {refusals} time(s)); GSO off, datagrams go one by one";
        }
        else
        {
            int cur;
            do
            {
                cur = Volatile.Read(ref _gsoMaxSegment);
            }
            while (seg - 1 < cur && Interlocked.CompareExchange(ref _gsoMaxSegment, seg - 1, cur) != cur);

            reason = $"kernel refused a UDP_SEGMENT send of {seg}-byte segments (errno {errno}, likely above the path MTU); larger runs go one by one";
        }

        // Logged once per refusal, and refusals are bounded (MaxGsoRefusals), so no log flood.
        Volatile.Write(ref _gsoFallbackReason, reason);
        Trace.TraceWarning("UdpBatchSocket: " + reason);
    }

    private void AddSendCounters(long sent, long syscalls, long gsoMsgs, long gsoDgrams)
    {
        Interlocked.Add(ref _txDatagrams, sent);
        Interlocked.Add(ref _txSyscalls, syscalls);
        if (gsoMsgs != 0)
        {
            Interlocked.Add(ref _gsoMessages, gsoMsgs);
            Interlocked.Add(ref _gsoDatagrams, gsoDgrams);
        }
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        // The socket itself belongs to the server; only the native memory is ours. A reader
        // still inside ReceiveBatch returns within its poll timeout, which the engine waits for
        // before the server disposes this object.
        NativeMemory.Free(_rxHdrs);
        NativeMemory.Free(_rxIov);
        NativeMemory.Free(_rxNames);
        NativeMemory.AlignedFree(_groData);
        NativeMemory.Free(_groHdrs);
        NativeMemory.Free(_groIov);
        NativeMemory.Free(_groNames);
        NativeMemory.Free(_groCtrl);
        NativeMemory.Free(_groSeg);
    }
}
