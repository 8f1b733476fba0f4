// SPDX-License-Identifier: MIT
using System.Diagnostics;
using System.Text;

namespace Ovpn.Cli.Tests;

/// <summary>A real openvpn process whose log is captured; killed on dispose.</summary>
public sealed class OpenVpnProcess : IDisposable
{
    public const string Binary = "/usr/sbin/openvpn";
    private readonly Process _p;
    private readonly StringBuilder _log = new();

    public OpenVpnProcess(params string[] args)
    {
        Assert.True(File.Exists(Binary), "openvpn 2.6 is required at " + Binary);
        var psi = new ProcessStartInfo(Binary) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args)
            psi.ArgumentList.Add(a);
        _p = new Process { StartInfo = psi };
        _p.OutputDataReceived += (_, e) => Append(e.Data);
        _p.ErrorDataReceived += (_, e) => Append(e.Data);
        Assert.True(_p.Start());
        _p.BeginOutputReadLine();
        _p.BeginErrorReadLine();
    }

    private void Append(string? line)
    {
        if (line is null)
            return;
        lock (_log)
            _log.AppendLine(line);
    }

    public string Log
    {
        get
        {
            lock (_log)
                return _log.ToString();
        }
    }

    /// <summary>Polls the log for a substring (bounded wait); false on timeout or exit.</summary>
    public async Task<bool> WaitForLogAsync(string text, TimeSpan timeout)
    {
        var sw = Stopwatch.StartNew();
        while (sw.Elapsed < timeout)
        {
            if (Log.Contains(text, StringComparison.Ordinal))
                return true;
            if (_p.HasExited)
                return Log.Contains(text, StringComparison.Ordinal);
            await Task.Delay(50);
        }
        return false;
    }

    public void Dispose()
    {
        try
        {
            if (!_p.HasExited)
                _p.Kill(entireProcessTree: true);
            _p.WaitForExit(10_000);
        }
        catch (InvalidOperationException)
        {
        }
        _p.Dispose();
    }
}
