// SPDX-License-Identifier: MIT
using System.Security.Cryptography;
using BenchmarkDotNet.Attributes;
using Ovpn.DataPlane.Offload;
using Ovpn.Platform.Net;
using Ovpn.Protocol.Data;
using Ovpn.Protocol.Keys;

namespace Ovpn.Benchmarks;

/// <summary>
/// Data channel AEAD per packet, as the offload workers call it: one codec per key direction
/// (BCL AesGcm or OpenSSL EVP directly),
/// DATA_V2 header, nonce on the stack, output into a preallocated buffer. Allocated bytes must be 0.
/// Run: dotnet run -c Release --project bench/Ovpn.Benchmarks -- --filter '*SealOpen*'
/// </summary>
[MemoryDiagnoser]
public class SealOpenBenchmarks
{
    private IPacketAead _sealer = null!;
    private IPacketAead _opener = null!;
    private byte[] _plain = null!;
    private byte[] _wire = null!;
    private byte[] _sealed = null!;
    private byte[] _dst = null!;
    private uint _pid;

    [Params(DataCipher.Aes128Gcm, DataCipher.Aes256Gcm, DataCipher.ChaCha20Poly1305)]
    public DataCipher Cipher { get; set; }

    /// <summary>"bcl" = AesGcm/ChaCha20Poly1305 via AeadCodec; "openssl" = libcrypto EVP directly.</summary>
    [Params("bcl", "openssl")]
    public string Impl { get; set; } = "bcl";

    [Params(64, 512, 1400)]
    public int Size { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        var key = RandomNumberGenerator.GetBytes(DataCipherNames.KeyLength(Cipher));
        var tail = RandomNumberGenerator.GetBytes(8);
        IPacketAeadFactory f = Impl == "openssl" ? OpenSslPacketAeadFactory.Instance : BclPacketAeadFactory.Instance;
        _sealer = f.Create(Cipher, key, tail);
        _opener = f.Create(Cipher, key, tail);
        _plain = RandomNumberGenerator.GetBytes(Size);
        _wire = new byte[Size + AeadCodec.V2Overhead];
        _dst = new byte[Size + AeadCodec.V2Overhead];
        _sealed = new byte[Size + AeadCodec.V2Overhead];
        _sealer.SealDataV2(_sealed, 0, 7, 1, _plain);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _sealer.Dispose();
        _opener.Dispose();
    }

    [Benchmark]
    public int Seal() => _sealer.SealDataV2(_wire, 0, 7, ++_pid == 0 ? _pid = 1 : _pid, _plain);

    [Benchmark]
    public int Open()
    {
        var r = _opener.Open(_sealed, _dst, out int n, out _);
        return r == DataDropReason.None ? n : -1;
    }
}
