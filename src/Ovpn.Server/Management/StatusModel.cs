// SPDX-License-Identifier: MIT
using System.Text.Json;
using System.Text.Json.Serialization;
using Ovpn.ControlPlane.Dco;

namespace Ovpn.Server.Management;

/// <summary>The three states of the "Kernel data channel offloading" row.</summary>
[JsonConverter(typeof(JsonStringEnumConverter<DcoState>))]
public enum DcoState
{
    /// <summary>The running data path is the kernel module.</summary>
    Active,

    /// <summary>The kernel module is there, but this server does not use it (reason says why).</summary>
    AvailableInactive,

    /// <summary>The kernel module is missing (reason says why).</summary>
    NotAvailable,
}

/// <summary>What the kernel offers, independent of the configuration.</summary>
public sealed record KernelDcoInfo(bool Available, string? Module, string? Version, string? Reason);

/// <summary>The "Kernel data channel offloading" row: state, a one-line text, and the details.</summary>
public sealed record DcoStatus(
    DcoState State,
    string Text,
    bool Configured,
    string? Engine,
    string? EngineVersion,
    string? Reason,
    KernelDcoInfo Kernel,
    IReadOnlyList<string> Blockers,
    IReadOnlyList<string> Warnings,
    IReadOnlyList<string> OffloadedCiphers);

/// <summary>`sacli Status`: the service as a whole.</summary>
public sealed record ServiceStatus(
    string State,
    int Pid,
    DateTimeOffset StartedAt,
    string DataEngine,
    string DataEngineVersion,
    DcoStatus KernelDataChannelOffloading,
    IReadOnlyList<string> Listeners,
    int Clients,
    IReadOnlyList<string> RestartPending);

/// <summary>One connected client in `sacli VPNStatus`.</summary>
public sealed record ClientStatus(
    string? CommonName,
    string RealAddress,
    string? VpnAddress,
    uint? PeerId,
    string? Cipher,
    string? ClientVersion,
    DateTimeOffset ConnectedAt,
    bool Authenticated,
    string DataPath,
    string? DataPathReason,
    long BytesIn,
    long BytesOut,
    long PacketsIn,
    long PacketsOut,
    IReadOnlyDictionary<string, long> Drops);

/// <summary>`sacli VPNStatus`.</summary>
public sealed record VpnStatus(IReadOnlyList<ClientStatus> Clients, IReadOnlyDictionary<string, long> GlobalDrops);

/// <summary>What `sacli start` (Reload) did.</summary>
public sealed record ReloadResult(IReadOnlyList<string> Applied, IReadOnlyList<string> RestartRequired, IReadOnlyList<string> Unchanged, int ClientsKept)
{
    public bool NeedsRestart => RestartRequired.Count > 0;

    /// <summary>The service restarts to apply <see cref="RestartRequired"/> (clients reconnect).</summary>
    public bool Restarting { get; init; }
}

/// <summary>What the management socket and the admin UI talk to: the running server (or a test fake).</summary>
public interface IManagementTarget
{
    ServiceStatus GetStatus();

    VpnStatus GetVpnStatus();

    /// <summary>Re-reads the configuration from the data directory and applies it.</summary>
    ReloadResult Reload();

    /// <summary>Asks the service to stop (returns at once; the stop happens afterwards).</summary>
    void RequestStop();

    /// <summary>The DCO review of the configuration currently in effect.</summary>
    DcoReview GetDcoReview();
}

/// <summary>Shared JSON settings: camelCase, enums as strings, indented for humans and scripts alike.</summary>
public static class ManagementJson
{
    public static readonly JsonSerializerOptions Options = new(JsonSerializerDefaults.Web)
    {
        WriteIndented = true,
        // Plain quotes and '+' in CLI output; HTML pages encode values themselves.
        Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
        Converters = { new JsonStringEnumConverter() },
    };
}
