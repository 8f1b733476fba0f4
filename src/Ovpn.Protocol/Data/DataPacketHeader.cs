// SPDX-License-Identifier: MIT
using System.Buffers.Binary;

namespace Ovpn.Protocol.Data;

/// <summary>
/// Pure helpers for the data-packet header (protocol notes sections 2 and 13.2):
/// <code>
/// P_DATA_V1: [0x30|kid]                      header 1 byte
/// P_DATA_V2: [0x48|kid][peer-id u24 BE]      header 4 bytes
/// first byte = (opcode &lt;&lt; 3) | key_id
/// </code>
/// Opcode values are repeated here as plain constants so that this folder does not depend on
/// the Wire folder; they equal <c>Opcode.DataV1</c>/<c>Opcode.DataV2</c>.
/// </summary>
public static class DataPacketHeader
{
    public const byte OpcodeDataV1 = 6;
    public const byte OpcodeDataV2 = 9;
    public const int OpcodeShift = 3;
    public const int KeyIdMask = 0x07;
    public const int V1HeaderLength = 1;
    public const int V2HeaderLength = 4;
    /// <summary>0xFFFFFF = MAX_PEER_ID, meaning "no peer-id assigned".</summary>
    public const uint NoPeerId = 0xFFFFFF;

    public static int GetOpcode(byte first) => first >> OpcodeShift;

    public static int GetKeyId(byte first) => first & KeyIdMask;

    public static byte Compose(byte opcode, int keyId) => (byte)((opcode << OpcodeShift) | (keyId & KeyIdMask));

    /// <summary>True iff the packet is non-empty and its opcode is P_DATA_V1 or P_DATA_V2.</summary>
    public static bool IsData(ReadOnlySpan<byte> wire)
    {
        if (wire.IsEmpty)
        {
            return false;
        }

        int op = GetOpcode(wire[0]);
        return op == OpcodeDataV1 || op == OpcodeDataV2;
    }

    /// <summary>Header length for a data opcode (1 for V1, 4 for V2), or -1 for other opcodes.</summary>
    public static int GetHeaderLength(int opcode) => opcode switch
    {
        OpcodeDataV1 => V1HeaderLength,
        OpcodeDataV2 => V2HeaderLength,
        _ => -1,
    };

    /// <summary>Reads the 24-bit peer-id of a P_DATA_V2 packet; false for V1, other opcodes or
    /// a packet shorter than the 4-byte header.</summary>
    public static bool TryGetPeerId(ReadOnlySpan<byte> wire, out uint peerId)
    {
        peerId = 0;
        if (wire.Length < V2HeaderLength || GetOpcode(wire[0]) != OpcodeDataV2)
        {
            return false;
        }

        peerId = BinaryPrimitives.ReadUInt32BigEndian(wire) & 0x00FFFFFF;
        return true;
    }

    /// <summary>Writes the V2 header (4 bytes): opcode/key id and the 24-bit peer id.</summary>
    public static void WriteV2(Span<byte> dst, int keyId, uint peerId)
    {
        if (peerId > NoPeerId)
        {
            throw new ArgumentOutOfRangeException(nameof(peerId), "peer-id is 24 bits");
        }

        BinaryPrimitives.WriteUInt32BigEndian(dst, ((uint)Compose(OpcodeDataV2, keyId) << 24) | peerId);
    }
}
