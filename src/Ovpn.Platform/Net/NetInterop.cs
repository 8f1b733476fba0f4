// SPDX-License-Identifier: MIT
using System.Runtime.InteropServices;

namespace Ovpn.Platform.Net;

/// <summary>struct iovec (x86_64/arm64 layout).</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct IoVec
{
    public byte* Base;
    public nuint Len;
}

/// <summary>struct msghdr (64-bit Linux layout, 56 bytes).</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct MsgHdr
{
    public void* Name;
    public uint NameLen;
    public IoVec* Iov;
    public nuint IovLen;
    public void* Control;
    public nuint ControlLen;
    public int Flags;
}

/// <summary>struct mmsghdr: a msghdr plus the byte count the kernel fills in.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct MMsgHdr
{
    public MsgHdr Hdr;
    public uint Len;
}

/// <summary>struct cmsghdr header (64-bit Linux: size_t len, int level, int type = 16 bytes); the
/// data follows immediately (already 8-byte aligned).</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct CMsgHdr
{
    public nuint Len;
    public int Level;
    public int Type;
}

/// <summary>Batched socket syscalls (Linux). Kept apart from Libc because only Net uses them.</summary>
internal static unsafe partial class NetInterop
{
    /// <summary>SOL_UDP (= IPPROTO_UDP): level of the UDP segmentation options and cmsgs.</summary>
    public const int SOL_UDP = 17;

    /// <summary>UDP_SEGMENT (linux/udp.h, 4.18+): cmsg/sockopt, u16 segment size for a GSO send.</summary>
    public const int UDP_SEGMENT = 103;

    /// <summary>UDP_GRO (linux/udp.h, 5.0+): sockopt enabling coalesced receive; the cmsg carries an
    /// int segment size.</summary>
    public const int UDP_GRO = 104;

    /// <summary>UDP_MAX_SEGMENTS: 64 on the kernels that introduced GSO (raised later); we stay at
    /// the lowest value so every GSO kernel accepts our sends.</summary>
    public const int UdpMaxSegments = 64;

    public const int EIO = 5;
    public const int EINVAL = 22;
    public const int EMSGSIZE = 90;
    public const int MSG_DONTWAIT = 0x40;

    /// <summary>CMSG_ALIGN for 64-bit Linux.</summary>
    public static int CmsgAlign(int n) => (n + 7) & ~7;

    /// <summary>CMSG_SPACE(n): bytes a cmsg with n data bytes occupies in a control buffer.</summary>
    public static int CmsgSpace(int n) => sizeof(CMsgHdr) + CmsgAlign(n);

    /// <summary>CMSG_LEN(n): the cmsg_len value for n data bytes.</summary>
    public static int CmsgLen(int n) => sizeof(CMsgHdr) + n;

    [LibraryImport("libc", EntryPoint = "setsockopt", SetLastError = true)]
    public static partial int SetSockOpt(int fd, int level, int name, void* value, uint len);

    [LibraryImport("libc", EntryPoint = "getsockopt", SetLastError = true)]
    public static partial int GetSockOpt(int fd, int level, int name, void* value, uint* len);

    [LibraryImport("libc", EntryPoint = "recvmmsg", SetLastError = true)]
    public static partial int RecvMmsg(int fd, MMsgHdr* msgs, uint vlen, int flags, void* timeout);

    public const int CLOCK_MONOTONIC = 1;
    public const int PR_SET_TIMERSLACK = 29;

    [StructLayout(LayoutKind.Sequential)]
    public struct TimeSpec
    {
        public long Seconds;
        public long Nanoseconds;
    }

    [LibraryImport("libc", EntryPoint = "clock_nanosleep")]
    public static partial int ClockNanosleep(int clock, int flags, TimeSpec* request, TimeSpec* remain);

    [LibraryImport("libc", EntryPoint = "prctl", SetLastError = true)]
    public static partial int Prctl(int option, nuint arg2, nuint arg3, nuint arg4, nuint arg5);

    [LibraryImport("libc", EntryPoint = "sendmmsg", SetLastError = true)]
    public static partial int SendMmsg(int fd, MMsgHdr* msgs, uint vlen, int flags);
}
