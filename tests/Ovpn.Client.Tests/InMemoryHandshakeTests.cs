// SPDX-License-Identifier: MIT
using System.Buffers.Binary;
using System.Net;
using System.Threading.Channels;
using Ovpn.ControlPlane.Client;
using Ovpn.ControlPlane.Config;
using Ovpn.ControlPlane.Pki;
using Ovpn.ControlPlane.Sessions;
using Ovpn.ControlPlane.Users;
using Ovpn.DataPlane;
using Ovpn.DataPlane.Engine;
using Ovpn.Protocol.Data;
using Ovpn.Protocol.Keys;

namespace Ovpn.Client.Tests;

/// <summary>
/// Our client-side state machine against our server-side one, in one process over an in-memory
/// wire (optionally lossy: drops, duplicates and reordering from a seeded RNG): the handshake
/// completes, both sides derive the same data keys, and a renegotiation moves both to key-id 1.
/// </summary>
public sealed class InMemoryHandshakeTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "ovpnas-inmem-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        try
        {
            Directory.Delete(_dir, recursive: true);
        }
        catch (IOException)
        {
        }
    }

    [Theory]
    [InlineData("tls-crypt", 0.0, 1)]
    [InlineData("tls-auth", 0.0, 2)]
    [InlineData("none", 0.0, 3)]
    [InlineData("tls-crypt", 0.15, 4)]
    public async Task ClientAndServerCompleteTheHandshakeAndRenegotiate(string wrap, double loss, int seed)
    {
        var db = OvpnDatabase.Create(_dir);
        var ca = CertificateAuthority.Initialize(db, "127.0.0.1");
        var config = new ConfigStore(db);
        config.Put("vpn.server.tls_cc_security", wrap);
        var users = new UserStore(db);
        users.Add("alice");
        var profile = ClientProfile.Parse(ClientProfileBuilder.Build(config, ca, users, "alice"), _dir);
        Assert.Empty(profile.Errors);
        var (_, control, _) = Ovpn.Server.ServerFactory.Load(_dir);

        using var mgr = new SessionManager(control);
        using var serverPlane = new ManagedDataPlane(null, mgr);
        mgr.Paths = new DaemonSelector([new DataPath("memory", serverPlane, control.Pool, isOffload: false, "mem")], []);

        var wire = new MemoryWire(loss, seed);
        var clientPath = new RecordingClientPath();
        var conn = new ClientConnection(profile, profile.Remotes[0], wire.ClientEnd, clientPath);
        wire.DeliverToServer = p => serverPlane.OnLinkPacket(wire.ServerEnd, p, new byte[4096]);
        wire.DeliverToClient = conn.PostPacket;
        using var ticker = new Timer(_ => conn.PostTick(), null, 100, 100);
        conn.Start();

        // Handshake: the client gets its push and keys; the server authenticated "alice".
        var first = await clientPath.Established.Task.WaitAsync(TimeSpan.FromSeconds(60));
        var session = Assert.Single(mgr.GetSessions());
        Assert.True(session.Authenticated);
        Assert.Equal("alice", session.CommonName);
        Assert.Equal(DataCipher.Aes256Gcm, first.Key.Cipher);
        Assert.Equal(session.VpnAddress, first.Config.Address.ToString());
        Assert.Equal(session.PeerId, first.Config.PeerId);

        // Same keys on both sides: a packet sealed with the client's key opens in the server engine.
        SendIp(first.Key, first.Config, pid: 1, serverPlane, wire);
        Assert.Equal(1, serverPlane.GetPeer(first.Config.PeerId!.Value)!.VpnRxPackets);

        // Renegotiation started by the client: both sides end up on key-id 1.
        conn.PostRenegotiate("test");
        var second = await clientPath.Secondary.Task.WaitAsync(TimeSpan.FromSeconds(60));
        Assert.Equal(1, second.KeyId);
        Assert.True(SpinWait.SpinUntil(() => serverPlane.GetKeyId(first.Config.PeerId.Value, KeySlot.Primary) == 1, TimeSpan.FromSeconds(30)));
        SendIp(second, first.Config, pid: 1, serverPlane, wire);
        Assert.Equal(2, serverPlane.GetPeer(first.Config.PeerId.Value)!.VpnRxPackets);
        if (loss > 0)
        {
            Assert.True(wire.Dropped > 0, "the lossy wire dropped nothing");
        }

        conn.PostStop(ClientExitKind.Stopped, "test done");
    }

    private static void SendIp(KeyConfig key, PushedConfig cfg, uint pid, ManagedDataPlane server, MemoryWire wire)
    {
        var ip = new byte[40];
        ip[0] = 0x45;
        BinaryPrimitives.WriteUInt16BigEndian(ip.AsSpan(2), 40);
        cfg.Address.GetAddressBytes().CopyTo(ip, 12);
        IPAddress.Parse("172.27.224.1").GetAddressBytes().CopyTo(ip, 16);
        using var codec = new AeadCodec(key.Cipher, key.Encrypt.CipherKey, key.Encrypt.NonceTail);
        var packet = new byte[128];
        int n = codec.SealDataV2(packet, key.KeyId, cfg.PeerId!.Value, pid, ip);
        server.OnLinkPacket(wire.ServerEnd, packet.AsSpan(0, n), new byte[4096]);
    }

    /// <summary>Keeps copies of the client's keys (the engine would wipe the originals).</summary>
    private sealed class RecordingClientPath : IClientDataPath
    {
        public TaskCompletionSource<(PushedConfig Config, KeyConfig Key)> Established { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public TaskCompletionSource<KeyConfig> Secondary { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public void Establish(PushedConfig config, KeyConfig firstKey) => Established.TrySetResult((config, Copy(firstKey)));

        public void InstallSecondary(KeyConfig key) => Secondary.TrySetResult(Copy(key));

        public void SwapKeys()
        {
        }

        private static KeyConfig Copy(KeyConfig k) => k with
        {
            Encrypt = new KeyDirection((byte[])k.Encrypt.CipherKey.Clone(), (byte[])k.Encrypt.NonceTail.Clone()),
            Decrypt = new KeyDirection((byte[])k.Decrypt.CipherKey.Clone(), (byte[])k.Decrypt.NonceTail.Clone()),
        };
    }
}
