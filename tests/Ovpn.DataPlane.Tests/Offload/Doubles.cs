// SPDX-License-Identifier: MIT
using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using Ovpn.DataPlane.Offload;
using Ovpn.Protocol.Data;
using Ovpn.Protocol.Keys;

namespace Ovpn.DataPlane.Tests.Offload;

/// <summary>In-memory <see cref="IBatchDatagramSocket"/>: tests inject datagrams and read what was sent.</summary>
internal sealed class ChannelDatagramSocket : IBatchDatagramSocket
{
    private readonly ConcurrentQueue<(byte[] Data, SocketAddress From)> _in = new();
    private readonly SemaphoreSlim _inSignal = new(0);
    private volatile bool _disposed;

    public Socket Socket { get; } = new(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);

    public BlockingCollection<(byte[] Data, SocketAddress To)> Sent { get; } = new();

    public int SendBatchCalls;

    public void Inject(byte[] datagram, SocketAddress from)
    {
        _in.Enqueue((datagram, from));
        _inSignal.Release();
    }

    public int ReceiveBatch(PacketBuffer[] buffers, int count, int timeoutMs)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (!_inSignal.Wait(timeoutMs))
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            return 0;
        }

        int n = 0;
        while (true)
        {
            if (!_in.TryDequeue(out var d))
            {
                break;
            }

            var b = buffers[n];
            d.Data.CopyTo(b.Array, 0);
            b.Offset = 0;
            b.Length = d.Data.Length;
            b.SetAddress(d.From);
            n++;
            if (n == count || !_inSignal.Wait(0))
            {
                break;
            }
        }

        return n;
    }

    public int SendBatch(PacketBuffer[] buffers, int count)
    {
        Interlocked.Increment(ref SendBatchCalls);
        for (int i = 0; i < count; i++)
        {
            var a = new SocketAddress(buffers[i].Address.Family, buffers[i].Address.Size);
            buffers[i].Address.Buffer.Span[..a.Size].CopyTo(a.Buffer.Span);
            Sent.Add((buffers[i].Data.ToArray(), a));
        }

        return count;
    }

    public void Dispose()
    {
        _disposed = true;
        _inSignal.Release();
        Socket.Dispose();
    }
}

/// <summary>In-memory TUN queue: tests inject packets "from the kernel" and read what the engine wrote.
/// It can report "nothing queued" (<see cref="ITunTryRead"/>) like the real TUN; wrap it in
/// <see cref="BlockingOnlyTun"/> to hide that.</summary>
internal sealed class ChannelTun : ITunDevice, ITunTryRead
{
    private readonly BlockingCollection<byte[]> _in = new();
    private readonly CancellationTokenSource _cts = new();

    public string Name => "test-tun";

    public BlockingCollection<byte[]> Written { get; } = new();

    public void Inject(byte[] ipPacket) => _in.Add(ipPacket);

    public int Read(Span<byte> buffer)
    {
        try
        {
            var p = _in.Take(_cts.Token);
            p.CopyTo(buffer);
            return p.Length;
        }
        catch (OperationCanceledException)
        {
            throw new ObjectDisposedException(nameof(ChannelTun));
        }
    }

    public int TryRead(Span<byte> buffer)
    {
        if (!_in.TryTake(out var p))
        {
            return -1;
        }

        p.CopyTo(buffer);
        return p.Length;
    }

    public void Write(ReadOnlySpan<byte> packet) => Written.Add(packet.ToArray());

    public void Dispose() => _cts.Cancel();
}

/// <summary>A TUN port with only the blocking Read (no <see cref="ITunTryRead"/>).</summary>
internal sealed class BlockingOnlyTun(ChannelTun inner) : ITunDevice
{
    public string Name => inner.Name;

    public int Read(Span<byte> buffer) => inner.Read(buffer);

    public void Write(ReadOnlySpan<byte> packet) => inner.Write(packet);

    public void Dispose() => inner.Dispose();
}

/// <summary>A TCP link double: records what the engine sends to it.</summary>
internal sealed class FakeTcpLink(EndPoint remote) : ILinkTransport
{
    public BlockingCollection<byte[]> Sent { get; } = new();

    public bool IsTcp => true;

    public EndPoint Remote { get; } = remote;

    public void Send(ReadOnlySpan<byte> packet) => Sent.Add(packet.ToArray());

    public string Describe() => $"tcp:{Remote}";

    public void Close()
    {
    }
}

internal sealed class RecordingEvents : IDataPlaneEvents
{
    public ConcurrentQueue<(uint PeerId, PeerDeleteReason Reason)> Deleted { get; } = new();

    public ConcurrentQueue<(uint PeerId, int KeyId)> RenegotiationDue { get; } = new();

    public ConcurrentQueue<(ILinkTransport Link, byte[] Packet)> Control { get; } = new();

    public ConcurrentQueue<(uint PeerId, ILinkTransport Link)> Floated { get; } = new();

    public void OnPeerDeleted(uint peerId, PeerDeleteReason reason) => Deleted.Enqueue((peerId, reason));

    public void OnKeyRenegotiationDue(uint peerId, int keyId) => RenegotiationDue.Enqueue((peerId, keyId));

    public void OnControlPacket(ILinkTransport link, ReadOnlySpan<byte> packet) => Control.Enqueue((link, packet.ToArray()));

    public void OnPeerFloated(uint peerId, ILinkTransport newLink) => Floated.Enqueue((peerId, newLink));
}

/// <summary>A clock the test moves by hand.</summary>
internal sealed class ManualTime : TimeProvider
{
    private long _ticks = 1_000_000;

    public override long TimestampFrequency => TimeSpan.TicksPerSecond;

    public override long GetTimestamp() => Interlocked.Read(ref _ticks);

    public void Advance(TimeSpan d) => Interlocked.Add(ref _ticks, d.Ticks);
}

/// <summary>The client end of one peer's data channel: fresh random keys, both directions.</summary>
internal sealed class TestPeerKeys
{
    public TestPeerKeys(DataCipher cipher = DataCipher.Aes256Gcm)
    {
        Cipher = cipher;
        int kl = DataCipherNames.KeyLength(cipher);
        C2SKey = RandomNumberGenerator.GetBytes(kl);
        C2STail = RandomNumberGenerator.GetBytes(8);
        S2CKey = RandomNumberGenerator.GetBytes(kl);
        S2CTail = RandomNumberGenerator.GetBytes(8);
    }

    public DataCipher Cipher { get; }

    public byte[] C2SKey { get; }

    public byte[] C2STail { get; }

    public byte[] S2CKey { get; }

    public byte[] S2CTail { get; }

    /// <summary>Server's view: encrypt = server-to-client. Copies, since the engine wipes what it is given.</summary>
    public KeyConfig ServerKey(uint peerId, KeySlot slot, int keyId) =>
        new(peerId, slot, keyId, Cipher, new KeyDirection((byte[])S2CKey.Clone(), (byte[])S2CTail.Clone()),
            new KeyDirection((byte[])C2SKey.Clone(), (byte[])C2STail.Clone()));

    public AeadCodec ClientSealer() => new(Cipher, C2SKey, C2STail);

    public AeadCodec ClientOpener() => new(Cipher, S2CKey, S2CTail);
}

/// <summary>Bounded waits shared by the engine tests (10 s each, a hang guard, not a timing assertion).</summary>
internal static class TestWait
{
    public static readonly TimeSpan Limit = TimeSpan.FromSeconds(10);

    /// <summary>Collects what the engine wrote to any of <paramref name="tuns"/> until <paramref name="count"/> packets or the limit.</summary>
    public static List<byte[]> TakeTun(IReadOnlyList<ChannelTun> tuns, int count)
    {
        var got = new List<byte[]>();
        var deadline = DateTime.UtcNow + Limit;
        while (got.Count < count && DateTime.UtcNow < deadline)
        {
            foreach (var t in tuns)
            {
                while (t.Written.TryTake(out var p))
                {
                    got.Add(p);
                }
            }

            if (got.Count < count)
            {
                Thread.Sleep(2);
            }
        }

        return got;
    }

    /// <summary>Collects what the engine sent on <paramref name="sock"/> until <paramref name="count"/> datagrams or the limit.</summary>
    public static List<(byte[] Data, SocketAddress To)> TakeSent(ChannelDatagramSocket sock, int count)
    {
        var got = new List<(byte[], SocketAddress)>();
        while (got.Count < count && sock.Sent.TryTake(out var s, Limit))
        {
            got.Add(s);
        }

        return got;
    }

    public static void Eventually(Func<bool> cond, string what)
    {
        var deadline = DateTime.UtcNow + Limit;
        while (!cond())
        {
            Assert.True(DateTime.UtcNow < deadline, "timed out waiting for " + what);
            Thread.Sleep(2);
        }
    }
}

internal static class Packets
{
    public static readonly IPAddress ServerVpn = IPAddress.Parse("172.27.224.1");

    public static SocketAddress Addr(string ip, int port) => new IPEndPoint(IPAddress.Parse(ip), port).Serialize();

    /// <summary>A minimal IPv4/UDP-ish packet carrying a 4-byte sequence number at offset 20.</summary>
    public static byte[] Ipv4(IPAddress src, IPAddress dst, uint seq, int size = 64)
    {
        var p = new byte[Math.Max(size, 24)];
        p[0] = 0x45;
        BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(2), (ushort)p.Length);
        p[8] = 64;
        p[9] = 17;
        src.GetAddressBytes().CopyTo(p, 12);
        dst.GetAddressBytes().CopyTo(p, 16);
        BinaryPrimitives.WriteUInt32BigEndian(p.AsSpan(20), seq);
        return p;
    }

    public static uint Seq(byte[] ip) => BinaryPrimitives.ReadUInt32BigEndian(ip.AsSpan(20));

    public static byte[] Seal(AeadCodec c, int keyId, uint peerId, uint packetId, ReadOnlySpan<byte> plain)
    {
        var wire = new byte[plain.Length + AeadCodec.V2Overhead];
        c.SealDataV2(wire, keyId, peerId, packetId, plain);
        return wire;
    }

    public static byte[] Open(AeadCodec c, byte[] wire, out uint packetId)
    {
        var dst = new byte[wire.Length];
        var r = c.Open(wire, dst, out int n, out packetId);
        Assert.Equal(DataDropReason.None, r);
        return dst[..n];
    }
}
