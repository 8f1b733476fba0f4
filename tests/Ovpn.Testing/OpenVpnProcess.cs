// SPDX-License-Identifier: MIT
using System.Text.RegularExpressions;
using Ovpn.Platform.Linux;

namespace Ovpn.Testing;

/// <summary>
/// The stock openvpn binary running inside a <see cref="NetNs"/>. The config (and any extra files
/// it refers to by relative path: keys, certificates) is written to a private temp directory that
/// openvpn uses as its --cd. The log is read from stdout.
///
/// Thread-safety: all members may be used from any thread.
/// </summary>
public sealed partial class OpenVpnProcess : IDisposable, IAsyncDisposable
{
    private readonly NetNsProcess _process;
    private int _disposed;

    private OpenVpnProcess(string workDir, NetNsProcess process)
    {
        WorkDir = workDir;
        _process = process;
    }

    /// <summary>Temp directory holding openvpn.conf and the extra files; deleted on Dispose.</summary>
    public string WorkDir { get; }

    public string ConfigPath => Path.Combine(WorkDir, "openvpn.conf");

    public NetNsProcess Process => _process;

    public IReadOnlyList<string> Log => _process.Lines;

    public bool HasExited => _process.HasExited;

    /// <summary>
    /// Starts openvpn in <paramref name="ns"/>. <paramref name="verb"/> is appended after the
    /// config, so it wins over a "verb" line in the config. <paramref name="extraArgs"/> go last.
    /// </summary>
    public static OpenVpnProcess Start(NetNs ns, string config, IReadOnlyDictionary<string, string>? files = null,
        int verb = 3, params string[] extraArgs)
    {
        ArgumentNullException.ThrowIfNull(ns);
        ArgumentNullException.ThrowIfNull(config);
        Requirements.RequireOrFail(Requirement.Root, Requirement.Tun, Requirement.OpenVpn);
        string dir = Directory.CreateTempSubdirectory("ovpnt-openvpn-").FullName;
        try
        {
            WritePrivate(Path.Combine(dir, "openvpn.conf"), config);
            if (files is not null)
            {
                foreach (var (name, content) in files)
                {
                    if (name.Contains('/') || name.Contains("..", StringComparison.Ordinal))
                        throw new ArgumentException($"Extra file name '{name}' must be a plain file name.", nameof(files));
                    WritePrivate(Path.Combine(dir, name), content);
                }
            }
            string[] args = ["--cd", dir, "--config", "openvpn.conf", "--verb", verb.ToString(System.Globalization.CultureInfo.InvariantCulture), .. extraArgs];
            var p = ns.StartIn(dir, Requirements.OpenVpnPath, args);
            return new OpenVpnProcess(dir, p);
        }
        catch
        {
            Directory.Delete(dir, recursive: true);
            throw;
        }
    }

    private static void WritePrivate(string path, string content)
    {
        File.WriteAllText(path, content);
        File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite);
    }

    public Task<string> WaitForLineAsync(Regex regex, TimeSpan timeout, int fromLine = 0)
        => _process.WaitForLineAsync(regex, timeout, fromLine);

    [GeneratedRegex("Initialization Sequence Completed")]
    private static partial Regex InitializedRegex();

    /// <summary>
    /// Waits for "Initialization Sequence Completed". Fails with the last 40 log lines if it does
    /// not come in time or openvpn exits first.
    /// </summary>
    public async Task WaitInitializedAsync(TimeSpan timeout)
    {
        try
        {
            await _process.WaitForLineAsync(InitializedRegex(), timeout).ConfigureAwait(false);
        }
        catch (Exception e) when (e is TimeoutException or InvalidOperationException)
        {
            throw new InvalidOperationException($"openvpn did not complete initialization: {e.Message}", e);
        }
    }

    /// <summary>SIGTERM, then wait up to <paramref name="timeout"/> (default 10 s); SIGKILL if it is still running. Returns the exit code.</summary>
    public async Task<int?> StopAsync(TimeSpan? timeout = null)
    {
        if (!_process.HasExited)
        {
            _process.Signal(LinuxProcess.SIGTERM);
            if (!await _process.WaitForExitAsync(timeout ?? TimeSpan.FromSeconds(10)).ConfigureAwait(false))
            {
                _process.Kill();
                await _process.WaitForExitAsync(TimeSpan.FromSeconds(5)).ConfigureAwait(false);
            }
        }
        return _process.ExitCode;
    }

    /// <summary>SIGKILL to openvpn's process group.</summary>
    public void Kill() => _process.Kill();

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
            return;
        _process.Dispose();
        try
        {
            Directory.Delete(WorkDir, recursive: true);
        }
        catch (IOException)
        {
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (Volatile.Read(ref _disposed) == 0 && !_process.HasExited)
            await StopAsync(TimeSpan.FromSeconds(5)).ConfigureAwait(false);
        Dispose();
    }
}
