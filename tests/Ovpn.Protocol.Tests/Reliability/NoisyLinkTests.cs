// SPDX-License-Identifier: MIT
using System.Security.Cryptography;
using Ovpn.Protocol.Control;
using Ovpn.Protocol.Reliability;
using Ovpn.Protocol.Wire;

namespace Ovpn.Protocol.Tests.Reliability;

/// <summary>
/// Two reliable layers (with tls-crypt or tls-auth wrapping, so every retransmission is
/// re-wrapped with a fresh replay-id) over a deterministic lossy link: seeded Random, fake clock
/// in 10 ms steps, bounded step count.
/// </summary>
public class NoisyLinkTests
{
    private sealed class Side
    {
        public required ReliableLayer Rel;
        public required ControlWrapper Wrap;
        public readonly List<byte[]> ToSend = [];
        public int NextToSend;
        public readonly List<byte[]> ExpectedChunks = [];
        public readonly List<byte[]> Received = [];
        public int MaxInFlight;
        public int MaxWire;
        public int Dropped;
    }

    public static TheoryData<int, string> Cases() => new()
    {
        { 1, "crypt" }, { 2, "crypt" }, { 3, "auth" }, { 4, "none" }, { 5, "crypt" }, { 6, "auth" },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void EveryPayloadArrivesExactlyOnceInOrder(int seed, string mode)
    {
        var rng = new Random(seed);
        var key = StaticKey.Generate();
        ControlWrapper Make(bool server) => mode switch
        {
            "crypt" => ControlWrapper.CreateTlsCrypt(key, server),
            "auth" => ControlWrapper.CreateTlsAuth(key, server ? 0 : 1, HashAlgorithmName.SHA512),
            _ => ControlWrapper.CreateNone(),
        };

        var a = new Side { Rel = new ReliableLayer(1001, 0), Wrap = Make(false) };
        var b = new Side { Rel = new ReliableLayer(2002, 0), Wrap = Make(true) };
        a.Rel.PeerSessionId = 2002;
        b.Rel.PeerSessionId = 1001;
        foreach (var s in new[] { a, b })
        {
            for (int i = 0; i < 60; i++)
            {
                var m = new byte[rng.Next(0, 3000)];
                rng.NextBytes(m);
                s.ToSend.Add(m);
            }
        }

        // link: (deliverAt, toA, bytes)
        var inFlight = new List<(long At, bool ToA, byte[] Bytes)>();
        long now = 0;
        const uint unix = 1_800_000_000;
        int steps = 0;
        for (; steps < 200_000; steps++)
        {
            now += 10;

            // Deliver due packets (the list order plus random delays gives reordering).
            for (int i = 0; i < inFlight.Count; i++)
            {
                if (inFlight[i].At > now)
                {
                    continue;
                }

                var (_, toA, bytes) = inFlight[i];
                inFlight.RemoveAt(i--);
                var dst = toA ? a : b;
                if (!dst.Wrap.TryUnwrap(bytes, checkReplay: true, out var p, out _))
                {
                    dst.Dropped++;
                    continue;
                }

                Assert.True(dst.Rel.OnReceived(p!, now));
                while (dst.Rel.TryRead(out var op, out var payload))
                {
                    Assert.Equal(Opcode.ControlV1, op);
                    dst.Received.Add(payload.ToArray());
                }
            }

            foreach (var s in new[] { a, b })
            {
                if (s.NextToSend < s.ToSend.Count && s.Rel.BacklogCount == 0 && rng.Next(4) == 0)
                {
                    var m = s.ToSend[s.NextToSend++];
                    int n = s.Rel.QueueSplit(Opcode.ControlV1, m);
                    for (int off = 0, k = 0; k < n; k++, off += s.Rel.MaxPayload)
                    {
                        s.ExpectedChunks.Add(m.AsSpan(off, Math.Min(s.Rel.MaxPayload, m.Length - off)).ToArray());
                    }
                }

                for (int guard = 0; guard < 64 && s.Rel.TryGetPacketToSend(now, out var p); guard++)
                {
                    Assert.True(s.Rel.InFlightCount <= ReliableLayer.SendWindow);
                    s.MaxInFlight = Math.Max(s.MaxInFlight, s.Rel.InFlightCount);
                    Assert.True(p!.Acks.Length <= (p.Opcode == Opcode.AckV1 ? 8 : 4));
                    byte[] wire = s.Wrap.Wrap(p, unix);
                    s.MaxWire = Math.Max(s.MaxWire, wire.Length);
                    int roll = rng.Next(100);
                    if (roll < 20)
                    {
                        continue; // lost
                    }

                    if (roll < 23 && mode != "none")
                    {
                        wire = (byte[])wire.Clone();
                        wire[rng.Next(wire.Length)] ^= (byte)(1 + rng.Next(255)); // corrupted
                    }

                    bool toA = s == b;
                    inFlight.Add((now + rng.Next(1, 300), toA, wire));
                    if (roll >= 90)
                    {
                        inFlight.Add((now + rng.Next(1, 600), toA, wire)); // duplicated
                    }
                }
            }

            bool done = a.NextToSend == a.ToSend.Count && b.NextToSend == b.ToSend.Count
                && a.Rel.AllAcked && b.Rel.AllAcked
                && a.Received.Count == b.ExpectedChunks.Count && b.Received.Count == a.ExpectedChunks.Count;
            if (done)
            {
                break;
            }
        }

        Assert.True(steps < 200_000, "exchange did not finish within the step bound");
        Assert.Equal(b.ExpectedChunks.Count, a.Received.Count);
        Assert.Equal(a.ExpectedChunks.Count, b.Received.Count);
        for (int i = 0; i < a.Received.Count; i++)
        {
            Assert.Equal(b.ExpectedChunks[i], a.Received[i]);
        }

        for (int i = 0; i < b.Received.Count; i++)
        {
            Assert.Equal(a.ExpectedChunks[i], b.Received[i]);
        }

        Assert.Equal(ReliableLayer.SendWindow, Math.Max(a.MaxInFlight, b.MaxInFlight));
        Assert.True(a.MaxWire <= 1250 && b.MaxWire <= 1250, $"wire packet too big: {a.MaxWire}/{b.MaxWire}");
        if (mode != "none")
        {
            Assert.True(a.Dropped + b.Dropped > 0, "corruption/duplication should have caused some wrapper drops");
        }
    }
}
