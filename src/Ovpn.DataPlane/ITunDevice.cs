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
