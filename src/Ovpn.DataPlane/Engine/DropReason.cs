// SPDX-License-Identifier: MIT
namespace Ovpn.DataPlane.Engine;

/// <summary>Why the engine dropped a packet. Every drop is counted under one of these.</summary>
public enum DropReason
{
    Malformed,
    UnknownPeer,
    UnknownKey,
    AuthFailed,
    Replay,
    NoKey,
    NoRoute,
    SourceAddress,
    Compression,
    PacketIdExhausted,
    TooBig,
    WrongLink,
}
