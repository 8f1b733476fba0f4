// SPDX-License-Identifier: MIT
namespace Ovpn.Protocol.Wire;

/// <summary>OpenVPN packet opcodes (high 5 bits of the first byte).</summary>
public enum Opcode : byte
{
    ControlHardResetClientV1 = 1,
    ControlHardResetServerV1 = 2,
    ControlSoftResetV1 = 3,
    ControlV1 = 4,
    AckV1 = 5,
    DataV1 = 6,
    ControlHardResetClientV2 = 7,
    ControlHardResetServerV2 = 8,
    DataV2 = 9,
    ControlHardResetClientV3 = 10,
    ControlWkcV1 = 11,
}

/// <summary>
/// First byte of every packet:
/// <code>
///  bit 7 6 5 4 3 | 2 1 0
///      opcode    | key_id      byte = (opcode &lt;&lt; 3) | key_id
/// </code>
/// </summary>
public static class OpcodeByte
{
    public const int KeyIdMask = 0x07;
    public const int OpcodeShift = 3;

    public static byte Compose(Opcode op, int keyId)
    {
        if ((uint)keyId > KeyIdMask)
        {
            throw new ArgumentOutOfRangeException(nameof(keyId), keyId, "key_id must be 0..7");
        }

        if ((byte)op > 31)
        {
            throw new ArgumentOutOfRangeException(nameof(op), op, "opcode must fit in 5 bits");
        }

        return (byte)(((byte)op << OpcodeShift) | keyId);
    }

    public static Opcode GetOpcode(byte b) => (Opcode)(b >> OpcodeShift);

    public static int GetKeyId(byte b) => b & KeyIdMask;

    public static bool IsData(Opcode op) => op is Opcode.DataV1 or Opcode.DataV2;

    /// <summary>True for the control opcodes a 2.6 peer accepts (3..11 except the data opcodes).</summary>
    public static bool IsControl(Opcode op) =>
        op is Opcode.ControlSoftResetV1 or Opcode.ControlV1 or Opcode.AckV1
            or Opcode.ControlHardResetClientV2 or Opcode.ControlHardResetServerV2
            or Opcode.ControlHardResetClientV3 or Opcode.ControlWkcV1
            or Opcode.ControlHardResetClientV1 or Opcode.ControlHardResetServerV1;
}
