// SPDX-License-Identifier: MIT
using System.CommandLine;
using System.Diagnostics;
using System.Globalization;

namespace Ovpn.Cli;

/// <summary>
/// `ovpnas dco-reload`: upgrade the ovpn-dco-v2 kernel module without a reboot. Stops the running server
/// (SIGTERM; clients get RESTART and reconnect on their own), reloads the module (modprobe -r + modprobe,
/// or rmmod + insmod of a given .ko), then starts the server again with the command line it had.
/// </summary>
public static class DcoReloadCommand
{
    private const string Module = "ovpn_dco_v2";

    /// <summary>The command for Program's root (dataDir reads the recursive --data-dir option).</summary>
    public static Command Create(Func<ParseResult, string> dataDir, TextWriter stdout, TextWriter stderr)
    {
        var ko = new Option<string?>("--module") { Description = "insmod this ovpn-dco-v2.ko instead of modprobe", HelpName = "PATH" };
        var log = new Option<string?>("--log") { Description = "Output file of the restarted server (default DATA_DIR/ovpnas.log)", HelpName = "FILE" };
        var wait = new Option<int>("--wait") { Description = "Seconds to wait for stop and for start each", DefaultValueFactory = _ => 60 };
        var cmd = new Command("dco-reload", "Reload the ovpn-dco-v2 kernel module (stop server, reload, start server)") { ko, log, wait };
        cmd.SetAction(async (p, ct) =>
        {
            try
            {
                return await RunAsync(dataDir(p), p.GetValue(ko), p.GetValue(log), TimeSpan.FromSeconds(p.GetValue(wait)), stdout, ct).ConfigureAwait(false);
            }
            catch (Exception e) when (e is IOException or InvalidOperationException or UnauthorizedAccessException or System.ComponentModel.Win32Exception)
            {
                stderr.WriteLine($"ovpnas dco-reload: {e.Message}");
                return Program.ExitRuntime;
            }
        });
        return cmd;
    }

    /// <summary>Runs the reload; returns 0 when the module was reloaded and the server (if one ran) is back up.</summary>
    public static async Task<int> RunAsync(string dataDir, string? modulePath, string? logPath, TimeSpan wait, TextWriter output, CancellationToken ct)
    {
        if (!OperatingSystem.IsLinux())
            throw new NotSupportedException("dco-reload: kernel modules exist only on Linux");
        string full = Path.GetFullPath(dataDir);
        logPath ??= Path.Combine(full, "ovpnas.log");

        var server = FindServer(full, await PidFromManagementAsync(full, ct).ConfigureAwait(false));
        if (server is null)
        {
            output.WriteLine($"dco-reload: no running `ovpnas serve --data-dir {full}` found; reloading the module only");
        }
        else
        {
            output.WriteLine($"dco-reload: stopping server pid {server.Value.Pid} ({string.Join(' ', server.Value.Argv)})");
            await RunToolAsync("kill", ["-TERM", server.Value.Pid.ToString(CultureInfo.InvariantCulture)], ct).ConfigureAwait(false);
            if (!await WaitAsync(() => !Directory.Exists($"/proc/{server.Value.Pid}"), wait, ct).ConfigureAwait(false))
                throw new InvalidOperationException($"server pid {server.Value.Pid} did not exit within {wait.TotalSeconds:F0} s; module not touched");
            output.WriteLine("dco-reload: server stopped");
        }

        string before = ModuleVersion() ?? "not loaded";
        // The device (and the peers' sockets) hold module references until the kernel has released them.
        await WaitAsync(() => RefCount() is null or 0, TimeSpan.FromSeconds(10), ct).ConfigureAwait(false);
        int rc = Program.ExitOk;
        string? error = null;
        if (modulePath is not null)
        {
            if (ModuleVersion() is not null || Directory.Exists($"/sys/module/{Module}"))
                error = await RunToolAsync("rmmod", [Module], ct).ConfigureAwait(false);
            error ??= await RunToolAsync("insmod", [Path.GetFullPath(modulePath)], ct).ConfigureAwait(false);
        }
        else
        {
            error = await RunToolAsync("modprobe", ["-r", Module], ct).ConfigureAwait(false)
                    ?? await RunToolAsync("modprobe", [Module], ct).ConfigureAwait(false);
        }

        if (error is null)
        {
            output.WriteLine($"dco-reload: module {Module} reloaded: {before} -> {ModuleVersion() ?? "?"} (srcversion {Read($"/sys/module/{Module}/srcversion") ?? "?"})");
        }
        else
        {
            // Start the server anyway: without the module it serves with the userspace offload engine.
            output.WriteLine($"dco-reload: module reload FAILED: {error}");
            rc = Program.ExitRuntime;
        }

        if (server is null)
            return rc;
        long offset = File.Exists(logPath) ? new FileInfo(logPath).Length : 0;
        // setsid + redirection: the server outlives this command and keeps the caller's network namespace.
        var psi = new ProcessStartInfo("/bin/sh") { UseShellExecute = false, WorkingDirectory = server.Value.Cwd };
        foreach (string a in (string[])["-c", "exec setsid \"$@\" >>\"$LOGFILE\" 2>&1 </dev/null &", "sh", .. server.Value.Argv])
            psi.ArgumentList.Add(a);
        psi.Environment["LOGFILE"] = logPath;
        using (var sh = Process.Start(psi) ?? throw new InvalidOperationException("cannot start /bin/sh"))
            await sh.WaitForExitAsync(ct).ConfigureAwait(false);

        string? offload = null;
        bool up = await WaitAsync(() =>
        {
            string tail = ReadFrom(logPath, offset);
            offload ??= tail.Split('\n').FirstOrDefault(l => l.Contains("data channel offload:", StringComparison.Ordinal));
            return tail.Contains("Initialization Sequence Completed", StringComparison.Ordinal);
        }, wait, ct).ConfigureAwait(false);
        if (!up)
        {
            output.WriteLine($"dco-reload: server did not report start-up within {wait.TotalSeconds:F0} s (see {logPath})");
            return Program.ExitRuntime;
        }
        output.WriteLine($"dco-reload: server started again (log {logPath}): {offload?.Trim() ?? "(no offload line)"}");
        return rc;
    }

    private readonly record struct ServerProcess(int Pid, string[] Argv, string Cwd);

    /// <summary>The pid the running server reports on its management socket (DATA_DIR/ovpnas.sock), null if none answers.</summary>
    private static async Task<int?> PidFromManagementAsync(string dataDir, CancellationToken ct)
    {
        try
        {
            var status = await Ovpn.Server.Management.ManagementClient.SendAsync(dataDir, "status", TimeSpan.FromSeconds(10), ct).ConfigureAwait(false);
            return status.ValueKind == System.Text.Json.JsonValueKind.Object && status.TryGetProperty("pid", out var pid) && pid.TryGetInt32(out int n) ? n : null;
        }
        catch (Exception e) when (e is not OperationCanceledException and not OutOfMemoryException)
        {
            return null; // not running, or an older server: fall back to the command-line scan
        }
    }

    /// <summary>
    /// The server process and its command line (to start it again the same way): the pid from the management
    /// socket, DATA_DIR/ovpnas.pid, or the process whose command line is `... ovpnas[.dll] serve ... --data-dir DIR`.
    /// </summary>
    private static ServerProcess? FindServer(string dataDir, int? managementPid)
    {
        var candidates = new List<int>();
        if (managementPid is { } mp)
            candidates.Add(mp);
        if (Read(Path.Combine(dataDir, "ovpnas.pid")) is { } pidText && int.TryParse(pidText, NumberStyles.None, CultureInfo.InvariantCulture, out int filePid))
            candidates.Add(filePid);
        foreach (string d in Directory.EnumerateDirectories("/proc"))
            if (int.TryParse(Path.GetFileName(d), NumberStyles.None, CultureInfo.InvariantCulture, out int pid) && pid != Environment.ProcessId)
                candidates.Add(pid);
        foreach (int pid in candidates)
        {
            string[] argv;
            string cwd;
            try
            {
                argv = File.ReadAllText($"/proc/{pid}/cmdline").Split('\0', StringSplitOptions.RemoveEmptyEntries);
                cwd = new DirectoryInfo($"/proc/{pid}/cwd").LinkTarget ?? "/";
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                continue; // exited meanwhile, or not ours to read
            }
            int serve = Array.IndexOf(argv, "serve");
            if (serve < 1 || !argv.Take(serve).Any(a => Path.GetFileName(a) is "ovpnas" or "ovpnas.dll"))
                continue;
            for (int i = serve + 1; i < argv.Length; i++)
            {
                string? dir = argv[i] == "--data-dir" && i + 1 < argv.Length ? argv[i + 1]
                    : argv[i].StartsWith("--data-dir=", StringComparison.Ordinal) ? argv[i]["--data-dir=".Length..] : null;
                if (dir is not null && Path.GetFullPath(dir, cwd) == dataDir)
                    return new ServerProcess(pid, argv, cwd);
            }
        }
        return null;
    }

    private static string? ModuleVersion() => Read($"/sys/module/{Module}/version");

    private static int? RefCount() => int.TryParse(Read($"/sys/module/{Module}/refcnt"), NumberStyles.None, CultureInfo.InvariantCulture, out int n) ? n : null;

    private static string? Read(string path)
    {
        try
        {
            return File.Exists(path) ? File.ReadAllText(path).Trim() : null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    private static string ReadFrom(string path, long offset)
    {
        try
        {
            using var fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
            fs.Seek(Math.Min(offset, fs.Length), SeekOrigin.Begin);
            using var r = new StreamReader(fs);
            return r.ReadToEnd();
        }
        catch (FileNotFoundException)
        {
            return string.Empty;
        }
    }

    /// <summary>Polls every 250 ms, bounded by timeout.</summary>
    private static async Task<bool> WaitAsync(Func<bool> done, TimeSpan timeout, CancellationToken ct)
    {
        var sw = Stopwatch.StartNew();
        while (!done())
        {
            if (sw.Elapsed > timeout)
                return false;
            await Task.Delay(250, ct).ConfigureAwait(false);
        }
        return true;
    }

    /// <summary>Runs a system tool; null on success, else its exit code and stderr.</summary>
    private static async Task<string?> RunToolAsync(string tool, string[] args, CancellationToken ct)
    {
        var psi = new ProcessStartInfo(tool) { UseShellExecute = false, RedirectStandardError = true, RedirectStandardOutput = true };
        foreach (string a in args)
            psi.ArgumentList.Add(a);
        using var p = Process.Start(psi) ?? throw new InvalidOperationException($"cannot start {tool}");
        var err = p.StandardError.ReadToEndAsync(ct);
        _ = await p.StandardOutput.ReadToEndAsync(ct).ConfigureAwait(false);
        await p.WaitForExitAsync(ct).ConfigureAwait(false);
        string e = (await err.ConfigureAwait(false)).Trim();
        return p.ExitCode == 0 ? null : $"{tool} {string.Join(' ', args)}: exit {p.ExitCode}{(e.Length > 0 ? ": " + e : "")}";
    }
}
