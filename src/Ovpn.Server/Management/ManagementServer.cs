// SPDX-License-Identifier: MIT
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Ovpn.ControlPlane;

namespace Ovpn.Server.Management;

/// <summary>
/// The local management socket: a Unix domain socket "ovpnas.sock" in the data directory, mode
/// 0600, that accepts only root (or the server's own uid, checked with SO_PEERCRED). Protocol: the
/// client sends one JSON object on one line, {"command":"status"}, and gets one JSON line back,
/// {"ok":true,"result":...} or {"ok":false,"code":N,"error":"..."}; then the connection closes.
/// Commands: ping, status, vpnstatus, reload, stop, dco-review.
/// </summary>
public sealed class ManagementServer : IAsyncDisposable
{
    public const string SocketName = "ovpnas.sock";
    private const int MaxRequest = 64 * 1024;
    /// <summary>How long a connection may take to send its request line.</summary>
    public static readonly TimeSpan DefaultRequestTimeout = TimeSpan.FromSeconds(10);
    private static readonly TimeSpan ReplyTimeout = TimeSpan.FromSeconds(10);

    private readonly IManagementTarget _target;
    private readonly Socket _listener;
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _accept;
    private readonly uint _ownUid;
    private readonly TimeSpan _requestTimeout;

    private ManagementServer(IManagementTarget target, string path, Socket listener, TimeSpan requestTimeout)
    {
        _target = target;
        _requestTimeout = requestTimeout;
        SocketPath = path;
        _listener = listener;
        _ownUid = OwnUid();
        _accept = Task.Run(AcceptLoopAsync);
    }

    public string SocketPath { get; }

    public static string PathFor(string dataDir) => Path.Combine(dataDir, SocketName);

    /// <summary>Binds the socket (replacing a stale one) and starts serving. Throws if another server answers on it.</summary>
    public static ManagementServer Start(IManagementTarget target, string dataDir, TimeSpan? requestTimeout = null)
    {
        var path = PathFor(dataDir);
        if (File.Exists(path))
        {
            using var probe = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            try
            {
                probe.Connect(new UnixDomainSocketEndPoint(path));
                throw new InvalidOperationException($"another server is already running on {path}");
            }
            catch (SocketException)
            {
                // Nobody listens: a leftover of a crashed server.
                File.Delete(path);
            }
        }

        var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            s.Bind(new UnixDomainSocketEndPoint(path));
            // Before listen(): until then nobody can connect, so there is no window with a wider mode.
            File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite);
            s.Listen(16);
        }
        catch
        {
            s.Dispose();
            throw;
        }

        Log.Info("mgmt", $"management socket {path}");
        return new ManagementServer(target, path, s, requestTimeout ?? DefaultRequestTimeout);
    }

    private async Task AcceptLoopAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            Socket conn;
            try
            {
                conn = await _listener.AcceptAsync(_stop.Token).ConfigureAwait(false);
            }
            catch (Exception) when (_stop.IsCancellationRequested)
            {
                return;
            }
            catch (SocketException)
            {
                continue;
            }

            _ = Task.Run(() => HandleAsync(conn));
        }
    }

    private async Task HandleAsync(Socket conn)
    {
        using var _ = conn;
        // The timeout bounds the client's request (a peer that connects and never writes); the
        // reply gets a fresh one below, so a slow command (a status that probes the kernel on a
        // loaded machine) still answers instead of having its connection dropped unanswered.
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(_stop.Token);
        cts.CancelAfter(_requestTimeout);
        JsonObject reply;
        Action? after = null;
        try
        {
            var uid = PeerUid(conn);
            if (uid != 0 && uid != _ownUid)
            {
                reply = Error(ManagementCodes.Usage, $"permission denied: uid {uid} is neither root nor the server's uid");
            }
            else
            {
                var line = await ReadLineAsync(conn, cts.Token).ConfigureAwait(false);
                (reply, after) = Dispatch(line);
            }
        }
        catch (OperationCanceledException)
        {
            return;
        }
        catch (Exception e) when (e is SocketException or IOException)
        {
            return;
        }

        try
        {
            using var sendCts = CancellationTokenSource.CreateLinkedTokenSource(_stop.Token);
            sendCts.CancelAfter(ReplyTimeout);
            var bytes = Encoding.UTF8.GetBytes(reply.ToJsonString() + "\n");
            await conn.SendAsync(bytes, SocketFlags.None, sendCts.Token).ConfigureAwait(false);
            conn.Shutdown(SocketShutdown.Both);
        }
        catch (Exception e) when (e is SocketException or OperationCanceledException or ObjectDisposedException)
        {
        }
        finally
        {
            after?.Invoke();
        }
    }

    private (JsonObject Reply, Action? After) Dispatch(string? line)
    {
        string? command;
        try
        {
            command = line is null ? null : JsonNode.Parse(line)?["command"]?.GetValue<string>();
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException or FormatException)
        {
            return (Error(ManagementCodes.Usage, "request is not a JSON object with a string 'command'"), null);
        }

        try
        {
            switch (command)
            {
                case "ping":
                    return (Ok(JsonValue.Create("pong")), null);
                case "status":
                    return (Ok(JsonSerializer.SerializeToNode(_target.GetStatus(), ManagementJson.Options)), null);
                case "vpnstatus":
                    return (Ok(JsonSerializer.SerializeToNode(_target.GetVpnStatus(), ManagementJson.Options)), null);
                case "dco-review":
                    return (Ok(JsonSerializer.SerializeToNode(_target.GetDcoReview(), ManagementJson.Options)), null);
                case "reload":
                    Log.Info("mgmt", "reload requested");
                    return (Ok(JsonSerializer.SerializeToNode(_target.Reload(), ManagementJson.Options)), null);
                case "stop":
                    Log.Info("mgmt", "stop requested");
                    // Reply first, then stop: the client learns that the request was accepted.
                    return (Ok(JsonValue.Create("stopping")), _target.RequestStop);
                case null:
                    return (Error(ManagementCodes.Usage, "missing 'command'"), null);
                default:
                    return (Error(ManagementCodes.Usage, $"unknown command '{command}' (ping, status, vpnstatus, dco-review, reload, stop)"), null);
            }
        }
        catch (Ovpn.ControlPlane.Config.ConfigValidationException e)
        {
            return (Error(ManagementCodes.Usage, e.Message), null);
        }
        catch (Exception e)
        {
            Log.Warn("mgmt", $"command '{command}' failed: {e.Message}");
            return (Error(ManagementCodes.Runtime, $"{e.Message} ({e.GetType().Name})"), null);
        }
    }

    private static JsonObject Ok(JsonNode? result) => new() { ["ok"] = true, ["result"] = result };

    private static JsonObject Error(int code, string message) => new() { ["ok"] = false, ["code"] = code, ["error"] = message };

    private static async Task<string?> ReadLineAsync(Socket conn, CancellationToken ct)
    {
        var buf = new byte[MaxRequest];
        int have = 0;
        while (have < buf.Length)
        {
            int n = await conn.ReceiveAsync(buf.AsMemory(have), SocketFlags.None, ct).ConfigureAwait(false);
            if (n == 0)
            {
                break;
            }

            int nl = Array.IndexOf(buf, (byte)'\n', have, n);
            have += n;
            if (nl >= 0)
            {
                return Encoding.UTF8.GetString(buf, 0, nl);
            }
        }

        return have == 0 ? null : Encoding.UTF8.GetString(buf, 0, have);
    }

    /// <summary>The uid of the connected process (SO_PEERCRED: struct ucred { pid, uid, gid }).</summary>
    internal static uint PeerUid(Socket s)
    {
        Span<byte> cred = stackalloc byte[12];
        int n = s.GetRawSocketOption(1 /* SOL_SOCKET */, 17 /* SO_PEERCRED */, cred);
        if (n < 12)
        {
            throw new IOException("SO_PEERCRED returned too little data");
        }

        return BitConverter.ToUInt32(cred[4..8]);
    }

    internal static uint OwnUid()
    {
        foreach (var line in File.ReadLines("/proc/self/status"))
        {
            if (line.StartsWith("Uid:", StringComparison.Ordinal))
            {
                // Real, effective, saved, fs: the effective uid is the one the socket was created as.
                var parts = line[4..].Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries);
                return uint.Parse(parts[1], System.Globalization.CultureInfo.InvariantCulture);
            }
        }

        return 0;
    }

    public async ValueTask DisposeAsync()
    {
        if (_stop.IsCancellationRequested)
        {
            return;
        }

        _stop.Cancel();
        _listener.Dispose();
        await _accept.ConfigureAwait(false);
        try
        {
            File.Delete(SocketPath);
        }
        catch (IOException)
        {
        }

        _stop.Dispose();
    }
}

/// <summary>Exit codes shared by the management protocol and the CLI.</summary>
public static class ManagementCodes
{
    public const int Ok = 0;
    public const int Usage = 1;
    public const int Runtime = 2;
    public const int NotRunning = 3;
}

/// <summary>No server answers on the management socket.</summary>
public sealed class ServerNotRunningException(string message) : Exception(message);

/// <summary>The server answered with an error; <see cref="Code"/> is one of <see cref="ManagementCodes"/>.</summary>
public sealed class ManagementException(int code, string message) : Exception(message)
{
    public int Code { get; } = code;
}

/// <summary>Client side of the management socket.</summary>
public static class ManagementClient
{
    /// <summary>Sends one command and returns its "result". Throws ServerNotRunningException / ManagementException.</summary>
    public static async Task<JsonElement> SendAsync(string dataDir, string command, TimeSpan timeout, CancellationToken ct = default)
    {
        var path = ManagementServer.PathFor(dataDir);
        if (!File.Exists(path))
        {
            throw new ServerNotRunningException($"server not running: no management socket at {path}");
        }

        // The request is ready before connecting: the server times out a connection whose request
        // does not arrive, and building it can take a while on a cold, loaded runtime.
        var req = Encoding.UTF8.GetBytes(new JsonObject { ["command"] = command }.ToJsonString() + "\n");
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(ct);
        cts.CancelAfter(timeout);
        using var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            await s.ConnectAsync(new UnixDomainSocketEndPoint(path), cts.Token).ConfigureAwait(false);
        }
        catch (SocketException e)
        {
            throw new ServerNotRunningException($"server not running: cannot connect to {path} ({e.SocketErrorCode})");
        }

        await s.SendAsync(req, SocketFlags.None, cts.Token).ConfigureAwait(false);
        using var ms = new MemoryStream();
        var buf = new byte[16384];
        try
        {
            while (ms.Length < 16 << 20)
            {
                int n = await s.ReceiveAsync(buf, SocketFlags.None, cts.Token).ConfigureAwait(false);
                if (n == 0)
                {
                    break;
                }

                ms.Write(buf, 0, n);
            }
        }
        catch (OperationCanceledException) when (!ct.IsCancellationRequested)
        {
            throw new ManagementException(ManagementCodes.Runtime, $"no answer from the server within {timeout.TotalSeconds:0} s");
        }

        if (ms.Length == 0)
        {
            throw new ManagementException(ManagementCodes.Runtime, "the server closed the management connection without an answer");
        }

        using var doc = JsonDocument.Parse(ms.ToArray());
        var root = doc.RootElement;
        if (root.TryGetProperty("ok", out var ok) && ok.ValueKind == JsonValueKind.True)
        {
            return root.TryGetProperty("result", out var r) ? r.Clone() : default;
        }

        int code = root.TryGetProperty("code", out var c) && c.TryGetInt32(out var ci) ? ci : ManagementCodes.Runtime;
        var msg = root.TryGetProperty("error", out var er) ? er.GetString() : "unknown error";
        throw new ManagementException(code, msg ?? "unknown error");
    }
}
