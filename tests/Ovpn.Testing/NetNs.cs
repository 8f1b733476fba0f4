// SPDX-License-Identifier: MIT
using System.Diagnostics;
using System.Globalization;
using System.Net.Sockets;
using System.Runtime.ExceptionServices;
using System.Text.RegularExpressions;
using Ovpn.Platform.Linux;

namespace Ovpn.Testing;

/// <summary>
/// A fresh network namespace named <c>ovpnt-&lt;pid&gt;-&lt;counter&gt;</c> (loopback up), created
/// with iproute2. Dispose kills every process started in it (and any other process still inside)
/// and deletes it.
///
/// Two ways to act inside it:
/// <list type="bullet">
/// <item>child processes: <see cref="Exec(string, string[])"/> and <see cref="Start"/> run
/// <c>ip netns exec NAME ...</c>;</item>
/// <item>in-process: <see cref="RunInNamespace{T}"/> runs code on a dedicated thread that
/// setns()-es into the namespace. Sockets and TUN devices created there stay in the namespace
/// for their whole life and can then be used from any thread.</item>
/// </list>
/// Thread-safety: all members may be called from any thread.
/// </summary>
public sealed partial class NetNs : IDisposable, IAsyncDisposable
{
    public const string NamePrefix = "ovpnt-";
    private const string NetnsDir = "/var/run/netns";
    private static int s_counter;

    private readonly List<NetNsProcess> _processes = [];
    private readonly Lock _lock = new();
    private int _disposed;

    /// <summary>Creates a new namespace with loopback up. Requires root (fails loudly otherwise).</summary>
    public NetNs()
    {
        Requirements.RequireOrFail(Requirement.Root);
        int n = Interlocked.Increment(ref s_counter);
        Name = $"{NamePrefix}{Environment.ProcessId}-{n}";
        var r = ProcessRunner.Run("ip", ["netns", "add", Name], ProcessRunner.DefaultTimeout);
        if (r.ExitCode != 0 && r.Stderr.Contains("exists", StringComparison.OrdinalIgnoreCase))
        {
            // Our pid + our counter value is unique among live processes, so an existing namespace
            // with this name was left by a crashed earlier process that had the same pid.
            DeleteNamespace(Name);
            r = ProcessRunner.Run("ip", ["netns", "add", Name], ProcessRunner.DefaultTimeout);
        }
        if (r.ExitCode != 0)
            throw new InvalidOperationException($"ip netns add {Name} failed: {r}");
        try
        {
            ExecChecked("ip", "link", "set", "lo", "up");
        }
        catch
        {
            DeleteNamespace(Name);
            throw;
        }
    }

    public string Name { get; }

    /// <summary>The bind-mount that pins the namespace (usable with setns).</summary>
    public string NsPath => Path.Combine(NetnsDir, Name);

    /// <summary>Name of the veth end in this namespace when created by <see cref="CreateVethPair"/>.</summary>
    public string? VethName { get; private set; }

    public override string ToString() => Name;

    // ---- commands ----

    /// <summary>Runs a command inside the namespace with a 30 s timeout.</summary>
    public ExecResult Exec(string cmd, params string[] args) => Exec(ProcessRunner.DefaultTimeout, cmd, args);

    /// <summary>Runs a command inside the namespace; <see cref="TimeoutException"/> (after killing it) on timeout.</summary>
    public ExecResult Exec(TimeSpan timeout, string cmd, params string[] args)
        => ExecAsync(timeout, cmd, args).GetAwaiter().GetResult();

    public Task<ExecResult> ExecAsync(TimeSpan timeout, string cmd, params string[] args)
    {
        ThrowIfDisposed();
        return ProcessRunner.RunAsync("ip", ["netns", "exec", Name, cmd, .. args], timeout);
    }

    /// <summary>Like Exec but throws with stdout/stderr when the exit code is not 0.</summary>
    public ExecResult ExecChecked(string cmd, params string[] args)
    {
        var r = Exec(cmd, args);
        if (r.ExitCode != 0)
            throw new InvalidOperationException($"[{Name}] '{cmd} {string.Join(' ', args)}' failed: {r}");
        return r;
    }

    /// <summary>
    /// Starts a long-running process inside the namespace in its own process group. It is killed
    /// when the handle or this namespace is disposed.
    /// </summary>
    public NetNsProcess Start(string cmd, params string[] args) => StartIn(null, cmd, args);

    /// <summary><see cref="Start"/> with a working directory (null: inherit ours).</summary>
    public NetNsProcess StartIn(string? workingDirectory, string cmd, params string[] args)
    {
        ThrowIfDisposed();
        // setsid makes the child a session and process-group leader (it does not fork, because a
        // child of ours is not a group leader), so the pid we get is also the group id.
        var psi = new ProcessStartInfo("setsid");
        foreach (string a in (string[])["ip", "netns", "exec", Name, cmd, .. args])
            psi.ArgumentList.Add(a);
        if (workingDirectory is not null)
            psi.WorkingDirectory = workingDirectory;
        var p = new NetNsProcess($"[{Name}] {cmd} {string.Join(' ', args)}", psi);
        lock (_lock)
            _processes.Add(p);
        return p;
    }

    // ---- in-process ----

    /// <summary>
    /// Runs <paramref name="func"/> on a new thread that has entered this namespace; the thread
    /// ends afterwards, so no pooled thread is ever left in a foreign namespace.
    /// </summary>
    public T RunInNamespace<T>(Func<T> func)
    {
        ArgumentNullException.ThrowIfNull(func);
        ThrowIfDisposed();
        T result = default!;
        ExceptionDispatchInfo? error = null;
        var thread = new Thread(() =>
        {
            try
            {
                LinuxProcess.EnterNetworkNamespace(NsPath);
                result = func();
            }
            catch (Exception e)
            {
                error = ExceptionDispatchInfo.Capture(e);
            }
        })
        { IsBackground = true, Name = $"netns {Name}" };
        thread.Start();
        thread.Join();
        error?.Throw();
        return result;
    }

    public void RunInNamespace(Action action) => RunInNamespace(() => { action(); return 0; });

    /// <summary>Creates a socket that lives in this namespace (see <see cref="RunInNamespace{T}"/>).</summary>
    public Socket CreateSocket(AddressFamily family, SocketType type, ProtocolType protocol)
        => RunInNamespace(() => new Socket(family, type, protocol));

    // ---- topology ----

    /// <summary>
    /// Two fresh namespaces joined by a veth pair (names <c>veth-a</c> / <c>veth-b</c>), each end
    /// with the given "addr/prefix" (IPv4 or IPv6, IPv6 without DAD) and up.
    /// </summary>
    public static (NetNs a, NetNs b) CreateVethPair(string aAddrCidr, string bAddrCidr)
    {
        ArgumentException.ThrowIfNullOrEmpty(aAddrCidr);
        ArgumentException.ThrowIfNullOrEmpty(bAddrCidr);
        var a = new NetNs();
        NetNs? b = null;
        try
        {
            b = new NetNs();
            a.ExecChecked("ip", "link", "add", "veth-a", "type", "veth", "peer", "name", "veth-b", "netns", b.Name);
            a.VethName = "veth-a";
            b.VethName = "veth-b";
            foreach (var (ns, cidr) in new[] { (a, aAddrCidr), (b, bAddrCidr) })
            {
                if (cidr.Contains(':'))
                    ns.ExecChecked("ip", "-6", "addr", "add", cidr, "dev", ns.VethName!, "nodad");
                else
                    ns.ExecChecked("ip", "addr", "add", cidr, "dev", ns.VethName!);
                ns.ExecChecked("ip", "link", "set", ns.VethName!, "up");
            }
            return (a, b);
        }
        catch
        {
            b?.Dispose();
            a.Dispose();
            throw;
        }
    }

    // ---- cleanup ----

    [GeneratedRegex(@"^ovpnt-(\d+)-\d+$")]
    private static partial Regex OwnNameRegex();

    /// <summary>
    /// Deletes <c>ovpnt-&lt;pid&gt;-*</c> namespaces whose creating process no longer exists
    /// (crashed earlier runs), killing anything still running inside them. Namespaces of live
    /// processes are left alone: other test runs may be using them in parallel.
    /// Returns the names removed.
    /// </summary>
    public static IReadOnlyList<string> CleanupStale()
    {
        var removed = new List<string>();
        foreach (string name in ListNamespaces())
        {
            var m = OwnNameRegex().Match(name);
            if (!m.Success || !int.TryParse(m.Groups[1].Value, NumberStyles.None, CultureInfo.InvariantCulture, out int pid))
                continue;
            if (Directory.Exists($"/proc/{pid}"))
                continue;
            DeleteNamespace(name);
            removed.Add(name);
        }
        return removed;
    }

    /// <summary>Names from <c>ip netns list</c>.</summary>
    public static IReadOnlyList<string> ListNamespaces()
    {
        var r = ProcessRunner.RunChecked("ip", "netns", "list");
        var names = new List<string>();
        foreach (string line in r.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
            names.Add(line.Split(' ')[0]); // "name (id: 3)"
        return names;
    }

    public static bool Exists(string name) => ListNamespaces().Contains(name);

    /// <summary>Kills all processes inside <paramref name="name"/>, then deletes it. Best effort, bounded.</summary>
    private static void DeleteNamespace(string name)
    {
        for (int attempt = 0; attempt < 3; attempt++)
        {
            var pids = ProcessRunner.Run("ip", ["netns", "pids", name], ProcessRunner.DefaultTimeout);
            bool any = false;
            foreach (string s in pids.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
            {
                if (int.TryParse(s, NumberStyles.None, CultureInfo.InvariantCulture, out int pid) && pid != Environment.ProcessId)
                {
                    any = true;
                    try { LinuxProcess.Signal(pid, LinuxProcess.SIGKILL); } catch (Ovpn.Platform.PlatformException) { }
                }
            }
            if (!any)
                break;
            Thread.Sleep(50);
        }
        var r = ProcessRunner.Run("ip", ["netns", "del", name], ProcessRunner.DefaultTimeout);
        if (r.ExitCode != 0 && !r.Stderr.Contains("No such file", StringComparison.OrdinalIgnoreCase))
            throw new InvalidOperationException($"ip netns del {name} failed: {r}");
    }

    private void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
            return;
        NetNsProcess[] procs;
        lock (_lock)
        {
            procs = _processes.ToArray();
            _processes.Clear();
        }
        // Best effort and never throwing: Dispose usually runs while a test failure is already
        // propagating, and an exception here would replace (hide) that root cause.
        foreach (var p in procs)
        {
            try { p.Dispose(); }
            catch (Exception e) { Console.Error.WriteLine($"[{Name}] killing {p.Description} failed: {e.Message}"); }
        }
        try { DeleteNamespace(Name); }
        catch (Exception e) { Console.Error.WriteLine($"[{Name}] deleting the namespace failed (NetNs.CleanupStale will retry later): {e.Message}"); }
    }

    public ValueTask DisposeAsync()
    {
        Dispose();
        return ValueTask.CompletedTask;
    }
}
