// SPDX-License-Identifier: MIT
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Text;
using Ovpn.Platform.Interop;

namespace Ovpn.Platform.Linux;

/// <summary>
/// A Linux layer-3 TUN device (IFF_TUN | IFF_NO_PI): every Read returns one IPv4 or IPv6 packet,
/// every Write injects one.
///
/// Thread-safety and lifetime:
/// <list type="bullet">
/// <item>One thread may block in <see cref="Read"/> while other threads call <see cref="Write"/>;
/// the kernel serializes per packet. Several concurrent readers are allowed but each packet goes
/// to only one of them (use <see cref="OpenQueue"/> for real parallel queues).</item>
/// <item>Configuration methods (SetMtu, AddAddress, SetUp, Delete, MTU) may be called from any
/// thread; they go through one netlink socket created together with the device, so they act in
/// the network namespace where the device was created even when called from another one.</item>
/// <item><see cref="Dispose"/> may be called from any thread, also while another thread is blocked
/// in Read: it wakes the reader through an eventfd (Read then throws
/// <see cref="ObjectDisposedException"/>), waits up to 2 s for in-flight calls to leave, and closes
/// the fd. A non-persistent device disappears when the last queue's fd is closed.</item>
/// </list>
/// The fd is non-blocking; Read blocks in poll() on {tun fd, wake eventfd} instead of read(), which
/// is what makes the wake-up possible.
/// With <c>vnetHeader: true</c> (IFF_VNET_HDR) every packet on the fd is preceded by a 10-byte
/// <c>struct virtio_net_hdr</c>: <see cref="Read"/> and <see cref="Write"/> still move plain IP
/// packets (readv/writev with a separate header), and <see cref="WriteFrame"/> writes a frame
/// with a caller-built header (GSO super-packets from the offload engine's coalescer). By default
/// no offload stays enabled (TUNSETOFFLOAD ends at 0), so the kernel never hands us GSO packets or
/// partial checksums on read (tcpOffload below changes that). The write direction needs no offload flags (the kernel accepts any
/// GSO type it knows in a written virtio_net_hdr); whether it knows UDP segmentation
/// (VIRTIO_NET_HDR_GSO_UDP_L4, kernel 6.2+) is probed once at open: TUNSETOFFLOAD with
/// TUN_F_CSUM|TUN_F_USO4|TUN_F_USO6, then TUNSETOFFLOAD 0 again (<see cref="SupportsUdpGso"/>).
/// With <c>tcpOffload: true</c> the open then enables TUN_F_CSUM|TUN_F_TSO4|TUN_F_TSO6|TUN_F_TSO_ECN
/// (<see cref="ReadsTcpGso"/>): the kernel no longer segments TCP before the TUN, so one read may
/// return a 64 KiB super-packet with partial checksums. Such a device must be read with
/// <see cref="ReadFrame"/>/<see cref="TryReadFrame"/> (header included) and segmented by the caller
/// (the offload engine's TcpSegmenter); the plain <see cref="Read"/> skips GSO frames. USO is never
/// enabled on read (nothing here segments UDP).
/// </summary>
public sealed unsafe class TunDevice : IDisposable
{
    // linux/if_tun.h
    private const nuint TUNSETIFF = 0x400454ca; // _IOW('T', 202, int)
    private const short IFF_TUN = 0x0001;
    private const short IFF_NO_PI = 0x1000;
    private const short IFF_MULTI_QUEUE = 0x0100;
    private const short IFF_VNET_HDR = 0x4000;
    private const nuint TUNSETOFFLOAD = 0x400454d0; // _IOW('T', 208, unsigned int)
    private const uint TUN_F_CSUM = 0x01;
    private const uint TUN_F_TSO4 = 0x02;
    private const uint TUN_F_TSO6 = 0x04;
    private const uint TUN_F_TSO_ECN = 0x08;
    private const uint TUN_F_USO4 = 0x20;
    private const uint TUN_F_USO6 = 0x40;
    private const int VnetHeaderLength = 10; // sizeof(struct virtio_net_hdr), the default TUNSETVNETHDRSZ
    private const int IfNameSize = 16; // IFNAMSIZ including the NUL
    private const int IfReqSize = 40;  // struct ifreq on 64-bit Linux
    private const string CloneDevice = "/dev/net/tun";

    private readonly SafeFd _fd;
    private readonly SafeFd _wake;
    private readonly RtNetlink _netlink;
    private readonly bool _multiQueue;
    private readonly bool _vnet;
    private readonly bool _tcpOffload;
    private int _inFlight;
    private int _disposed;

    private TunDevice(SafeFd fd, SafeFd wake, RtNetlink netlink, string name, int index, bool multiQueue, bool vnet, bool tcpOffload)
    {
        _tcpOffload = tcpOffload;
        _vnet = vnet;
        _fd = fd;
        _wake = wake;
        _netlink = netlink;
        Name = name;
        Index = index;
        _multiQueue = multiQueue;
    }

    /// <summary>Interface name as assigned by the kernel (a "%d" pattern is resolved).</summary>
    public string Name { get; }

    /// <summary>Interface index in the namespace where the device was created.</summary>
    public int Index { get; }

    /// <summary>True if opened with IFF_MULTI_QUEUE (then <see cref="OpenQueue"/> works).</summary>
    public bool IsMultiQueue => _multiQueue;

    /// <summary>True if opened with IFF_VNET_HDR (then <see cref="WriteFrame"/> works).</summary>
    public bool HasVnetHeader => _vnet;

    /// <summary>
    /// Vnet devices only: the kernel accepted TUN_F_USO4|TUN_F_USO6 in the open-time probe, so it
    /// understands frames with gso_type VIRTIO_NET_HDR_GSO_UDP_L4 (UDP super-packets it segments
    /// into datagrams). False on kernels before 6.2 or without a vnet header.
    /// </summary>
    public bool SupportsUdpGso { get; private init; }

    /// <summary>Why <see cref="SupportsUdpGso"/> is false (errno text of the probe), or null.</summary>
    public string? UdpGsoUnsupportedReason { get; private init; }

    /// <summary>The kernel accepted TUNSETOFFLOAD(TUN_F_CSUM|TUN_F_TSO4|TUN_F_TSO6|TUN_F_TSO_ECN)
    /// (asked for with <c>tcpOffload: true</c>): reads may return TCP super-packets.</summary>
    public bool ReadsTcpGso { get; private init; }

    /// <summary>Why <see cref="ReadsTcpGso"/> is false, or null.</summary>
    public string? TcpGsoReadUnsupportedReason { get; private init; }

    /// <summary>Current MTU, read from the kernel on every access.</summary>
    public int Mtu
    {
        get
        {
            ThrowIfDisposed();
            return _netlink.GetLink(Name).Mtu;
        }
    }

    /// <summary>
    /// Creates (or attaches to) TUN device <paramref name="name"/> in the calling thread's network
    /// namespace. The device is not persistent: it goes away when the last fd is closed.
    /// </summary>
    /// <param name="tcpOffload">Vnet devices only: enable TSO on read (<see cref="ReadsTcpGso"/>).</param>
    public static TunDevice Create(string name, bool multiQueue = false, bool vnetHeader = false, bool tcpOffload = false)
    {
        ValidateName(name);
        if (tcpOffload && !vnetHeader)
            throw new ArgumentException("TCP segmentation offload on read needs vnetHeader: true.", nameof(tcpOffload));
        var netlink = new RtNetlink();
        try
        {
            return Open(name, multiQueue, vnetHeader, tcpOffload, netlink);
        }
        catch
        {
            netlink.Release();
            throw;
        }
    }

    /// <summary>
    /// Opens one more queue of this multi-queue device (a separate fd; the kernel spreads flows
    /// over the queues). The returned object has the same Name and shares the netlink socket;
    /// dispose it independently.
    /// </summary>
    public TunDevice OpenQueue()
    {
        ThrowIfDisposed();
        if (!_multiQueue)
            throw new InvalidOperationException($"TUN device {Name} was not created with multiQueue: true; it has only one queue.");
        _netlink.AddRef();
        try
        {
            // Open from the device's namespace: otherwise TUNSETIFF would look the name up in the
            // caller's namespace and silently create a second, unrelated device there.
            // IFF_VNET_HDR is a device-wide flag that the last TUNSETIFF sets: every queue repeats it.
            // Offload flags are device-wide too: every queue's open ends with the same TUNSETOFFLOAD.
            return _netlink.RunInNamespace(() => Open(Name, multiQueue: true, _vnet, _tcpOffload, _netlink));
        }
        catch
        {
            _netlink.Release();
            throw;
        }
    }

    /// <summary>Asks for UDP segmentation offload and turns every offload off again (the device is
    /// device-wide, so this also resets what an earlier opener set). Null = supported, else why not.</summary>
    private static string? ProbeUdpGso(int fd)
    {
        string? reason = null;
        if (Libc.Ioctl(fd, TUNSETOFFLOAD, (void*)(nuint)(TUN_F_CSUM | TUN_F_USO4 | TUN_F_USO6)) != 0)
            reason = $"TUNSETOFFLOAD(TUN_F_USO4|TUN_F_USO6) refused: errno {Marshal.GetLastPInvokeError()}";
        if (Libc.Ioctl(fd, TUNSETOFFLOAD, null) != 0)
            throw PlatformException.FromLastError("ioctl(TUNSETOFFLOAD, 0)");
        return reason;
    }

    /// <summary>Enables TSO (and checksum offload) on read; null = accepted, else why not (offloads stay 0).</summary>
    private static string? EnableTcpOffload(int fd)
    {
        if (Libc.Ioctl(fd, TUNSETOFFLOAD, (void*)(nuint)(TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN)) != 0)
            return $"TUNSETOFFLOAD(TUN_F_TSO4|TUN_F_TSO6) refused: errno {Marshal.GetLastPInvokeError()}";
        return null;
    }

    private static TunDevice Open(string name, bool multiQueue, bool vnet, bool tcpOffload, RtNetlink netlink)
    {
        int fd = Libc.Open(CloneDevice, Libc.O_RDWR | Libc.O_NONBLOCK | Libc.O_CLOEXEC);
        if (fd < 0)
            throw PlatformException.FromLastError($"open({CloneDevice})");
        var safeFd = new SafeFd(fd);
        SafeFd? wake = null;
        try
        {
            byte* ifr = stackalloc byte[IfReqSize];
            var req = new Span<byte>(ifr, IfReqSize);
            req.Clear();
            Encoding.ASCII.GetBytes(name, req.Slice(0, IfNameSize - 1));
            short flags = (short)(IFF_TUN | IFF_NO_PI | (multiQueue ? IFF_MULTI_QUEUE : 0) | (vnet ? IFF_VNET_HDR : 0));
            *(short*)(ifr + IfNameSize) = flags;
            if (Libc.Ioctl(fd, TUNSETIFF, ifr) != 0)
                throw PlatformException.FromLastError($"ioctl(TUNSETIFF, {name}{(multiQueue ? ", multi-queue" : "")})");
            string actual = Encoding.ASCII.GetString(req.Slice(0, IfNameSize)).TrimEnd('\0');
            int efd = Libc.EventFd(0, Libc.EFD_CLOEXEC | Libc.EFD_NONBLOCK);
            if (efd < 0)
                throw PlatformException.FromLastError("eventfd");
            wake = new SafeFd(efd);
            var (index, _) = netlink.GetLink(actual);
            string? usoRefused = vnet ? ProbeUdpGso(fd) : "no vnet header";
            string? tsoRefused = !vnet ? "no vnet header" : !tcpOffload ? "not asked for" : EnableTcpOffload(fd);
            return new TunDevice(safeFd, wake, netlink, actual, index, multiQueue, vnet, tcpOffload)
            {
                SupportsUdpGso = usoRefused is null,
                UdpGsoUnsupportedReason = usoRefused,
                ReadsTcpGso = tsoRefused is null,
                TcpGsoReadUnsupportedReason = tsoRefused,
            };
        }
        catch
        {
            wake?.Dispose();
            safeFd.Dispose();
            throw;
        }
    }

    private static void ValidateName(string name)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        if (name.Length >= IfNameSize)
            throw new ArgumentException($"Interface name '{name}' is longer than {IfNameSize - 1} characters.", nameof(name));
        foreach (char c in name)
            if (c <= ' ' || c > '~' || c == '/' || c == ':')
                throw new ArgumentException($"Interface name '{name}' contains an invalid character.", nameof(name));
    }

    // ---- configuration (rtnetlink) ----

    public void SetMtu(int mtu)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(mtu, 68);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(mtu, 65535);
        ThrowIfDisposed();
        _netlink.SetMtu(Index, mtu, Name);
    }

    /// <summary>Adds an IPv4 or IPv6 address with prefix (IPv6 without DAD).</summary>
    public void AddAddress(IPAddress address, int prefixLength)
    {
        ArgumentNullException.ThrowIfNull(address);
        int max = address.AddressFamily switch
        {
            AddressFamily.InterNetwork => 32,
            AddressFamily.InterNetworkV6 => 128,
            _ => throw new ArgumentException($"Unsupported address family {address.AddressFamily}.", nameof(address)),
        };
        ArgumentOutOfRangeException.ThrowIfNegative(prefixLength);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(prefixLength, max);
        ThrowIfDisposed();
        _netlink.AddAddress(Index, address, prefixLength, Name);
    }

    /// <summary>Adds an address given as "a.b.c.d/len" or "v6addr/len".</summary>
    public void AddAddress(string cidr)
    {
        var (address, prefix) = ParseCidr(cidr);
        AddAddress(address, prefix);
    }

    public void SetUp() => SetState(true);

    public void SetDown() => SetState(false);

    private void SetState(bool up)
    {
        ThrowIfDisposed();
        _netlink.SetUp(Index, up, Name);
    }

    /// <summary>Removes the interface now (RTM_DELLINK), without waiting for Dispose.</summary>
    public void Delete()
    {
        ThrowIfDisposed();
        _netlink.DeleteLink(Index, Name);
    }

    internal static (IPAddress, int) ParseCidr(string cidr)
    {
        ArgumentException.ThrowIfNullOrEmpty(cidr);
        int slash = cidr.IndexOf('/');
        if (slash < 0 || !IPAddress.TryParse(cidr.AsSpan(0, slash), out var ip) || !int.TryParse(cidr.AsSpan(slash + 1), out int prefix))
            throw new FormatException($"'{cidr}' is not an address/prefix.");
        return (ip, prefix);
    }

    // ---- I/O ----

    /// <summary>
    /// Blocks until one packet is available and copies it into <paramref name="buffer"/>
    /// (truncated if the buffer is smaller). Throws <see cref="ObjectDisposedException"/> when the
    /// device is disposed, also while waiting.
    /// </summary>
    public int Read(Span<byte> buffer) => ReadCore(buffer, CancellationToken.None);

    /// <summary>
    /// Asynchronous read. Returns synchronously when a packet is already queued; otherwise waits
    /// on a long-running worker (one thread per pending call), so this is meant for control and
    /// test paths, not for the per-packet hot path (use a dedicated thread with
    /// <see cref="Read"/> there). Cancellation is observed within about 200 ms.
    /// </summary>
    public ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        ThrowIfDisposed();
        if (buffer.IsEmpty)
            throw new ArgumentException("Empty buffer.", nameof(buffer));
        if (cancellationToken.IsCancellationRequested)
            return ValueTask.FromCanceled<int>(cancellationToken);
        int n = TryReadNonBlocking(buffer.Span);
        if (n >= 0)
            return ValueTask.FromResult(n);
        return new ValueTask<int>(Task.Factory.StartNew(
            () => ReadCore(buffer.Span, cancellationToken),
            cancellationToken, TaskCreationOptions.LongRunning, TaskScheduler.Default));
    }

    /// <summary>
    /// Like <see cref="Read"/>, but waits (poll) before the first read instead of after it: for a
    /// caller that has just seen the queue empty (<see cref="TryRead"/> returned -1), whose first
    /// read would almost always fail with EAGAIN. Saves that syscall on every wake-up of a reader
    /// that drains the queue before it blocks (the offload engine's TUN readers).
    /// </summary>
    public int ReadPollFirst(Span<byte> buffer)
    {
        if (buffer.IsEmpty)
            throw new ArgumentException("Empty buffer.", nameof(buffer));
        Enter();
        try
        {
            while (true)
            {
                if (!WaitFd(Libc.POLLIN, -1))
                    continue;
                int n = ReadOnce(buffer);
                if (n >= 0)
                    return n;
            }
        }
        finally
        {
            Leave();
        }
    }

    /// <summary>Reads one queued packet without waiting; -1 when none is queued.</summary>
    public int TryRead(Span<byte> buffer)
    {
        if (buffer.IsEmpty)
            throw new ArgumentException("Empty buffer.", nameof(buffer));
        return TryReadNonBlocking(buffer);
    }

    /// <summary>Writes one IP packet. Returns the number of bytes written (of the packet).</summary>
    public int Write(ReadOnlySpan<byte> packet)
    {
        if (packet.IsEmpty)
            throw new ArgumentException("Empty packet.", nameof(packet));
        return WriteCore(packet, withZeroHeader: _vnet);
    }

    /// <summary>
    /// Writes one frame of a vnet TUN: a 10-byte <c>struct virtio_net_hdr</c> followed by the IP
    /// packet (a TCP GSO super-packet up to 64 KiB when the header says so). The kernel checks
    /// the header (virtio_net_hdr_to_skb) and refuses an inconsistent one with EINVAL.
    /// </summary>
    public int WriteFrame(ReadOnlySpan<byte> frame)
    {
        if (!_vnet)
            throw new InvalidOperationException($"TUN device {Name} was not opened with vnetHeader: true.");
        if (frame.Length <= VnetHeaderLength)
            throw new ArgumentException("Frame shorter than the virtio_net_hdr plus one byte.", nameof(frame));
        return WriteCore(frame, withZeroHeader: false);
    }

    private int WriteCore(ReadOnlySpan<byte> packet, bool withZeroHeader)
    {
        Enter();
        // A zeroed header: no GSO, checksum complete (the kernel verifies it).
        byte* hdr = stackalloc byte[VnetHeaderLength];
        new Span<byte>(hdr, VnetHeaderLength).Clear();
        var iov = stackalloc Libc.IoVec[2];
        try
        {
            long deadline = Environment.TickCount64 + 1000;
            while (true) // bounded by the 1 s deadline below
            {
                nint n;
                fixed (byte* p = packet)
                {
                    if (withZeroHeader)
                    {
                        iov[0] = new Libc.IoVec { Base = hdr, Length = VnetHeaderLength };
                        iov[1] = new Libc.IoVec { Base = p, Length = (nuint)packet.Length };
                        n = Libc.Writev(_fd.Fd, iov, 2);
                        if (n >= VnetHeaderLength)
                            n -= VnetHeaderLength;
                    }
                    else
                    {
                        n = Libc.Write(_fd.Fd, p, (nuint)packet.Length);
                    }
                }
                if (n >= 0)
                    return (int)n;
                int errno = Marshal.GetLastPInvokeError();
                if (errno == Libc.EINTR)
                    continue;
                if (errno != Libc.EAGAIN || Environment.TickCount64 > deadline)
                    throw PlatformException.FromErrno($"write({Name})", errno);
                WaitFd(Libc.POLLOUT, 50);
            }
        }
        finally
        {
            Leave();
        }
    }

    /// <summary>
    /// Vnet devices: blocks until one frame is queued and copies the 10-byte virtio_net_hdr plus
    /// the IP packet into <paramref name="frame"/> (truncated if smaller; give 64 KiB + 10 when
    /// <see cref="ReadsTcpGso"/>). <paramref name="pollFirst"/>: wait before the first read (the
    /// caller just saw the queue empty), as <see cref="ReadPollFirst"/>.
    /// </summary>
    public int ReadFrame(Span<byte> frame, bool pollFirst = false)
    {
        CheckFrameBuffer(frame);
        Enter();
        try
        {
            bool wait = pollFirst;
            while (true)
            {
                if (wait && !WaitFd(Libc.POLLIN, -1))
                    continue;
                int n = ReadFrameOnce(frame);
                if (n >= 0)
                    return n;
                wait = true;
            }
        }
        finally
        {
            Leave();
        }
    }

    /// <summary>Vnet devices: reads one queued frame (header included) without waiting; -1 when none is queued.</summary>
    public int TryReadFrame(Span<byte> frame)
    {
        CheckFrameBuffer(frame);
        Enter();
        try
        {
            return ReadFrameOnce(frame);
        }
        finally
        {
            Leave();
        }
    }

    private void CheckFrameBuffer(Span<byte> frame)
    {
        if (!_vnet)
            throw new InvalidOperationException($"TUN device {Name} was not opened with vnetHeader: true.");
        if (frame.Length <= VnetHeaderLength)
            throw new ArgumentException("Frame buffer shorter than a virtio_net_hdr plus one byte.", nameof(frame));
    }

    private int ReadFrameOnce(Span<byte> frame)
    {
        while (true)
        {
            nint n;
            fixed (byte* p = frame)
                n = Libc.Read(_fd.Fd, p, (nuint)frame.Length);
            if (n >= 0)
                return (int)n;
            int errno = Marshal.GetLastPInvokeError();
            if (errno == Libc.EINTR)
                continue;
            if (errno == Libc.EAGAIN)
                return -1;
            throw PlatformException.FromErrno($"read({Name})", errno);
        }
    }

    private int TryReadNonBlocking(Span<byte> buffer)
    {
        Enter();
        try
        {
            return ReadOnce(buffer);
        }
        finally
        {
            Leave();
        }
    }

    /// <summary>One read(); -1 means "nothing queued" (EAGAIN).</summary>
    private int ReadOnce(Span<byte> buffer)
    {
        byte* hdr = stackalloc byte[VnetHeaderLength];
        var iov = stackalloc Libc.IoVec[2];
        while (true) // EINTR and skipped GSO packets loop; each iteration consumes a packet or returns
        {
            nint n;
            if (_vnet)
            {
                fixed (byte* p = buffer)
                {
                    iov[0] = new Libc.IoVec { Base = hdr, Length = VnetHeaderLength };
                    iov[1] = new Libc.IoVec { Base = p, Length = (nuint)buffer.Length };
                    n = Libc.Readv(_fd.Fd, iov, 2);
                }
                if (n >= 0)
                {
                    if (n < VnetHeaderLength)
                        return 0;
                    int len = (int)n - VnetHeaderLength;
                    if (!FinishVnetRead(new ReadOnlySpan<byte>(hdr, VnetHeaderLength), buffer[..Math.Min(len, buffer.Length)]))
                        continue;
                    return len;
                }
            }
            else
            {
                fixed (byte* p = buffer)
                    n = Libc.Read(_fd.Fd, p, (nuint)buffer.Length);
                if (n >= 0)
                    return (int)n;
            }
            int errno = Marshal.GetLastPInvokeError();
            if (errno == Libc.EINTR)
                continue;
            if (errno == Libc.EAGAIN)
                return -1;
            throw PlatformException.FromErrno($"read({Name})", errno);
        }
    }

    /// <summary>
    /// Applies a received virtio_net_hdr. Without TUNSETOFFLOAD the kernel resolves checksums and
    /// segments before the TUN, so flags are 0; a NEEDS_CSUM is still completed here in software,
    /// and a GSO packet (only possible if someone enabled offloads on the device) is skipped
    /// (false) rather than passed on as one oversized packet.
    /// </summary>
    private static bool FinishVnetRead(ReadOnlySpan<byte> hdr, Span<byte> packet)
    {
        if (hdr[1] != 0)
            return false;
        if ((hdr[0] & 1) != 0)
        {
            int start = hdr[6] | (hdr[7] << 8);
            int offset = hdr[8] | (hdr[9] << 8);
            if (start + offset + 2 > packet.Length)
                return false;
            // The field holds the pseudo-header sum; the sum from csum_start on completes it.
            ushort sum = Ovpn.DataPlane.Offload.InternetChecksum.Sum(packet[start..]);
            System.Buffers.Binary.BinaryPrimitives.WriteUInt16BigEndian(packet[(start + offset)..], (ushort)~sum);
        }
        return true;
    }

    private int ReadCore(Span<byte> buffer, CancellationToken cancellationToken)
    {
        if (buffer.IsEmpty)
            throw new ArgumentException("Empty buffer.", nameof(buffer));
        Enter();
        try
        {
            // With a cancellable token we wake up periodically to look at it; otherwise only the
            // eventfd (Dispose) or a packet ends the wait.
            int timeout = cancellationToken.CanBeCanceled ? 200 : -1;
            while (true)
            {
                int n = ReadOnce(buffer);
                if (n >= 0)
                    return n;
                cancellationToken.ThrowIfCancellationRequested();
                if (!WaitFd(Libc.POLLIN, timeout))
                    continue;
            }
        }
        finally
        {
            Leave();
        }
    }

    /// <summary>poll() on the tun fd and the wake eventfd. True if the tun fd is ready.</summary>
    private bool WaitFd(short events, int timeoutMs)
    {
        var fds = stackalloc Libc.PollFd[2];
        fds[0] = new Libc.PollFd { Fd = _fd.Fd, Events = events };
        fds[1] = new Libc.PollFd { Fd = _wake.Fd, Events = Libc.POLLIN };
        int r = Libc.Poll(fds, 2, timeoutMs);
        if (r < 0)
        {
            int errno = Marshal.GetLastPInvokeError();
            if (errno == Libc.EINTR)
                return false;
            throw PlatformException.FromErrno($"poll({Name})", errno);
        }
        if (fds[1].Revents != 0 || Volatile.Read(ref _disposed) != 0)
            throw new ObjectDisposedException(nameof(TunDevice), $"TUN device {Name} was disposed.");
        if ((fds[0].Revents & (Libc.POLLERR | Libc.POLLNVAL)) != 0)
            throw new PlatformException($"poll({Name}) reported an error condition on the TUN fd (revents 0x{fds[0].Revents:x}).");
        return r > 0;
    }

    // Every I/O call holds a reference on both fds (SafeHandle ref counting) for its whole
    // duration, so a Dispose that gives up waiting can never close a number still in use.
    private void Enter()
    {
        Interlocked.Increment(ref _inFlight);
        bool fdRef = false, wakeRef = false;
        try
        {
            if (Volatile.Read(ref _disposed) != 0)
                throw new ObjectDisposedException(nameof(TunDevice), $"TUN device {Name} was disposed.");
            _fd.DangerousAddRef(ref fdRef);
            _wake.DangerousAddRef(ref wakeRef);
        }
        catch
        {
            if (fdRef)
                _fd.DangerousRelease();
            if (wakeRef)
                _wake.DangerousRelease();
            Interlocked.Decrement(ref _inFlight);
            throw;
        }
    }

    private void Leave()
    {
        _wake.DangerousRelease();
        _fd.DangerousRelease();
        Interlocked.Decrement(ref _inFlight);
    }

    private void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
            return;
        // Wake every thread blocked in poll(); the counter stays non-zero, so all of them see it.
        ulong one = 1;
        Libc.Write(_wake.Fd, (byte*)&one, 8);
        // Wait (bounded) for in-flight calls to leave so that the close below really happens now
        // and the interface is gone when Dispose returns. If one is stuck, SafeHandle reference
        // counting still defers the close safely until it leaves.
        long deadline = Environment.TickCount64 + 2000;
        var spin = new SpinWait();
        while (Volatile.Read(ref _inFlight) != 0 && Environment.TickCount64 < deadline)
            spin.SpinOnce(sleep1Threshold: 10);
        _fd.Dispose();
        _wake.Dispose();
        _netlink.Release();
    }
}
