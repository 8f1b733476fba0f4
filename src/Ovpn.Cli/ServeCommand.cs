// SPDX-License-Identifier: MIT
using System.Runtime.InteropServices;
using Ovpn.ControlPlane;
using Ovpn.Server;

namespace Ovpn.Cli;

/// <summary>`ovpnas serve`: composition of the running server (listeners, data plane, management).</summary>
public static class ServeCommand
{
    /// <summary>ovpnas serve: runs the VPN server in the foreground until SIGINT/SIGTERM.</summary>
    public static async Task<int> RunAsync(string dataDir, CancellationToken ct)
    {
        if (Environment.GetEnvironmentVariable("OVPNAS_LOG_LEVEL") is { } lvl && Enum.TryParse<LogLevel>(lvl, true, out var level))
        {
            Log.MinLevel = level;
        }

        var (listen, control, settings) = ServerFactory.Load(dataDir);
        if (!settings.DaemonEnabled)
        {
            Console.Error.WriteLine("ovpnas: vpn.server.daemon.enable is false; not starting");
            return 1;
        }

        var stop = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, c => { c.Cancel = true; stop.TrySetResult(); });
        using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c => { c.Cancel = true; stop.TrySetResult(); });
        using var reg = ct.Register(() => stop.TrySetResult());

        await using var host = new ServerHost(listen, control);
        host.Start();
        Log.Info("server", $"data plane: {host.DataPlane.EngineName} {host.DataPlane.EngineVersion}");
        Log.Info("server", "Initialization Sequence Completed");
        await stop.Task.ConfigureAwait(false);
        await host.StopAsync().ConfigureAwait(false);
        return 0;
    }
}
