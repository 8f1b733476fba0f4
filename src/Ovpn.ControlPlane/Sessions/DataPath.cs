// SPDX-License-Identifier: MIT
using Ovpn.DataPlane;
using Ovpn.Protocol.Keys;

namespace Ovpn.ControlPlane.Sessions;

/// <summary>
/// One place a client's data channel can run: a data plane (offload engine, kernel module or a
/// single-threaded daemon) with its own TUN device and its own slice of the client pool.
/// </summary>
public sealed class DataPath(string name, IDataPlane plane, IpPool pool, bool isOffload, string tunName)
{
    private int _sessions;

    public string Name { get; } = name;

    public IDataPlane Plane { get; } = plane;

    public IpPool Pool { get; } = pool;

    public bool IsOffload { get; } = isOffload;

    public string TunName { get; } = tunName;

    public int Sessions => Volatile.Read(ref _sessions);

    internal void Attach() => Interlocked.Increment(ref _sessions);

    internal void Detach() => Interlocked.Decrement(ref _sessions);
}

/// <summary>What a negotiated client needs from its data path.</summary>
public readonly record struct PeerNeeds(bool DataV2, CompressionStub Compression, DataCipher Cipher, bool Tcp)
{
    /// <summary>Why DCO (kernel or userspace offload) cannot carry this peer, or null.</summary>
    public string? OffloadBlocker =>
        !DataCipherNames.IsAead(Cipher) ? $"cipher {DataCipherNames.ToName(Cipher)} is not AEAD"
        : !DataV2 ? "client does not support DATA_V2 (peer-id)"
        : Compression != CompressionStub.None ? "client uses compression framing"
        : null;
}

/// <summary>Chooses the data path of each new client.</summary>
public interface IDataPathSelector
{
    IReadOnlyList<DataPath> Paths { get; }

    /// <summary>The path for a client, and a reason when it is not the preferred one; null when none fits.</summary>
    DataPath? Select(PeerNeeds needs, out string? reason);
}

/// <summary>
/// Non-offload mode, as Access Server runs without DCO: several single-threaded daemons; a new client
/// goes to the least loaded daemon of its transport (UDP or TCP).
/// </summary>
public sealed class DaemonSelector(IReadOnlyList<DataPath> udp, IReadOnlyList<DataPath> tcp) : IDataPathSelector
{
    public IReadOnlyList<DataPath> Paths { get; } = [.. udp, .. tcp];

    public DataPath? Select(PeerNeeds needs, out string? reason)
    {
        reason = "offload is off (vpn.server.daemon.ovpndco=false)";
        var list = needs.Tcp && tcp.Count > 0 ? tcp : udp.Count > 0 ? udp : tcp;
        DataPath? best = null;
        foreach (var p in list)
        {
            if (p.Pool.InUse < p.Pool.Capacity && (best is null || p.Sessions < best.Sessions))
            {
                best = p;
            }
        }

        return best;
    }
}

/// <summary>
/// Offload mode: one offloaded data plane for every peer it can carry; peers that need what offload
/// cannot carry (CBC, compression framing, no DATA_V2) go to a non-offload daemon, with the reason.
/// </summary>
public sealed class OffloadSelector(DataPath offload, DataPath? fallback, bool offloadCarriesTcp = true) : IDataPathSelector
{
    public IReadOnlyList<DataPath> Paths { get; } = fallback is null ? [offload] : [offload, fallback];

    public DataPath? Select(PeerNeeds needs, out string? reason)
    {
        reason = needs.OffloadBlocker ?? (needs.Tcp && !offloadCarriesTcp ? "TCP transport (the kernel module offloads UDP peers)" : null);
        if (reason is null)
        {
            return offload;
        }

        reason = $"not offloaded: {reason}";
        return fallback;
    }
}
