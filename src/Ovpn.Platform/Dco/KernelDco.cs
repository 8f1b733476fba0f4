// SPDX-License-Identifier: MIT
using Ovpn.Platform.Netlink;

namespace Ovpn.Platform.Dco;

/// <summary>What <see cref="KernelDco.Probe"/> found.</summary>
/// <param name="Usable">true when <see cref="KernelDataPlane"/> can run here.</param>
/// <param name="FamilyName">Generic netlink family found (ovpn-dco-v2, ovpn), or null.</param>
/// <param name="Reason">Why it is not usable (null when usable).</param>
public sealed record KernelDcoStatus(
    bool Usable, string? FamilyName, ushort? FamilyId, uint? FamilyVersion,
    string? ModuleName, string? ModuleVersion, bool HasCapNetAdmin, bool InInitialUserNamespace, string? Reason)
{
    public override string ToString()
        => Usable
            ? $"kernel DCO usable: family {FamilyName} (id {FamilyId}, v{FamilyVersion}), module {ModuleName} {ModuleVersion ?? "?"}"
            : $"kernel DCO unusable: {Reason}";
}

/// <summary>Discovery of the kernel's OpenVPN data channel offload.</summary>
public static class KernelDco
{
    private const int CAP_NET_ADMIN = 12;

    /// <summary>
    /// Looks for the generic netlink families (ovpn-dco-v2 first, then the upstream ovpn) (resolving one may auto-load its module through its
    /// net-pf-16-proto-16-family-* alias), reads the module version from /sys/module, and checks
    /// CAP_NET_ADMIN, which every ovpn command needs in the initial user namespace (GENL_ADMIN_PERM).
    /// Never throws for an unusable system; the reason says what is missing.
    /// </summary>
    public static KernelDcoStatus Probe()
    {
        if (!OperatingSystem.IsLinux())
            return new(false, null, null, null, null, null, false, false, "not Linux: kernel data channel offload is a Linux module");
        bool cap = HasCapability(CAP_NET_ADMIN);
        bool initNs = InInitialUserNamespace();
        GenlFamily? v2, upstream, v1;
        try
        {
            using var s = new NetlinkSocket(NetlinkConst.NETLINK_GENERIC);
            v2 = s.ResolveFamily(OvpnDcoV2.FamilyName);
            upstream = v2 is null ? s.ResolveFamily(OvpnUpstream.FamilyName) : null;
            v1 = v2 is null && upstream is null ? s.ResolveFamily("ovpn-dco") : null;
        }
        catch (IOException e)
        {
            return new(false, null, null, null, null, null, cap, initNs, $"generic netlink unavailable: {e.Message}");
        }

        string? CapReason() => !cap
            ? "no CAP_NET_ADMIN: ovpn netlink commands are GENL_ADMIN_PERM"
            : !initNs ? "running in a child user namespace: GENL_ADMIN_PERM needs CAP_NET_ADMIN in the initial user namespace" : null;

        if (v2 is not null)
        {
            string? mv = ReadModuleVersion(OvpnDcoV2.ModuleSysfsName);
            string? reason = v2.Version != 1
                ? $"wrong API generation: {v2.Name} has genl version {v2.Version}, this backend speaks version 1"
                : !v2.MulticastGroups.ContainsKey(OvpnDcoV2.MulticastGroupPeers) ? $"{v2.Name} has no 'peers' multicast group"
                : CapReason();
            return new(reason is null, v2.Name, v2.Id, v2.Version, OvpnDcoV2.ModuleSysfsName, mv, cap, initNs, reason);
        }
        if (upstream is not null)
        {
            string? reason = upstream.Version != 1
                ? $"wrong API generation: {upstream.Name} has genl version {upstream.Version}, this backend speaks version 1"
                : !upstream.MulticastGroups.ContainsKey(OvpnDcoV2.MulticastGroupPeers) ? $"{upstream.Name} has no 'peers' multicast group"
                : CapReason();
            return new(reason is null, upstream.Name, upstream.Id, upstream.Version, OvpnUpstream.ModuleSysfsName,
                ReadModuleVersion(OvpnUpstream.ModuleSysfsName), cap, initNs, reason);
        }
        if (v1 is not null)
        {
            return new(false, v1.Name, v1.Id, v1.Version, "ovpn_dco", ReadModuleVersion("ovpn_dco"), cap, initNs,
                "wrong API generation: found the pre-v2 'ovpn-dco' family; install an ovpn-dco build that registers ovpn-dco-v2");
        }
        return new(false, null, null, null, null, null, cap, initNs,
            "module missing: neither genl family 'ovpn-dco-v2' nor 'ovpn' is registered and none could be auto-loaded "
            + "(install openvpn-dco-dkms and `modprobe ovpn-dco-v2`; a kernel without module loading cannot get it)");
    }

    /// <summary>/sys/module/NAME/version, trimmed; null when absent (built-in or not loaded).</summary>
    public static string? ReadModuleVersion(string sysfsName)
    {
        try
        {
            string p = $"/sys/module/{sysfsName}/version";
            return File.Exists(p) ? File.ReadAllText(p).Trim() : null;
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

    /// <summary>Effective capability bit from /proc/self/status (CapEff, hex).</summary>
    internal static bool HasCapability(int bit)
    {
        try
        {
            foreach (var line in File.ReadLines("/proc/self/status"))
                if (line.StartsWith("CapEff:", StringComparison.Ordinal))
                    return ((Convert.ToUInt64(line.AsSpan(7).Trim().ToString(), 16) >> bit) & 1) != 0;
        }
        catch (IOException)
        {
        }
        return false;
    }

    /// <summary>The initial user namespace maps all 2^32 ids 1:1 ("0 0 4294967295").</summary>
    internal static bool InInitialUserNamespace()
    {
        try
        {
            var parts = File.ReadAllText("/proc/self/uid_map").Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries);
            return parts is ["0", "0", "4294967295"];
        }
        catch (IOException)
        {
            return true;
        }
    }
}
