// SPDX-License-Identifier: MIT
using System.Net;
using Ovpn.ControlPlane.Config;

namespace Ovpn.ControlPlane.Tests.Config;

public sealed class ConfigStoreTests : IDisposable
{
    private readonly TempDataDir _dir = new();
    private readonly ConfigStore _store;

    public ConfigStoreTests() => _store = new ConfigStore(_dir.CreateDatabase());

    public void Dispose() => _dir.Dispose();

    // key, a valid value (stored first), a refused value
    public static TheoryData<string, string, string> BadValues => new()
    {
        { "vpn.server.daemon.ovpndco", "true", "yes please" },
        { "vpn.server.daemon.ovpndco", "true", "" },
        { "vpn.server.daemon.enable", "false", "2" },
        { "vpn.server.daemon.protocols", "udp", "sctp" },
        { "vpn.server.daemon.udp.port", "1195", "0" },
        { "vpn.server.daemon.udp.port", "1195", "65536" },
        { "vpn.server.daemon.udp.port", "1195", "12ab" },
        { "vpn.server.daemon.tcp.port", "8443", "-1" },
        { "vpn.server.daemon.udp.n_daemons", "4", "0" },
        { "vpn.server.daemon.udp.n_daemons", "4", "65" },
        { "vpn.server.daemon.tcp.n_daemons", "3", "100" },
        { "vpn.daemon.0.client.network", "10.8.0.0", "10.8.0" },
        { "vpn.daemon.0.client.network", "10.8.0.0", "300.1.1.1" },
        { "vpn.daemon.0.client.network", "10.8.0.0", "010.8.0.0" },
        { "vpn.daemon.0.client.network", "10.8.0.0", "fd00::1" },
        { "vpn.daemon.0.client.netmask_bits", "24", "15" },
        { "vpn.daemon.0.client.netmask_bits", "24", "31" },
        { "vpn.server.data_ciphers", "AES-128-GCM", "BF-CBC" },
        { "vpn.server.data_ciphers", "AES-128-GCM", "AES-256-CBC" },
        { "vpn.server.data_ciphers", "AES-128-GCM", "AES-128-GCM:AES-128-GCM" },
        { "vpn.server.data_ciphers", "AES-128-GCM", "" },
        { "vpn.server.tls_cc_security", "tls-auth", "tls-crypt-v2" },
        { "vpn.general.osi_layer", "2", "4" },
        { "vpn.server.routing.private_network.0", "192.168.1.0/24", "192.168.1.5/24" },
        { "vpn.server.routing.private_network.0", "192.168.1.0/24", "192.168.1.0/33" },
        { "vpn.server.routing.private_network.3", "10.0.0.0/8", "10.0.0.0" },
        { "vpn.client.routing.reroute_gw", "true", "maybe" },
        { "vpn.server.dhcp_option.dns.0", "1.1.1.1", "dns.example.com" },
        { "vpn.server.dhcp_option.dns.1", "8.8.8.8", "8.8.8" },
        { "cs.https.port", "9443", "70000" },
        { "vpn.server.tun_mtu", "1500", "575" },
        { "vpn.server.tun_mtu", "1500", "65537" },
        { "host.name", "vpn.example.com", "bad host name" },
        { "host.name", "vpn.example.com", "-leading.example.com" },
        { "vpn.server.reneg_sec", "7200", "-5" },
        { "vpn.server.ping", "5", "0" },
        { "vpn.server.ping_restart", "120", "abc" },
    };

    [Theory]
    [MemberData(nameof(BadValues))]
    public void BadValueIsRefusedAndOldValueStays(string key, string good, string bad)
    {
        _store.Put(key, good);
        var before = _store.Get(key);
        Assert.NotNull(before);
        var ex = Assert.Throws<ConfigValidationException>(() => _store.Put(key, bad));
        Assert.Contains(key, ex.Message);
        Assert.Contains($"'{bad}'", ex.Message);
        Assert.Contains("allowed", ex.Message);
        Assert.Equal(key, ex.Key);
        Assert.Equal(before, _store.Get(key));
        Assert.Equal(before, _store.GetStored(key));
    }

    [Fact]
    public void EveryPlainKeyHasABadValueCase()
    {
        var covered = BadValues.Select(r => (string)r[0]).ToHashSet();
        foreach (var def in ConfigKeys.PlainKeys)
        {
            if (def.Name is ConfigKeys.ServerConfigText or ConfigKeys.ClientConfigText)
                continue; // free text accepts anything
            Assert.Contains(def.Name, covered);
        }
    }

    [Theory]
    [InlineData("vpn.server.daemon.ovpndco", "false")]
    [InlineData("vpn.server.daemon.enable", "true")]
    [InlineData("vpn.server.daemon.protocols", "both")]
    [InlineData("vpn.server.daemon.udp.port", "1194")]
    [InlineData("vpn.server.daemon.tcp.port", "443")]
    [InlineData("vpn.daemon.0.client.network", "172.27.224.0")]
    [InlineData("vpn.daemon.0.client.netmask_bits", "20")]
    [InlineData("vpn.server.data_ciphers", "AES-256-GCM:AES-128-GCM:CHACHA20-POLY1305")]
    [InlineData("vpn.server.tls_cc_security", "tls-crypt")]
    [InlineData("vpn.general.osi_layer", "3")]
    [InlineData("vpn.client.routing.reroute_gw", "false")]
    [InlineData("cs.https.port", "943")]
    [InlineData("vpn.server.tun_mtu", "1420")]
    [InlineData("vpn.server.reneg_sec", "3600")]
    [InlineData("vpn.server.ping", "10")]
    [InlineData("vpn.server.ping_restart", "60")]
    [InlineData("vpn.server.config_text", "")]
    public void Defaults(string key, string expected)
    {
        Assert.Null(_store.GetStored(key));
        Assert.Equal(expected, _store.Get(key));
    }

    [Fact]
    public void DaemonCountDefaultsToCores()
    {
        var expected = Math.Clamp(Environment.ProcessorCount, 1, 64);
        Assert.Equal(expected, _store.GetInt(ConfigKeys.UdpDaemons));
        Assert.Equal(expected, _store.GetInt(ConfigKeys.TcpDaemons));
    }

    [Fact]
    public void ValuesAreCanonicalized()
    {
        _store.Put(ConfigKeys.Dco, "TRUE");
        _store.Put(ConfigKeys.DataCiphers, "aes-128-gcm:chacha20-poly1305:AES-256-CBC");
        _store.Put(ConfigKeys.Protocols, " UDP ");
        Assert.Equal("true", _store.GetStored(ConfigKeys.Dco));
        Assert.True(_store.GetBool(ConfigKeys.Dco));
        Assert.Equal("AES-128-GCM:CHACHA20-POLY1305:AES-256-CBC", _store.GetStored(ConfigKeys.DataCiphers));
        Assert.Equal("udp", _store.GetStored(ConfigKeys.Protocols));
    }

    [Fact]
    public void UnknownKeysAndBadIndexesAreRefused()
    {
        Assert.Throws<ConfigValidationException>(() => _store.Put("vpn.server.no_such_key", "1"));
        Assert.Throws<ConfigValidationException>(() => _store.Put("vpn.server.dhcp_option.dns", "1.1.1.1"));
        Assert.Throws<ConfigValidationException>(() => _store.Put("vpn.server.dhcp_option.dns.x", "1.1.1.1"));
        Assert.Empty(_store.Query("vpn.server.no_such", includeDefaults: false));
    }

    [Fact]
    public void DeleteRestoresDefault()
    {
        _store.Put(ConfigKeys.UdpPort, "1300");
        Assert.Equal(1300, _store.GetInt(ConfigKeys.UdpPort));
        Assert.True(_store.Delete(ConfigKeys.UdpPort));
        Assert.False(_store.Delete(ConfigKeys.UdpPort));
        Assert.Equal(1194, _store.GetInt(ConfigKeys.UdpPort));
    }

    [Fact]
    public void QueryByPrefix()
    {
        _store.Put(ConfigKeys.UdpPort, "1300");
        _store.Put("vpn.server.dhcp_option.dns.0", "9.9.9.9");
        var daemon = _store.Query("vpn.server.daemon.");
        Assert.Equal("1300", daemon[ConfigKeys.UdpPort]);
        Assert.Equal("443", daemon[ConfigKeys.TcpPort]);          // default included
        Assert.All(daemon.Keys, k => Assert.StartsWith("vpn.server.daemon.", k));
        Assert.DoesNotContain("vpn.server.dhcp_option.dns.0", daemon.Keys);
        Assert.Equal(7, daemon.Count);

        var storedOnly = _store.Query("vpn.server.", includeDefaults: false);
        Assert.Equal(2, storedOnly.Count);

        // '_' must be literal, not a LIKE wildcard: "vpn.server.dhcp_" must not match "vpn.server.dhcpX".
        Assert.Single(_store.Query("vpn.server.dhcp_option", includeDefaults: false));
        Assert.Empty(_store.Query("vpn.server.dhcpXoption", includeDefaults: false));

        var all = _store.Query();
        Assert.True(all.Count >= ConfigKeys.PlainKeys.Count());
    }

    [Fact]
    public void ServerSettingsFromDefaults()
    {
        var s = _store.GetServerSettings();
        Assert.True(s.UdpEnabled);
        Assert.True(s.TcpEnabled);
        Assert.Equal(1194, s.UdpPort);
        Assert.Equal(443, s.TcpPort);
        Assert.Equal(IPAddress.Parse("172.27.224.0"), s.Pool.Network);
        Assert.Equal(20, s.Pool.PrefixLength);
        Assert.Equal("255.255.240.0", s.Pool.Netmask);
        Assert.Equal(["AES-256-GCM", "AES-128-GCM", "CHACHA20-POLY1305"], s.DataCiphers);
        Assert.Equal(TlsControlSecurity.TlsCrypt, s.TlsMode);
        Assert.Equal(1420, s.TunMtu);
        Assert.Empty(s.DnsServers);
        Assert.Empty(s.PrivateRoutes);
        Assert.False(s.RerouteGateway);
        Assert.Equal(10, s.PingSeconds);
        Assert.Equal(60, s.PingRestartSeconds);
        Assert.Equal(3600, s.RenegSeconds);
        Assert.False(s.Dco);
        Assert.Equal(3, s.OsiLayer);
    }

    [Fact]
    public void ServerSettingsFromCustomValues()
    {
        _store.Put(ConfigKeys.Protocols, "tcp");
        _store.Put(ConfigKeys.TcpPort, "8443");
        _store.Put(ConfigKeys.PoolNetwork, "10.9.8.77");   // host bits are cleared in the snapshot
        _store.Put(ConfigKeys.PoolNetmaskBits, "24");
        _store.Put("vpn.server.dhcp_option.dns.10", "10.0.0.10");
        _store.Put("vpn.server.dhcp_option.dns.2", "10.0.0.2");
        _store.Put("vpn.server.routing.private_network.0", "192.168.0.0/16");
        _store.Put(ConfigKeys.TlsCcSecurity, "tls-auth");
        _store.Put(ConfigKeys.RerouteGw, "true");
        _store.Put(ConfigKeys.HostName, "VPN.Example.COM");
        var s = _store.GetServerSettings();
        Assert.False(s.UdpEnabled);
        Assert.True(s.TcpEnabled);
        Assert.Equal(8443, s.TcpPort);
        Assert.Equal(new Ipv4Network(IPAddress.Parse("10.9.8.0"), 24), s.Pool);
        Assert.Equal([IPAddress.Parse("10.0.0.2"), IPAddress.Parse("10.0.0.10")], s.DnsServers); // numeric order
        Assert.Equal("192.168.0.0/16", Assert.Single(s.PrivateRoutes).ToString());
        Assert.Equal("255.255.0.0", s.PrivateRoutes[0].Netmask);
        Assert.Equal(TlsControlSecurity.TlsAuth, s.TlsMode);
        Assert.True(s.RerouteGateway);
        Assert.Equal("vpn.example.com", s.Hostname);
    }

    [Fact]
    public void SchemaVersionIsRecordedAndReopenKeepsData()
    {
        Assert.Equal(OvpnDatabase.LatestSchemaVersion, _store.Database.GetSchemaVersion());
        _store.Put(ConfigKeys.TunMtu, "1400");
        var reopened = ConfigStore.Open(_dir.Path);
        Assert.Equal(1400, reopened.GetInt(ConfigKeys.TunMtu));
        Assert.Equal(OvpnDatabase.LatestSchemaVersion, reopened.Database.GetSchemaVersion());
    }

    [Fact]
    public void DataDirectoryAndDatabaseArePrivate()
    {
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute, File.GetUnixFileMode(_dir.Path));
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(_store.Database.DatabasePath));
    }

    [Fact]
    public void OpeningAnUninitializedDirectoryFails()
    {
        using var other = new TempDataDir();
        Assert.Throws<AdminException>(() => ConfigStore.Open(other.Path));
        Assert.False(Directory.Exists(other.Path));
    }
}

public sealed class ConfigStoreConcurrencyTests : IDisposable
{
    private readonly TempDataDir _dir = new();

    public void Dispose() => _dir.Dispose();

    /// <summary>The CLI and the running server use the database at once (WAL + busy timeout).</summary>
    [Fact]
    public async Task ParallelWritersAndReadersDoNotFail()
    {
        _dir.CreateDatabase();
        var tasks = Enumerable.Range(0, 4).Select(t => Task.Run(() =>
        {
            var store = ConfigStore.Open(_dir.Path);   // separate instances, like separate processes
            for (int i = 0; i < 50; i++)
            {
                store.Put($"vpn.server.dhcp_option.dns.{t}", $"10.0.{t}.{i}");
                Assert.Equal(1194, store.GetServerSettings().UdpPort);
            }
        })).ToArray();
        await Task.WhenAll(tasks).WaitAsync(TimeSpan.FromSeconds(60));
        var dns = ConfigStore.Open(_dir.Path).GetServerSettings().DnsServers.Select(a => a.ToString());
        Assert.Equal(["10.0.0.49", "10.0.1.49", "10.0.2.49", "10.0.3.49"], dns);
    }
}
