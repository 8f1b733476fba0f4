// SPDX-License-Identifier: MIT
using System.Net;
using System.Threading.Channels;
using Ovpn.DataPlane;

namespace Ovpn.Client.Tests;

/// <summary>
/// Two link ends joined in memory. Packets travel through a channel (never inline, so neither
/// side re-enters itself); with loss > 0 some are dropped, duplicated or held back behind the next.
/// </summary>
internal sealed class MemoryWire
{
    private readonly Random _rng;
    private readonly double _loss;
    private readonly object _gate = new();
    private readonly Channel<(bool ToServer, byte[] Packet)> _queue = Channel.CreateUnbounded<(bool, byte[])>();
    private (bool, byte[])? _held;

    public MemoryWire(double loss, int seed)
    {
        _loss = loss;
        _rng = new Random(seed);
        ClientEnd = new End(this, toServer: true);
        ServerEnd = new End(this, toServer: false);
        _ = Task.Run(PumpAsync);
    }

    public ILinkTransport ClientEnd { get; }

    public ILinkTransport ServerEnd { get; }

    public Action<byte[]> DeliverToServer { get; set; } = _ => { };

    public Action<byte[]> DeliverToClient { get; set; } = _ => { };

    public int Dropped { get; private set; }

    private void Enqueue(bool toServer, byte[] p)
    {
        lock (_gate)
        {
            double r = _rng.NextDouble();
            if (r < _loss)
            {
                Dropped++;
                return;
            }

            if (r < _loss * 1.5)
            {
                _queue.Writer.TryWrite((toServer, p));
            }
            else if (r < _loss * 2 && _held is null)
            {
                _held = (toServer, p);
                return;
            }

            _queue.Writer.TryWrite((toServer, p));
            if (_held is { } h)
            {
                _held = null;
                _queue.Writer.TryWrite(h);
            }
        }
    }

    private async Task PumpAsync()
    {
        await foreach (var (toServer, p) in _queue.Reader.ReadAllAsync())
        {
            (toServer ? DeliverToServer : DeliverToClient)(p);
        }
    }

    private sealed class End(MemoryWire wire, bool toServer) : ILinkTransport
    {
        public EndPoint Remote { get; } = new IPEndPoint(IPAddress.Loopback, toServer ? 1194 : 40000);

        public bool IsTcp => true;

        public void Send(ReadOnlySpan<byte> packet) => wire.Enqueue(toServer, packet.ToArray());

        public string Describe() => toServer ? "mem:client->server" : "mem:server->client";

        public void Close()
        {
        }
    }
}
