// SPDX-License-Identifier: MIT
using Ovpn.Protocol.Data;
using Ovpn.Protocol.Keys;

namespace Ovpn.DataPlane.Offload;

/// <summary>
/// One direction of a data channel key as the offload workers use it: DATA_V2 seal and open in
/// the OpenVPN 2.6 layout (see <see cref="AeadCodec"/>). Not thread-safe; the engine gives each
/// key direction to exactly one worker.
/// </summary>
public interface IPacketAead : IDisposable
{
    /// <summary>Writes header | packet-id | tag | ciphertext into dst; plaintext may alias dst[24..] exactly.</summary>
    int SealDataV2(Span<byte> dst, int keyId, uint peerId, uint packetId, ReadOnlySpan<byte> plaintext);

    /// <summary>Authenticates and decrypts a DATA_V2 packet; dst may alias wire[24..] exactly.</summary>
    DataDropReason Open(ReadOnlySpan<byte> wire, Span<byte> dst, out int written, out uint packetId);
}

/// <summary>Builds <see cref="IPacketAead"/>s. The platform may supply a faster one (OpenSSL EVP directly).</summary>
public interface IPacketAeadFactory
{
    string Name { get; }

    IPacketAead Create(DataCipher cipher, ReadOnlySpan<byte> key, ReadOnlySpan<byte> implicitIv);
}

/// <summary>The portable default: the BCL's AesGcm / ChaCha20Poly1305 through <see cref="AeadCodec"/>.</summary>
public sealed class BclPacketAeadFactory : IPacketAeadFactory
{
    public static readonly BclPacketAeadFactory Instance = new();

    public string Name => "bcl";

    public IPacketAead Create(DataCipher cipher, ReadOnlySpan<byte> key, ReadOnlySpan<byte> implicitIv) =>
        new Codec(new AeadCodec(cipher, key, implicitIv));

    private sealed class Codec(AeadCodec c) : IPacketAead
    {
        public int SealDataV2(Span<byte> dst, int keyId, uint peerId, uint packetId, ReadOnlySpan<byte> plaintext) =>
            c.SealDataV2(dst, keyId, peerId, packetId, plaintext);

        public DataDropReason Open(ReadOnlySpan<byte> wire, Span<byte> dst, out int written, out uint packetId) =>
            c.Open(wire, dst, out written, out packetId);

        public void Dispose() => c.Dispose();
    }
}
