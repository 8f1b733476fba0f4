// SPDX-License-Identifier: MIT
using System.Collections.Concurrent;
using System.Net.Security;
using Ovpn.Protocol.Reliability;
using Ovpn.Protocol.Wire;

namespace Ovpn.ControlPlane.Tls;

/// <summary>
/// The TLS side of one key state, shared by the server session and the client connection:
/// ciphertext SslStream wrote waits here until the reliability layer's send window has room
/// (<see cref="Pump"/>, called on the owner's loop), and plaintext writes are chained so that
/// SslStream never sees two writes at once (<see cref="Write"/>).
/// Enqueue is thread-safe (SslStream's writer); Pump and Write belong to the owner's loop.
/// </summary>
internal sealed class TlsOutbox(int payloadPerPacket)
{
    private readonly ConcurrentQueue<byte[]> _pending = new();
    private int _offset;

    /// <summary>Completes when every plaintext write handed to <see cref="Write"/> so far has been encrypted.</summary>
    public Task WriteChain { get; private set; } = Task.CompletedTask;

    /// <summary>True when no ciphertext waits for the reliability layer and every plaintext write has been encrypted.</summary>
    public bool IsIdle => _pending.IsEmpty && WriteChain.IsCompleted;

    /// <summary>Ciphertext from SslStream (called from its write path).</summary>
    public void Enqueue(byte[] ciphertext) => _pending.Enqueue(ciphertext);

    /// <summary>Moves pending ciphertext into control packets while the send window has room.</summary>
    public void Pump(ReliableLayer rel)
    {
        while (rel.CanQueue && _pending.TryPeek(out var first))
        {
            // Coalesce small TLS writes, then cut large ones into packet-sized pieces.
            if (_offset == 0 && first.Length <= payloadPerPacket && _pending.Count > 1)
            {
                var merged = new List<byte>(payloadPerPacket);
                while (_pending.TryPeek(out var next) && merged.Count + next.Length <= payloadPerPacket)
                {
                    _pending.TryDequeue(out _);
                    merged.AddRange(next);
                }

                if (merged.Count > 0)
                {
                    rel.Queue(Opcode.ControlV1, merged.ToArray());
                    continue;
                }
            }

            int n = Math.Min(payloadPerPacket, first.Length - _offset);
            rel.Queue(Opcode.ControlV1, first.AsMemory(_offset, n));
            _offset += n;
            if (_offset >= first.Length)
            {
                _pending.TryDequeue(out _);
                _offset = 0;
            }
        }
    }

    /// <summary>One TLS record per message (OpenVPN reads a record as one message), in order.</summary>
    public void Write(SslStream ssl, byte[] plaintext)
    {
        WriteChain = WriteChain.ContinueWith(
            async _ =>
            {
                try
                {
                    await ssl.WriteAsync(plaintext).ConfigureAwait(false);
                }
                catch (Exception e) when (e is IOException or ObjectDisposedException or InvalidOperationException)
                {
                }
            },
            CancellationToken.None, TaskContinuationOptions.None, TaskScheduler.Default).Unwrap();
    }
}
