// SPDX-License-Identifier: MIT
using System.Net;
using System.Net.Sockets;
using System.Text.RegularExpressions;
using Ovpn.Platform.Linux;
using Ovpn.Testing;

namespace Ovpn.Platform.Tests;

public sealed class NetNsTests
{
    [RequiresFact(Requirement.Root)]
    public void Create_HasUniquePrefixedName_LoopbackUp_AndDisposeDeletesIt()
    {
        Requirements.RequireOrFail(Requirement.Root);
        string name;
        using (var ns = new NetNs())
        using (var ns2 = new NetNs())
        {
            name = ns.Name;
            Assert.Matches(@"^ovpnt-\d+-\d+$", ns.Name);
            Assert.StartsWith($"ovpnt-{Environment.ProcessId}-", ns.Name);
            Assert.NotEqual(ns.Name, ns2.Name);
            Assert.True(NetNs.Exists(ns.Name));
            Assert.Contains("UP", ns.ExecChecked("ip", "link", "show", "lo").Stdout);
            var (code, stdout, _) = ns.Exec("sh", "-c", "echo hello; exit 3");
            Assert.Equal(3, code);
            Assert.Equal("hello", stdout.Trim());
        }
        Assert.False(NetNs.Exists(name));
    }

    [RequiresFact(Requirement.Root)]
    public void Exec_Timeout_KillsAndThrows()
    {
        Requirements.RequireOrFail(Requirement.Root);
        using var ns = new NetNs();
        var sw = System.Diagnostics.Stopwatch.StartNew();
        Assert.Throws<TimeoutException>(() => ns.Exec(TimeSpan.FromMilliseconds(500), "sleep", "30"));
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(10));
    }

    [RequiresFact(Requirement.Root)]
    public async Task VethPair_PingAcross_BothFamilies()
    {
        Requirements.RequireOrFail(Requirement.Root);
        var (a, b) = NetNs.CreateVethPair("10.98.0.1/24", "10.98.0.2/24");
        using (a)
        using (b)
        {
            Assert.Equal("veth-a", a.VethName);
            var r = await TrafficCheck.PingAsync(a, IPAddress.Parse("10.98.0.2"), count: 3);
            Assert.Equal(3, r.Transmitted);
            Assert.Equal(0.0, r.Loss);
            // An address nobody has: all lost (proves the loss figure is measured, not assumed).
            var lost = await TrafficCheck.PingAsync(a, IPAddress.Parse("10.98.0.77"), count: 2, timeout: TimeSpan.FromSeconds(2));
            Assert.Equal(0, lost.Received);
            Assert.Equal(1.0, lost.Loss);
        }
        var (c, d) = NetNs.CreateVethPair("fd00:98::1/64", "fd00:98::2/64");
        using (c)
        using (d)
        {
            var r6 = await TrafficCheck.PingAsync(d, IPAddress.Parse("fd00:98::1"), count: 2);
            Assert.Equal(0.0, r6.Loss);
        }
    }

    [RequiresFact(Requirement.Root)]
    public async Task Transfer_FewMegabytes_IntegrityVerified()
    {
        Requirements.RequireOrFail(Requirement.Root);
        var (a, b) = NetNs.CreateVethPair("10.97.0.1/24", "10.97.0.2/24");
        using (a)
        using (b)
        {
            const long size = 4 * 1024 * 1024 + 123; // not a multiple of the chunk size
            var r = await TrafficCheck.TransferAsync(a, b, IPAddress.Parse("10.97.0.2"), size, TimeSpan.FromSeconds(60));
            Assert.Equal(size, r.Bytes);
            Assert.Equal(64, r.Sha256Hex.Length);
            Assert.True(r.BitsPerSecond > 0);
            // Deterministic data: a second run with the same seed gives the same hash, another seed does not.
            var again = await TrafficCheck.TransferAsync(b, a, IPAddress.Parse("10.97.0.1"), size);
            Assert.Equal(r.Sha256Hex, again.Sha256Hex);
            var other = await TrafficCheck.TransferAsync(a, b, IPAddress.Parse("10.97.0.2"), size, seed: 42);
            Assert.NotEqual(r.Sha256Hex, other.Sha256Hex);
        }
    }

    [RequiresFact(Requirement.Root)]
    public void RunInNamespace_SocketsAreIsolated()
    {
        Requirements.RequireOrFail(Requirement.Root);
        using var ns = new NetNs();
        // The namespace has only loopback: an address of the host is not assignable inside it.
        var hostNetnsInode = new FileInfo("/proc/self/ns/net").LinkTarget;
        string? inside = ns.RunInNamespace(() => new FileInfo($"/proc/thread-self/ns/net").LinkTarget);
        Assert.NotNull(inside);
        Assert.NotEqual(hostNetnsInode, inside);
        // Our own thread is untouched afterwards.
        Assert.Equal(hostNetnsInode, new FileInfo("/proc/thread-self/ns/net").LinkTarget);

        using var s = ns.CreateSocket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        s.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        var ex = Assert.Throws<SocketException>(() => ns.RunInNamespace(() =>
        {
            using var t = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
            t.Bind(new IPEndPoint(IPAddress.Parse("10.96.55.1"), 0));
            return 0;
        }));
        Assert.Equal(SocketError.AddressNotAvailable, ex.SocketErrorCode);
    }

    [RequiresFact(Requirement.Root)]
    public async Task Start_CapturesLines_AndDisposeKillsWholeProcessGroup()
    {
        Requirements.RequireOrFail(Requirement.Root);
        int childPid;
        using (var ns = new NetNs())
        {
            var p = ns.Start("sh", "-c", "sleep 300 & echo child=$!; echo ready; echo oops >&2; wait");
            string line = await p.WaitForLineAsync(new Regex(@"^child=\d+$"), TimeSpan.FromSeconds(10));
            childPid = int.Parse(line.AsSpan(6), System.Globalization.CultureInfo.InvariantCulture);
            await p.WaitForLineAsync(new Regex("^ready$"), TimeSpan.FromSeconds(10));
            await p.WaitForLineAsync(new Regex("^stderr: oops$"), TimeSpan.FromSeconds(10));
            Assert.True(Directory.Exists($"/proc/{childPid}"));
            await Assert.ThrowsAsync<TimeoutException>(() => p.WaitForLineAsync(new Regex("never"), TimeSpan.FromMilliseconds(200)));
            // Disposing the handle alone (namespace still there) must kill the grandchild too:
            // that only works if the process really leads its own process group.
            p.Dispose();
            await WaitUntilAsync(() => !IsAlive(childPid), TimeSpan.FromSeconds(5));
            Assert.False(IsAlive(childPid), $"sleep child {childPid} survived the handle's Dispose");

            // And a process left running is killed by the namespace's Dispose.
            var q = ns.Start("sh", "-c", "sleep 300 & echo child=$!; wait");
            line = await q.WaitForLineAsync(new Regex(@"^child=\d+$"), TimeSpan.FromSeconds(10));
            childPid = int.Parse(line.AsSpan(6), System.Globalization.CultureInfo.InvariantCulture);
        }
        await WaitUntilAsync(() => !IsAlive(childPid), TimeSpan.FromSeconds(5));
        Assert.False(IsAlive(childPid), $"sleep child {childPid} survived the namespace's Dispose");
    }

    [RequiresFact(Requirement.Root, Requirement.Tun, Requirement.OpenVpn)]
    public void Requirements_ReportNothingMissing_WhenAllPresent()
    {
        Assert.Null(Requirements.Missing(Requirement.Root, Requirement.Tun, Requirement.OpenVpn));
        Assert.Null(Requirements.SkipReason(Requirement.Root));
        Requirements.RequireOrFail(Requirement.Root, Requirement.Tun, Requirement.OpenVpn);
        Assert.NotNull(Requirements.OpenVpnVersion);
    }

    [RequiresFact(Requirement.Root)]
    public async Task WaitForLine_FailsWithTail_WhenProcessExits()
    {
        Requirements.RequireOrFail(Requirement.Root);
        using var ns = new NetNs();
        using var p = ns.Start("sh", "-c", "echo first; echo second; exit 4");
        var ex = await Assert.ThrowsAsync<InvalidOperationException>(() => p.WaitForLineAsync(new Regex("never"), TimeSpan.FromSeconds(10)));
        Assert.Contains("second", ex.Message);
        Assert.True(await p.WaitForExitAsync(TimeSpan.FromSeconds(5)));
        Assert.Equal(4, p.ExitCode);
    }

    [RequiresFact(Requirement.Root)]
    public void CleanupStale_RemovesNamespacesOfDeadProcesses_Only()
    {
        Requirements.RequireOrFail(Requirement.Root);
        int deadPid = FindDeadPid();
        string stale = $"ovpnt-{deadPid}-1";
        var add = ProcessRunnerAdd(stale);
        Assert.True(add.ExitCode == 0, add.ToString());
        try
        {
            using var live = new NetNs(); // ours: must survive
            var removed = NetNs.CleanupStale();
            Assert.Contains(stale, removed);
            Assert.False(NetNs.Exists(stale));
            Assert.True(NetNs.Exists(live.Name));
            Assert.DoesNotContain(live.Name, removed);
        }
        finally
        {
            if (NetNs.Exists(stale))
                System.Diagnostics.Process.Start("ip", ["netns", "del", stale])!.WaitForExit(10_000);
        }
    }

    [RequiresFact(Requirement.Root, Requirement.Iperf3)]
    public async Task Iperf3_OverVeth_ReportsThroughput()
    {
        Requirements.RequireOrFail(Requirement.Root, Requirement.Iperf3);
        var (a, b) = NetNs.CreateVethPair("10.95.0.1/24", "10.95.0.2/24");
        using (a)
        using (b)
        {
            var r = await Iperf3.RunAsync(b, a, IPAddress.Parse("10.95.0.2"), ["-t", "1"]);
            Assert.True(r.SentBitsPerSecond > 1e6, $"sent {r.SentBitsPerSecond}");
            Assert.True(r.ReceivedBitsPerSecond > 1e6, $"received {r.ReceivedBitsPerSecond}");
        }
    }

    [Fact]
    public void Iperf3_Parse_ReportsErrors()
    {
        var ex = Assert.Throws<InvalidOperationException>(() => Iperf3.Parse("""{"start":{},"end":{},"error":"unable to connect to server"}"""));
        Assert.Contains("unable to connect", ex.Message);
        var r = Iperf3.Parse("""{"end":{"sum_sent":{"bits_per_second":2.5e9},"sum_received":{"bits_per_second":2.4e9}}}""");
        Assert.Equal(2.5e9, r.SentBitsPerSecond);
        Assert.Equal(2.4e9, r.ReceivedBitsPerSecond);
    }

    private static ExecResult ProcessRunnerAdd(string name)
    {
        var psi = new System.Diagnostics.ProcessStartInfo("ip", ["netns", "add", name]) { RedirectStandardError = true, RedirectStandardOutput = true };
        using var p = System.Diagnostics.Process.Start(psi)!;
        string err = p.StandardError.ReadToEnd();
        p.WaitForExit(10_000);
        return new ExecResult(p.ExitCode, p.StandardOutput.ReadToEnd(), err);
    }

    private static int FindDeadPid()
    {
        int max = int.Parse(File.ReadAllText("/proc/sys/kernel/pid_max").Trim(), System.Globalization.CultureInfo.InvariantCulture);
        for (int pid = max - 1; pid > max - 1000; pid--)
            if (!Directory.Exists($"/proc/{pid}"))
                return pid;
        throw new InvalidOperationException("no free pid found");
    }

    private static bool IsAlive(int pid)
    {
        // A zombie still has /proc/pid; treat state Z as dead.
        try
        {
            string stat = File.ReadAllText($"/proc/{pid}/stat");
            return !stat.Substring(stat.LastIndexOf(')') + 2).StartsWith('Z');
        }
        catch (IOException)
        {
            return false;
        }
    }

    private static async Task WaitUntilAsync(Func<bool> condition, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (!condition() && DateTime.UtcNow < deadline)
            await Task.Delay(50);
    }
}
