// SPDX-License-Identifier: MIT
using System.Net;
using Ovpn.Protocol.Keys;

namespace Ovpn.DataPlane;

/// <summary>Key slots of a peer, as in the kernel ovpn API (OVPN_KEY_SLOT_PRIMARY / SECONDARY).</summary>
public enum KeySlot : byte { Primary = 0, Secondary = 1 }

/// <summary>Why a peer was deleted (values as the kernel's enum ovpn_del_peer_reason).</summary>
public enum PeerDeleteReason : byte { Teardown = 0, Userspace = 1, Expired = 2, TransportError = 3, TransportDisconnect = 4 }

/// <summary>How a peer frames data-channel plaintext. Only the "no compression" stubs exist.</summary>
public enum CompressionStub : byte
{
    /// <summary>No framing byte (DCO-compatible; OpenVPN 2.6 default).</summary>
    None,

    /// <summary>`comp-lzo no`: one 0xFA byte in front.</summary>
    LzoNo,

    /// <summary>`compress` / `compress stub`: first byte moved to the end, 0xFB in front.</summary>
    Swap,

    /// <summary>`compress stub-v2`: no byte, except a leading 0x50 gets `50 00`.</summary>
    StubV2,
}

/// <summary>
/// Everything NEW_PEER carries: the peer id, where its packets go, and its VPN addresses. The two
/// init-only extras are what only a non-offloadable peer needs (the kernel supports neither): a
/// client that sends DATA_V1, and stub compression framing.
/// </summary>
public sealed record PeerConfig(uint PeerId, ILinkTransport Transport, IPAddress? VpnIPv4, IPAddress? VpnIPv6)
{
    public bool DataV2 { get; init; } = true;

    public CompressionStub Compression { get; init; } = CompressionStub.None;

    /// <summary>Whether the kernel ovpn module could carry this peer, and if not, why.</summary>
    public string? OffloadBlocker => !DataV2 ? "client does not support DATA_V2 (peer-id)"
        : Compression != CompressionStub.None ? "client uses compression framing" : null;
}

/// <summary>
/// One direction of a key (the kernel's OVPN_KEY_DIR nest): cipher key and 8-byte nonce tail. The
/// legacy CBC data channel, which only the non-offload daemons carry, uses an HMAC key instead of
/// the nonce tail (<see cref="ForCbc"/>).
/// </summary>
public sealed class KeyDirection(byte[] cipherKey, byte[] nonceTail)
{
    public byte[] CipherKey { get; } = cipherKey;
    public byte[] NonceTail { get; } = nonceTail.Length == 8 ? nonceTail : throw new ArgumentException("nonce tail must be 8 bytes", nameof(nonceTail));

    /// <summary>HMAC key of the CBC+HMAC data channel; null for AEAD keys.</summary>
    public byte[]? HmacKey { get; private init; }

    public static KeyDirection ForCbc(byte[] cipherKey, byte[] hmacKey) => new(cipherKey, new byte[8]) { HmacKey = hmacKey };

    /// <summary>Wipes the key bytes once the engine has built its cipher contexts.</summary>
    public void Clear()
    {
        System.Security.Cryptography.CryptographicOperations.ZeroMemory(CipherKey);
        System.Security.Cryptography.CryptographicOperations.ZeroMemory(NonceTail);
        if (HmacKey is not null)
        {
            System.Security.Cryptography.CryptographicOperations.ZeroMemory(HmacKey);
        }
    }

    public override string ToString() => "KeyDirection(<redacted>)";
}

/// <summary>Everything NEW_KEY carries.</summary>
public sealed record KeyConfig(uint PeerId, KeySlot Slot, int KeyId, DataCipher Cipher, KeyDirection Encrypt, KeyDirection Decrypt)
{
    /// <summary>HMAC digest of a CBC key (OpenVPN's --auth of the client); unused for AEAD.</summary>
    public System.Security.Cryptography.HashAlgorithmName? CbcDigest { get; init; }

    public override string ToString() => $"KeyConfig(peer {PeerId}, slot {Slot}, key-id {KeyId}, {Cipher})";
}

/// <summary>Per-peer counters (kernel GET_PEER: VPN_* and LINK_* stats), plus drops by reason.</summary>
public sealed record PeerStats(
    uint PeerId, string Remote, IPAddress? VpnIPv4,
    long VpnRxBytes, long VpnTxBytes, long VpnRxPackets, long VpnTxPackets,
    long LinkRxBytes, long LinkTxBytes, long LinkRxPackets, long LinkTxPackets,
    IReadOnlyDictionary<string, long> Drops);

/// <summary>Notifications from the data plane up to the control plane (the kernel's "peers" multicast group).</summary>
public interface IDataPlaneEvents
{
    /// <summary>A peer was removed by the data plane itself (keepalive expired, transport closed).</summary>
    void OnPeerDeleted(uint peerId, PeerDeleteReason reason);

    /// <summary>The send packet-id of the peer's primary key passed the renegotiation trigger.</summary>
    void OnKeyRenegotiationDue(uint peerId, int keyId);

    /// <summary>A non-data packet arrived on a link: it belongs to the control plane.</summary>
    void OnControlPacket(ILinkTransport link, ReadOnlySpan<byte> packet);

    /// <summary>An authenticated data packet arrived for a peer from a new UDP address (float).</summary>
    void OnPeerFloated(uint peerId, ILinkTransport newLink);
}

/// <summary>
/// The seam between control plane and data plane. Its operations mirror the kernel ovpn netlink API
/// (peer new/set/get/del, key new/swap/del) so that a kernel backend can replace the managed engine.
/// Implementations are thread-safe.
/// </summary>
public interface IDataPlane : IDisposable
{
    string EngineName { get; }
    string EngineVersion { get; }

    void NewPeer(PeerConfig peer);
    void SetPeer(uint peerId, TimeSpan keepaliveInterval, TimeSpan keepaliveTimeout);
    PeerStats? GetPeer(uint peerId);
    IReadOnlyList<PeerStats> GetPeers();
    void DeletePeer(uint peerId);

    void NewKey(KeyConfig key);
    void SwapKeys(uint peerId);
    void DeleteKey(uint peerId, KeySlot slot);

    /// <summary>Drops of packets that could not be matched to any peer, by reason.</summary>
    IReadOnlyDictionary<string, long> GlobalDrops { get; }
}

/// <summary>A way to put packets on the wire towards one remote (a UDP address, or a TCP connection).</summary>
public interface ILinkTransport
{
    /// <summary>Sends one OpenVPN packet (the transport adds TCP framing itself). Thread-safe.</summary>
    void Send(ReadOnlySpan<byte> packet);

    /// <summary>"udp"/"tcp" and the remote address, for logs and status.</summary>
    string Describe();

    bool IsTcp { get; }

    /// <summary>The remote endpoint.</summary>
    EndPoint Remote { get; }

    /// <summary>Closes the underlying connection (TCP); no-op for UDP.</summary>
    void Close();
}

/// <summary>Receives a packet that a link reader (the server's TCP reader, or its UDP loop) read.</summary>
public interface ILinkPacketSink
{
    /// <summary>
    /// Consumes a data packet, or hands anything else to the control plane. <paramref name="scratch"/>
    /// is the calling thread's work buffer.
    /// </summary>
    void OnLinkPacket(ILinkTransport link, ReadOnlySpan<byte> packet, Span<byte> scratch);
}

/// <summary>A packet the data plane does not own, with the link it came from.</summary>
public delegate void UnhandledPacketHandler(ILinkTransport link, ReadOnlySpan<byte> packet);
