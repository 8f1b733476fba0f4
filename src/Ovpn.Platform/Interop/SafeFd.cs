// SPDX-License-Identifier: MIT
using System.Runtime.InteropServices;

namespace Ovpn.Platform.Interop;

/// <summary>
/// Owns a Linux file descriptor. Being a <see cref="SafeHandle"/> gives us reference counting:
/// a thread inside read()/poll() holds a reference (DangerousAddRef), so Dispose on another
/// thread cannot close the number under it and let the kernel hand it to an unrelated open().
/// </summary>
internal sealed class SafeFd : SafeHandle
{
    public SafeFd(int fd) : base(new IntPtr(-1), ownsHandle: true) => SetHandle(new IntPtr(fd));

    public override bool IsInvalid => handle.ToInt64() < 0;

    public int Fd => (int)handle.ToInt64();

    protected override bool ReleaseHandle() => Libc.Close((int)handle.ToInt64()) == 0;
}
