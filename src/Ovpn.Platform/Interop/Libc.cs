// SPDX-License-Identifier: MIT
using System.Runtime.InteropServices;

namespace Ovpn.Platform.Interop;

/// <summary>
/// Raw libc entry points (Linux, 64-bit). Every import sets the last P/Invoke error so callers can
/// turn a failure into a <see cref="PlatformException"/> that carries errno and its text.
/// Nothing here validates arguments; the typed wrappers in <c>Ovpn.Platform.Linux</c> do.
/// </summary>
internal static unsafe partial class Libc
{
    private const string Lib = "libc";

    // open(2) flags (asm-generic, x86_64 and arm64 agree).
    public const int O_RDONLY = 0x0;
    public const int O_RDWR = 0x2;
    public const int O_NONBLOCK = 0x800;
    public const int O_CLOEXEC = 0x80000;

    // errno values we branch on.
    public const int EINTR = 4;
    public const int EAGAIN = 11;
    public const int ESRCH = 3;

    // poll(2)
    public const short POLLIN = 0x1;
    public const short POLLOUT = 0x4;
    public const short POLLERR = 0x8;
    public const short POLLHUP = 0x10;
    public const short POLLNVAL = 0x20;

    // eventfd(2)
    public const int EFD_NONBLOCK = 0x800;
    public const int EFD_CLOEXEC = 0x80000;

    // setns(2)
    public const int CLONE_NEWNET = 0x40000000;

    // socket(2)
    public const int AF_NETLINK = 16;
    public const int SOCK_RAW = 3;
    public const int SOCK_CLOEXEC = 0x80000;
    public const int NETLINK_ROUTE = 0;

    [StructLayout(LayoutKind.Sequential)]
    public struct PollFd
    {
        public int Fd;
        public short Events;
        public short Revents;
    }

    [LibraryImport(Lib, EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int Open(string path, int flags);

    [LibraryImport(Lib, EntryPoint = "close", SetLastError = true)]
    public static partial int Close(int fd);

    [LibraryImport(Lib, EntryPoint = "read", SetLastError = true)]
    public static partial nint Read(int fd, byte* buf, nuint count);

    [LibraryImport(Lib, EntryPoint = "write", SetLastError = true)]
    public static partial nint Write(int fd, byte* buf, nuint count);

    [StructLayout(LayoutKind.Sequential)]
    public struct IoVec
    {
        public void* Base;
        public nuint Length;
    }

    [LibraryImport(Lib, EntryPoint = "readv", SetLastError = true)]
    public static partial nint Readv(int fd, IoVec* iov, int iovcnt);

    [LibraryImport(Lib, EntryPoint = "writev", SetLastError = true)]
    public static partial nint Writev(int fd, IoVec* iov, int iovcnt);

    // ioctl is variadic in C; on the Linux ABIs we target a pointer third argument is passed the
    // same way as for a fixed-arity function.
    [LibraryImport(Lib, EntryPoint = "ioctl", SetLastError = true)]
    public static partial int Ioctl(int fd, nuint request, void* arg);

    [LibraryImport(Lib, EntryPoint = "poll", SetLastError = true)]
    public static partial int Poll(PollFd* fds, nuint nfds, int timeoutMs);

    [LibraryImport(Lib, EntryPoint = "eventfd", SetLastError = true)]
    public static partial int EventFd(uint initval, int flags);

    [LibraryImport(Lib, EntryPoint = "setns", SetLastError = true)]
    public static partial int SetNs(int fd, int nstype);

    [LibraryImport(Lib, EntryPoint = "kill", SetLastError = true)]
    public static partial int Kill(int pid, int sig);

    [LibraryImport(Lib, EntryPoint = "socket", SetLastError = true)]
    public static partial int Socket(int domain, int type, int protocol);

    [LibraryImport(Lib, EntryPoint = "bind", SetLastError = true)]
    public static partial int Bind(int fd, void* addr, uint addrlen);

    [LibraryImport(Lib, EntryPoint = "sendto", SetLastError = true)]
    public static partial nint SendTo(int fd, void* buf, nuint len, int flags, void* addr, uint addrlen);

    [LibraryImport(Lib, EntryPoint = "recv", SetLastError = true)]
    public static partial nint Recv(int fd, void* buf, nuint len, int flags);
}
