// SPDX-License-Identifier: MIT
using System.Text.Json;
using Ovpn.ControlPlane.Config;
using Ovpn.ControlPlane.Dco;
using Ovpn.Server.Management;

namespace Ovpn.Cli;

/// <summary>
/// Entry points for the commands that run or talk to the server. The sacli server verbs talk to
/// the management socket of a running `ovpnas serve`. Exit codes: 0 ok, 1 usage/validation,
/// 2 runtime error, 3 server not running. Results are JSON on stdout, messages on stderr.
/// </summary>
public static class ServerCommands
{
    public const int ExitNotRunning = ManagementCodes.NotRunning;
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(15);

    /// <summary>Where error messages go (stderr; replaceable by tests).</summary>
    public static TextWriter Errors { get; set; } = Console.Error;

    /// <summary>ovpnas serve: runs the VPN server in the foreground until SIGINT/SIGTERM.</summary>
    public static Task<int> ServeAsync(string dataDir, CancellationToken ct) => ServeCommand.RunAsync(dataDir, ct);

    /// <summary>ovpnas connect PROFILE: built-in client.</summary>
    public static Task<int> ConnectAsync(string dataDir, string profilePath, CancellationToken ct) => ConnectCommand.RunAsync(dataDir, profilePath, ct);

    /// <summary>ovpnas connect PROFILE --dco MODE.</summary>
    public static Task<int> ConnectAsync(string dataDir, string profilePath, Ovpn.ControlPlane.Client.ClientDcoMode dco, CancellationToken ct) =>
        ConnectCommand.RunAsync(dataDir, profilePath, dco, ct);

    /// <summary>sacli start: apply the configuration to the running server.</summary>
    public static Task<int> StartAsync(string dataDir, TextWriter output, CancellationToken ct) =>
        CallAsync(dataDir, "reload", output, ct);

    /// <summary>sacli stop: stop the server daemon; waits (bounded) until it is gone.</summary>
    public static async Task<int> StopAsync(string dataDir, TextWriter output, CancellationToken ct)
    {
        int rc = await CallAsync(dataDir, "stop", output, ct).ConfigureAwait(false);
        if (rc != 0)
        {
            return rc;
        }

        var path = ManagementServer.PathFor(dataDir);
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(20);
        while (File.Exists(path) && DateTime.UtcNow < deadline)
        {
            await Task.Delay(100, ct).ConfigureAwait(false);
        }

        if (File.Exists(path))
        {
            Errors.WriteLine("ovpnas: the server accepted 'stop' but is still running after 20 s");
            return ManagementCodes.Runtime;
        }

        return 0;
    }

    /// <summary>sacli Status: service status as JSON.</summary>
    public static async Task<int> StatusAsync(string dataDir, TextWriter output, CancellationToken ct)
    {
        int rc = await CallAsync(dataDir, "status", output, ct).ConfigureAwait(false);
        if (rc == ExitNotRunning)
        {
            // Scripts still get a JSON document, with the offload state as far as it is known offline.
            output.WriteLine(JsonSerializer.Serialize(OfflineStatus(dataDir), ManagementJson.Options));
        }

        return rc;
    }

    /// <summary>sacli VPNStatus: connected clients as JSON.</summary>
    public static Task<int> VpnStatusAsync(string dataDir, TextWriter output, CancellationToken ct) =>
        CallAsync(dataDir, "vpnstatus", output, ct);

    private static async Task<int> CallAsync(string dataDir, string command, TextWriter output, CancellationToken ct)
    {
        try
        {
            var result = await ManagementClient.SendAsync(dataDir, command, Timeout, ct).ConfigureAwait(false);
            output.WriteLine(result.ValueKind == JsonValueKind.Undefined ? "null" : JsonSerializer.Serialize(result, ManagementJson.Options));
            return 0;
        }
        catch (ServerNotRunningException e)
        {
            Errors.WriteLine("ovpnas: " + e.Message);
            return ExitNotRunning;
        }
        catch (ManagementException e)
        {
            Errors.WriteLine("ovpnas: " + e.Message);
            return e.Code is >= 1 and <= 3 ? e.Code : ManagementCodes.Runtime;
        }
        catch (UnauthorizedAccessException e)
        {
            Errors.WriteLine($"ovpnas: {e.Message} (the management socket is root-only)");
            return ManagementCodes.Runtime;
        }
    }

    private static object OfflineStatus(string dataDir)
    {
        var kernel = KernelDcoProbe.Probe();
        DcoStatus? dco = null;
        if (OvpnDatabase.Exists(dataDir))
        {
            var s = ServerSettings.From(ConfigStore.Open(dataDir));
            dco = DcoStatusBuilder.Build(s.Dco, "none", "", kernel, DcoRules.Review(s));
        }

        return new { state = "not running", kernelDataChannelOffloading = (object?)dco ?? kernel };
    }

    /// <summary>ovpnas doctor: environment checks with fixes. Exit 0 if nothing failed, else 2.</summary>
    public static Task<int> DoctorAsync(string dataDir, TextWriter output, CancellationToken ct)
    {
        var checks = Doctor.Run(dataDir, "/sys", "/proc");
        foreach (var c in checks)
        {
            output.WriteLine($"[{c.Level,-4}] {c.Name}: {c.Detail}");
            if (c.Fix is { } fix)
            {
                output.WriteLine($"       fix: {fix}");
            }
        }

        int fails = checks.Count(c => c.Level == Doctor.Fail);
        output.WriteLine(fails == 0 ? "doctor: no failures" : $"doctor: {fails} check(s) failed");
        return Task.FromResult(fails == 0 ? 0 : ManagementCodes.Runtime);
    }
}

/// <summary>The checks of `ovpnas doctor`. Paths are parameters so tests can use a fake sysfs.</summary>
public static class Doctor
{
    public const string Ok = "OK";
    public const string Warn = "WARN";
    public const string Fail = "FAIL";

    public sealed record Check(string Name, string Level, string Detail, string? Fix);

    private const string EfiGlobalGuid = "8be4df61-93ca-11d2-aa0d-00e098032b8c";

    public static List<Check> Run(string dataDir, string sysRoot, string procRoot)
    {
        var list = new List<Check>();
        var kernel = KernelDcoProbe.Probe(sysRoot);
        var release = KernelDcoProbe.ReadTrimPublic(Path.Combine(procRoot, "sys", "kernel", "osrelease")) ?? "unknown";

        list.Add(kernel.Available
            ? new Check("kernel module", Ok, $"{kernel.Module} loaded, version {kernel.Version}", null)
            : new Check("kernel module", Warn, kernel.Reason ?? "not loaded",
                "modprobe ovpn (Linux 6.16+) or install ovpn-dco-dkms and modprobe ovpn-dco-v2"));

        var headers = $"/lib/modules/{release}/build";
        list.Add(Directory.Exists(headers)
            ? new Check("kernel headers", Ok, $"{headers} present", null)
            : new Check("kernel headers", kernel.Available ? Ok : Warn, $"no headers for {release} ({headers} missing); needed only to build ovpn-dco with DKMS",
                kernel.Available ? null : $"apt-get install linux-headers-{release}"));

        var efi = Path.Combine(sysRoot, "firmware", "efi");
        if (!Directory.Exists(efi))
        {
            list.Add(new Check("secure boot", Ok, "no EFI firmware (legacy boot or VM without EFI): unsigned modules can load", null));
        }
        else
        {
            var sb = Path.Combine(efi, "efivars", $"SecureBoot-{EfiGlobalGuid}");
            byte[]? data = null;
            try
            {
                data = File.Exists(sb) ? File.ReadAllBytes(sb) : null;
            }
            catch (IOException)
            {
            }
            catch (UnauthorizedAccessException)
            {
            }

            // efivarfs: 4 bytes of attributes, then the value (1 = enabled).
            if (data is { Length: >= 5 } && data[4] == 1)
            {
                list.Add(new Check("secure boot", kernel.Available ? Ok : Warn, "EFI present, Secure Boot enabled: a DKMS-built ovpn-dco module must be signed",
                    kernel.Available ? null : "enroll the DKMS signing key with 'mokutil --import /var/lib/dkms/mok.pub' and reboot"));
            }
            else
            {
                list.Add(new Check("secure boot", Ok, data is null ? "EFI present, SecureBoot variable not readable (assume disabled)" : "EFI present, Secure Boot disabled", null));
            }
        }

        var capEff = ReadStatusHex(Path.Combine(procRoot, "self", "status"), "CapEff:");
        list.Add(capEff is { } cap && (cap & (1UL << 12)) != 0
            ? new Check("CAP_NET_ADMIN", Ok, "present", null)
            : new Check("CAP_NET_ADMIN", Fail, "missing: the server cannot configure the tun device or the kernel data path", "run as root or grant CAP_NET_ADMIN (systemd AmbientCapabilities=CAP_NET_ADMIN)"));

        list.Add(File.Exists("/dev/net/tun")
            ? new Check("/dev/net/tun", Ok, "present", null)
            : new Check("/dev/net/tun", Fail, "missing", "modprobe tun; in a container add --device /dev/net/tun"));

        if (OvpnDatabase.Exists(dataDir))
        {
            var settings = ServerSettings.From(ConfigStore.Open(dataDir));
            var review = DcoRules.Review(settings);
            var dco = DcoStatusBuilder.Build(settings.Dco, "none", "", kernel, review);
            list.Add(new Check("offload", settings.Dco && !kernel.Available ? Warn : Ok,
                settings.Dco ? (kernel.Available ? "preferred in configuration and the kernel module is loaded" : "preferred in configuration but " + dco.Reason)
                    : "disabled in configuration (vpn.server.daemon.ovpndco = false)",
                settings.Dco ? null : "ovpnas sacli -k vpn.server.daemon.ovpndco -v true ConfigPut; ovpnas sacli start"));
            foreach (var f in review.Findings.Where(f => f.Compatibility != DcoCompatibility.Compatible))
            {
                list.Add(new Check("directive review", f.Compatibility == DcoCompatibility.Incompatible && settings.Dco ? Warn : Ok,
                    f.LineNumber > 0 ? $"{f.Source} line {f.LineNumber} '{f.Line}': {f.Reason}" : $"{f.Source}: {f.Reason}",
                    f.Compatibility == DcoCompatibility.Incompatible ? $"remove or change '{f.Directive}' to keep offload" : null));
            }

            if (review.Findings.All(f => f.Compatibility == DcoCompatibility.Compatible))
            {
                list.Add(new Check("directive review", Ok, "all additional directives are compatible with DCO", null));
            }
        }
        else
        {
            list.Add(new Check("configuration", Warn, $"no server database in {dataDir}", $"ovpnas init --data-dir {dataDir}"));
        }

        return list;
    }

    private static ulong? ReadStatusHex(string path, string field)
    {
        try
        {
            foreach (var line in File.ReadLines(path))
            {
                if (line.StartsWith(field, StringComparison.Ordinal))
                {
                    return ulong.Parse(line[field.Length..].Trim(), System.Globalization.NumberStyles.HexNumber, System.Globalization.CultureInfo.InvariantCulture);
                }
            }
        }
        catch (IOException)
        {
        }

        return null;
    }
}
