// SPDX-License-Identifier: MIT
using System.Diagnostics;
using System.Text.RegularExpressions;
using Ovpn.Platform.Linux;

namespace Ovpn.Testing;

/// <summary>
/// A long-running process started by <see cref="NetNs.Start"/>. It runs in its own session and
/// process group (via setsid), so signals and the kill on Dispose reach every child it forks.
/// stdout and stderr lines are captured in arrival order into <see cref="Lines"/>.
///
/// Thread-safety: all members may be used from any thread.
/// </summary>
public sealed class NetNsProcess : IDisposable, IAsyncDisposable
{
    private readonly Process _process;
    private readonly List<string> _lines = [];
    private readonly List<(Regex Regex, int From, TaskCompletionSource<string> Tcs)> _waiters = [];
    private readonly TaskCompletionSource _outputClosed = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly Lock _lock = new();
    private int _openStreams = 2;
    private int _disposed;

    internal NetNsProcess(string description, ProcessStartInfo psi)
    {
        Description = description;
        psi.RedirectStandardOutput = true;
        psi.RedirectStandardError = true;
        psi.RedirectStandardInput = true;
        psi.UseShellExecute = false;
        _process = new Process { StartInfo = psi, EnableRaisingEvents = true };
        _process.OutputDataReceived += (_, e) => OnLine(e.Data, stderr: false);
        _process.ErrorDataReceived += (_, e) => OnLine(e.Data, stderr: true);
        _process.Start();
        _process.StandardInput.Close();
        _process.BeginOutputReadLine();
        _process.BeginErrorReadLine();
        Pid = _process.Id;
    }

    /// <summary>Command line, for messages.</summary>
    public string Description { get; }

    /// <summary>Process id; also the process group id.</summary>
    public int Pid { get; }

    public bool HasExited => _process.HasExited;

    /// <summary>Exit code, or null while running.</summary>
    public int? ExitCode => _process.HasExited ? _process.ExitCode : null;

    /// <summary>Snapshot of all captured lines (stderr lines prefixed with "stderr: ").</summary>
    public IReadOnlyList<string> Lines
    {
        get
        {
            lock (_lock)
                return _lines.ToArray();
        }
    }

    public int LineCount
    {
        get
        {
            lock (_lock)
                return _lines.Count;
        }
    }

    /// <summary>The last <paramref name="count"/> lines joined by newlines, for failure messages.</summary>
    public string Tail(int count = 40)
    {
        lock (_lock)
            return string.Join('\n', _lines.Skip(Math.Max(0, _lines.Count - count)));
    }

    /// <summary>
    /// Waits until a line (at index &gt;= <paramref name="fromLine"/>) matches. Returns the line.
    /// Throws <see cref="TimeoutException"/> on timeout and <see cref="InvalidOperationException"/>
    /// if the process's output ends first; both messages include the last 40 lines.
    /// </summary>
    public async Task<string> WaitForLineAsync(Regex regex, TimeSpan timeout, int fromLine = 0)
    {
        ArgumentNullException.ThrowIfNull(regex);
        var tcs = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);
        lock (_lock)
        {
            for (int i = Math.Max(0, fromLine); i < _lines.Count; i++)
                if (regex.IsMatch(_lines[i]))
                    return _lines[i];
            if (_openStreams == 0)
                throw new InvalidOperationException($"{Description} ended (exit code {ExitCodeText()}) before printing a line matching /{regex}/. Last lines:\n{TailLocked(40)}");
            _waiters.Add((regex, fromLine, tcs));
        }
        var finished = await Task.WhenAny(tcs.Task, Task.Delay(timeout)).ConfigureAwait(false);
        if (finished == tcs.Task)
            return await tcs.Task.ConfigureAwait(false);
        lock (_lock)
            _waiters.RemoveAll(w => w.Tcs == tcs);
        if (tcs.Task.IsCompleted) // raced with the timeout
            return await tcs.Task.ConfigureAwait(false);
        throw new TimeoutException($"{Description}: no line matching /{regex}/ within {timeout.TotalSeconds:0.#} s. Last lines:\n{Tail(40)}");
    }

    /// <summary>Waits for the process to exit and its output to be drained. False on timeout.</summary>
    public async Task<bool> WaitForExitAsync(TimeSpan timeout)
    {
        using var cts = new CancellationTokenSource(timeout);
        try
        {
            await _process.WaitForExitAsync(cts.Token).ConfigureAwait(false);
            await _outputClosed.Task.WaitAsync(cts.Token).ConfigureAwait(false);
            return true;
        }
        catch (OperationCanceledException)
        {
            return _process.HasExited;
        }
    }

    /// <summary>Sends a signal to the whole process group. False if it is already gone.</summary>
    public bool Signal(int signal) => !_process.HasExited && LinuxProcess.Signal(Pid, signal, processGroup: true);

    /// <summary>SIGKILL to the whole process group (no wait).</summary>
    public void Kill()
    {
        try
        {
            LinuxProcess.Signal(Pid, LinuxProcess.SIGKILL, processGroup: true);
        }
        catch (Ovpn.Platform.PlatformException)
        {
            // Group already reaped: nothing left to kill.
        }
    }

    private void OnLine(string? line, bool stderr)
    {
        List<TaskCompletionSource<string>>? matched = null;
        List<TaskCompletionSource<string>>? orphaned = null;
        string? ended = null;
        lock (_lock)
        {
            if (line is null)
            {
                if (--_openStreams == 0)
                {
                    ended = $"{Description} ended (exit code {ExitCodeText()}) before printing a matching line. Last lines:\n{TailLocked(40)}";
                    orphaned = _waiters.Select(w => w.Tcs).ToList();
                    _waiters.Clear();
                }
            }
            else
            {
                string text = stderr ? "stderr: " + line : line;
                _lines.Add(text);
                for (int i = _waiters.Count - 1; i >= 0; i--)
                {
                    if (_lines.Count - 1 >= _waiters[i].From && _waiters[i].Regex.IsMatch(text))
                    {
                        (matched ??= []).Add(_waiters[i].Tcs);
                        _waiters.RemoveAt(i);
                    }
                }
            }
        }
        if (matched is not null)
            foreach (var t in matched)
                t.TrySetResult(line!);
        if (ended is not null)
        {
            foreach (var t in orphaned!)
                t.TrySetException(new InvalidOperationException(ended));
            _outputClosed.TrySetResult();
        }
    }

    private string ExitCodeText()
    {
        try
        {
            return _process.HasExited ? _process.ExitCode.ToString(System.Globalization.CultureInfo.InvariantCulture) : "still running";
        }
        catch (InvalidOperationException)
        {
            return "unknown";
        }
    }

    private string TailLocked(int count) => string.Join('\n', _lines.Skip(Math.Max(0, _lines.Count - count)));

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
            return;
        if (!_process.HasExited)
            Kill();
        _process.WaitForExit(5000);
        _process.Dispose();
    }

    public ValueTask DisposeAsync()
    {
        Dispose();
        return ValueTask.CompletedTask;
    }
}
