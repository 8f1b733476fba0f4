// SPDX-License-Identifier: MIT
using System.Net;
using System.Net.Sockets;

namespace Ovpn.Cli.Tests;

/// <summary>
/// Feeds generated profiles to the real openvpn 2.6 client. With --dev null it needs no TUN; the
/// remote is a UDP socket of ours on 127.0.0.1, so the client parses the whole profile, loads the
/// CA/cert/key and the control-channel key, and sends its first hard-reset packet to us. Nothing
/// leaves loopback. A missing openvpn binary fails the test (it is part of the environment).
/// </summary>
public sealed class OpenVpnProfileTests : IDisposable
{
    private readonly CliHarness _cli = new();

    public void Dispose() => _cli.Dispose();

    [Theory]
    [InlineData("tls-crypt", "Outgoing Control Channel Encryption: Cipher 'AES-256-CTR'")]
    [InlineData("tls-auth", "Outgoing Control Channel Authentication: Using 160 bit message hash 'SHA1'")]
    [InlineData("none", "UDPv4 link remote")]
    public async Task OpenVpnAcceptsProfileAndStartsTls(string tlsMode, string expectedLog)
    {
        using var udp = new UdpClient(new IPEndPoint(IPAddress.Loopback, 0));
        var port = ((IPEndPoint)udp.Client.LocalEndPoint!).Port;

        _cli.RunOk("init", "--hostname", "127.0.0.1");
        _cli.RunOk("user", "add", "alice");
        _cli.RunOk("sacli", "-k", "vpn.server.daemon.protocols", "-v", "udp", "ConfigPut");
        _cli.RunOk("sacli", "-k", "vpn.server.daemon.udp.port", "-v", port.ToString(System.Globalization.CultureInfo.InvariantCulture), "ConfigPut");
        _cli.RunOk("sacli", "-k", "vpn.server.tls_cc_security", "-v", tlsMode, "ConfigPut");
        var profile = Path.Combine(_cli.DataDir, "alice.ovpn");
        _cli.RunOk("profile", "alice", "--out", profile);

        byte[] first;
        string text;
        using (var client = new OpenVpnProcess("--config", profile, "--verb", "4", "--dev", "null", "--ifconfig-noexec", "--route-noexec"))
        {
            using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(15));
            try
            {
                first = (await udp.ReceiveAsync(cts.Token)).Buffer;
            }
            catch (OperationCanceledException)
            {
                Assert.Fail("openvpn sent no packet within 15 s:\n" + client.Log);
                throw;
            }
            // The datagram can arrive before openvpn's log lines reach us through its stdout pipe:
            // wait (bounded) for the line that is logged before the first packet is sent.
            await client.WaitForLogAsync("link remote:", TimeSpan.FromSeconds(10));
            text = client.Log;
        }

        // Opcode in the top 5 bits: P_CONTROL_HARD_RESET_CLIENT_V2 (7) or _V3 (10).
        Assert.True((first[0] >> 3) is 7 or 10, $"unexpected first opcode {first[0] >> 3}\n{text}");
        Assert.Contains($"UDPv4 link remote: [AF_INET]127.0.0.1:{port}", text);
        Assert.Contains(expectedLog, text);
        Assert.DoesNotContain("Options error", text);
        Assert.DoesNotContain("Cannot load", text);
        Assert.DoesNotContain("OpenSSL: error", text);
        Assert.DoesNotContain("WARNING", text);
    }
}
