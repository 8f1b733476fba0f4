// SPDX-License-Identifier: MIT
using System.Text.RegularExpressions;
using Ovpn.Testing;

namespace Ovpn.Interop.Tests;

/// <summary>Stock clients with settings that differ from our profile's: old compression lines, TLS 1.2.</summary>
public sealed class ClientVariantTests
{
    [RequiresTheory(Requirement.Root, Requirement.Tun, Requirement.OpenVpn)]
    [InlineData("comp-lzo")]
    [InlineData("comp-lzo no")]
    [InlineData("compress")]
    [InlineData("compress lz4-v2")]
    public async Task ClientWithCompressionInItsProfileWorksWithCompressionOff(string directive)
    {
        await using var s = ServerUnderTest.Create();
        await s.StartAsync();
        await using var client = OpenVpnProcess.Start(s.ClientNs, s.ClientConfig("alice", "udp", null, directive));
        await client.WaitInitializedAsync(TimeSpan.FromSeconds(45));
        await s.Process!.WaitForLineAsync(new Regex("client profile has compression; compression is off"), TimeSpan.FromSeconds(5));
        Assert.Equal(0.0, (await TrafficCheck.PingAsync(s.ClientNs, ServerUnderTest.TunnelServerAddress, count: 3)).Loss);
        var t = await TrafficCheck.TransferAsync(s.ClientNs, s.ServerNs, ServerUnderTest.TunnelServerAddress, 8L << 20, TimeSpan.FromSeconds(60));
        Assert.Equal(8L << 20, t.Bytes);
        var back = await TrafficCheck.TransferAsync(s.ServerNs, s.ClientNs, ServerUnderTest.ClientVpnAddress(client), 4L << 20, TimeSpan.FromSeconds(60), seed: 3);
        Assert.Equal(4L << 20, back.Bytes);
    }

    [RequiresFact(Requirement.Root, Requirement.Tun, Requirement.OpenVpn)]
    public async Task Tls12ClientConnects()
    {
        await using var s = ServerUnderTest.Create();
        await s.StartAsync();
        await using var client = OpenVpnProcess.Start(s.ClientNs, s.ClientConfig("alice", "tcp", null, "tls-version-max 1.2"));
        await client.WaitInitializedAsync(TimeSpan.FromSeconds(45));
        Assert.Contains(client.Log, l => l.Contains("Control Channel: TLSv1.2", StringComparison.Ordinal));
        Assert.Contains(s.Process!.Lines, l => l.Contains("key-id 0: Tls12", StringComparison.Ordinal));
        Assert.Equal(0.0, (await TrafficCheck.PingAsync(s.ClientNs, ServerUnderTest.TunnelServerAddress, count: 3)).Loss);
    }
}

/// <summary>The 2.3-era CBC data channel, served by the non-offload daemons when the admin allows it.</summary>
public sealed class LegacyCbcTests
{
    private const string WithCbc = "AES-256-GCM:AES-128-GCM:CHACHA20-POLY1305:AES-256-CBC:AES-128-CBC";

    [RequiresTheory(Requirement.Root, Requirement.Tun, Requirement.OpenVpn)]
    [InlineData("udp", "AES-256-CBC", "SHA1", false)]
    [InlineData("tcp", "AES-128-CBC", "SHA256", false)]
    [InlineData("udp", "AES-256-CBC", "SHA1", true)]
    public async Task CbcClientIsServedWhenTheAdminAllowsIt(string proto, string cipher, string auth, bool compat23)
    {
        await using var s = ServerUnderTest.Create(("vpn.server.data_ciphers", WithCbc));
        await s.StartAsync();
        // compat-mode 2.3.0 turns off cipher negotiation: the server must take the OCC "cipher".
        string[] extra = compat23
            ? ["cipher " + cipher, "auth " + auth, "compat-mode 2.3.0"]
            : ["auth " + auth];
        await using var client = OpenVpnProcess.Start(s.ClientNs, s.ClientConfig("alice", proto, cipher, extra));
        await client.WaitInitializedAsync(TimeSpan.FromSeconds(45));
        await s.Process!.WaitForLineAsync(new System.Text.RegularExpressions.Regex($"legacy CBC data channel {cipher} with HMAC-{auth}"), TimeSpan.FromSeconds(5));
        Assert.Equal(0.0, (await TrafficCheck.PingAsync(s.ClientNs, ServerUnderTest.TunnelServerAddress, count: 3)).Loss);
        var t = await TrafficCheck.TransferAsync(s.ClientNs, s.ServerNs, ServerUnderTest.TunnelServerAddress, 8L << 20, TimeSpan.FromSeconds(60));
        Assert.Equal(8L << 20, t.Bytes);
        var back = await TrafficCheck.TransferAsync(s.ServerNs, s.ClientNs, ServerUnderTest.ClientVpnAddress(client), 4L << 20, TimeSpan.FromSeconds(60), seed: 5);
        Assert.Equal(4L << 20, back.Bytes);
    }
}
