// SPDX-License-Identifier: MIT
using System.Globalization;
using Ovpn.Platform.Interop;

namespace Ovpn.Platform.Linux;

/// <summary>Capability and kernel-feature probes. All methods are cheap, thread-safe and never throw.</summary>
public static class LinuxNet
{
    private const int CapNetAdmin = 12; // linux/capability.h

    /// <summary>True if the process has CAP_NET_ADMIN in its effective set (/proc/self/status CapEff).</summary>
    public static bool HasCapNetAdmin()
    {
        try
        {
            foreach (string line in File.ReadLines("/proc/self/status"))
            {
                if (!line.StartsWith("CapEff:", StringComparison.Ordinal))
                    continue;
                ulong caps = ulong.Parse(line.AsSpan(7).Trim(), NumberStyles.HexNumber, CultureInfo.InvariantCulture);
                return (caps & (1UL << CapNetAdmin)) != 0;
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException)
        {
        }
        return false;
    }

    /// <summary>True if /dev/net/tun exists and can be opened read-write (this creates no device).</summary>
    public static bool TunAvailable()
    {
        int fd = Libc.Open("/dev/net/tun", Libc.O_RDWR | Libc.O_CLOEXEC);
        if (fd < 0)
            return false;
        Libc.Close(fd);
        return true;
    }

    /// <summary>Contents of /sys/module/&lt;module&gt;/version, or null when absent (not loaded, or no version).</summary>
    public static string? KernelModuleVersion(string module)
    {
        if (!IsValidModuleName(module))
            return null;
        try
        {
            string path = $"/sys/module/{module}/version";
            return File.Exists(path) ? File.ReadAllText(path).Trim() : null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    /// <summary>
    /// True if the module is loaded (listed in /proc/modules) or built into the kernel with a
    /// /sys/module entry. Built-in code without parameters has no entry and reports false.
    /// </summary>
    public static bool IsModuleLoaded(string module)
    {
        if (!IsValidModuleName(module))
            return false;
        // The kernel treats '-' and '_' in module names as the same; /proc/modules uses '_'.
        string canonical = module.Replace('-', '_');
        try
        {
            if (File.Exists("/proc/modules"))
                foreach (string line in File.ReadLines("/proc/modules"))
                    if (line.StartsWith(canonical + " ", StringComparison.Ordinal))
                        return true;
            return Directory.Exists($"/sys/module/{canonical}");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return false;
        }
    }

    private static bool IsValidModuleName(string module)
    {
        if (string.IsNullOrEmpty(module) || module.Length > 64)
            return false;
        foreach (char c in module)
            if (!(char.IsAsciiLetterOrDigit(c) || c == '_' || c == '-'))
                return false;
        return true;
    }
}
