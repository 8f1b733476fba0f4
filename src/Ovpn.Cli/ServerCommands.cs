// SPDX-License-Identifier: MIT
namespace Ovpn.Cli;

/// <summary>Entry points for the commands that run or talk to the server.</summary>
public static class ServerCommands
{
    /// <summary>ovpnas serve: runs the VPN server in the foreground until SIGINT/SIGTERM.</summary>
    public static Task<int> ServeAsync(string dataDir, CancellationToken ct) => ServeCommand.RunAsync(dataDir, ct);

    /// <summary>ovpnas connect PROFILE: built-in client.</summary>
    public static Task<int> ConnectAsync(string dataDir, string profilePath, CancellationToken ct) => ConnectCommand.RunAsync(dataDir, profilePath, ct);

    /// <summary>ovpnas doctor: environment checks (TUN, ovpn-dco module, ports...).</summary>
    public static Task<int> DoctorAsync(string dataDir, TextWriter output, CancellationToken ct) =>
        throw new NotSupportedException("doctor: not implemented yet");

    /// <summary>sacli start: apply the configuration to the running server.</summary>
    public static Task<int> StartAsync(string dataDir, TextWriter output, CancellationToken ct) =>
        throw new NotSupportedException("sacli start: not implemented yet");

    /// <summary>sacli stop: stop the server daemon.</summary>
    public static Task<int> StopAsync(string dataDir, TextWriter output, CancellationToken ct) =>
        throw new NotSupportedException("sacli stop: not implemented yet");

    /// <summary>sacli Status: service status as JSON.</summary>
    public static Task<int> StatusAsync(string dataDir, TextWriter output, CancellationToken ct) =>
        throw new NotSupportedException("sacli Status: not implemented yet");

    /// <summary>sacli VPNStatus: connected clients as JSON.</summary>
    public static Task<int> VpnStatusAsync(string dataDir, TextWriter output, CancellationToken ct) =>
        throw new NotSupportedException("sacli VPNStatus: not implemented yet");
}
