// SPDX-License-Identifier: MIT
namespace Ovpn.DataPlane.Offload;

/// <summary>Why the offload engine dropped a packet. Every drop is counted under exactly one reason
/// (per peer when the peer is known, else globally).</summary>
public enum OffloadDropReason
{
    Malformed,
    UnknownPeer,
    UnknownKey,
    AuthFailed,
    Replay,
    NoKey,
    NoRoute,
    SourceAddress,
    PacketIdExhausted,
    TooBig,
    WrongLink,
    NoBuffer,
    QueueFull,
    SendFailed,
    PeerGone,

    /// <summary>A frame read from a TSO-enabled TUN that <see cref="TcpSegmenter"/> refused (see <see cref="TunFrameError"/>).</summary>
    TunFrameRefused,
}
