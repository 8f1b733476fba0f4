// SPDX-License-Identifier: MIT
namespace Ovpn.Protocol.Data;

/// <summary>
/// One direction-pair of data-channel crypto for one key: AEAD (<see cref="AeadCodec"/>) or the
/// legacy CBC+HMAC format (<see cref="CbcHmacCodec"/>). Not thread-safe; callers keep one per
/// sending or receiving context.
/// </summary>
public interface IDataChannelCodec : IDisposable
{
    int SealDataV2(Span<byte> dst, int keyId, uint peerId, uint packetId, ReadOnlySpan<byte> plaintext);

    int SealDataV1(Span<byte> dst, int keyId, uint packetId, ReadOnlySpan<byte> plaintext);

    DataDropReason Open(ReadOnlySpan<byte> wire, Span<byte> dst, out int written, out uint packetId);
}
