// SPDX-License-Identifier: MIT
using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text.RegularExpressions;

namespace Ovpn.Testing;

/// <summary>Outcome of <see cref="TrafficCheck.Ping"/>. Loss is 0..1.</summary>
public readonly record struct PingResult(int Transmitted, int Received, double Loss, string Output);

/// <summary>Outcome of a verified bulk transfer.</summary>
public readonly record struct TransferResult(long Bytes, TimeSpan Elapsed, string Sha256Hex)
{
    public double BitsPerSecond => Elapsed.TotalSeconds > 0 ? Bytes * 8 / Elapsed.TotalSeconds : 0;
}

/// <summary>Reachability and integrity checks between namespaces.</summary>
public static partial class TrafficCheck
{
    [GeneratedRegex(@"(\d+) packets transmitted, (\d+) (?:packets )?received")]
    private static partial Regex PingSummaryRegex();

    /// <summary>
    /// Runs <c>ping</c> in <paramref name="from"/>: <paramref name="count"/> echo requests 200 ms
    /// apart, each waiting up to 1 s, the whole run bounded by <paramref name="timeout"/>
    /// (default count * 0.2 s + 3 s).
    /// </summary>
    public static PingResult Ping(NetNs from, IPAddress to, int count = 3, TimeSpan? timeout = null)
        => PingAsync(from, to, count, timeout).GetAwaiter().GetResult();

    public static async Task<PingResult> PingAsync(NetNs from, IPAddress to, int count = 3, TimeSpan? timeout = null)
    {
        ArgumentNullException.ThrowIfNull(from);
        ArgumentNullException.ThrowIfNull(to);
        ArgumentOutOfRangeException.ThrowIfLessThan(count, 1);
        var deadline = timeout ?? TimeSpan.FromSeconds(count * 0.2 + 3);
        int deadlineSeconds = Math.Max(1, (int)Math.Ceiling(deadline.TotalSeconds));
        var r = await from.ExecAsync(deadline + TimeSpan.FromSeconds(5), "ping",
            to.AddressFamily == AddressFamily.InterNetworkV6 ? "-6" : "-4",
            "-n", "-c", count.ToString(CultureInfo.InvariantCulture), "-i", "0.2", "-W", "1",
            "-w", deadlineSeconds.ToString(CultureInfo.InvariantCulture), to.ToString()).ConfigureAwait(false);
        var m = PingSummaryRegex().Match(r.Stdout);
        if (!m.Success)
            throw new InvalidOperationException($"[{from.Name}] ping {to} produced no summary: {r}");
        int tx = int.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture);
        int rx = int.Parse(m.Groups[2].Value, CultureInfo.InvariantCulture);
        return new PingResult(tx, rx, tx == 0 ? 1.0 : 1.0 - (double)rx / tx, r.Stdout);
    }

    /// <summary>
    /// Sends <paramref name="bytes"/> of deterministic pseudo-random data over TCP from a socket in
    /// <paramref name="from"/> to a listener on <paramref name="toAddr"/> in <paramref name="to"/>.
    /// Both sides hash the stream with SHA-256; throws <see cref="InvalidDataException"/> if the
    /// receiver got a different length or hash, <see cref="TimeoutException"/> after
    /// <paramref name="timeout"/> (default 60 s). All in-process: the sockets are created on
    /// threads that entered the namespaces.
    /// </summary>
    public static async Task<TransferResult> TransferAsync(NetNs from, NetNs to, IPAddress toAddr, long bytes,
        TimeSpan? timeout = null, ulong seed = 0x9E3779B97F4A7C15)
    {
        ArgumentNullException.ThrowIfNull(from);
        ArgumentNullException.ThrowIfNull(to);
        ArgumentNullException.ThrowIfNull(toAddr);
        ArgumentOutOfRangeException.ThrowIfNegative(bytes);
        using var cts = new CancellationTokenSource(timeout ?? TimeSpan.FromSeconds(60));
        using var listener = to.CreateSocket(toAddr.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        using var client = from.CreateSocket(toAddr.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(toAddr, 0));
        listener.Listen(1);
        var endpoint = (IPEndPoint)listener.LocalEndPoint!;
        var sw = Stopwatch.StartNew();
        try
        {
            Task<(long, byte[])> receive = ReceiveAllAsync(listener, cts.Token);
            Task<byte[]> send = SendAllAsync(client, endpoint, bytes, seed, cts.Token);
            // If one side fails, the other would wait for the timeout; surface the first failure.
            var first = await Task.WhenAny(receive, send).ConfigureAwait(false);
            if (first.IsFaulted)
                await first.ConfigureAwait(false);
            byte[] sentHash = await send.ConfigureAwait(false);
            var (received, receivedHash) = await receive.ConfigureAwait(false);
            sw.Stop();
            if (received != bytes)
                throw new InvalidDataException($"Transfer {from.Name} -> {to.Name} ({toAddr}): sent {bytes} bytes, received {received}.");
            if (!CryptographicOperations.FixedTimeEquals(sentHash, receivedHash))
                throw new InvalidDataException($"Transfer {from.Name} -> {to.Name} ({toAddr}): SHA-256 mismatch over {bytes} bytes (data corrupted).");
            return new TransferResult(bytes, sw.Elapsed, Convert.ToHexStringLower(receivedHash));
        }
        catch (OperationCanceledException) when (cts.IsCancellationRequested)
        {
            throw new TimeoutException($"Transfer of {bytes} bytes {from.Name} -> {to.Name} ({toAddr}) did not finish within the timeout.");
        }
    }

    private static async Task<(long, byte[])> ReceiveAllAsync(Socket listener, CancellationToken ct)
    {
        using var conn = await listener.AcceptAsync(ct).ConfigureAwait(false);
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        byte[] buffer = new byte[64 * 1024];
        long total = 0;
        while (true) // ends at EOF, on error, or on cancellation
        {
            int n = await conn.ReceiveAsync(buffer, SocketFlags.None, ct).ConfigureAwait(false);
            if (n == 0)
                break;
            hash.AppendData(buffer, 0, n);
            total += n;
        }
        return (total, hash.GetHashAndReset());
    }

    private static async Task<byte[]> SendAllAsync(Socket client, IPEndPoint endpoint, long bytes, ulong seed, CancellationToken ct)
    {
        await client.ConnectAsync(endpoint, ct).ConfigureAwait(false);
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        byte[] buffer = new byte[64 * 1024];
        ulong state = seed == 0 ? 1 : seed;
        long remaining = bytes;
        while (remaining > 0)
        {
            int n = (int)Math.Min(buffer.Length, remaining);
            Fill(buffer.AsSpan(0, n), ref state);
            hash.AppendData(buffer, 0, n);
            int off = 0;
            while (off < n)
                off += await client.SendAsync(buffer.AsMemory(off, n - off), SocketFlags.None, ct).ConfigureAwait(false);
            remaining -= n;
        }
        client.Shutdown(SocketShutdown.Send);
        return hash.GetHashAndReset();
    }

    /// <summary>xorshift64: deterministic, cheap, and not constant (so corruption shows in the hash).</summary>
    private static void Fill(Span<byte> dst, ref ulong state)
    {
        for (int i = 0; i < dst.Length; i += 8)
        {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ulong v = state;
            for (int j = 0; j < 8 && i + j < dst.Length; j++, v >>= 8)
                dst[i + j] = (byte)v;
        }
    }
}
