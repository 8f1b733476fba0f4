// SPDX-License-Identifier: MIT
using System.Threading.Channels;

namespace Ovpn.ControlPlane.Tls;

/// <summary>
/// The transport under SslStream for one key state: TLS ciphertext comes in from the reliability
/// layer (in msg-id order) through <see cref="Feed"/>, and what SslStream writes goes out through
/// the callback, which queues it into the reliability layer. Reads complete asynchronously (the
/// channel never runs continuations inline), so feeding never re-enters the session.
/// <see cref="BeforeRead"/> is an optional hook SslStream's reads run first (while SslStream waits
/// for input and no TLS call is in progress), until it returns true.
/// </summary>
internal sealed class ControlChannelStream : Stream
{
    private readonly Channel<ReadOnlyMemory<byte>> _incoming = Channel.CreateUnbounded<ReadOnlyMemory<byte>>(
        new UnboundedChannelOptions { SingleReader = true, SingleWriter = false, AllowSynchronousContinuations = false });

    private readonly Action<byte[]> _onWrite;
    private ReadOnlyMemory<byte> _current;

    public ControlChannelStream(Action<byte[]> onWrite) => _onWrite = onWrite;

    /// <summary>Runs at the start of each read until it returns true (then it is dropped).</summary>
    public Func<bool>? BeforeRead { get; set; }

    public void Feed(ReadOnlyMemory<byte> ciphertext)
    {
        if (!ciphertext.IsEmpty)
        {
            _incoming.Writer.TryWrite(ciphertext);
        }
    }

    public void CompleteInput() => _incoming.Writer.TryComplete();

    public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        if (BeforeRead is { } hook && hook())
        {
            BeforeRead = null;
        }

        while (_current.IsEmpty)
        {
            if (!await _incoming.Reader.WaitToReadAsync(cancellationToken).ConfigureAwait(false))
            {
                return 0;
            }

            _incoming.Reader.TryRead(out _current);
        }

        int n = Math.Min(buffer.Length, _current.Length);
        _current[..n].CopyTo(buffer);
        _current = _current[n..];
        return n;
    }

    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override int Read(byte[] buffer, int offset, int count) => ReadAsync(buffer, offset, count, CancellationToken.None).GetAwaiter().GetResult();

    public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
    {
        _onWrite(buffer.ToArray());
        return ValueTask.CompletedTask;
    }

    public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken)
    {
        _onWrite(buffer.AsSpan(offset, count).ToArray());
        return Task.CompletedTask;
    }

    public override void Write(byte[] buffer, int offset, int count) => _onWrite(buffer.AsSpan(offset, count).ToArray());

    public override void Flush()
    {
    }

    public override Task FlushAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public override bool CanRead => true;

    public override bool CanWrite => true;

    public override bool CanSeek => false;

    public override long Length => throw new NotSupportedException();

    public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

    public override void SetLength(long value) => throw new NotSupportedException();

    protected override void Dispose(bool disposing)
    {
        CompleteInput();
        base.Dispose(disposing);
    }
}
