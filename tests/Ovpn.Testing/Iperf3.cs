// SPDX-License-Identifier: MIT
using System.Globalization;
using System.Net;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace Ovpn.Testing;

/// <summary>Throughput reported by iperf3 -J (for UDP both values are the same "sum").</summary>
public readonly record struct Iperf3Result(double SentBitsPerSecond, double ReceivedBitsPerSecond, string Json);

/// <summary>Runs an iperf3 server in one namespace and a client in another.</summary>
public static partial class Iperf3
{
    [GeneratedRegex("Server listening")]
    private static partial Regex ListeningRegex();

    /// <summary>
    /// Starts <c>iperf3 -s -1</c> bound to <paramref name="addr"/> in <paramref name="server"/>,
    /// runs <c>iperf3 -c addr -J</c> plus <paramref name="clientArgs"/> (default "-t 2") in
    /// <paramref name="client"/>, and parses the JSON. The client is bounded by
    /// <paramref name="timeout"/> (default 60 s).
    /// </summary>
    public static async Task<Iperf3Result> RunAsync(NetNs server, NetNs client, IPAddress addr, string[]? clientArgs = null,
        TimeSpan? timeout = null, int port = 5201)
    {
        ArgumentNullException.ThrowIfNull(server);
        ArgumentNullException.ThrowIfNull(client);
        ArgumentNullException.ThrowIfNull(addr);
        Requirements.RequireOrFail(Requirement.Root, Requirement.Iperf3);
        string p = port.ToString(CultureInfo.InvariantCulture);
        // --forceflush: stdout is a pipe, and we need the "Server listening" line before connecting.
        using var srv = server.Start("iperf3", "-s", "-1", "-B", addr.ToString(), "-p", p, "--forceflush");
        await srv.WaitForLineAsync(ListeningRegex(), TimeSpan.FromSeconds(10)).ConfigureAwait(false);
        string[] args = ["-c", addr.ToString(), "-p", p, "-J", .. (clientArgs ?? ["-t", "2"])];
        var r = await client.ExecAsync(timeout ?? TimeSpan.FromSeconds(60), "iperf3", args).ConfigureAwait(false);
        return Parse(r.Stdout, r);
    }

    /// <summary>Parses iperf3 -J output. Throws with iperf3's own error text when it reports one.</summary>
    public static Iperf3Result Parse(string json, ExecResult? context = null)
    {
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(json);
        }
        catch (JsonException e)
        {
            throw new InvalidOperationException($"iperf3 did not print JSON: {context?.ToString() ?? json}", e);
        }
        using (doc)
        {
            var root = doc.RootElement;
            if (root.TryGetProperty("error", out var err))
                throw new InvalidOperationException($"iperf3 failed: {err.GetString()}");
            var end = root.GetProperty("end");
            if (end.TryGetProperty("sum_sent", out var sent) && end.TryGetProperty("sum_received", out var received))
                return new Iperf3Result(sent.GetProperty("bits_per_second").GetDouble(), received.GetProperty("bits_per_second").GetDouble(), json);
            if (end.TryGetProperty("sum", out var sum)) // UDP
            {
                double bps = sum.GetProperty("bits_per_second").GetDouble();
                return new Iperf3Result(bps, bps, json);
            }
            throw new InvalidOperationException("iperf3 JSON has no end.sum_sent/sum_received or end.sum.");
        }
    }
}
