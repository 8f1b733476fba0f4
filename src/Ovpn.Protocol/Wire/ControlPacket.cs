// SPDX-License-Identifier: MIT
namespace Ovpn.Protocol.Wire;

/// <summary>
/// One control packet in plain form (what is inside tls-auth / tls-crypt wrapping).
/// Mutable data holder; not thread-safe.
/// </summary>
public sealed class ControlPacket
{
    public Opcode Opcode;
    public int KeyId;

    /// <summary>Sender's own session id.</summary>
    public ulong SessionId;

    /// <summary>0..8 acknowledged msg-ids.</summary>
    public uint[] Acks = [];

    /// <summary>Receiver's session id; meaningful (and on the wire) iff <see cref="Acks"/> is non-empty.</summary>
    public ulong PeerSessionId;

    /// <summary>Reliability msg-id; null for <see cref="Opcode.AckV1"/>.</summary>
    public uint? MessageId;

    /// <summary>TLS bytes for ControlV1, TLVs/empty for resets.</summary>
    public ReadOnlyMemory<byte> Payload;
}
