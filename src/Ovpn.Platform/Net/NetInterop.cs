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

/// <summary>Batched socket syscalls (Linux). Kept apart from Libc because only Net uses them.</summary>
internal static unsafe partial class NetInterop
{
    [LibraryImport("libc", EntryPoint = "recvmmsg", SetLastError = true)]
    public static partial int RecvMmsg(int fd, MMsgHdr* msgs, uint vlen, int flags, void* timeout);

    [LibraryImport("libc", EntryPoint = "sendmmsg", SetLastError = true)]
    public static partial int SendMmsg(int fd, MMsgHdr* msgs, uint vlen, int flags);
}
