// SPDX-License-Identifier: MIT
using System.Buffers.Binary;
using System.Runtime.InteropServices;
using Ovpn.DataPlane.Offload;
using Ovpn.Protocol.Data;
using Ovpn.Protocol.Keys;

namespace Ovpn.Platform.Net;

/// <summary>
/// Data channel AEAD through libcrypto's EVP interface directly. Why: the BCL's AesGcm re-runs
/// key setup and several checks per call; here the EVP context is keyed once and each packet costs
/// one IV re-init, one AAD update, one data update, final and the tag control, which is how
/// OpenVPN itself drives OpenSSL. Same wire format and results as <see cref="AeadCodec"/> (the
/// tests cross-check both ways). Not thread-safe: one instance per key direction per worker.
/// ChaCha20-Poly1305 does not go through the EVP AEAD object: see <see cref="ChaChaCodec"/> for why.
/// </summary>
public sealed unsafe partial class OpenSslPacketAeadFactory : IPacketAeadFactory
{
    public static readonly OpenSslPacketAeadFactory Instance = new();

    public string Name => "openssl-evp";

    /// <summary>True when libcrypto.so.3 can be loaded (else the engine falls back to the BCL).</summary>
    public static bool IsAvailable
    {
        get
        {
            try
            {
                return Evp.EVP_aes_256_gcm() != 0;
            }
            catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
            {
                return false;
            }
        }
    }

    public IPacketAead Create(DataCipher cipher, ReadOnlySpan<byte> key, ReadOnlySpan<byte> implicitIv) =>
        cipher == DataCipher.ChaCha20Poly1305 && ChaChaCodec.IsSupported
            ? new ChaChaCodec(key, implicitIv)
            : new Codec(cipher, key, implicitIv);

    /// <summary>
    /// The checks both codecs make before opening a DATA_V2 packet (opcode | peer-id(3) |
    /// packet-id(4) | tag(16) | ciphertext): long enough and the right opcode, else Malformed;
    /// ciphertext fits <paramref name="dstLength"/>, else TooLarge. Null when the packet may be opened.
    /// </summary>
    private static DataDropReason? CheckDataV2(ReadOnlySpan<byte> wire, int dstLength, out int ctLen, out uint packetId)
    {
        const int overhead = 24;
        ctLen = 0;
        packetId = 0;
        if (wire.Length <= overhead || DataPacketHeader.GetOpcode(wire[0]) != DataPacketHeader.OpcodeDataV2)
        {
            return DataDropReason.Malformed;
        }

        ctLen = wire.Length - overhead;
        if (ctLen > dstLength)
        {
            return DataDropReason.TooLarge;
        }

        packetId = BinaryPrimitives.ReadUInt32BigEndian(wire.Slice(4, 4));
        return null;
    }

    private sealed class Codec : IPacketAead
    {
        private const int TagSize = 16;
        private const int Overhead = 24;
        private nint _enc;
        private nint _dec;
        private readonly ulong _implicitIv;

        public Codec(DataCipher cipher, ReadOnlySpan<byte> key, ReadOnlySpan<byte> implicitIv)
        {
            if (key.Length != DataCipherNames.KeyLength(cipher) || implicitIv.Length != 8)
            {
                throw new ArgumentException("bad key or implicit IV length");
            }

            nint evp = cipher switch
            {
                DataCipher.Aes128Gcm => Evp.EVP_aes_128_gcm(),
                DataCipher.Aes256Gcm => Evp.EVP_aes_256_gcm(),
                DataCipher.ChaCha20Poly1305 => Evp.EVP_chacha20_poly1305(),
                _ => throw new NotSupportedException($"{DataCipherNames.ToName(cipher)} is not an AEAD cipher"),
            };
            _implicitIv = BinaryPrimitives.ReadUInt64BigEndian(implicitIv);
            _enc = Evp.EVP_CIPHER_CTX_new();
            _dec = Evp.EVP_CIPHER_CTX_new();
            fixed (byte* k = key)
            {
                if (_enc == 0 || _dec == 0 ||
                    Evp.EVP_CipherInit_ex(_enc, evp, 0, k, null, 1) != 1 ||
                    Evp.EVP_CipherInit_ex(_dec, evp, 0, k, null, 0) != 1)
                {
                    Dispose();
                    throw new InvalidOperationException("libcrypto EVP cipher init failed");
                }
            }
        }

        public int SealDataV2(Span<byte> dst, int keyId, uint peerId, uint packetId, ReadOnlySpan<byte> plaintext)
        {
            int total = Overhead + plaintext.Length;
            if (dst.Length < total || packetId == 0 || (uint)keyId > 7)
            {
                throw new ArgumentException("bad destination, packet id or key id");
            }

            DataPacketHeader.WriteV2(dst, keyId, peerId);
            BinaryPrimitives.WriteUInt32BigEndian(dst.Slice(4, 4), packetId);
            byte* nonce = stackalloc byte[12];
            BinaryPrimitives.WriteUInt32BigEndian(new Span<byte>(nonce, 4), packetId);
            BinaryPrimitives.WriteUInt64BigEndian(new Span<byte>(nonce + 4, 8), _implicitIv);
            fixed (byte* d = dst)
            fixed (byte* p = plaintext)
            {
                int outl;
                if (Evp.EVP_CipherInit_ex(_enc, 0, 0, null, nonce, 1) != 1 ||
                    Evp.EVP_CipherUpdate(_enc, null, &outl, d, 8) != 1 ||
                    Evp.EVP_CipherUpdate(_enc, d + Overhead, &outl, p, plaintext.Length) != 1 ||
                    Evp.EVP_CipherFinal_ex(_enc, d + Overhead + outl, &outl) != 1 ||
                    Evp.EVP_CIPHER_CTX_ctrl(_enc, Evp.EVP_CTRL_AEAD_GET_TAG, TagSize, d + 8) != 1)
                {
                    throw new InvalidOperationException("libcrypto EVP encrypt failed");
                }
            }

            return total;
        }

        public DataDropReason Open(ReadOnlySpan<byte> wire, Span<byte> dst, out int written, out uint packetId)
        {
            written = 0;
            packetId = 0;
            if (CheckDataV2(wire, dst.Length, out int ctLen, out uint pid) is { } refused)
            {
                return refused;
            }

            byte* nonce = stackalloc byte[12];
            BinaryPrimitives.WriteUInt32BigEndian(new Span<byte>(nonce, 4), pid);
            BinaryPrimitives.WriteUInt64BigEndian(new Span<byte>(nonce + 4, 8), _implicitIv);
            // The tag is copied out first: with in-place decryption the ciphertext region is overwritten.
            byte* tag = stackalloc byte[TagSize];
            wire.Slice(8, TagSize).CopyTo(new Span<byte>(tag, TagSize));
            int ok;
            fixed (byte* w = wire)
            fixed (byte* d = dst)
            {
                int outl, fin;
                ok = Evp.EVP_CipherInit_ex(_dec, 0, 0, null, nonce, 0) == 1 &&
                    Evp.EVP_CipherUpdate(_dec, null, &outl, w, 8) == 1 &&
                    Evp.EVP_CipherUpdate(_dec, d, &outl, w + Overhead, ctLen) == 1 &&
                    Evp.EVP_CIPHER_CTX_ctrl(_dec, Evp.EVP_CTRL_AEAD_SET_TAG, TagSize, tag) == 1 &&
                    Evp.EVP_CipherFinal_ex(_dec, d + outl, &fin) == 1 ? 1 : 0;
            }

            if (ok == 0)
            {
                // Do not leave unauthenticated plaintext behind.
                dst[..ctLen].Clear();
                return DataDropReason.AuthFailed;
            }

            written = ctLen;
            packetId = pid;
            return DataDropReason.None;
        }

        public void Dispose()
        {
            if (_enc != 0)
            {
                Evp.EVP_CIPHER_CTX_free(_enc);
                _enc = 0;
            }

            if (_dec != 0)
            {
                Evp.EVP_CIPHER_CTX_free(_dec);
                _dec = 0;
            }
        }
    }

    private static unsafe partial class Evp
    {
        private const string Lib = "libcrypto.so.3";
        public const int EVP_CTRL_AEAD_GET_TAG = 0x10;
        public const int EVP_CTRL_AEAD_SET_TAG = 0x11;

        [LibraryImport(Lib)]
        public static partial nint EVP_aes_128_gcm();

        [LibraryImport(Lib)]
        public static partial nint EVP_aes_256_gcm();

        [LibraryImport(Lib)]
        public static partial nint EVP_chacha20_poly1305();

        [LibraryImport(Lib)]
        public static partial nint EVP_CIPHER_CTX_new();

        [LibraryImport(Lib)]
        public static partial void EVP_CIPHER_CTX_free(nint ctx);

        [LibraryImport(Lib)]
        public static partial int EVP_CipherInit_ex(nint ctx, nint cipher, nint engine, byte* key, byte* iv, int enc);

        [LibraryImport(Lib)]
        public static partial int EVP_CipherUpdate(nint ctx, byte* output, int* outl, byte* input, int inl);

        [LibraryImport(Lib)]
        public static partial int EVP_CipherFinal_ex(nint ctx, byte* output, int* outl);

        [LibraryImport(Lib)]
        public static partial int EVP_CIPHER_CTX_ctrl(nint ctx, int type, int arg, void* ptr);
    }
}
