// SPDX-License-Identifier: MIT
using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Ovpn.Platform.Interop;

namespace Ovpn.Platform.Linux;

/// <summary>
/// Minimal NETLINK_ROUTE client: just the link and address requests that TUN configuration needs.
///
/// Why a socket per device instead of running `ip`: a netlink socket stays bound to the network
/// namespace of the thread that created it, so a device created inside a namespace can still be
/// configured later from any thread. It also avoids a process spawn per call.
///
/// Thread-safety: all public methods are serialized by a lock (one request in flight at a time,
/// matched by sequence number). Lifetime is reference counted because the queues of a
/// multi-queue TUN share one instance.
/// </summary>
internal sealed unsafe class RtNetlink
{
    // linux/netlink.h, linux/rtnetlink.h, linux/if_link.h, linux/if_addr.h
    private const ushort NLMSG_ERROR = 2;
    private const ushort NLMSG_DONE = 3;
    private const ushort RTM_NEWLINK = 16;
    private const ushort RTM_DELLINK = 17;
    private const ushort RTM_GETLINK = 18;
    private const ushort RTM_NEWADDR = 20;
    private const ushort NLM_F_REQUEST = 0x1;
    private const ushort NLM_F_ACK = 0x4;
    private const ushort NLM_F_EXCL = 0x200;
    private const ushort NLM_F_CREATE = 0x400;
    private const ushort IFLA_IFNAME = 3;
    private const ushort IFLA_MTU = 4;
    private const ushort IFA_ADDRESS = 1;
    private const ushort IFA_LOCAL = 2;
    private const ushort IFA_FLAGS = 8;
    private const uint IFA_F_NODAD = 0x02;
    private const uint IFF_UP = 0x1;
    private const int NlMsgHdrLen = 16;
    private const int IfInfoMsgLen = 16;
    private const int IfAddrMsgLen = 8;
    private const int ReplyTimeoutMs = 5000;

    private readonly SafeFd _fd;
    private readonly SafeFd _netns;
    private readonly Lock _lock = new();
    private uint _seq = (uint)Environment.TickCount;
    private int _refs = 1;

    public RtNetlink()
    {
        int fd = Libc.Socket(Libc.AF_NETLINK, Libc.SOCK_RAW | Libc.SOCK_CLOEXEC, Libc.NETLINK_ROUTE);
        if (fd < 0)
            throw PlatformException.FromLastError("socket(AF_NETLINK, NETLINK_ROUTE)");
        _fd = new SafeFd(fd);
        // Also pin the creating thread's network namespace: a TUN fd belongs to the namespace of
        // the thread that open()s /dev/net/tun, so extra queues must be opened from there.
        int nsfd = Libc.Open("/proc/thread-self/ns/net", Libc.O_RDONLY | Libc.O_CLOEXEC);
        if (nsfd < 0)
        {
            var ex = PlatformException.FromLastError("open(/proc/thread-self/ns/net)");
            _fd.Dispose();
            throw ex;
        }
        _netns = new SafeFd(nsfd);
        // sockaddr_nl { sa_family_t nl_family; unsigned short pad; u32 pid; u32 groups } with
        // pid 0: let the kernel assign the port id.
        byte* sa = stackalloc byte[12];
        new Span<byte>(sa, 12).Clear();
        *(ushort*)sa = Libc.AF_NETLINK;
        if (Libc.Bind(fd, sa, 12) != 0)
        {
            var ex = PlatformException.FromLastError("bind(AF_NETLINK)");
            _fd.Dispose();
            _netns.Dispose();
            throw ex;
        }
    }

    public void AddRef() => Interlocked.Increment(ref _refs);

    public void Release()
    {
        if (Interlocked.Decrement(ref _refs) == 0)
        {
            _fd.Dispose();
            _netns.Dispose();
        }
    }

    /// <summary>
    /// Runs <paramref name="func"/> on a short-lived thread that has entered the network
    /// namespace this socket belongs to (the calling thread is not touched).
    /// </summary>
    public T RunInNamespace<T>(Func<T> func)
    {
        T result = default!;
        System.Runtime.ExceptionServices.ExceptionDispatchInfo? error = null;
        var thread = new Thread(() =>
        {
            bool added = false;
            try
            {
                _netns.DangerousAddRef(ref added);
                if (Libc.SetNs(_netns.Fd, Libc.CLONE_NEWNET) != 0)
                    throw PlatformException.FromLastError("setns(device namespace, CLONE_NEWNET)");
                result = func();
            }
            catch (Exception e)
            {
                error = System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(e);
            }
            finally
            {
                if (added)
                    _netns.DangerousRelease();
            }
        })
        { IsBackground = true, Name = "rtnetlink netns" };
        thread.Start();
        thread.Join();
        error?.Throw();
        return result;
    }

    /// <summary>RTM_GETLINK by name. Returns (ifindex, mtu).</summary>
    public (int Index, int Mtu) GetLink(string name)
    {
        var msg = new MessageBuilder(RTM_GETLINK, NLM_F_REQUEST);
        msg.IfInfo(family: 0, index: 0, flags: 0, change: 0);
        msg.AttrString(IFLA_IFNAME, name);
        int index = 0, mtu = 0;
        Transact(msg, $"RTM_GETLINK {name}", (type, body) =>
        {
            if (type != RTM_NEWLINK || body.Length < IfInfoMsgLen)
                return false;
            index = BinaryPrimitives.ReadInt32LittleEndian(body.Slice(4));
            foreach (var (attrType, data) in Attributes(body.Slice(IfInfoMsgLen)))
                if (attrType == IFLA_MTU && data.Length >= 4)
                    mtu = BinaryPrimitives.ReadInt32LittleEndian(data);
            return true;
        });
        return (index, mtu);
    }

    public void SetMtu(int index, int mtu, string what)
    {
        var msg = new MessageBuilder(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK);
        msg.IfInfo(0, index, 0, 0);
        msg.AttrU32(IFLA_MTU, (uint)mtu);
        Transact(msg, $"RTM_NEWLINK mtu {mtu} on {what}", null);
    }

    public void SetUp(int index, bool up, string what)
    {
        var msg = new MessageBuilder(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK);
        msg.IfInfo(0, index, up ? IFF_UP : 0, IFF_UP);
        Transact(msg, $"RTM_NEWLINK {(up ? "up" : "down")} on {what}", null);
    }

    public void DeleteLink(int index, string what)
    {
        var msg = new MessageBuilder(RTM_DELLINK, NLM_F_REQUEST | NLM_F_ACK);
        msg.IfInfo(0, index, 0, 0);
        Transact(msg, $"RTM_DELLINK {what}", null);
    }

    public void AddAddress(int index, IPAddress address, int prefixLength, string what)
    {
        bool v6 = address.AddressFamily == AddressFamily.InterNetworkV6;
        byte[] bytes = address.GetAddressBytes();
        var msg = new MessageBuilder(RTM_NEWADDR, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL);
        msg.IfAddr(v6 ? (byte)10 : (byte)2, (byte)prefixLength, index);
        // For IPv4 IFA_LOCAL is the interface address; IFA_ADDRESS equal to it means "not a
        // point-to-point peer address", which makes the kernel add the prefix route as `ip` does.
        msg.Attr(IFA_LOCAL, bytes);
        msg.Attr(IFA_ADDRESS, bytes);
        if (v6) // no duplicate address detection: a TUN has no neighbours to collide with
            msg.AttrU32(IFA_FLAGS, IFA_F_NODAD);
        Transact(msg, $"RTM_NEWADDR {address}/{prefixLength} on {what}", null);
    }

    private delegate bool ReplyHandler(ushort type, ReadOnlySpan<byte> body);

    private void Transact(MessageBuilder msg, string what, ReplyHandler? onReply)
    {
        bool added = false;
        _fd.DangerousAddRef(ref added);
        try
        {
            lock (_lock)
            {
                uint seq = ++_seq;
                byte[] packet = msg.Finish(seq);
                byte* dst = stackalloc byte[12];
                new Span<byte>(dst, 12).Clear();
                *(ushort*)dst = Libc.AF_NETLINK;
                fixed (byte* p = packet)
                {
                    if (Libc.SendTo(_fd.Fd, p, (nuint)packet.Length, 0, dst, 12) < 0)
                        throw PlatformException.FromLastError(what);
                }
                ReceiveReply(seq, what, onReply);
            }
        }
        finally
        {
            if (added)
                _fd.DangerousRelease();
        }
    }

    private void ReceiveReply(uint seq, string what, ReplyHandler? onReply)
    {
        byte[] buffer = new byte[32 * 1024];
        long deadline = Environment.TickCount64 + ReplyTimeoutMs;
        bool gotData = false;
        // Bounded: every iteration either consumes a datagram or waits until the deadline.
        while (true)
        {
            int remaining = (int)(deadline - Environment.TickCount64);
            if (remaining <= 0)
                throw new PlatformException($"{what} failed: no netlink reply within {ReplyTimeoutMs} ms");
            var pfd = new Libc.PollFd { Fd = _fd.Fd, Events = Libc.POLLIN };
            int pr = Libc.Poll(&pfd, 1, remaining);
            if (pr < 0)
            {
                if (System.Runtime.InteropServices.Marshal.GetLastPInvokeError() == Libc.EINTR)
                    continue;
                throw PlatformException.FromLastError($"{what}: poll");
            }
            if (pr == 0)
                continue;
            nint n;
            fixed (byte* b = buffer)
                n = Libc.Recv(_fd.Fd, b, (nuint)buffer.Length, 0);
            if (n < 0)
            {
                int errno = System.Runtime.InteropServices.Marshal.GetLastPInvokeError();
                if (errno is Libc.EINTR or Libc.EAGAIN)
                    continue;
                throw PlatformException.FromErrno($"{what}: recv", errno);
            }
            var span = buffer.AsSpan(0, (int)n);
            while (span.Length >= NlMsgHdrLen)
            {
                int len = (int)BinaryPrimitives.ReadUInt32LittleEndian(span);
                ushort type = BinaryPrimitives.ReadUInt16LittleEndian(span.Slice(4));
                uint mseq = BinaryPrimitives.ReadUInt32LittleEndian(span.Slice(8));
                if (len < NlMsgHdrLen || len > span.Length)
                    throw new PlatformException($"{what} failed: malformed netlink reply");
                var body = span.Slice(NlMsgHdrLen, len - NlMsgHdrLen);
                if (mseq == seq)
                {
                    if (type == NLMSG_ERROR)
                    {
                        int err = BinaryPrimitives.ReadInt32LittleEndian(body);
                        if (err != 0)
                            throw PlatformException.FromErrno(what, -err);
                        return; // plain ACK
                    }
                    if (type == NLMSG_DONE)
                        return;
                    if (onReply is not null && onReply(type, body))
                        gotData = true;
                }
                span = span.Slice(Align4(len) > span.Length ? span.Length : Align4(len));
            }
            // A request without NLM_F_ACK is complete once its data message has arrived.
            if (gotData)
                return;
        }
    }

    private static int Align4(int n) => (n + 3) & ~3;

    private static List<(ushort Type, byte[] Data)> Attributes(ReadOnlySpan<byte> span)
    {
        var list = new List<(ushort, byte[])>();
        while (span.Length >= 4)
        {
            int len = BinaryPrimitives.ReadUInt16LittleEndian(span);
            ushort type = (ushort)(BinaryPrimitives.ReadUInt16LittleEndian(span.Slice(2)) & 0x3fff);
            if (len < 4 || len > span.Length)
                break;
            list.Add((type, span.Slice(4, len - 4).ToArray()));
            int adv = Align4(len);
            span = adv >= span.Length ? default : span.Slice(adv);
        }
        return list;
    }

    /// <summary>Builds one request: nlmsghdr | family header | rtattrs (all 4-byte aligned).</summary>
    private sealed class MessageBuilder(ushort type, ushort flags)
    {
        private readonly List<byte> _body = [];

        public void IfInfo(byte family, int index, uint flags, uint change)
        {
            Span<byte> h = stackalloc byte[IfInfoMsgLen];
            h.Clear();
            h[0] = family;
            BinaryPrimitives.WriteInt32LittleEndian(h.Slice(4), index);
            BinaryPrimitives.WriteUInt32LittleEndian(h.Slice(8), flags);
            BinaryPrimitives.WriteUInt32LittleEndian(h.Slice(12), change);
            _body.AddRange(h.ToArray());
        }

        public void IfAddr(byte family, byte prefixLen, int index)
        {
            Span<byte> h = stackalloc byte[IfAddrMsgLen];
            h.Clear();
            h[0] = family;
            h[1] = prefixLen;
            BinaryPrimitives.WriteInt32LittleEndian(h.Slice(4), index);
            _body.AddRange(h.ToArray());
        }

        public void Attr(ushort attrType, ReadOnlySpan<byte> data)
        {
            int len = 4 + data.Length;
            Span<byte> h = stackalloc byte[4];
            BinaryPrimitives.WriteUInt16LittleEndian(h, (ushort)len);
            BinaryPrimitives.WriteUInt16LittleEndian(h.Slice(2), attrType);
            _body.AddRange(h.ToArray());
            _body.AddRange(data.ToArray());
            for (int i = len; i < Align4(len); i++)
                _body.Add(0);
        }

        public void AttrU32(ushort attrType, uint value)
        {
            Span<byte> v = stackalloc byte[4];
            BinaryPrimitives.WriteUInt32LittleEndian(v, value);
            Attr(attrType, v);
        }

        public void AttrString(ushort attrType, string value)
        {
            byte[] s = Encoding.ASCII.GetBytes(value + "\0");
            Attr(attrType, s);
        }

        public byte[] Finish(uint seq)
        {
            byte[] packet = new byte[NlMsgHdrLen + _body.Count];
            BinaryPrimitives.WriteUInt32LittleEndian(packet, (uint)packet.Length);
            BinaryPrimitives.WriteUInt16LittleEndian(packet.AsSpan(4), type);
            BinaryPrimitives.WriteUInt16LittleEndian(packet.AsSpan(6), flags);
            BinaryPrimitives.WriteUInt32LittleEndian(packet.AsSpan(8), seq);
            _body.CopyTo(packet, NlMsgHdrLen);
            return packet;
        }
    }
}
