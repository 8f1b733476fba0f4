// SPDX-License-Identifier: MIT
namespace Ovpn.DataPlane.Offload;

/// <summary>
/// Bounded multi-producer, single-consumer FIFO of packet buffers feeding one worker. A full queue
/// refuses (the producer drops and counts): a stalled worker must not make memory grow. A plain
/// lock is enough here: producers hold it for a few instructions, and the consumer takes a whole
/// batch per acquisition. Allocation-free after construction.
/// </summary>
internal sealed class WorkQueue
{
    private readonly PacketBuffer?[] _ring;
    private readonly int _mask;
    private readonly object _lock = new();
    private int _head;
    private int _count;
    private bool _waiting;
    private bool _closed;

    public WorkQueue(int capacityPowerOfTwo)
    {
        if (capacityPowerOfTwo <= 0 || (capacityPowerOfTwo & (capacityPowerOfTwo - 1)) != 0)
        {
            throw new ArgumentOutOfRangeException(nameof(capacityPowerOfTwo), "must be a power of two");
        }

        _ring = new PacketBuffer?[capacityPowerOfTwo];
        _mask = capacityPowerOfTwo - 1;
    }

    public bool TryEnqueue(PacketBuffer b)
    {
        lock (_lock)
        {
            if (_closed || _count == _ring.Length)
            {
                return false;
            }

            _ring[(_head + _count) & _mask] = b;
            _count++;
            if (_waiting)
            {
                Monitor.Pulse(_lock);
            }
        }

        return true;
    }

    /// <summary>Moves up to dst.Length buffers out, waiting up to <paramref name="timeoutMs"/> when
    /// empty. Returns 0 on timeout and -1 once closed and empty.</summary>
    public int Drain(PacketBuffer[] dst, int timeoutMs)
    {
        lock (_lock)
        {
            if (_count == 0)
            {
                if (_closed)
                {
                    return -1;
                }

                _waiting = true;
                Monitor.Wait(_lock, timeoutMs);
                _waiting = false;
            }

            int n = Math.Min(_count, dst.Length);
            for (int i = 0; i < n; i++)
            {
                int idx = _head;
                dst[i] = _ring[idx]!;
                _ring[idx] = null;
                _head = (idx + 1) & _mask;
            }

            _count -= n;
            return n == 0 && _closed ? -1 : n;
        }
    }

    public void Close()
    {
        lock (_lock)
        {
            _closed = true;
            Monitor.PulseAll(_lock);
        }
    }
}
