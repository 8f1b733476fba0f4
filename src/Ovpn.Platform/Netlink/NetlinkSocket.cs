// SPDX-License-Identifier: MIT
using System.Runtime.InteropServices;
using Ovpn.Platform.Interop;

namespace Ovpn.Platform.Netlink;

/// <summary>A netlink request that the kernel answered with an error (NLMSG_ERROR, negative errno).</summary>
public sealed class NetlinkException(string message, int errno) : IOException(message)
{
    public int Errno { get; } = errno;
}

/// <summary>
/// A raw AF_NETLINK socket (NETLINK_GENERIC or NETLINK_ROUTE) through P/Invoke: .NET's Socket class has no
/// netlink support. Requests are serialized by a lock and matched by sequence number; replies of other
/// sequence numbers (late answers of timed-out requests) are skipped. A socket that joined multicast groups
/// should be used only for receiving notifications, so that notifications and replies never interleave.
/// </summary>
public sealed unsafe class NetlinkSocket : IDisposable
{
    private const int ReplyTimeoutMs = 5000;
    private readonly SafeFd _fd;
    private readonly Lock _lock = new();
    private uint _seq = (uint)Environment.TickCount;
    private readonly byte[] _rx = new byte[64 * 1024];

    public NetlinkSocket(int protocol)
    {
        Protocol = protocol;
        int fd = NetlinkNative.Socket(NetlinkConst.AF_NETLINK, NetlinkNative.SOCK_RAW | NetlinkNative.SOCK_CLOEXEC, protocol);
        if (fd < 0)
            throw PlatformException.FromLastError($"socket(AF_NETLINK, {protocol})");
        _fd = new SafeFd(fd);
        try
        {
            // struct sockaddr_nl { u16 family; u16 pad; u32 pid; u32 groups; }, pid 0 = kernel assigns the port id.
            byte* sa = stackalloc byte[12];
            new Span<byte>(sa, 12).Clear();
            *(ushort*)sa = NetlinkConst.AF_NETLINK;
            if (NetlinkNative.Bind(fd, sa, 12) != 0)
                throw PlatformException.FromLastError("bind(AF_NETLINK)");
            // Ask for the kernel's error text (extack) and no echo of our request in errors: better diagnostics,
            // and errors for NEW_KEY then do not carry key bytes back. Best effort (old kernels lack them).
            int one = 1;
            NetlinkNative.SetSockOpt(fd, NetlinkConst.SOL_NETLINK, NetlinkConst.NETLINK_EXT_ACK, &one, 4);
            NetlinkNative.SetSockOpt(fd, NetlinkConst.SOL_NETLINK, NetlinkConst.NETLINK_CAP_ACK, &one, 4);
        }
        catch
        {
            _fd.Dispose();
            throw;
        }
    }

    public int Protocol { get; }

    /// <summary>Joins a multicast group (NETLINK_ADD_MEMBERSHIP); group ids of genl families come from nlctrl.</summary>
    public void JoinGroup(uint group)
    {
        uint g = group;
        if (NetlinkNative.SetSockOpt(_fd.Fd, NetlinkConst.SOL_NETLINK, NetlinkConst.NETLINK_ADD_MEMBERSHIP, &g, 4) != 0)
            throw PlatformException.FromLastError($"setsockopt(NETLINK_ADD_MEMBERSHIP {group})");
    }

    /// <summary>Raises SO_RCVBUF so bursts of notifications are not lost (ENOBUFS), as OpenVPN does (1 MiB).</summary>
    public void SetReceiveBuffer(int bytes)
    {
        int v = bytes;
        NetlinkNative.SetSockOpt(_fd.Fd, NetlinkNative.SOL_SOCKET, NetlinkNative.SO_RCVBUF, &v, 4);
    }

    /// <summary>
    /// Sends one request and collects its replies until the ACK (NLMSG_ERROR 0), NLMSG_DONE (dumps) or, for
    /// requests without NLM_F_ACK, the first data message. Throws <see cref="NetlinkException"/> on an error reply.
    /// </summary>
    public List<NetlinkMessage> Request(NetlinkMessageWriter msg, string what)
    {
        lock (_lock)
        {
            uint seq = ++_seq;
            byte[] packet = msg.Finish(seq);
            try
            {
                Send(packet, what);
            }
            finally
            {
                // The request may carry key material.
                System.Security.Cryptography.CryptographicOperations.ZeroMemory(packet);
                msg.Clear();
            }
            return ReceiveReplies(seq, what);
        }
    }

    private void Send(byte[] packet, string what)
    {
        bool added = false;
        _fd.DangerousAddRef(ref added);
        try
        {
            byte* dst = stackalloc byte[12];
            new Span<byte>(dst, 12).Clear();
            *(ushort*)dst = NetlinkConst.AF_NETLINK;
            fixed (byte* p = packet)
            {
                if (NetlinkNative.SendTo(_fd.Fd, p, (nuint)packet.Length, 0, dst, 12) < 0)
                    throw PlatformException.FromLastError($"{what}: sendto(netlink)");
            }
        }
        finally
        {
            if (added)
                _fd.DangerousRelease();
        }
    }

    private List<NetlinkMessage> ReceiveReplies(uint seq, string what)
    {
        var replies = new List<NetlinkMessage>();
        long deadline = Environment.TickCount64 + ReplyTimeoutMs;
        // Bounded by the deadline: each round consumes one datagram or waits for one.
        while (true)
        {
            int remaining = (int)(deadline - Environment.TickCount64);
            if (remaining <= 0)
                throw new NetlinkException($"{what}: no netlink reply within {ReplyTimeoutMs} ms", 0);
            var datagram = ReceiveOne(remaining, what);
            if (datagram is null)
                continue;
            foreach (var m in NetlinkMessage.ParseAll(datagram))
            {
                if (m.Seq != seq)
                    continue;
                if (m.IsError)
                {
                    int err = m.ErrorCode;
                    if (err == 0)
                        return replies; // ACK ends the exchange
                    string? ext = m.ExtAckMessage;
                    throw new NetlinkException(
                        $"{what} failed: {Marshal.GetPInvokeErrorMessage(-err)} (errno {-err}){(ext is null ? "" : $": {ext}")}", -err);
                }
                if (m.IsDone)
                    return replies;
                replies.Add(m);
            }
        }
    }

    /// <summary>Waits up to timeoutMs for one datagram; null on timeout/EINTR. Used by notification listeners.</summary>
    public byte[]? ReceiveOne(int timeoutMs, string what = "netlink recv")
    {
        bool added = false;
        _fd.DangerousAddRef(ref added);
        try
        {
            var pfd = new NetlinkNative.PollFd { Fd = _fd.Fd, Events = NetlinkNative.POLLIN };
            int pr = NetlinkNative.Poll(&pfd, 1, timeoutMs);
            if (pr < 0)
            {
                int e = Marshal.GetLastPInvokeError();
                if (e == NetlinkNative.EINTR)
                    return null;
                throw PlatformException.FromErrno($"{what}: poll", e);
            }
            if (pr == 0)
                return null;
            nint n;
            fixed (byte* b = _rx)
                n = NetlinkNative.Recv(_fd.Fd, b, (nuint)_rx.Length, 0);
            if (n < 0)
            {
                int e = Marshal.GetLastPInvokeError();
                if (e is NetlinkNative.EINTR or NetlinkNative.EAGAIN)
                    return null;
                // ENOBUFS: the kernel dropped multicast messages for us; the socket stays usable.
                if (e == NetlinkNative.ENOBUFS)
                    throw new NetlinkException($"{what}: notifications lost (ENOBUFS)", e);
                throw PlatformException.FromErrno($"{what}: recv", e);
            }
            return _rx.AsSpan(0, (int)n).ToArray();
        }
        finally
        {
            if (added)
                _fd.DangerousRelease();
        }
    }

    /// <summary>Resolves a generic netlink family by name; null when the kernel does not know it (ENOENT).</summary>
    public GenlFamily? ResolveFamily(string name)
    {
        try
        {
            var replies = Request(GenlFamily.BuildGetFamily(name), $"CTRL_CMD_GETFAMILY {name}");
            foreach (var r in replies)
                if (r.Type == NetlinkConst.GENL_ID_CTRL)
                    return GenlFamily.Parse(r);
            return null;
        }
        catch (NetlinkException e) when (e.Errno == 2)
        {
            return null;
        }
    }

    public void Dispose() => _fd.Dispose();
}
