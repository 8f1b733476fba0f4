// SPDX-License-Identifier: MIT
namespace Ovpn.DataPlane;

/// <summary>
/// Port for a layer-3 TUN device (no packet-information header). Read blocks until a packet
/// arrives and returns 0 once the device is closed. Read is called by one thread; Write may be
/// called concurrently from others.
/// </summary>
public interface ITunDevice : IDisposable
{
    string Name { get; }

    int Read(Span<byte> buffer);

    void Write(ReadOnlySpan<byte> packet);
}

/// <summary>
/// Optional: a TUN port that can say "nothing queued" without waiting. The offload engine's TUN
/// reader drains what is queued this way and sends the sealed packets in one batch (one sendmmsg,
/// UDP GSO for equal-size runs such as TCP ACKs) before it blocks again in <see cref="ITunDevice.Read"/>.
/// </summary>
public interface ITunTryRead
{
    /// <summary>Reads one queued packet; -1 when none is queued (never blocks).</summary>
    int TryRead(Span<byte> buffer);
}
