// SPDX-License-Identifier: MIT
using Ovpn.Platform.Netlink;

namespace Ovpn.Platform.Tests.Netlink;

/// <summary>The socket layer against the running kernel's own genl controller (present on every Linux; no privileges needed).</summary>
public class NetlinkSocketTests
{
    [Fact]
    public void Resolves_nlctrl_through_a_real_netlink_socket()
    {
        using var s = new NetlinkSocket(NetlinkConst.NETLINK_GENERIC);
        var f = s.ResolveFamily("nlctrl");
        Assert.NotNull(f);
        Assert.Equal(NetlinkConst.GENL_ID_CTRL, f.Id); // the controller's id is fixed (GENL_ID_CTRL)
        Assert.Equal("nlctrl", f.Name);
        Assert.Contains(NetlinkConst.CTRL_CMD_GETFAMILY, f.OperationIds.Select(o => (byte)o));
        Assert.True(f.MulticastGroups.ContainsKey("notify"));
    }

    [Fact]
    public void Unknown_family_is_null_not_an_error()
    {
        using var s = new NetlinkSocket(NetlinkConst.NETLINK_GENERIC);
        Assert.Null(s.ResolveFamily("ovpnas-nofam"));
        // Longer than GENL_NAMSIZ: refused locally instead of a confusing EINVAL from the kernel.
        Assert.Throws<ArgumentException>(() => s.ResolveFamily("ovpnas-no-such-family"));
    }

    [Fact]
    public void Kernel_errors_carry_errno()
    {
        using var s = new NetlinkSocket(NetlinkConst.NETLINK_GENERIC);
        // A command the controller does not have (CTRL_CMD_UNSPEC = 0) is answered with an error, not silence.
        var bad = new NetlinkMessageWriter(NetlinkConst.GENL_ID_CTRL, NetlinkConst.NLM_F_REQUEST | NetlinkConst.NLM_F_ACK).GenlHeader(0, 1);
        var ex = Assert.Throws<NetlinkException>(() => s.Request(bad, "CTRL_CMD_UNSPEC"));
        Assert.True(ex.Errno > 0);
        Assert.Contains("CTRL_CMD_UNSPEC failed", ex.Message);
    }
}
