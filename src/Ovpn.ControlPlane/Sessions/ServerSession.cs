// SPDX-License-Identifier: MIT
using System.Buffers;
using System.Diagnostics;
using System.Net;
using System.Net.Security;
using System.Security.Authentication;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using Ovpn.ControlPlane.Tls;
using Ovpn.DataPlane;
using Ovpn.Protocol.Control;
using Ovpn.Protocol.Keys;
using Ovpn.Protocol.Options;
using Ovpn.Protocol.Reliability;
using Ovpn.Protocol.Wire;

namespace Ovpn.ControlPlane.Sessions;

/// <summary>
/// One client on the server side: its tls session (sids, control wrapping, replay state) and up
/// to three key states (key_id 0..7), each with its own reliability layer and TLS session.
///
/// Threading: an actor. Every input (wire packet, TLS output, TLS plaintext, timer tick, close) is
/// posted to one FIFO inbox and run one at a time, in order, by whichever thread currently owns the
/// inbox (<see cref="_running"/>), so no state below needs a lock. Who drains: a control packet
/// posted while the inbox is idle is processed right on the receiving (data-plane) thread, up to
/// the SslStream feed (unwrap, replay check, reliability, ACKs), which saves a thread hop and a
/// context switch per packet; that inline run takes only packets, at most
/// <see cref="InlinePacketBudget"/>, and hands anything else (TLS output/plaintext, ticks, close,
/// which may call into the data plane) to a thread-pool work item that drains the rest. Other
/// posts never run inline: they start the thread-pool drain when the inbox is idle.
///
/// Key state lifecycle (per key_id):
///   reset received -> own reset queued, TLS handshake running
///     -> TLS done, client key-method-2 received -> own key-method-2 sent, data keys derived
///     -> (key 0) peer + primary key installed, PUSH_REPLY sent
///     -> (key n) key installed as secondary, swapped to primary once the peer has our message
/// </summary>
public sealed class ServerSession
{
    private const int TlsReadBufferSize = 4096;

    /// <summary>How long a key state must be quiet (all acked, nothing pending) before its handshake buffers are released.</summary>
    private const long IdleTrimMs = 2000;

    private const int IdleTickDivisor = 5;

    /// <summary>How long a replaced key state lingers after the new key became primary (late retransmissions still get ACKs).</summary>
    private const long RetiredKeyGraceMs = 5000;

    private readonly SessionManager _mgr;
    private readonly ControlPlaneOptions _o;
    private readonly ControlWrapper _wrap;
    /// <summary>Packets a receiving thread processes inline before it hands the inbox to the thread pool.</summary>
    private const int InlinePacketBudget = 8;

    // An inbox entry is an action or a wire packet (no closure allocated per packet).
    private readonly System.Collections.Concurrent.ConcurrentQueue<(Action? Action, byte[]? Wire)> _inbox = new();
    private readonly Drainer _drainer;
    private int _running; // 1 while one thread owns the inbox and runs its entries
    private readonly KeyStateTable<KeyCtx> _keys = new(isServer: true);
    private readonly Stopwatch _clock;
    private bool _closed;
    private bool _pushed;
    private HashAlgorithmName? _cbcDigest;
    private string? _closeReason;
    private Action? _onTick;
    private bool _quiet;
    private int _skippedTicks; // touched by the manager's timer thread only

    public ServerSession(SessionManager mgr, ControlPlaneOptions o, ILinkTransport link, ulong peerSessionId, Stopwatch clock)
    {
        _mgr = mgr;
        _o = o;
        _clock = clock;
        Link = link;
        PeerSessionId = peerSessionId;
        OwnSessionId = RandomSid();
        _wrap = o.WrapMode switch
        {
            ControlWrapMode.TlsCrypt => ControlWrapper.CreateTlsCrypt(o.WrapKey!, isServer: true),
            ControlWrapMode.TlsAuth => ControlWrapper.CreateTlsAuth(o.WrapKey!, 0, o.TlsAuthDigest),
            _ => ControlWrapper.CreateNone(),
        };
        ConnectedAt = DateTimeOffset.UtcNow;
        _drainer = new Drainer(this);
    }

    public ILinkTransport Link { get; internal set; }

    public ulong OwnSessionId { get; }

    public ulong PeerSessionId { get; }

    public DateTimeOffset ConnectedAt { get; }

    public string? CommonName { get; private set; }

    public IPAddress? VpnAddress { get; private set; }

    public uint? PeerId { get; private set; }

    public DataCipher? Cipher { get; private set; }

    public PeerInfo? PeerInfo { get; private set; }

    public string? ClientVersion => PeerInfo?.IvVer;

    public bool Authenticated { get; private set; }

    public bool IsClosed => Volatile.Read(ref _closed);

    public CompressionStub Compression { get; private set; } = CompressionStub.None;

    /// <summary>The data path serving this client (null until negotiated).</summary>
    public DataPath? Path { get; private set; }

    /// <summary>Why the client is on this path (e.g. why it is not offloaded), or null.</summary>
    public string? DataPathReason { get; private set; }

    public string Describe => $"{CommonName ?? "?"}/{Link.Describe()}";

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

    /// <summary>Queues work for the session's loop. Thread-safe; never runs <paramref name="a"/> on the caller's thread.</summary>
    public void Post(Action a)
    {
        _inbox.Enqueue((a, null));
        if (Interlocked.CompareExchange(ref _running, 1, 0) == 0)
        {
            ThreadPool.UnsafeQueueUserWorkItem(_drainer, preferLocal: false);
        }
    }

    /// <summary>
    /// Queues a wire packet (owned by the session from now on). Thread-safe. If the inbox is idle
    /// the packet is processed on the caller's thread (see the class summary).
    /// </summary>
    public void PostPacket(byte[] wire)
    {
        _inbox.Enqueue((null, wire));
        if (Interlocked.CompareExchange(ref _running, 1, 0) == 0)
        {
            Drain(inline: true);
        }
    }

    /// <summary>
    /// Timer tick (every 200 ms from the manager). A quiet session (every key state trimmed) only
    /// has second-granularity deadlines left (renegotiation), so it takes every
    /// <see cref="IdleTickDivisor"/>-th tick: thousands of idle peers then cost a fifth of the
    /// loop wake-ups, CPU that handshakes in progress can use.
    /// </summary>
    public void PostTick()
    {
        if (Volatile.Read(ref _quiet) && ++_skippedTicks % IdleTickDivisor != 0)
        {
            return;
        }

        Post(_onTick ??= OnTick);
    }

    public void PostClose(string reason, string? notifyMessage = null) => Post(() => Close(reason, notifyMessage));

    public void PostRenegotiate(string why) => Post(() => StartRenegotiation(why));

    /// <summary>
    /// Runs inbox entries; the caller owns the inbox (<see cref="_running"/> = 1). Inline (a
    /// receiving thread): only packets, at most <see cref="InlinePacketBudget"/>, then whatever is
    /// left goes to the thread pool with ownership. Otherwise until the inbox is empty. Ownership is
    /// released with a re-check, so an entry enqueued during the release is never stranded.
    /// </summary>
    private void Drain(bool inline)
    {
        int budget = inline ? InlinePacketBudget : int.MaxValue;
        while (true)
        {
            while (_inbox.TryPeek(out var item))
            {
                if (inline && (item.Action is not null || budget-- <= 0))
                {
                    ThreadPool.UnsafeQueueUserWorkItem(_drainer, preferLocal: false); // keeps ownership
                    return;
                }

                _inbox.TryDequeue(out _); // single consumer: the entry just peeked
                if (_closed)
                {
                    continue;
                }

                try
                {
                    if (item.Wire is { } wire)
                    {
                        OnWire(wire);
                    }
                    else
                    {
                        item.Action!();
                    }

                    Flush();
                }
                catch (Exception e)
                {
                    Log.Error("session", $"{Describe}: internal error: {e}");
                    Close("internal error", null);
                }
            }

            Volatile.Write(ref _running, 0);
            if (_inbox.IsEmpty || Interlocked.CompareExchange(ref _running, 1, 0) != 0)
            {
                return;
            }
        }
    }

    /// <summary>The thread-pool side of <see cref="Drain"/> (one instance per session, no allocation per run).</summary>
    private sealed class Drainer(ServerSession session) : IThreadPoolWorkItem
    {
        public void Execute() => session.Drain(inline: false);
    }

    // ---------------------------------------------------------------- wire input

    private void OnWire(byte[] wire)
    {
        if (!_wrap.TryUnwrap(wire, checkReplay: true, out var p, out var why) || p is null)
        {
            _mgr.CountControlDrop(why.ToString());
            return;
        }

        if (p.SessionId != PeerSessionId)
        {
            _mgr.CountControlDrop("WrongSession");
            return;
        }

        switch (p.Opcode)
        {
            case Opcode.ControlHardResetClientV2:
                if (p.KeyId != 0 || _keys[0] is null)
                {
                    _mgr.CountControlDrop("UnexpectedReset");
                    return;
                }

                break;
            case Opcode.ControlSoftResetV1:
                if (_keys[p.KeyId] is null)
                {
                    if (!CanAcceptSoftReset(p.KeyId))
                    {
                        _mgr.CountControlDrop("UnexpectedSoftReset");
                        return;
                    }

                    Log.Info("session", $"{Describe}: peer started renegotiation, key-id {p.KeyId}");
                    CreateKeyState(p.KeyId);
                }

                break;
            case Opcode.ControlV1:
            case Opcode.AckV1:
                break;
            default:
                _mgr.CountControlDrop("UnexpectedOpcode");
                return;
        }

        var k = _keys[p.KeyId];
        if (k is null)
        {
            _mgr.CountControlDrop("UnknownKeyId");
            return;
        }

        k.LastActivityMs = NowMs;
        k.Trimmed = false;
        Volatile.Write(ref _quiet, false);
        if (!k.Rel.OnReceived(p, NowMs))
        {
            _mgr.CountControlDrop("ReliabilityRejected");
            return;
        }

        while (k.Rel.TryRead(out var op, out var payload))
        {
            if (op == Opcode.ControlV1)
            {
                k.Stream.Feed(payload); // the reliability layer gave up this buffer: no copy
            }
        }

        k.PumpTlsOutput();
    }

    private bool CanAcceptSoftReset(int keyId) => Authenticated && _keys.AcceptsPeerSoftReset(keyId);

    /// <summary>Starts key state 0 from the client's hard reset (called by the manager right after construction).</summary>
    internal void Begin(byte[] firstPacket)
    {
        Post(() =>
        {
            CreateKeyState(0);
            OnWire(firstPacket);
        });
    }

    /// <summary>A new key state with our reset queued (hard for key 0, soft otherwise); keeps only it and the primary.</summary>
    private void CreateKeyState(int keyId)
    {
        Volatile.Write(ref _quiet, false);
        var k = new KeyCtx(keyId, OwnSessionId, PeerSessionId, NowMs, Post);
        _keys.Add(k);
        StartTls(k);
    }

    private void StartTls(KeyCtx k)
    {
        var ssl = new SslStream(k.Stream, leaveInnerStreamOpen: false);
        k.Ssl = ssl;
        // No TLS 1.3 session tickets: OpenVPN never resumes (see TlsSessionTickets).
        k.Stream.BeforeRead = () => TlsSessionTickets.TryDisable(ssl) != TlsSessionTickets.Result.NotYet || ssl.IsAuthenticated;
        var opts = new SslServerAuthenticationOptions
        {
            ServerCertificateContext = _o.ServerCertificateContext,
            ClientCertificateRequired = true,
            EnabledSslProtocols = SslProtocols.Tls12 | SslProtocols.Tls13,
            CertificateRevocationCheckMode = X509RevocationMode.NoCheck,
            AllowRenegotiation = false,
            RemoteCertificateValidationCallback = (_, cert, chain, errors) =>
            {
                if (cert is null)
                {
                    Post(() => k.AuthFailure = "client sent no certificate");
                    return false;
                }

                var c2 = cert as X509Certificate2 ?? new X509Certificate2(cert);
                // SslStream built the chain against ClientCa already; reuse it when it found no errors.
                var r = errors == SslPolicyErrors.None && chain is not null && _o.ClientCa is not null && _o.ValidateClientWithChain is { } withChain
                    ? withChain(c2, chain)
                    : _o.ValidateClient(c2);
                string? cn = r.CommonName;
                string subject = c2.Subject;
                string? reason = r.Ok ? null : $"{r.Reason ?? "certificate refused"} (subject '{subject}', serial {c2.SerialNumber})";
                Post(() =>
                {
                    if (r.Ok)
                    {
                        k.CertCommonName = cn;
                    }
                    else
                    {
                        k.AuthFailure = reason ?? "certificate refused";
                    }
                });
                return r.Ok;
            },
        };

        if (_o.ClientCa is { } ca)
        {
            var policy = new X509ChainPolicy
            {
                TrustMode = X509ChainTrustMode.CustomRootTrust,
                RevocationMode = X509RevocationMode.NoCheck,
                DisableCertificateDownloads = true,
            };
            policy.CustomTrustStore.Add(ca);
            opts.CertificateChainPolicy = policy;
        }

        _ = Task.Run(async () =>
        {
            try
            {
                await ssl.AuthenticateAsServerAsync(opts).ConfigureAwait(false);

                // Idle control channels should not keep OpenSSL's record buffers (most of a peer's
                // memory); set before the first read, while nothing else runs on the stream.
                Volatile.Write(ref k.TlsBuffersReleased, TlsBufferRelease.TryEnable(ssl));
                string proto = ssl.SslProtocol.ToString();
                string suite = ssl.NegotiatedCipherSuite.ToString();
                Post(() => Log.Info("tls", $"{Describe}: key-id {k.KeyId}: {proto} {suite}"));
                while (true)
                {
                    // Idle key states hold no read buffer: a zero-byte read waits for ciphertext
                    // without one (and lets SslStream return its own record buffer to the pool);
                    // only then is a buffer rented for the actual read.
                    await ssl.ReadAsync(Memory<byte>.Empty).ConfigureAwait(false);
                    var buf = ArrayPool<byte>.Shared.Rent(TlsReadBufferSize);
                    Volatile.Write(ref k.ReadBufferHeld, true);
                    int n;
                    try
                    {
                        n = await ssl.ReadAsync(buf.AsMemory(0, TlsReadBufferSize)).ConfigureAwait(false);
                        if (n > 0)
                        {
                            var data = buf.AsSpan(0, n).ToArray();
                            Post(() => OnTlsPlaintext(k, data));
                        }
                    }
                    finally
                    {
                        Volatile.Write(ref k.ReadBufferHeld, false);
                        ArrayPool<byte>.Shared.Return(buf);
                    }

                    if (n <= 0)
                    {
                        return;
                    }
                }
            }
            catch (Exception e) when (e is AuthenticationException or IOException or ObjectDisposedException or InvalidOperationException)
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

        string reason = k.AuthFailure is { } a ? $"client certificate refused: {a}" : $"TLS error: {error}";
        if (k.FailureEndsSession(Authenticated))
        {
            // Let the TLS alert go out first, then drop the session.
            Log.Warn("session", $"{Describe}: refused: {reason}");
            k.PumpTlsOutput();
            Flush();
            Close(reason, null);
        }
        else
        {
            Log.Warn("session", $"{Describe}: renegotiation key-id {k.KeyId} failed: {reason}");
            _keys.RemoveFailed(k, NowMs);
        }
    }

    // ---------------------------------------------------------------- TLS plaintext

    private void OnTlsPlaintext(KeyCtx k, byte[] data)
    {
        if (k.Disposed)
        {
            return;
        }

        if (!k.GotClientKey)
        {
            // One TLS read may return the key-method-2 record together with the next message.
            int kmLen = KeyMethod2Message.MeasureLength(data, fromClient: true);
            if (!KeyMethod2Message.TryDecode(data.AsSpan(0, kmLen), fromClient: true, out var m, out var err) || m is null)
            {
                Close($"bad key-method-2 message from client: {err}", "AUTH_FAILED");
                return;
            }

            k.GotClientKey = true;
            OnClientKeyMethod2(k, m);
            if (kmLen >= data.Length || _closed)
            {
                return;
            }

            data = data[kmLen..];
        }

        // After key-method-2: NUL-terminated control messages, possibly several in one record.
        foreach (var msg in ControlMessage.SplitRecord(data))
        {
            OnControlMessage(msg);
        }
    }

    private void OnClientKeyMethod2(KeyCtx k, KeyMethod2Message m)
    {
        if (k.CertCommonName is null)
        {
            Close($"client certificate refused: {k.AuthFailure ?? "no certificate"}", "AUTH_FAILED");
            return;
        }

        if (k.KeyId == 0)
        {
            CommonName = k.CertCommonName;
            PeerInfo = PeerInfo.Parse(m.PeerInfo);
            if (!Negotiate(m, out string? failure))
            {
                Log.Warn("session", $"{Describe}: refused: {failure}");
                // The client reads control messages only after the key exchange, so it still gets our
                // key-method-2 message (with fresh randoms, never used for keys) before AUTH_FAILED.
                var decoy = KeyMethod2Message.CreateRandom(isClient: false);
                decoy.Options = ServerOptionsString();
                SendPlaintext(k, decoy.Encode(isClient: false));
                SendControlMessage(k, $"AUTH_FAILED,{failure}");
                // Give the message a moment to be delivered, then drop the client.
                k.CloseAtMs = NowMs + 2000;
                k.CloseReason = failure;
                return;
            }
        }
        else if (k.CertCommonName != CommonName)
        {
            Close($"renegotiation presented a different certificate ({k.CertCommonName})", "AUTH_FAILED");
            return;
        }

        var own = KeyMethod2Message.CreateRandom(isClient: false);
        own.Options = ServerOptionsString();
        SendPlaintext(k, own.Encode(isClient: false));
        var key2 = OpenVpnPrf.DeriveKey2(m.PreMaster!, m.Random1, own.Random1, m.Random2, own.Random2, PeerSessionId, OwnSessionId);
        var keys = DataChannelKeys.FromKey2(key2, Cipher!.Value, isServer: true);
        CryptographicOperations.ZeroMemory(key2);
        k.DataKeysReady = true;
        k.OwnKeyDoneMs = NowMs;

        if (k.KeyId == 0)
        {
            Authenticated = true;
            InstallFirstKey(k, keys);
            _mgr.OnAuthenticated(this);
            if ((PeerInfo!.IvProto & 4) != 0)
            {
                SendPushReply(k);
            }
        }
        else
        {
            Path!.Plane.NewKey(MakeKeyConfig(KeySlot.Secondary, k.KeyId, keys));
            k.SwapPending = true;
            Log.Info("session", $"{Describe}: key-id {k.KeyId} negotiated; installed as secondary");
        }
    }

    private bool Negotiate(KeyMethod2Message m, out string? failure)
    {
        var pi = PeerInfo!;
        if (!CipherNegotiation.TrySelect(_o.DataCiphers, pi, m.Options, _o.FallbackCipher, out var chosen, out var why))
        {
            failure = why;
            return false;
        }

        Cipher = chosen;
        if (!DataCipherNames.IsAead(chosen))
        {
            // Only reachable when the admin listed a CBC cipher in vpn.server.data_ciphers: the
            // 2.3-era data channel, HMAC with the client's --auth digest (SHA1 by default).
            string auth = OptionsString.GetField(m.Options, "auth") ?? "SHA1";
            _cbcDigest = auth.ToUpperInvariant() switch
            {
                "SHA1" => HashAlgorithmName.SHA1,
                "SHA256" => HashAlgorithmName.SHA256,
                "SHA384" => HashAlgorithmName.SHA384,
                "SHA512" => HashAlgorithmName.SHA512,
                _ => null,
            };
            if (_cbcDigest is null)
            {
                failure = $"cipher {DataCipherNames.ToName(chosen)} with --auth {auth} is not supported (SHA1, SHA256, SHA384, SHA512 are)";
                return false;
            }

            Log.Info("session", $"{Describe}: legacy CBC data channel {DataCipherNames.ToName(chosen)} with HMAC-{auth} (allowed by vpn.server.data_ciphers)");
        }

        // A profile with comp-lzo / compress makes the client frame data with a stub byte. We never
        // compress: tell it "no compression" in the framing it understands.
        bool clientFrames = OptionsString.GetField(m.Options, "comp-lzo") is not null || m.Options.Contains(",comp-lzo", StringComparison.Ordinal);
        if (pi.Lzo || pi.Lz4 || pi.Lz4V2 || clientFrames)
        {
            if (!_o.AllowCompressionStubs)
            {
                failure = "client requests compression framing, which this server does not allow";
                return false;
            }

            if (clientFrames)
            {
                Compression = pi.CompStubV2 ? CompressionStub.StubV2 : CompressionStub.LzoNo;
                Log.Info("session", $"{Describe}: client profile has compression; compression is off (framing: {Compression})");
            }
        }

        var needs = new PeerNeeds((pi.IvProto & 2) != 0, Compression, chosen, Link.IsTcp);
        var path = _mgr.Paths.Select(needs, out string? pathReason);
        if (path is null)
        {
            failure = $"no data path can serve this client{(pathReason is null ? "" : $" ({pathReason})")}";
            return false;
        }

        var ip = path.Pool.Allocate();
        if (ip is null)
        {
            failure = $"address pool of {path.Name} exhausted";
            return false;
        }

        var id = _mgr.PeerIds.Allocate();
        if (id is null)
        {
            path.Pool.Release(ip);
            failure = "no free peer-id";
            return false;
        }

        Path = path;
        DataPathReason = pathReason;
        path.Attach();
        VpnAddress = ip;
        PeerId = id;
        failure = null;
        return true;
    }

    private void InstallFirstKey(KeyCtx k, DataChannelKeys keys)
    {
        var dp = Path!.Plane;
        dp.NewPeer(new PeerConfig(PeerId!.Value, Link, VpnAddress, null)
        {
            DataV2 = (PeerInfo!.IvProto & 2) != 0,
            Compression = Compression,
        });
        // The server side waits twice the pushed ping-restart, as OpenVPN's keepalive helper does.
        dp.SetPeer(PeerId.Value, TimeSpan.FromSeconds(_o.PingSeconds), TimeSpan.FromSeconds(_o.PingRestartSeconds * 2));
        dp.NewKey(MakeKeyConfig(KeySlot.Primary, k.KeyId, keys));
        _keys.SetPrimary(k.KeyId, NowMs);
        Log.Info("session", $"{Describe}: authenticated; peer-id {PeerId}, {VpnAddress}, cipher {DataCipherNames.ToName(Cipher!.Value)}, " +
            $"{(PeerInfo.IvVer is { } v ? "client " + v : "client version unknown")}, data path {Path!.Name}" +
            (DataPathReason is null ? string.Empty : $" ({DataPathReason})"));
    }

    private KeyConfig MakeKeyConfig(KeySlot slot, int keyId, DataChannelKeys keys)
    {
        if (DataCipherNames.IsAead(Cipher!.Value))
        {
            return new KeyConfig(PeerId!.Value, slot, keyId, Cipher.Value,
                new KeyDirection(keys.EncryptKey, keys.EncryptImplicitIv), new KeyDirection(keys.DecryptKey, keys.DecryptImplicitIv));
        }

        return new KeyConfig(PeerId!.Value, slot, keyId, Cipher.Value,
            KeyDirection.ForCbc(keys.EncryptKey, keys.EncryptHmacKey!), KeyDirection.ForCbc(keys.DecryptKey, keys.DecryptHmacKey!))
        {
            CbcDigest = _cbcDigest,
        };
    }

    private void OnControlMessage(string msg)
    {
        var k = _keys.Latest;
        if (msg.StartsWith("PUSH_REQUEST", StringComparison.Ordinal))
        {
            if (!_pushed && Authenticated && _keys[0] is { } k0 && k0.CloseAtMs == 0)
            {
                SendPushReply(k0);
            }
        }
        else if (msg == "EXIT" || msg.StartsWith("EXIT,", StringComparison.Ordinal))
        {
            Log.Info("session", $"{Describe}: client sent EXIT (explicit-exit-notify)");
            Close("client exited", null);
        }
        else if (k is not null)
        {
            Log.Debug("session", $"{Describe}: ignored control message '{Truncate(msg, 64)}'");
        }
    }

    private static string Truncate(string s, int n) => s.Length <= n ? s : s[..n] + "...";

    private void SendPushReply(KeyCtx k)
    {
        _pushed = true;
        var opts = new List<string>
        {
            $"route-gateway {Path!.Pool.ServerAddress}",
            "topology subnet",
            $"ping {_o.PingSeconds}",
            $"ping-restart {_o.PingRestartSeconds}",
        };
        if (Path.Pool.PrefixLength != _o.Pool.PrefixLength)
        {
            // This daemon serves a slice of the client network: route the whole network through the
            // tunnel so clients reach the server and clients of the other daemons.
            opts.Add($"route {_o.Pool.Network} {_o.Pool.Netmask}");
        }

        opts.AddRange(_o.ExtraPush);
        if (Compression == CompressionStub.StubV2)
        {
            opts.Add("compress stub-v2");
        }
        else if (Compression == CompressionStub.LzoNo)
        {
            opts.Add("comp-lzo no");
        }

        opts.Add($"ifconfig {VpnAddress} {Path.Pool.Netmask}");
        var pi = PeerInfo!;
        if ((pi.IvProto & 2) != 0)
        {
            opts.Add($"peer-id {PeerId}");
        }

        if (pi.IvNcp >= 2 || pi.IvCiphers is not null)
        {
            opts.Add($"cipher {DataCipherNames.ToName(Cipher!.Value)}");
        }

        if ((pi.IvProto & 128) != 0)
        {
            opts.Add("protocol-flags cc-exit");
        }

        if (!Link.IsTcp)
        {
            // Ask UDP clients to say goodbye (EXIT / OCC_EXIT) so their session ends at once.
            opts.Add("explicit-exit-notify 1");
        }

        if (pi.IvMtu is not null)
        {
            opts.Add($"tun-mtu {_o.TunMtu}");
        }

        var builder = new PushReplyBuilder();
        foreach (var o in opts)
        {
            builder.Add(o);
        }

        foreach (var message in builder.Build())
        {
            SendControlMessage(k, message);
        }

        Log.Info("session", $"{Describe}: sent PUSH_REPLY ({opts.Count} options)");
    }

    private string ServerOptionsString()
    {
        int keyBits = Cipher is { } c ? DataCipherNames.KeyLength(c) * 8 : 256;
        string proto = Link.IsTcp ? "TCPv4_SERVER" : "UDPv4";
        string s = $"V4,dev-type tun,link-mtu {_o.TunMtu + 49},tun-mtu {_o.TunMtu},proto {proto},";
        if (Compression != CompressionStub.None)
        {
            s += "comp-lzo,";
        }

        if (_o.WrapMode == ControlWrapMode.TlsAuth)
        {
            s += "keydir 0,";
        }

        s += $"auth [null-digest],keysize {keyBits},";
        if (_o.WrapMode == ControlWrapMode.TlsAuth)
        {
            s += "tls-auth,";
        }

        return s + "key-method 2,tls-server";
    }

    private void SendControlMessage(KeyCtx k, string message) => SendPlaintext(k, ControlMessage.Encode(message));

    private void SendPlaintext(KeyCtx k, byte[] plaintext)
    {
        if (k.Ssl is { } ssl && !k.Disposed)
        {
            k.LastActivityMs = NowMs;
            k.Trimmed = false;
            Volatile.Write(ref _quiet, false);
            k.Out.Write(ssl, plaintext);
        }
    }

    // ---------------------------------------------------------------- timers

    private void OnTick()
    {
        long now = NowMs;
        for (int i = 0; i < KeyStateTable.Capacity; i++)
        {
            if (_keys[i] is not { } k)
            {
                continue;
            }

            if (k.CloseAtMs != 0 && now >= k.CloseAtMs)
            {
                Close(k.CloseReason ?? "refused", null);
                return;
            }

            if (k.IsHandshakeExpired(now, _o.HandWindowSeconds))
            {
                if (k.FailureEndsSession(Authenticated))
                {
                    Close($"TLS key negotiation failed to occur within {_o.HandWindowSeconds} seconds", null);
                    return;
                }

                Log.Warn("session", $"{Describe}: renegotiation key-id {k.KeyId} timed out");
                _keys.RemoveFailed(k, now);
                continue;
            }

            // The peer has our key-method-2 message once everything we sent on this key is acked.
            if (k.IsSwapDue(now))
            {
                k.SwapPending = false;
                Path!.Plane.SwapKeys(PeerId!.Value);
                _keys.CompleteSwap(k, now);
                Log.Info("session", $"{Describe}: key-id {k.KeyId} is now primary");
            }

            // A key state replaced by a newer primary is retired once the swap has settled: the data
            // plane has its own copy of the keys, and its TLS session is never used again.
            if (_keys.IsRetirable(k, now, RetiredKeyGraceMs))
            {
                Log.Debug("session", $"{Describe}: key-id {k.KeyId} retired");
                _keys.Remove(k);
                continue;
            }

            TrimIfIdle(k, now);
        }

        if (Authenticated && _keys.IsRenegotiationDue(now, _o.RenegotiateSeconds))
        {
            StartRenegotiation($"reneg-sec {_o.RenegotiateSeconds}");
        }

        UpdateQuiet();
    }

    /// <summary>
    /// Releases what only the handshake needed once an established key state has been quiet for
    /// <see cref="IdleTrimMs"/>: the reliability windows' storage (the TLS reader already holds no
    /// buffer between records). The SslStream itself stays: PUSH_REPLY, AUTH_FAILED, RESTART and
    /// the client's EXIT still travel over it, and anything sent or received grows the windows again.
    /// </summary>
    private void TrimIfIdle(KeyCtx k, long now)
    {
        if (k.Trimmed || !k.DataKeysReady || k.SwapPending || k.CloseAtMs != 0 || now - k.LastActivityMs < IdleTrimMs ||
            !k.Out.IsIdle || !k.Rel.IsIdle)
        {
            return;
        }

        k.Trimmed = k.Rel.TrimIdle();
    }

    /// <summary>Whether the session currently takes only every fifth timer tick (tests).</summary>
    internal bool IsQuietForTests => Volatile.Read(ref _quiet);

    /// <summary>Quiet = authenticated and every key state trimmed (nothing in flight, no deadline under a second).</summary>
    private void UpdateQuiet()
    {
        bool quiet = Authenticated && !_closed;
        for (int i = 0; quiet && i < KeyStateTable.Capacity; i++)
        {
            if (_keys[i] is { } k && !k.Trimmed)
            {
                quiet = false;
            }
        }

        Volatile.Write(ref _quiet, quiet);
    }

    /// <summary>A snapshot of one key state's memory-relevant state, taken on the session's loop (tests).</summary>
    internal KeyStateInfo? GetKeyStateForTests(int keyId, TimeSpan timeout)
    {
        var tcs = new TaskCompletionSource<KeyStateInfo?>(TaskCreationOptions.RunContinuationsAsynchronously);
        Post(() => tcs.TrySetResult(_keys[keyId] is { } k
            ? new KeyStateInfo(k.KeyId, k.DataKeysReady, k.Trimmed, Volatile.Read(ref k.ReadBufferHeld), k.Rel.BufferedBytes, k.Rel.IsIdle, Volatile.Read(ref k.TlsBuffersReleased))
            : null));
        return tcs.Task.Wait(timeout) ? tcs.Task.Result : null;
    }

    internal sealed record KeyStateInfo(int KeyId, bool DataKeysReady, bool Trimmed, bool HasReadBuffer, int ReliabilityBufferedBytes, bool ReliabilityIdle, bool TlsBuffersReleased);

    private void StartRenegotiation(string why)
    {
        if (!Authenticated || !_keys.MayStartRenegotiation(NowMs))
        {
            return;
        }

        int next = KeyStateTable.NextKeyId(_keys.LatestKeyId);
        Log.Info("session", $"{Describe}: starting renegotiation ({why}), key-id {next}");
        CreateKeyState(next);
    }

    // ---------------------------------------------------------------- output

    private void Flush()
    {
        if (_closed)
        {
            return;
        }

        long now = NowMs;
        uint unix = (uint)DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        _keys.SendDue(now, unix, _wrap, Link);
    }

    /// <summary>Ends the session: optional last message to the client, data plane peer removed, resources freed.</summary>
    internal void Close(string reason, string? notifyMessage)
    {
        if (_closed)
        {
            return;
        }

        if (notifyMessage is not null && _keys.Latest is { } k)
        {
            SendControlMessage(k, notifyMessage);
            // Best effort: give the TLS write a moment to reach the reliability layer, then send.
            k.Out.WriteChain.Wait(200);
            k.PumpTlsOutput();
            Flush();
        }

        _closed = true;
        _closeReason = reason;
        _keys.Clear();

        if (PeerId is { } id)
        {
            Path!.Plane.DeletePeer(id);
            _mgr.PeerIds.Release(id);
        }

        if (VpnAddress is { } ip && Path is { } path)
        {
            path.Pool.Release(ip);
            path.Detach();
        }

        _mgr.OnSessionClosed(this, reason);
        _inbox.Clear(); // later posts are dropped by the drain (_closed)
    }

    public string? CloseReason => _closeReason;

    /// <summary>
    /// Sends a control message to the client from outside the loop (RESTART on shutdown) and waits
    /// until it was handed to the link, at most <paramref name="timeout"/>.
    /// </summary>
    public Task NotifyAsync(string message, TimeSpan timeout)
    {
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        Post(() =>
        {
            if (_keys.Latest is { Ssl: not null } k && Authenticated)
            {
                SendControlMessage(k, message);
                k.Out.WriteChain.ContinueWith(_ => Post(() => done.TrySetResult()), TaskScheduler.Default);
            }
            else
            {
                done.TrySetResult();
            }
        });
        return done.Task.WaitAsync(timeout).ContinueWith(_ => { }, TaskScheduler.Default);
    }

    /// <summary>A key state with what only the server tracks: client certificate, refusal, memory trimming.</summary>
    private sealed class KeyCtx(int keyId, ulong ownSessionId, ulong peerSessionId, long startedMs, Action<Action> post)
        : KeyState(keyId, ownSessionId, peerSessionId, startedMs, post)
    {
        public bool GotClientKey;
        public long CloseAtMs;
        public string? CloseReason;
        public string? CertCommonName;

        /// <summary>Set by the TLS reader while it holds a rented plaintext buffer (between a record's arrival and its hand-off).</summary>
        public bool ReadBufferHeld;

        /// <summary>OpenSSL frees this key state's record buffers between records (SSL_MODE_RELEASE_BUFFERS).</summary>
        public bool TlsBuffersReleased;

        /// <summary>The key state was quiet long enough and its windows' storage was released; cleared by any activity.</summary>
        public bool Trimmed;

        public long LastActivityMs = startedMs;
    }
}
