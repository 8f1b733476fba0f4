// SPDX-License-Identifier: MIT
namespace Ovpn.Server.Management;

/// <summary>
/// Looks for the kernel ovpn data channel offload in sysfs: the upstream module "ovpn" (Linux 6.16+)
/// or the out-of-tree "ovpn_dco_v2". Only reads files; never loads anything.
/// </summary>
public static class KernelDcoProbe
{
    /// <summary>The platform probe (generic netlink family + module + CAP_NET_ADMIN), as the host uses it.</summary>
    public static KernelDcoInfo ProbeKernel()
    {
        var p = Platform.Dco.KernelDco.Probe();
        return new KernelDcoInfo(p.Usable, p.ModuleName ?? p.FamilyName, p.ModuleVersion, p.Usable ? null : p.Reason);
    }

    public static KernelDcoInfo Probe(string sysRoot = "/sys")
    {
        foreach (var module in new[] { "ovpn", "ovpn_dco_v2" })
        {
            var dir = Path.Combine(sysRoot, "module", module);
            if (Directory.Exists(dir))
            {
                var version = ReadTrim(Path.Combine(dir, "version")) ?? ReadTrim(Path.Combine(dir, "srcversion")) ?? "built-in";
                return new KernelDcoInfo(true, module, version, null);
            }
        }

        var release = ReadTrim("/proc/sys/kernel/osrelease") ?? Environment.OSVersion.Version.ToString();
        return new KernelDcoInfo(false, null, null,
            $"kernel module not loaded: neither ovpn nor ovpn_dco_v2 is present in {sysRoot}/module (kernel {release}; try 'modprobe ovpn' or install ovpn-dco-dkms)");
    }

    public static string? ReadTrimPublic(string path) => ReadTrim(path);

    internal static string? ReadTrim(string path)
    {
        try
        {
            return File.Exists(path) ? File.ReadAllText(path).Trim() : null;
        }
        catch (IOException)
        {
            return null;
        }
        catch (UnauthorizedAccessException)
        {
            return null;
        }
    }
}
