// SPDX-License-Identifier: MIT
using System.Diagnostics;
using System.Net.Security;
using System.Security.Authentication;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Threading.Channels;
using Ovpn.ControlPlane.Sessions;
using Ovpn.ControlPlane.Tls;
using Ovpn.DataPlane;
using Ovpn.Protocol.Control;
using Ovpn.Protocol.Keys;
using Ovpn.Protocol.Options;
using Ovpn.Protocol.Reliability;
using Ovpn.Protocol.Wire;

namespace Ovpn.ControlPlane.Client;

/// <summary>How a connection attempt ended.</summary>
public enum ClientExitKind
{
    /// <summary>Reconnect (RESTART from the server, ping-restart, network error, handshake timeout).</summary>
    Restart,

    /// <summary>Stop for good: HALT, AUTH_FAILED, a fatal negotiation error.</summary>
    Fatal,

    /// <summary>The user asked to stop.</summary>
    Stopped,
}

public sealed record ClientExit(ClientExitKind Kind, string Reason)
{
    /// <summary>The server asked to try the next remote (RESTART with flag N).</summary>
    public bool AdvanceRemote { get; init; }
}

/// <summary>What the server pushed, after pull-filter.</summary>
public sealed record PushedConfig(
    IReadOnlyList<PushOption> Options, System.Net.IPAddress Address, int PrefixLength, System.Net.IPAddress? PeerAddress,
    uint? PeerId, DataCipher Cipher, int? Ping, int? PingRestart, int? TunMtu, bool CcExit, int ExplicitExitNotify,
    IReadOnlyList<(System.Net.IPAddress Net, int Prefix)> Routes, string Topology)
{
    /// <summary>ifconfig-ipv6 address and prefix, if pushed.</summary>
    public System.Net.IPAddress? Address6 { get; init; }

    public int Prefix6 { get; init; } = 64;

    /// <summary>route-ipv6 entries (and the ifconfig-ipv6 network).</summary>
    public IReadOnlyList<(System.Net.IPAddress Net, int Prefix)> Routes6 { get; init; } = [];

    /// <summary>redirect-gateway: all IPv4 traffic (def1 halves) into the tunnel.</summary>
    public bool RedirectGateway { get; init; }
}

/// <summary>The side of the client that owns the data path (TUN, data plane); called from the connection's loop.</summary>
internal interface IClientDataPath
{
    /// <summary>First key: create the TUN, the data-plane peer and its primary key.</summary>
    void Establish(PushedConfig config, KeyConfig firstKey);

    /// <summary>A renegotiated key, installed as secondary.</summary>
    void InstallSecondary(KeyConfig key);

    void SwapKeys();
}

/// <summary>
/// One connection attempt of the OpenVPN client: the tls session towards one server (control
/// wrapping, own and server sids) and its key states, each with a reliability layer and an SslStream
/// in the client role.
///
/// Threading: an actor like ServerSession. Every input (wire packet, TLS output, TLS plaintext,
/// tick, stop) is posted to a channel and handled by one loop; no state below needs a lock.
///
/// Key state 0:  own HARD_RESET_CLIENT_V2 queued -> server reset (learn its sid) -> TLS client
///   handshake (ClientHello piggy-backs the ACK of the server reset, as 2.6 UDP servers require)
///   -> own key-method-2 -> server key-method-2 -> PUSH_REQUEST (every 5 s) -> PUSH_REPLY
///   -> cipher accepted, data keys derived, data path established.
/// Key state n: server SOFT_RESET (or our reneg-sec) -> own SOFT_RESET -> TLS -> key-method-2 both ways
///   -> key installed as secondary -> swapped to primary once the server has acked all we sent.
/// </summary>
public sealed class ClientConnection
{
    private readonly ClientProfile _profile;
    private readonly RemoteEndpoint _remote;
    private readonly ILinkTransport _link;
    private readonly IClientDataPath _dataPath;
    private readonly ControlWrapper _wrap;
    private readonly Channel<Action> _inbox = Channel.CreateUnbounded<Action>(new UnboundedChannelOptions { SingleReader = true });
    private readonly KeyStateTable<KeyCtx> _keys = new(isServer: false);
    private readonly Stopwatch _clock = Stopwatch.StartNew();
    private readonly TaskCompletionSource<ClientExit> _done = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly X509Certificate2Collection _caCerts = new();
    private readonly X509Certificate2? _clientCert;
    private PushReplyParser? _push;
    private ulong _serverSid;
    private bool _haveServerSid;
    private long _lastPushRequestMs = long.MinValue;
    private long _firstServerPacketMs = -1;
    private bool _closed;
    private DataCipher? _cipher;
    private bool _ccExit;
    private string? _authToken;

    internal ClientConnection(ClientProfile profile, RemoteEndpoint remote, ILinkTransport link, IClientDataPath dataPath)
    {
        _profile = profile;
        _remote = remote;
        _link = link;
        _dataPath = dataPath;
        OwnSessionId = RandomSid();
        _wrap = profile.WrapMode switch
        {
            ControlWrapMode.TlsCrypt => ControlWrapper.CreateTlsCrypt(profile.WrapKey!, isServer: false),
            ControlWrapMode.TlsAuth => ControlWrapper.CreateTlsAuth(profile.WrapKey!, profile.KeyDirection, profile.TlsAuthDigest),
            _ => ControlWrapper.CreateNone(),
        };
        _caCerts.ImportFromPem(profile.CaPem);
        if (profile.CertPem is not null && profile.KeyPem is not null)
        {
            // PKCS#12 round trip: SslStream on Linux refuses some ephemeral keys made by CreateFromPem.
            using var withKey = X509Certificate2.CreateFromPem(profile.CertPem, profile.KeyPem);
            var pfx = withKey.Export(X509ContentType.Pkcs12);
            try
            {
                _clientCert = X509CertificateLoader.LoadPkcs12(pfx, null, X509KeyStorageFlags.Exportable);
            }
            finally
            {
                CryptographicOperations.ZeroMemory(pfx);
            }
        }
    }

    public ulong OwnSessionId { get; }

    public Task<ClientExit> Completion => _done.Task;

    public DataCipher? Cipher => _cipher;

    public int PrimaryKeyId => _keys.PrimaryKeyId;

    public bool Established { get; private set; }

    /// <summary>The auth-token the server pushed, if any (sent instead of the password on renegotiation).</summary>
    public string? AuthToken => _authToken;

    private long NowMs => _clock.ElapsedMilliseconds;

    private static ulong RandomSid()
    {
        Span<byte> b = stackalloc byte[8];
        do
        {
            RandomNumberGenerator.Fill(b);
        }
        while (BitConverter.ToUInt64(b) == 0);

        return BitConverter.ToUInt64(b);
    }

    public void Start()
    {
        _ = Task.Run(RunAsync);
        Post(() =>
        {
            CreateKeyState(0);
            Log.Info("client", $"connecting to {_remote} (session {OwnSessionId:x16})");
        });
    }

    internal void Post(Action a) => _inbox.Writer.TryWrite(a);

    public void PostPacket(byte[] wire) => Post(() => OnWire(wire));

    public void PostTick() => Post(OnTick);

    /// <summary>Starts a renegotiation (data packet-id close to wrapping), if none is running.</summary>
    public void PostRenegotiate(string why) => Post(() => StartRenegotiation(why));

    /// <summary>Ends the attempt from outside (network error, ping-restart, user stop).</summary>
    public void PostStop(ClientExitKind kind, string reason) => Post(() => Finish(kind, reason));

    /// <summary>Sends EXIT on the control channel if the server announced cc-exit; completes when handed to the link.</summary>
    public Task SendExitAsync(TimeSpan timeout)
    {
        var tcs = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        Post(() =>
        {
            if (_ccExit && _keys.Primary is { } k)
            {
                SendControlMessage(k, "EXIT");
                k.Out.WriteChain.ContinueWith(_ => Post(() => tcs.TrySetResult()), TaskScheduler.Default);
            }
            else
            {
                tcs.TrySetResult();
            }
        });
        return tcs.Task.WaitAsync(timeout).ContinueWith(_ => { }, TaskScheduler.Default);
    }

    public bool CcExit => _ccExit;

    /// <summary>Whether the control channel has nothing unacknowledged (used after EXIT).</summary>
    public Task<bool> AllAckedAsync()
    {
        var tcs = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
        Post(() => tcs.TrySetResult(_keys.Primary is not { } k || k.Rel.AllAcked));
        return tcs.Task;
    }

    private async Task RunAsync()
    {
        await foreach (var a in _inbox.Reader.ReadAllAsync().ConfigureAwait(false))
        {
            try
            {
                a();
                Flush();
            }
            catch (Exception e)
            {
                Log.Error("client", $"internal error: {e}");
                Finish(ClientExitKind.Restart, "internal error: " + e.Message);
            }

            if (_closed)
            {
                break;
            }
        }
    }

    // ---------------------------------------------------------------- wire input

    private void OnWire(byte[] wire)
    {
        if (_closed)
        {
            return;
        }

        if (!_wrap.TryUnwrap(wire, checkReplay: true, out var p, out var why) || p is null)
        {
            Log.Debug("client", $"control packet dropped: {why}");
            return;
        }

        if (_haveServerSid && p.SessionId != _serverSid)
        {
            Log.Debug("client", "control packet from another server session dropped");
            return;
        }

        switch (p.Opcode)
        {
            case Opcode.ControlHardResetServerV2:
                if (p.KeyId != 0 || _keys[0] is not { } k0)
                {
                    return;
                }

                if (!_haveServerSid)
                {
                    _serverSid = p.SessionId;
                    _haveServerSid = true;
                    k0.Rel.PeerSessionId = _serverSid;
                    _firstServerPacketMs = NowMs;
                }

                break;
            case Opcode.ControlSoftResetV1:
                if (_keys[p.KeyId] is null)
                {
                    if (!Established || !_keys.AcceptsPeerSoftReset(p.KeyId))
                    {
                        Log.Debug("client", $"unexpected soft reset key-id {p.KeyId} dropped");
                        return;
                    }

                    Log.Info("client", $"server started renegotiation, key-id {p.KeyId}");
                    CreateKeyState(p.KeyId);
                }

                break;
            case Opcode.ControlV1:
            case Opcode.AckV1:
                break;
            default:
                Log.Debug("client", $"unexpected opcode {p.Opcode} dropped");
                return;
        }

        if (!_haveServerSid)
        {
            return;
        }

        var k = _keys[p.KeyId];
        if (k is null)
        {
            return;
        }

        if (!k.Rel.OnReceived(p, NowMs))
        {
            Log.Debug("client", "control packet rejected by the reliability layer");
            return;
        }

        while (k.Rel.TryRead(out var op, out var payload))
        {
            if (op == Opcode.ControlV1)
            {
                k.Stream.Feed(payload.ToArray());
            }
            else if (op is Opcode.ControlHardResetServerV2 or Opcode.ControlSoftResetV1 && k.Ssl is null)
            {
                // The server's reset is in: now the TLS handshake may start. Its first record (the
                // ClientHello) then carries the ACK for the reset, which 2.6 UDP servers need to
                // create their session (HMAC cookie, protocol notes 5.2).
                if (k.KeyId == 0)
                {
                    k.HoldAcksUntilMs = NowMs + AckHoldMs;
                }

                StartTls(k);
            }
        }

        k.PumpTlsOutput();
    }

    /// <summary>How long the ACK of the server's hard reset waits for the ClientHello to ride on.</summary>
    private const long AckHoldMs = 500;

    /// <summary>A new key state with our reset queued (hard for key 0, soft otherwise); TLS starts once the server's reset is in.</summary>
    private void CreateKeyState(int keyId) =>
        _keys.Add(new KeyCtx(keyId, OwnSessionId, _haveServerSid ? _serverSid : null, NowMs, Post));

    private void StartTls(KeyCtx k)
    {
        var ssl = new SslStream(k.Stream, leaveInnerStreamOpen: false);
        k.Ssl = ssl;
        var opts = new SslClientAuthenticationOptions
        {
            // OpenVPN does not use SNI; the host name only fills the ClientHello when it is not an IP.
            TargetHost = System.Net.IPAddress.TryParse(_remote.Host, out _) ? "" : _remote.Host,
            ClientCertificates = _clientCert is null ? null : [_clientCert],
            LocalCertificateSelectionCallback = _clientCert is null ? null : (_, _, _, _, _) => _clientCert,
            EnabledSslProtocols = _profile.MinTls13 ? SslProtocols.Tls13 : SslProtocols.Tls12 | SslProtocols.Tls13,
            CertificateRevocationCheckMode = X509RevocationMode.NoCheck,
            AllowRenegotiation = false,
            RemoteCertificateValidationCallback = (_, cert, chain, _) =>
            {
                var reason = ServerCertificateCheck.Validate(cert as X509Certificate2, chain, _caCerts, _profile);
                if (reason is not null)
                {
                    Post(() => k.AuthFailure = reason);
                }

                return reason is null;
            },
        };

        _ = Task.Run(async () =>
        {
            try
            {
                await ssl.AuthenticateAsClientAsync(opts).ConfigureAwait(false);
                string proto = ssl.SslProtocol.ToString();
                string suite = ssl.NegotiatedCipherSuite.ToString();
                string subject = ssl.RemoteCertificate?.Subject ?? "?";
                Post(() =>
                {
                    Log.Info("tls", $"key-id {k.KeyId}: {proto} {suite}, server {subject}");
                    SendKeyMethod2(k);
                });
                var buf = new byte[4096];
                while (true)
                {
                    int n = await ssl.ReadAsync(buf).ConfigureAwait(false);
                    if (n <= 0)
                    {
                        return;
                    }

                    var data = buf.AsSpan(0, n).ToArray();
                    Post(() => OnTlsPlaintext(k, data));
                }
            }
            catch (Exception e) when (e is AuthenticationException or IOException or ObjectDisposedException or InvalidOperationException or CryptographicException)
            {
                if (!k.Disposed)
                {
                    string msg = e.InnerException is { } inner ? $"{e.Message} ({inner.Message})" : e.Message;
                    Post(() => OnTlsFailed(k, msg));
                }
            }
        });
    }

    private void OnTlsFailed(KeyCtx k, string error)
    {
        if (k.Disposed)
        {
            return;
        }

        if (k.AuthFailure is { } a)
        {
            // A server certificate we refuse is not going to change by retrying at once.
            k.PumpTlsOutput();
            Flush();
            Finish(ClientExitKind.Fatal, $"server certificate refused: {a}");
            return;
        }

        if (k.FailureEndsSession(Established))
        {
            Finish(ClientExitKind.Restart, $"TLS error: {error}");
        }
        else
        {
            Log.Warn("client", $"renegotiation key-id {k.KeyId} failed: TLS error: {error}");
            _keys.RemoveFailed(k, NowMs);
        }
    }

    // ---------------------------------------------------------------- key-method-2

    private void SendKeyMethod2(KeyCtx k)
    {
        var m = KeyMethod2Message.CreateRandom(isClient: true);
        m.Options = ClientOptionsString();
        if (_profile.AuthUserPass)
        {
            m.Username = _profile.Username ?? "";
            m.Password = _authToken ?? _profile.Password ?? "";
        }

        m.PeerInfo = BuildPeerInfo(_profile);
        k.Own = m;
        SendPlaintext(k, m.Encode(isClient: true));
    }

    /// <summary>IV_PROTO: DATA_V2 (2) | REQUEST_PUSH (4) | CC_EXIT (128). No TLS-EKM (8): SslStream has no exporter.</summary>
    public const int IvProto = 2 | 4 | 128;

    internal static string BuildPeerInfo(ClientProfile profile)
    {
        var sb = new StringBuilder();
        sb.Append("IV_VER=2.6.0\n");
        sb.Append("IV_PLAT=linux\n");
        sb.Append("IV_TCPNL=1\n");
        sb.Append("IV_MTU=1600\n");
        if (profile.DataCiphers.Contains(DataCipher.Aes128Gcm) && profile.DataCiphers.Contains(DataCipher.Aes256Gcm))
        {
            sb.Append("IV_NCP=2\n");
        }

        sb.Append("IV_CIPHERS=").Append(string.Join(':', profile.DataCiphers.Select(DataCipherNames.ToName))).Append('\n');
        sb.Append("IV_PROTO=").Append(IvProto).Append('\n');
        sb.Append("IV_GUI_VER=ovpnas-connect\n");
        return sb.ToString();
    }

    private string ClientOptionsString()
    {
        int mtu = _profile.TunMtu;
        var sb = new StringBuilder($"V4,dev-type tun,link-mtu {mtu + 49},tun-mtu {mtu},proto {(_remote.Tcp ? "TCPv4_CLIENT" : "UDPv4")},");
        if (_profile.WrapMode == ControlWrapMode.TlsAuth && _profile.KeyDirection is { } kd)
        {
            sb.Append($"keydir {kd},");
        }

        sb.Append($"auth {_profile.AuthName},keysize 128,");
        if (_profile.WrapMode == ControlWrapMode.TlsAuth)
        {
            sb.Append("tls-auth,");
        }

        sb.Append("key-method 2,tls-client");
        return sb.ToString();
    }

    private void OnTlsPlaintext(KeyCtx k, byte[] data)
    {
        if (k.Disposed || _closed)
        {
            return;
        }

        if (k.ServerKey is null)
        {
            // SslStream may hand over the key-method-2 record together with the next record (a
            // server that pushes at once sends PUSH_REPLY right behind it): split them.
            int kmLen = KeyMethod2Message.MeasureLength(data, fromClient: false);
            if (!KeyMethod2Message.TryDecode(data.AsSpan(0, kmLen), fromClient: false, out var m, out var err) || m is null)
            {
                Finish(ClientExitKind.Restart, $"bad key-method-2 message from server: {err}");
                return;
            }

            k.ServerKey = m;
            OnServerKeyMethod2(k);
            if (kmLen >= data.Length)
            {
                return;
            }

            data = data[kmLen..];
        }

        foreach (var msg in ControlMessage.SplitRecord(data))
        {
            OnControlMessage(msg);
        }
    }

    private byte[] DeriveKey2(KeyCtx k)
    {
        var c = k.Own!;
        var s = k.ServerKey!;
        return OpenVpnPrf.DeriveKey2(c.PreMaster!, c.Random1, s.Random1, c.Random2, s.Random2, OwnSessionId, _serverSid);
    }

    private void OnServerKeyMethod2(KeyCtx k)
    {
        if (k.KeyId == 0)
        {
            // Data keys wait for the cipher in the PUSH_REPLY (2.6 client: do_deferred_options).
            k.PushPhase = true;
            SendPushRequest(k);
            return;
        }

        var key2 = DeriveKey2(k);
        try
        {
            var keys = DataChannelKeys.FromKey2(key2, _cipher!.Value, isServer: false);
            _dataPath.InstallSecondary(ToKeyConfig(k.KeyId, KeySlot.Secondary, keys));
        }
        finally
        {
            CryptographicOperations.ZeroMemory(key2);
        }

        k.DataKeysReady = true;
        k.SwapPending = true;
        k.OwnKeyDoneMs = NowMs;
        Log.Info("client", $"key-id {k.KeyId} negotiated; installed as secondary");
    }

    private KeyConfig ToKeyConfig(int keyId, KeySlot slot, DataChannelKeys keys) =>
        new(_peerId ?? 0, slot, keyId, _cipher!.Value,
            new KeyDirection(keys.EncryptKey, keys.EncryptImplicitIv), new KeyDirection(keys.DecryptKey, keys.DecryptImplicitIv));

    private uint? _peerId;

    private void SendPushRequest(KeyCtx k)
    {
        _lastPushRequestMs = NowMs;
        SendControlMessage(k, "PUSH_REQUEST");
    }

    private void OnControlMessage(string msg)
    {
        if (msg.StartsWith("PUSH_REPLY", StringComparison.Ordinal))
        {
            if (Established)
            {
                return;
            }

            _push ??= new PushReplyParser();
            if (!_push.TryAdd(msg, out var err))
            {
                Finish(ClientExitKind.Restart, $"bad PUSH_REPLY: {err}");
                return;
            }

            if (_push.IsComplete)
            {
                OnPushComplete(_push);
            }
        }
        else if (msg.StartsWith("AUTH_FAILED", StringComparison.Ordinal))
        {
            Finish(ClientExitKind.Fatal, $"server refused authentication: {msg}");
        }
        else if (msg.StartsWith("RESTART", StringComparison.Ordinal))
        {
            Log.Info("client", $"server sent {msg}: reconnecting");
            // "RESTART,[flags]text": N = advance to the next remote.
            bool next = msg.StartsWith("RESTART,[", StringComparison.Ordinal) && msg.IndexOf(']', StringComparison.Ordinal) is int end and > 0 &&
                msg.AsSpan(9, end - 9).Contains('N');
            Finish(ClientExitKind.Restart, "server restart", advanceRemote: next);
        }
        else if (msg.StartsWith("HALT", StringComparison.Ordinal))
        {
            Finish(ClientExitKind.Fatal, $"server sent {msg}");
        }
        else if (msg == "EXIT" || msg.StartsWith("EXIT,", StringComparison.Ordinal))
        {
            Finish(ClientExitKind.Restart, "server sent EXIT");
        }
        else if (msg.StartsWith("AUTH_PENDING", StringComparison.Ordinal) || msg.StartsWith("INFO", StringComparison.Ordinal))
        {
            Log.Info("client", $"server: {msg}");
            if (_keys[0] is { } k0)
            {
                // Authentication continues on the server: keep the handshake alive a while longer.
                k0.StartedMs = NowMs;
            }
        }
        else
        {
            Log.Warn("client", $"unsupported control message from server ignored: '{(msg.Length > 64 ? msg[..64] + "..." : msg)}'");
        }
    }

    private void OnPushComplete(PushReplyParser push)
    {
        var accepted = new List<PushOption>();
        foreach (var o in push.Options)
        {
            string text = o.ToString();
            switch (_profile.FilterPushed(text))
            {
                case "ignore":
                    Log.Info("client", $"pull-filter ignored pushed option '{text}'");
                    continue;
                case "reject":
                    Finish(ClientExitKind.Fatal, $"pull-filter rejected pushed option '{text}'");
                    return;
                default:
                    accepted.Add(o);
                    break;
            }
        }

        if (!PushedOptions.TryApply(accepted, _profile, out var cfg, out var error) || cfg is null)
        {
            Finish(ClientExitKind.Fatal, error ?? "push reply not usable");
            return;
        }

        _authToken = accepted.FirstOrDefault(o => o.Name == "auth-token")?.Args.FirstOrDefault() ?? _authToken;
        _cipher = cfg.Cipher;
        _ccExit = cfg.CcExit;
        _peerId = cfg.PeerId;
        var k = _keys[0]!;
        var key2 = DeriveKey2(k);
        try
        {
            var keys = DataChannelKeys.FromKey2(key2, cfg.Cipher, isServer: false);
            _dataPath.Establish(cfg, ToKeyConfig(0, KeySlot.Primary, keys));
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            // No TUN (not root, no /dev/net/tun...) will not get better by reconnecting.
            Finish(ClientExitKind.Fatal, $"cannot set up the tunnel: {e.Message}");
            return;
        }
        finally
        {
            CryptographicOperations.ZeroMemory(key2);
        }

        k.DataKeysReady = true;
        k.PushPhase = false;
        _keys.SetPrimary(0, NowMs);
        Established = true;
        Log.Info("client", $"connected to {_remote}: {cfg.Address}/{cfg.PrefixLength}, cipher {DataCipherNames.ToName(cfg.Cipher)}, " +
            $"peer-id {(cfg.PeerId is { } id ? id.ToString(System.Globalization.CultureInfo.InvariantCulture) : "none (DATA_V1)")}");
        Log.Info("client", "Initialization Sequence Completed");
    }

    private void SendControlMessage(KeyCtx k, string message) => SendPlaintext(k, ControlMessage.Encode(message));

    private static void SendPlaintext(KeyCtx k, byte[] plaintext)
    {
        if (k.Ssl is { } ssl && !k.Disposed)
        {
            k.Out.Write(ssl, plaintext);
        }
    }

    // ---------------------------------------------------------------- timers

    private void OnTick()
    {
        if (_closed)
        {
            return;
        }

        long now = NowMs;
        if (!_haveServerSid && now > _profile.ServerPollTimeoutSeconds * 1000L)
        {
            Finish(ClientExitKind.Restart, $"no answer from {_remote} within {_profile.ServerPollTimeoutSeconds} s");
            return;
        }

        for (int i = 0; i < KeyStateTable.Capacity; i++)
        {
            if (_keys[i] is not { } k)
            {
                continue;
            }

            if (k.IsHandshakeExpired(now, _profile.HandWindowSeconds))
            {
                if (k.FailureEndsSession(Established))
                {
                    Finish(ClientExitKind.Restart, $"TLS key negotiation failed to occur within {_profile.HandWindowSeconds} seconds");
                    return;
                }

                Log.Warn("client", $"renegotiation key-id {k.KeyId} timed out");
                _keys.RemoveFailed(k, now);
                continue;
            }

            if (k.PushPhase && now - _lastPushRequestMs >= 5000)
            {
                SendPushRequest(k);
            }

            // The server has our key once all we sent on this key state is acked; like OpenVPN,
            // keep sending on the old key for a moment before switching.
            if (k.IsSwapDue(now))
            {
                k.SwapPending = false;
                _dataPath.SwapKeys();
                _keys.CompleteSwap(k, now);
                Log.Info("client", $"key-id {k.KeyId} is now primary");
            }
        }

        if (_keys.IsRenegotiationDue(now, _profile.RenegSeconds))
        {
            StartRenegotiation($"reneg-sec {_profile.RenegSeconds}");
        }
    }

    private void StartRenegotiation(string why)
    {
        if (!Established || !_keys.MayStartRenegotiation(NowMs))
        {
            return;
        }

        int next = KeyStateTable.NextKeyId(_keys.LatestKeyId);
        Log.Info("client", $"starting renegotiation ({why}), key-id {next}");
        CreateKeyState(next);
    }

    private void Flush()
    {
        if (_closed)
        {
            return;
        }

        long now = NowMs;
        uint unix = (uint)DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        _keys.SendDue(now, unix, _wrap, _link);
    }

    private void Finish(ClientExitKind kind, string reason, bool advanceRemote = false)
    {
        if (_closed)
        {
            return;
        }

        _closed = true;
        _keys.Clear();

        _inbox.Writer.TryComplete();
        _done.TrySetResult(new ClientExit(kind, reason) { AdvanceRemote = advanceRemote });
    }

    /// <summary>A key state with what only the client tracks: key-method-2 messages, push phase, ACK hold.</summary>
    private sealed class KeyCtx(int keyId, ulong ownSessionId, ulong? serverSessionId, long startedMs, Action<Action> post)
        : KeyState(keyId, ownSessionId, serverSessionId, startedMs, post)
    {
        public KeyMethod2Message? Own;
        public KeyMethod2Message? ServerKey;
        public bool PushPhase;
        public long HoldAcksUntilMs;

        /// <summary>
        /// Only ACKs to send: keep them for the ClientHello (first packet after the server reset
        /// carries the ACK, like OpenVPN's client), unless TLS takes too long.
        /// </summary>
        protected override bool HoldSend(long nowMs)
        {
            if (HoldAcksUntilMs == 0)
            {
                return false;
            }

            if (Rel.AllAcked && nowMs < HoldAcksUntilMs)
            {
                return true;
            }

            HoldAcksUntilMs = 0;
            return false;
        }

        protected override void OnDisposed()
        {
            if (Own?.PreMaster is { } pm)
            {
                CryptographicOperations.ZeroMemory(pm);
            }
        }
    }
}
