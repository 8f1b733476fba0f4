// SPDX-License-Identifier: MIT
using Ovpn.ControlPlane.Client;
using Ovpn.Protocol.Keys;

namespace Ovpn.Client.Tests;

/// <summary>The `--dco` decision and parsing, without a platform.</summary>
public sealed class ClientDcoPolicyTests
{
    private const string Unusable = "kernel DCO unusable: module missing: neither genl family 'ovpn-dco-v2' nor 'ovpn' is registered";

    [Theory]
    [InlineData(null, ClientDcoMode.Auto)]
    [InlineData("auto", ClientDcoMode.Auto)]
    [InlineData("userspace", ClientDcoMode.Userspace)]
    [InlineData("KERNEL", ClientDcoMode.Kernel)]
    [InlineData("off", ClientDcoMode.Off)]
    public void Parses_modes(string? text, ClientDcoMode expected) => Assert.Equal(expected, ClientDcoModes.Parse(text));

    [Fact]
    public void Rejects_unknown_mode() => Assert.Throws<ArgumentException>(() => ClientDcoModes.Parse("turbo"));

    [Theory]
    [InlineData(ClientDcoMode.Auto, true, false, ClientEngineKind.Managed, "disable-dco in profile")]
    [InlineData(ClientDcoMode.Userspace, true, false, ClientEngineKind.Managed, "disable-dco in profile")]
    [InlineData(ClientDcoMode.Kernel, true, false, ClientEngineKind.Managed, "disable-dco in profile")]
    [InlineData(ClientDcoMode.Off, false, false, ClientEngineKind.Managed, "--dco off")]
    [InlineData(ClientDcoMode.Userspace, false, false, ClientEngineKind.Userspace, "--dco userspace")]
    [InlineData(ClientDcoMode.Userspace, false, true, ClientEngineKind.Userspace, "--dco userspace")]
    [InlineData(ClientDcoMode.Kernel, false, false, ClientEngineKind.Kernel, "--dco kernel")]
    [InlineData(ClientDcoMode.Auto, false, false, ClientEngineKind.Kernel, "auto: kernel ovpn module usable")]
    [InlineData(ClientDcoMode.Auto, false, true, ClientEngineKind.Userspace, "TCP")]
    public void Chooses_by_mode_profile_and_link(ClientDcoMode mode, bool disableDco, bool tcp, ClientEngineKind kind, string reason)
    {
        var (k, r) = ClientDcoPolicy.Choose(mode, disableDco, tcp, DataCipher.Aes256Gcm, null, kernelStatus: null);
        Assert.Equal(kind, k);
        Assert.Contains(reason, r, StringComparison.Ordinal);
    }

    [Fact]
    public void Auto_prefers_the_kernel_when_usable_on_udp_with_aead()
    {
        Assert.Equal(ClientEngineKind.Kernel, ClientDcoPolicy.Choose(ClientDcoMode.Auto, false, false, DataCipher.ChaCha20Poly1305, null, null).Kind);
        Assert.Equal(ClientEngineKind.Kernel, ClientDcoPolicy.Choose(ClientDcoMode.Auto, false, false, DataCipher.Aes128Gcm, null, null).Kind);
        var (k, r) = ClientDcoPolicy.Choose(ClientDcoMode.Auto, false, false, DataCipher.Aes128Gcm, null, Unusable);
        Assert.Equal(ClientEngineKind.Userspace, k);
        Assert.Contains("module missing", r, StringComparison.Ordinal);
    }

    [Fact]
    public void Auto_on_tcp_uses_userspace_even_with_a_usable_module()
    {
        var (k, r) = ClientDcoPolicy.Choose(ClientDcoMode.Auto, false, true, DataCipher.Aes256Gcm, null, null);
        Assert.Equal(ClientEngineKind.Userspace, k);
        Assert.Contains("UDP only", r, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(ClientDcoMode.Auto)]
    [InlineData(ClientDcoMode.Userspace)]
    public void Peers_offload_cannot_carry_stay_managed(ClientDcoMode mode)
    {
        var (k, r) = ClientDcoPolicy.Choose(mode, false, false, DataCipher.Aes256Cbc, null, null);
        Assert.Equal(ClientEngineKind.Managed, k);
        Assert.Contains("not AEAD", r, StringComparison.Ordinal);
        (k, r) = ClientDcoPolicy.Choose(mode, false, false, DataCipher.Aes256Gcm, "client does not support DATA_V2 (peer-id)", null);
        Assert.Equal(ClientEngineKind.Managed, k);
        Assert.Contains("DATA_V2", r, StringComparison.Ordinal);
    }

    /// <summary>--dco kernel never quietly runs elsewhere: each blocker is an error naming itself.</summary>
    [Theory]
    [InlineData(false, DataCipher.Aes256Gcm, null, Unusable, "module missing")]
    [InlineData(true, DataCipher.Aes256Gcm, null, null, "TCP")]
    [InlineData(false, DataCipher.Aes256Cbc, null, null, "not AEAD")]
    [InlineData(false, DataCipher.Aes128Gcm, "client does not support DATA_V2 (peer-id)", null, "DATA_V2")]
    public void Kernel_mode_fails_with_the_reason(bool tcp, DataCipher cipher, string? peerBlocker, string? kernelStatus, string reason)
    {
        var e = Assert.Throws<NotSupportedException>(() => ClientDcoPolicy.Choose(ClientDcoMode.Kernel, false, tcp, cipher, peerBlocker, kernelStatus));
        Assert.StartsWith("--dco kernel: ", e.Message, StringComparison.Ordinal);
        Assert.Contains(reason, e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Kernel_blocker_is_null_only_when_everything_fits()
    {
        Assert.Null(ClientDcoPolicy.KernelBlocker(false, DataCipher.ChaCha20Poly1305, null, null));
        Assert.NotNull(ClientDcoPolicy.KernelBlocker(false, DataCipher.ChaCha20Poly1305, null, Unusable));
        Assert.NotNull(ClientDcoPolicy.KernelBlocker(true, DataCipher.ChaCha20Poly1305, null, null));
        Assert.NotNull(ClientDcoPolicy.KernelBlocker(false, DataCipher.Aes128Cbc, null, null));
        Assert.NotNull(ClientDcoPolicy.KernelBlocker(false, DataCipher.Aes128Gcm, "no peer-id", null));
    }

    [Fact]
    public void Profile_directive_disable_dco_is_parsed()
    {
        string baseProfile = "client\ndev tun\nproto udp\nremote 192.0.2.1 1194\n<ca>\nx\n</ca>\n";
        var on = ClientProfile.Parse(baseProfile, ".");
        Assert.False(on.DisableDco);
        var off = ClientProfile.Parse(baseProfile + "disable-dco\n", ".");
        Assert.True(off.DisableDco);
        Assert.DoesNotContain(off.Issues, i => i.ToString().Contains("disable-dco", StringComparison.Ordinal));
    }
}
