// SPDX-License-Identifier: MIT
using System.Runtime.InteropServices;

namespace Ovpn.Platform;

/// <summary>
/// A failed operating-system call. <see cref="Errno"/> is the raw errno (0 when the failure did
/// not come from errno, e.g. a non-zero exit code of a helper); the message always names the
/// operation, the object and the errno text so that a log line alone explains the failure.
/// </summary>
public sealed class PlatformException : IOException
{
    public PlatformException(string message, int errno = 0) : base(message) => Errno = errno;

    public int Errno { get; }

    /// <summary>Builds an exception from the calling thread's last P/Invoke error.</summary>
    internal static PlatformException FromLastError(string operation)
        => FromErrno(operation, Marshal.GetLastPInvokeError());

    internal static PlatformException FromErrno(string operation, int errno)
        => new($"{operation} failed: {Marshal.GetPInvokeErrorMessage(errno)} (errno {errno}{ErrnoName(errno)})", errno);

    private static string ErrnoName(int errno) => errno switch
    {
        1 => ", EPERM",
        2 => ", ENOENT",
        3 => ", ESRCH",
        9 => ", EBADF",
        11 => ", EAGAIN",
        13 => ", EACCES",
        16 => ", EBUSY",
        17 => ", EEXIST",
        19 => ", ENODEV",
        22 => ", EINVAL",
        77 => ", EBADFD",
        95 => ", EOPNOTSUPP",
        _ => "",
    };
}
