// SPDX-License-Identifier: MIT
using Ovpn.Platform.Linux;

namespace Ovpn.Platform.Tests;

public sealed class LinuxNetTests
{
    [Fact]
    public void HasCapNetAdmin_MatchesRootForThisTestRun()
    {
        // Root without a capability-dropping container has CAP_NET_ADMIN; a normal user does not.
        if (Environment.IsPrivilegedProcess)
            Assert.True(LinuxNet.HasCapNetAdmin());
        else
            Assert.False(LinuxNet.HasCapNetAdmin());
    }

    [Fact]
    public void TunAvailable_IsFalseWithoutTheDeviceNode()
    {
        if (!File.Exists("/dev/net/tun"))
            Assert.False(LinuxNet.TunAvailable());
        else if (Environment.IsPrivilegedProcess)
            Assert.True(LinuxNet.TunAvailable());
    }

    [Fact]
    public void ModuleProbes_RejectUnknownAndMaliciousNames()
    {
        Assert.Null(LinuxNet.KernelModuleVersion("no_such_module_ovpn_test"));
        Assert.False(LinuxNet.IsModuleLoaded("no_such_module_ovpn_test"));
        Assert.Null(LinuxNet.KernelModuleVersion("../../etc/passwd"));
        Assert.False(LinuxNet.IsModuleLoaded("../kernel"));
        Assert.False(LinuxNet.IsModuleLoaded(""));
    }

    [Fact]
    public void IsModuleLoaded_AgreesWithProcModules()
    {
        if (!File.Exists("/proc/modules"))
            return; // monolithic kernel: nothing to compare with
        string? first = File.ReadLines("/proc/modules").Select(l => l.Split(' ')[0]).FirstOrDefault();
        if (first is null)
            return;
        Assert.True(LinuxNet.IsModuleLoaded(first));
        // Names are reported with '_' by the kernel; '-' must be treated the same.
        Assert.True(LinuxNet.IsModuleLoaded(first.Replace('_', '-')));
        string versionPath = $"/sys/module/{first}/version";
        Assert.Equal(File.Exists(versionPath) ? File.ReadAllText(versionPath).Trim() : null, LinuxNet.KernelModuleVersion(first));
    }
}
