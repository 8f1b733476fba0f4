// SPDX-License-Identifier: MIT
using System.Runtime.InteropServices;
using Ovpn.Platform.Interop;

namespace Ovpn.Platform.Linux;

/// <summary>Process signals and per-thread namespace switching.</summary>
public static class LinuxProcess
{
    public const int SIGKILL = 9;
    public const int SIGTERM = 15;
    public const int SIGINT = 2;
    public const int SIGUSR1 = 10;

    /// <summary>
    /// Sends <paramref name="signal"/> to a process, or to its whole process group when
    /// <paramref name="processGroup"/> is true (pid is then the group id). Returns false if no
    /// such process exists any more (ESRCH); throws on other errors.
    /// </summary>
    public static bool Signal(int pid, int signal, bool processGroup = false)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(pid);
        if (Libc.Kill(processGroup ? -pid : pid, signal) == 0)
            return true;
        int errno = Marshal.GetLastPInvokeError();
        if (errno == Libc.ESRCH)
            return false;
        throw PlatformException.FromErrno($"kill({(processGroup ? "-" : "")}{pid}, {signal})", errno);
    }

    /// <summary>
    /// Moves the CALLING THREAD into the network namespace at <paramref name="path"/> (for example
    /// /var/run/netns/NAME). Only that thread changes namespace; sockets and TUN devices it then
    /// creates stay in that namespace for their whole life. Never call this on a thread-pool thread:
    /// use a dedicated thread that ends afterwards.
    /// </summary>
    public static void EnterNetworkNamespace(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        int fd = Libc.Open(path, Libc.O_RDONLY | Libc.O_CLOEXEC);
        if (fd < 0)
            throw PlatformException.FromLastError($"open({path})");
        try
        {
            if (Libc.SetNs(fd, Libc.CLONE_NEWNET) != 0)
                throw PlatformException.FromLastError($"setns({path}, CLONE_NEWNET)");
        }
        finally
        {
            Libc.Close(fd);
        }
    }
}
