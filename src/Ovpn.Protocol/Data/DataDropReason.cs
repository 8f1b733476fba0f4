// SPDX-License-Identifier: MIT
namespace Ovpn.Protocol.Data;

/// <summary>Why a data packet was not delivered. The data path returns these instead of
/// throwing and counts them per reason.</summary>
public enum DataDropReason
{
    None = 0,
    /// <summary>Too short, wrong opcode or otherwise not parseable.</summary>
    Malformed,
    /// <summary>P_DATA_V2 peer-id that no session owns.</summary>
    UnknownPeer,
    /// <summary>Key id with no installed key.</summary>
    UnknownKey,
    /// <summary>AEAD tag or HMAC did not verify.</summary>
    AuthFailed,
    /// <summary>Packet id already seen, too old, or 0.</summary>
    Replay,
    /// <summary>Peer sent really compressed data (LZO 0x66, LZ4 0x69, v2 50 01..): we only do stub framing.</summary>
    CompressionUnsupported,
    /// <summary>Decrypted payload does not fit the caller's buffer.</summary>
    TooLarge,
    /// <summary>CBC padding invalid after a verified HMAC (should not happen with an honest peer).</summary>
    BadPadding,
}
