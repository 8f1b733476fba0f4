// SPDX-License-Identifier: MIT
using System.Security.Cryptography.X509Certificates;
using System.Text.Json;
using Ovpn.ControlPlane.Pki;
using Ovpn.ControlPlane.Users;

namespace Ovpn.Cli.Tests;

public sealed class CliTests : IDisposable
{
    private readonly CliHarness _cli = new();

    public void Dispose() => _cli.Dispose();

    private Dictionary<string, string> ConfigQuery(string? prefix = null)
    {
        var r = prefix is null ? _cli.RunOk("sacli", "ConfigQuery") : _cli.RunOk("sacli", "ConfigQuery", "--pfilt", prefix);
        return JsonSerializer.Deserialize<Dictionary<string, string>>(r.Stdout)!;
    }

    [Fact]
    public void InitCreatesPrivateDataDirAndRefusesSecondInit()
    {
        var r = _cli.RunOk("init", "--hostname", "vpn.example.org");
        Assert.Contains("initialized", r.Stdout);
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute, File.GetUnixFileMode(_cli.DataDir));
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(Path.Combine(_cli.DataDir, "ovpnas.db")));
        Assert.Equal("vpn.example.org", ConfigQuery("host.")["host.name"]);
        var caBefore = CertificateAuthority.Open(_cli.DataDir).CaCertificatePem;

        var again = _cli.Run("init");
        Assert.Equal(1, again.ExitCode);
        Assert.Contains("--force", again.Stderr);
        Assert.Equal(caBefore, CertificateAuthority.Open(_cli.DataDir).CaCertificatePem);

        _cli.RunOk("init", "--force", "--hostname", "10.1.2.3");
        Assert.NotEqual(caBefore, CertificateAuthority.Open(_cli.DataDir).CaCertificatePem);
        Assert.Equal("10.1.2.3", ConfigQuery("host.")["host.name"]);
    }

    [Fact]
    public void InitWithBadHostnameFailsWithoutCreatingAnything()
    {
        var r = _cli.Run("init", "--hostname", "bad name!");
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("host.name", r.Stderr);
        Assert.False(Directory.Exists(_cli.DataDir));
    }

    [Fact]
    public void CommandsOnUninitializedDirFailWithUsageCode()
    {
        var r = _cli.Run("user", "list");
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("not initialized", r.Stderr);
    }

    [Fact]
    public void UserLifecycle()
    {
        _cli.RunOk("init", "--hostname", "vpn.example.org");
        Assert.Contains("added user alice", _cli.RunOk("user", "add", "alice", "--password", "s3cret").Stdout);
        _cli.RunOk("user", "add", "bob");
        Assert.Equal(1, _cli.Run("user", "add", "alice").ExitCode);
        Assert.Equal(1, _cli.Run("user", "add", "bad name").ExitCode);
        Assert.True(UserStore.Open(_cli.DataDir).VerifyPassword("alice", "s3cret"));

        var list = _cli.RunOk("user", "list").Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(2, list.Length);
        Assert.StartsWith("alice\tpassword=yes\tcerts=1\trevoked=0", list[0]);
        Assert.StartsWith("bob\tpassword=no\tcerts=1\trevoked=0", list[1]);

        var ca = CertificateAuthority.Open(_cli.DataDir);
        using var aliceCert = X509Certificate2.CreateFromPem(ca.GetActiveClientCertificate("alice")!.CertificatePem);
        Assert.True(ca.ValidateClientCertificate(aliceCert, out _, out _));
        Assert.Contains("revoked 1", _cli.RunOk("user", "revoke", "alice").Stdout);
        Assert.False(ca.ValidateClientCertificate(aliceCert, out _, out var reason));
        Assert.Contains("revoked", reason);
        Assert.Contains("alice\tpassword=yes\tcerts=0\trevoked=1", _cli.RunOk("user", "list").Stdout);

        Assert.Equal(1, _cli.Run("user", "revoke", "nobody").ExitCode);
        using var bobCert = X509Certificate2.CreateFromPem(ca.GetActiveClientCertificate("bob")!.CertificatePem);
        _cli.RunOk("user", "del", "bob");
        Assert.DoesNotContain("bob", _cli.RunOk("user", "list").Stdout);
        Assert.False(ca.ValidateClientCertificate(bobCert, out _, out _));
        Assert.Equal(1, _cli.Run("user", "del", "bob").ExitCode);
    }

    [Fact]
    public void ProfileContents()
    {
        _cli.RunOk("init", "--hostname", "vpn.example.org");
        _cli.RunOk("user", "add", "alice");
        var file = Path.Combine(_cli.DataDir, "alice.ovpn");
        _cli.RunOk("profile", "alice", "--out", file);
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(file));
        var text = File.ReadAllText(file);
        var lines = text.Split('\n');
        foreach (var expected in new[] { "client", "dev tun", "remote vpn.example.org 1194 udp", "remote vpn.example.org 443 tcp", "nobind",
                     "remote-cert-tls server", "data-ciphers AES-256-GCM:AES-128-GCM:CHACHA20-POLY1305", "verb 3",
                     "<ca>", "</ca>", "<cert>", "</cert>", "<key>", "</key>", "<tls-crypt>", "</tls-crypt>" })
            Assert.Contains(expected, lines);
        Assert.DoesNotContain("<tls-auth>", lines);
        Assert.DoesNotContain("key-direction 1", lines);

        // The inline cert is alice's active certificate and the key matches it.
        var ca = CertificateAuthority.Open(_cli.DataDir);
        var active = ca.GetActiveClientCertificate("alice")!;
        Assert.Contains(active.CertificatePem.Trim(), text);
        Assert.Contains(ca.StaticKeyText.Trim(), text);
        var certPem = Between(text, "<cert>", "</cert>");
        var keyPem = Between(text, "<key>", "</key>");
        using var withKey = X509Certificate2.CreateFromPem(certPem, keyPem);
        Assert.True(withKey.HasPrivateKey);

        // stdout variant gives the same profile (same cert: no re-issue while one is active).
        Assert.Equal(text, _cli.RunOk("profile", "alice").Stdout);
        Assert.Equal(text, _cli.RunOk("sacli", "-u", "alice", "GetUserlogin").Stdout);
        Assert.Equal(1, _cli.Run("profile", "nobody").ExitCode);
    }

    [Fact]
    public void ProfileFollowsConfig()
    {
        _cli.RunOk("init", "--hostname", "vpn.example.org");
        _cli.RunOk("user", "add", "alice");
        _cli.RunOk("sacli", "-k", "vpn.server.tls_cc_security", "-v", "tls-auth", "ConfigPut");
        _cli.RunOk("sacli", "-k", "vpn.server.daemon.protocols", "-v", "tcp", "ConfigPut");
        _cli.RunOk("sacli", "-k", "vpn.server.daemon.tcp.port", "-v", "8443", "ConfigPut");
        _cli.RunOk("sacli", "-k", "vpn.server.data_ciphers", "-v", "CHACHA20-POLY1305:AES-256-CBC", "ConfigPut");
        _cli.RunOk("sacli", "-k", "vpn.client.config_text", "-v", "mute 5\nsndbuf 0", "ConfigPut");
        var lines = _cli.RunOk("profile", "alice").Stdout.Split('\n');
        Assert.Contains("remote vpn.example.org 8443 tcp", lines);
        Assert.DoesNotContain(lines, l => l.StartsWith("remote ", StringComparison.Ordinal) && l.EndsWith(" udp", StringComparison.Ordinal));
        Assert.Contains("key-direction 1", lines);
        Assert.Contains("<tls-auth>", lines);
        Assert.DoesNotContain("<tls-crypt>", lines);
        Assert.Contains("data-ciphers CHACHA20-POLY1305", lines);
        Assert.Contains("mute 5", lines);
        Assert.Contains("sndbuf 0", lines);

        // After a revoke, a new profile carries a new certificate.
        var before = CertificateAuthority.Open(_cli.DataDir).GetActiveClientCertificate("alice")!.Serial;
        _cli.RunOk("user", "revoke", "alice");
        _cli.RunOk("profile", "alice");
        var after = CertificateAuthority.Open(_cli.DataDir).GetActiveClientCertificate("alice")!.Serial;
        Assert.NotEqual(before, after);
    }

    [Theory]
    [InlineData("sacli", "ConfigPut", "-k", "vpn.server.daemon.ovpndco", "-v", "true")]
    [InlineData("sacli", "-k", "vpn.server.daemon.ovpndco", "ConfigPut", "-v", "true")]
    [InlineData("sacli", "-k", "vpn.server.daemon.ovpndco", "-v", "true", "ConfigPut")]
    [InlineData("sacli", "--key", "vpn.server.daemon.ovpndco", "--value", "TRUE", "configput")]
    public void SacliVerbAnywhere(params string[] args)
    {
        _cli.RunOk("init", "--hostname", "vpn.example.org");
        Assert.Equal("false", ConfigQuery()["vpn.server.daemon.ovpndco"]);
        _cli.RunOk(args);
        Assert.Equal("true", ConfigQuery()["vpn.server.daemon.ovpndco"]);
    }

    [Fact]
    public void SacliConfigValidationAndDelete()
    {
        _cli.RunOk("init", "--hostname", "vpn.example.org");
        _cli.RunOk("sacli", "-k", "vpn.server.daemon.udp.port", "-v", "1300", "ConfigPut");
        var bad = _cli.Run("sacli", "-k", "vpn.server.daemon.udp.port", "-v", "99999", "ConfigPut");
        Assert.Equal(1, bad.ExitCode);
        Assert.Contains("vpn.server.daemon.udp.port", bad.Stderr);
        Assert.Contains("99999", bad.Stderr);
        Assert.Equal("", bad.Stdout);
        Assert.Equal("1300", ConfigQuery()["vpn.server.daemon.udp.port"]);

        var unknown = _cli.Run("sacli", "-k", "vpn.no.such.key", "-v", "1", "ConfigPut");
        Assert.Equal(1, unknown.ExitCode);

        var q = ConfigQuery("vpn.server.daemon.udp");
        Assert.Equal(["vpn.server.daemon.udp.n_daemons", "vpn.server.daemon.udp.port"], q.Keys.Order());

        _cli.RunOk("sacli", "-k", "vpn.server.daemon.udp.port", "ConfigDel");
        Assert.Equal("1194", ConfigQuery()["vpn.server.daemon.udp.port"]);

        Assert.Equal(1, _cli.Run("sacli", "ConfigPut", "-k", "vpn.server.daemon.udp.port").ExitCode); // no value
        Assert.Equal(1, _cli.Run("sacli", "NoSuchVerb").ExitCode);
        Assert.Equal(1, _cli.Run("sacli").ExitCode);
        Assert.Equal(1, _cli.Run("sacli", "ConfigQuery", "--bogus-option").ExitCode);
    }

    [Fact]
    public void SacliUserPropsAndPassword()
    {
        _cli.RunOk("init", "--hostname", "vpn.example.org");
        _cli.RunOk("sacli", "-u", "carol", "-k", "type", "-v", "user_connect", "UserPropPut");
        _cli.RunOk("sacli", "-u", "carol", "-k", "prop_autologin", "-v", "true", "UserPropPut");
        var json = JsonSerializer.Deserialize<Dictionary<string, Dictionary<string, string>>>(_cli.RunOk("sacli", "-u", "carol", "UserPropGet").Stdout)!;
        Assert.Equal("user_connect", json["carol"]["type"]);
        Assert.Equal("true", json["carol"]["prop_autologin"]);
        _cli.RunOk("sacli", "-u", "carol", "-k", "type", "UserPropDel");
        json = JsonSerializer.Deserialize<Dictionary<string, Dictionary<string, string>>>(_cli.RunOk("sacli", "UserPropGet").Stdout)!;
        Assert.False(json["carol"].ContainsKey("type"));
        Assert.Equal(1, _cli.Run("sacli", "-u", "nobody", "UserPropGet").ExitCode);

        _cli.RunOk("sacli", "-u", "carol", "--new_pass", "pa55word", "SetLocalPassword");
        var users = UserStore.Open(_cli.DataDir);
        Assert.True(users.VerifyPassword("carol", "pa55word"));
        Assert.False(users.VerifyPassword("carol", "wrong"));
        Assert.Equal(1, _cli.Run("sacli", "-u", "carol", "SetLocalPassword").ExitCode);
    }

    [Theory]
    [InlineData("serve")]
    [InlineData("doctor")]
    [InlineData("connect", "some.ovpn")]
    [InlineData("sacli", "start")]
    [InlineData("sacli", "stop")]
    [InlineData("sacli", "Status")]
    [InlineData("sacli", "VPNStatus")]
    public void ServerCommandsAreRegistered(params string[] args)
    {
        // Running them needs a server (and root); here only their presence on the command line.
        _cli.RunOk("init", "--hostname", "vpn.example.org");
        var r = _cli.Run([.. args, "--help"]);
        Assert.Equal(0, r.ExitCode);
        Assert.Contains("--data-dir", r.Stdout);
    }

    [Fact]
    public void UsageErrorsExitWithOne()
    {
        Assert.Equal(1, _cli.Run("no-such-command").ExitCode);
        Assert.Equal(1, _cli.Run("user", "add").ExitCode);
        Assert.Equal(0, _cli.Run("--help").ExitCode);
    }

    [Fact]
    public void ConnectDcoOptionIsListedAndValidated()
    {
        var help = _cli.Run("connect", "--help");
        Assert.Equal(0, help.ExitCode);
        Assert.Contains("--dco", help.Stdout);
        Assert.Contains("userspace", help.Stdout);
        // An unknown mode is a usage error before anything is started.
        Assert.Equal(1, _cli.Run("connect", "some.ovpn", "--dco", "turbo").ExitCode);
    }

    [Fact]
    public void MainReturnsExitCodes()
    {
        var dir = Path.Combine(Path.GetTempPath(), "ovpnas-main-" + Guid.NewGuid().ToString("N"));
        try
        {
            Assert.Equal(1, Program.Main(["user", "list", "--data-dir", dir]));
            Assert.Equal(0, Program.Main(["init", "--data-dir", dir, "--hostname", "vpn.example.org"]));
            Assert.Equal(0, Program.Main(["user", "list", "--data-dir", dir]));
            Assert.Equal(1, Program.Main(["profile", "--data-dir", dir]));
        }
        finally
        {
            if (Directory.Exists(dir))
                Directory.Delete(dir, recursive: true);
        }
    }

    private static string Between(string text, string open, string close)
    {
        int a = text.IndexOf(open, StringComparison.Ordinal) + open.Length;
        int b = text.IndexOf(close, a, StringComparison.Ordinal);
        return text[a..b];
    }
}

public sealed class CliValueEdgeCaseTests : IDisposable
{
    private readonly CliHarness _cli = new();

    public void Dispose() => _cli.Dispose();

    [Fact]
    public void NegativeNumberValueIsAValidationErrorNamingTheKey()
    {
        _cli.RunOk("init", "--hostname", "vpn.example.org");
        var r = _cli.Run("sacli", "-k", "vpn.server.reneg_sec", "-v", "-5", "ConfigPut");
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("vpn.server.reneg_sec", r.Stderr);
        Assert.Contains("'-5'", r.Stderr);
    }

    [Fact]
    public void ValuesStartingWithAtAreNotResponseFiles()
    {
        _cli.RunOk("init", "--hostname", "vpn.example.org");
        _cli.RunOk("sacli", "-u", "dan", "--new_pass", "@notafile", "SetLocalPassword");
        Assert.True(Ovpn.ControlPlane.Users.UserStore.Open(_cli.DataDir).VerifyPassword("dan", "@notafile"));
    }

    [Fact]
    public void ConfigTextWithSpacesAndNewlinesRoundTrips()
    {
        _cli.RunOk("init", "--hostname", "vpn.example.org");
        _cli.RunOk("sacli", "-k", "vpn.server.config_text", "-v", "push \"route 10.0.0.0 255.0.0.0\"\nmute 3", "ConfigPut");
        var json = System.Text.Json.JsonSerializer.Deserialize<Dictionary<string, string>>(
            _cli.RunOk("sacli", "ConfigQuery", "--pfilt", "vpn.server.config_text").Stdout)!;
        Assert.Equal("push \"route 10.0.0.0 255.0.0.0\"\nmute 3", json["vpn.server.config_text"]);
    }
}
