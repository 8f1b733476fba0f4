// SPDX-License-Identifier: MIT
using System.Diagnostics;

namespace Ovpn.Testing;

/// <summary>Result of a finished command.</summary>
public readonly record struct ExecResult(int ExitCode, string Stdout, string Stderr)
{
    public bool Succeeded => ExitCode == 0;

    public override string ToString() => $"exit {ExitCode}; stdout: {Stdout.Trim()}; stderr: {Stderr.Trim()}";
}

/// <summary>Runs short-lived commands with a hard timeout (the process tree is killed on timeout).</summary>
internal static class ProcessRunner
{
    public static readonly TimeSpan DefaultTimeout = TimeSpan.FromSeconds(30);

    public static async Task<ExecResult> RunAsync(string fileName, IEnumerable<string> args, TimeSpan timeout)
    {
        var psi = new ProcessStartInfo(fileName)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        foreach (string a in args)
            psi.ArgumentList.Add(a);
        using var p = Process.Start(psi) ?? throw new InvalidOperationException($"Could not start {fileName}.");
        p.StandardInput.Close();
        Task<string> stdout = p.StandardOutput.ReadToEndAsync();
        Task<string> stderr = p.StandardError.ReadToEndAsync();
        using var cts = new CancellationTokenSource(timeout);
        try
        {
            await p.WaitForExitAsync(cts.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            try { p.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
            p.WaitForExit(2000);
            throw new TimeoutException($"'{fileName} {string.Join(' ', psi.ArgumentList)}' did not finish within {timeout.TotalSeconds:0.#} s.");
        }
        // Output pipes close once every process holding them has exited; bound the wait anyway
        // in case the command left a background child behind.
        var both = Task.WhenAll(stdout, stderr);
        if (await Task.WhenAny(both, Task.Delay(5000)).ConfigureAwait(false) != both)
            return new ExecResult(p.ExitCode, stdout.IsCompletedSuccessfully ? stdout.Result : "", stderr.IsCompletedSuccessfully ? stderr.Result : "(output still open: a child process kept it)");
        return new ExecResult(p.ExitCode, await stdout.ConfigureAwait(false), await stderr.ConfigureAwait(false));
    }

    public static ExecResult Run(string fileName, IEnumerable<string> args, TimeSpan timeout)
        => RunAsync(fileName, args, timeout).GetAwaiter().GetResult();

    public static ExecResult RunChecked(string fileName, params string[] args)
    {
        var r = Run(fileName, args, DefaultTimeout);
        if (r.ExitCode != 0)
            throw new InvalidOperationException($"'{fileName} {string.Join(' ', args)}' failed: {r}");
        return r;
    }
}
