// SPDX-License-Identifier: MIT
using System.Text.RegularExpressions;
using Ovpn.Testing;

namespace Ovpn.Interop.Tests;

/// <summary>Clients the server must refuse, each with a log line that names the reason.</summary>
public sealed class RefusalTests
{
    [RequiresFact(Requirement.Root, Requirement.Tun, Requirement.OpenVpn)]
    public async Task CertificateFromAnotherCaIsRefused()
    {
        await using var s = ServerUnderTest.Create();
        // A second, unrelated installation issues "alice" a certificate of its own.
        await using var other = ServerUnderTest.Create();
        string foreign = other.ClientConfig("alice", "udp");
        string ours = s.ClientConfig("alice", "udp");
        string config = Replace(ours, "cert", Inline(foreign, "cert"));
        config = Replace(config, "key", Inline(foreign, "key"));
        await s.StartAsync();
        await using var client = OpenVpnProcess.Start(s.ClientNs, config);
        var line = await s.Process!.WaitForLineAsync(new Regex("refused: client certificate refused"), TimeSpan.FromSeconds(30));
        Assert.Contains("alice", line + s.Process.Tail(), StringComparison.Ordinal);
        Assert.DoesNotContain(s.Process.Lines, l => l.Contains("authenticated; peer-id", StringComparison.Ordinal));
    }

    [RequiresFact(Requirement.Root, Requirement.Tun, Requirement.OpenVpn)]
    public async Task RevokedClientIsRefused()
    {
        await using var s = ServerUnderTest.Create();
        string config = s.ClientConfig("alice", "udp");
        s.Cli("user", "revoke", "alice");
        await s.StartAsync();
        await using var client = OpenVpnProcess.Start(s.ClientNs, config);
        var line = await s.Process!.WaitForLineAsync(new Regex("refused: client certificate refused: .*revoked"), TimeSpan.FromSeconds(30));
        Assert.Contains("revoked", line, StringComparison.Ordinal);
        Assert.DoesNotContain(s.Process.Lines, l => l.Contains("authenticated; peer-id", StringComparison.Ordinal));
    }

    [RequiresFact(Requirement.Root, Requirement.Tun, Requirement.OpenVpn)]
    public async Task UserDeniedThroughTheDefaultRecordIsRefused()
    {
        await using var s = ServerUnderTest.Create();
        string config = s.ClientConfig("alice", "udp");
        s.Cli("sacli", "-u", "__DEFAULT__", "-k", "prop_deny", "-v", "true", "UserPropPut");
        await s.StartAsync();
        await using var client = OpenVpnProcess.Start(s.ClientNs, config);
        var line = await s.Process!.WaitForLineAsync(new Regex("refused: client certificate refused: user 'alice' is denied access"), TimeSpan.FromSeconds(30));
        Assert.Contains("prop_deny", line, StringComparison.Ordinal);
    }

    [RequiresFact(Requirement.Root, Requirement.Tun, Requirement.OpenVpn)]
    public async Task ClientOfferingOnlyCbcIsRefusedWithReason()
    {
        await using var s = ServerUnderTest.Create();
        await s.StartAsync();
        await using var client = OpenVpnProcess.Start(s.ClientNs, s.ClientConfig("alice", "udp", "AES-256-CBC"));
        var line = await s.Process!.WaitForLineAsync(new Regex("refused: Data channel cipher negotiation failed"), TimeSpan.FromSeconds(30));
        Assert.Contains("no shared cipher", line, StringComparison.Ordinal);
        await client.WaitForLineAsync(new Regex("AUTH_FAILED"), TimeSpan.FromSeconds(15));
        await s.Process.WaitForLineAsync(new Regex("alice/.*disconnected"), TimeSpan.FromSeconds(10));
    }

    private static string Inline(string config, string tag)
    {
        int a = config.IndexOf($"<{tag}>", StringComparison.Ordinal) + tag.Length + 2;
        int b = config.IndexOf($"</{tag}>", StringComparison.Ordinal);
        return config[a..b];
    }

    private static string Replace(string config, string tag, string content)
    {
        int a = config.IndexOf($"<{tag}>", StringComparison.Ordinal) + tag.Length + 2;
        int b = config.IndexOf($"</{tag}>", StringComparison.Ordinal);
        return config[..a] + content + config[b..];
    }
}
