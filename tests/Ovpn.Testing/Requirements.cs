// SPDX-License-Identifier: MIT
using System.Text.RegularExpressions;
using Ovpn.Platform.Linux;
using Xunit;

namespace Ovpn.Testing;

/// <summary>What an environment-dependent test needs.</summary>
public enum Requirement
{
    /// <summary>Effective uid 0 (namespaces, TUN configuration).</summary>
    Root,
    /// <summary>/dev/net/tun can be opened.</summary>
    Tun,
    /// <summary>/usr/sbin/openvpn exists.</summary>
    OpenVpn,
    /// <summary>iperf3 on PATH.</summary>
    Iperf3,
}

/// <summary>Thrown when a required tool or privilege is missing (the message says which and why).</summary>
public sealed class RequirementMissingException(string message) : Exception(message);

/// <summary>
/// Environment probes for interop tests. Policy: when the environment variable CI is "true" or
/// "1" a missing requirement is a test FAILURE (RequireOrFail throws); locally a test may be
/// skipped instead, via <see cref="RequiresFactAttribute"/> / <see cref="RequiresTheoryAttribute"/>.
/// Use both: the attribute for the local skip, and RequireOrFail at the top of the test (and in
/// helpers such as NetNs/OpenVpnProcess) so that CI runs fail with a clear message.
/// </summary>
public static partial class Requirements
{
    public const string OpenVpnPath = "/usr/sbin/openvpn";

    private static readonly Lazy<string?> s_openVpnVersion = new(ProbeOpenVpnVersion);

    public static bool IsRoot => Environment.IsPrivilegedProcess;

    public static bool HasTun => LinuxNet.TunAvailable();

    public static bool HasOpenVpn => File.Exists(OpenVpnPath);

    public static bool HasIperf3 => FindOnPath("iperf3") is not null;

    /// <summary>Version of the installed openvpn ("2.6.3"), or null when missing.</summary>
    public static string? OpenVpnVersion => s_openVpnVersion.Value;

    /// <summary>True when running under CI (environment variable CI = true/1).</summary>
    public static bool IsCi
    {
        get
        {
            string? ci = Environment.GetEnvironmentVariable("CI");
            return string.Equals(ci, "true", StringComparison.OrdinalIgnoreCase) || ci == "1";
        }
    }

    /// <summary>Description of the missing requirements, or null when all are met.</summary>
    public static string? Missing(params Requirement[] requirements)
    {
        var missing = new List<string>();
        foreach (var r in requirements.Distinct())
        {
            string? why = r switch
            {
                Requirement.Root => IsRoot ? null : "root privileges (run the tests as root: namespaces and TUN need CAP_NET_ADMIN/CAP_SYS_ADMIN)",
                Requirement.Tun => HasTun ? null : "/dev/net/tun (load the tun module, or give the container the device)",
                Requirement.OpenVpn => HasOpenVpn ? null : $"{OpenVpnPath} (apt-get install openvpn)",
                Requirement.Iperf3 => HasIperf3 ? null : "iperf3 (apt-get install iperf3)",
                _ => $"unknown requirement {r}",
            };
            if (why is not null)
                missing.Add(why);
        }
        return missing.Count == 0 ? null : "Missing test requirement(s): " + string.Join("; ", missing);
    }

    /// <summary>Throws <see cref="RequirementMissingException"/> if any requirement is missing.</summary>
    public static void RequireOrFail(params Requirement[] requirements)
    {
        string? missing = Missing(requirements);
        if (missing is not null)
            throw new RequirementMissingException(missing + (IsCi ? " [CI=true: interop tests must not be skipped]" : ""));
    }

    /// <summary>
    /// Skip reason for xunit: the missing requirements when not under CI; null (run, and then
    /// fail in RequireOrFail) under CI or when everything is there.
    /// </summary>
    public static string? SkipReason(params Requirement[] requirements)
        => IsCi ? null : Missing(requirements);

    [GeneratedRegex(@"^OpenVPN (\d+\.\d+\.\d+\S*)")]
    private static partial Regex VersionRegex();

    private static string? ProbeOpenVpnVersion()
    {
        if (!HasOpenVpn)
            return null;
        try
        {
            // openvpn --version exits with status 1 after printing; only the text matters.
            var r = ProcessRunner.Run(OpenVpnPath, ["--version"], TimeSpan.FromSeconds(10));
            var m = VersionRegex().Match(r.Stdout);
            return m.Success ? m.Groups[1].Value : null;
        }
        catch (Exception e) when (e is TimeoutException or InvalidOperationException or System.ComponentModel.Win32Exception)
        {
            return null;
        }
    }

    internal static string? FindOnPath(string file)
    {
        foreach (string dir in (Environment.GetEnvironmentVariable("PATH") ?? "/usr/bin:/bin").Split(':', StringSplitOptions.RemoveEmptyEntries))
        {
            string p = Path.Combine(dir, file);
            if (File.Exists(p))
                return p;
        }
        return null;
    }
}

/// <summary>
/// [Fact] that is skipped when requirements are missing, except under CI=true where it runs (and
/// should then fail through <see cref="Requirements.RequireOrFail"/>).
/// </summary>
[AttributeUsage(AttributeTargets.Method)]
public sealed class RequiresFactAttribute : FactAttribute
{
    public RequiresFactAttribute(params Requirement[] requirements)
    {
        RequiredItems = requirements;
        string? skip = Requirements.SkipReason(requirements);
        if (skip is not null)
            Skip = skip;
    }

    public Requirement[] RequiredItems { get; }
}

/// <summary>[Theory] counterpart of <see cref="RequiresFactAttribute"/>.</summary>
[AttributeUsage(AttributeTargets.Method)]
public sealed class RequiresTheoryAttribute : TheoryAttribute
{
    public RequiresTheoryAttribute(params Requirement[] requirements)
    {
        RequiredItems = requirements;
        string? skip = Requirements.SkipReason(requirements);
        if (skip is not null)
            Skip = skip;
    }

    public Requirement[] RequiredItems { get; }
}
