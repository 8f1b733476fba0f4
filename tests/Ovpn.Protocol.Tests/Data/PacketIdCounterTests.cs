// SPDX-License-Identifier: MIT
using Ovpn.Protocol.Data;

namespace Ovpn.Protocol.Tests.Data;

public class PacketIdCounterTests
{
    [Fact]
    public void Starts_at_one_and_increments()
    {
        var c = new PacketIdCounter();
        Assert.True(c.TryNext(out var a));
        Assert.True(c.TryNext(out var b));
        Assert.Equal(1u, a);
        Assert.Equal(2u, b);
        Assert.Equal(2u, c.Last);
        Assert.False(c.RenegotiationDue);
    }

    [Fact]
    public void Refuses_past_limit_instead_of_wrapping()
    {
        var c = new PacketIdCounter(limit: 3);
        Assert.True(c.TryNext(out _));
        Assert.True(c.TryNext(out _));
        Assert.True(c.TryNext(out var last));
        Assert.Equal(3u, last);
        Assert.False(c.TryNext(out var none));
        Assert.Equal(0u, none);
        Assert.False(c.TryNext(out _));
        Assert.True(c.Exhausted);
        Assert.True(c.RenegotiationDue);
    }

    [Fact]
    public void Default_limit_is_uint_max_without_wrap()
    {
        var c = new PacketIdCounter(uint.MaxValue, start: uint.MaxValue - 1);
        Assert.True(c.TryNext(out var id));
        Assert.Equal(uint.MaxValue, id);
        Assert.False(c.TryNext(out _));
    }

    [Fact]
    public void Reports_renegotiation_after_wrap_trigger()
    {
        var c = new PacketIdCounter(uint.MaxValue, start: PacketIdCounter.WrapTrigger - 1);
        Assert.True(c.TryNext(out var id));
        Assert.Equal(PacketIdCounter.WrapTrigger, id);
        Assert.False(c.RenegotiationDue);
        Assert.True(c.TryNext(out _));
        Assert.True(c.RenegotiationDue);
    }
}
