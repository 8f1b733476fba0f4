// SPDX-License-Identifier: MIT
using Ovpn.ControlPlane.Client;
using Ovpn.Protocol.Keys;

namespace Ovpn.Client.Tests;

/// <summary>
/// The `--dco` fallback chain when an engine cannot be created (no multi-queue TUN, no kernel
/// module netdev, ...): auto degrades with a logged reason, an explicit mode fails loudly.
/// Engines are fakes that record which constructor ran with which reason.
/// </summary>
public sealed class ClientEngineStarterTests
{
    private const string NoMultiQueue = "TUNSETIFF IFF_MULTI_QUEUE: Invalid argument (multi-queue TUN unavailable)";

    private sealed record Engine(ClientEngineKind Kind, string Reason);

    private sealed class Rig
    {
        public List<string> Warnings { get; } = [];

        public List<ClientEngineKind> Attempts { get; } = [];

        public Exception? KernelFails { get; init; }

        public Exception? UserspaceFails { get; init; }

        public Engine Start(ClientDcoMode mode, bool tcp = false, string? kernelStatus = null)
        {
            var (kind, reason) = ClientDcoPolicy.Choose(mode, profileDisablesDco: false, tcp, DataCipher.Aes256Gcm, null, kernelStatus);
            return ClientEngineStarter.Start(mode, kind, reason,
                kernel: why => Make(ClientEngineKind.Kernel, why, KernelFails),
                userspace: why => Make(ClientEngineKind.Userspace, why, UserspaceFails),
                managed: why => Make(ClientEngineKind.Managed, why, null),
                isStartFailure: e => e is IOException or NotSupportedException,
                warn: Warnings.Add);
        }

        private Engine Make(ClientEngineKind kind, string why, Exception? fail)
        {
            Attempts.Add(kind);
            return fail is null ? new Engine(kind, why) : throw fail;
        }
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Auto_falls_back_to_managed_when_the_userspace_engine_cannot_be_created(bool tcp)
    {
        // Kernel module unusable (or TCP) -> policy picks userspace; userspace cannot start.
        var rig = new Rig { UserspaceFails = new IOException(NoMultiQueue) };
        var e = rig.Start(ClientDcoMode.Auto, tcp, kernelStatus: "kernel DCO unusable: module missing");
        Assert.Equal(ClientEngineKind.Managed, e.Kind);
        Assert.Equal([ClientEngineKind.Userspace, ClientEngineKind.Managed], rig.Attempts);
        Assert.Equal($"auto: offload engine failed to start: {NoMultiQueue}", e.Reason);
        var w = Assert.Single(rig.Warnings);
        Assert.Contains("userspace offload could not start", w, StringComparison.Ordinal);
        Assert.Contains(NoMultiQueue, w, StringComparison.Ordinal);
    }

    [Fact]
    public void Auto_walks_kernel_then_userspace_then_managed()
    {
        var rig = new Rig
        {
            KernelFails = new NotSupportedException("ovpn netdev: EPERM"),
            UserspaceFails = new IOException(NoMultiQueue),
        };
        var e = rig.Start(ClientDcoMode.Auto, tcp: false, kernelStatus: null);
        Assert.Equal(ClientEngineKind.Managed, e.Kind);
        Assert.Equal([ClientEngineKind.Kernel, ClientEngineKind.Userspace, ClientEngineKind.Managed], rig.Attempts);
        Assert.Equal(2, rig.Warnings.Count);
        Assert.Contains("ovpn netdev: EPERM", rig.Warnings[0], StringComparison.Ordinal);
    }

    [Fact]
    public void Auto_uses_userspace_when_it_starts_and_kernel_failed()
    {
        var rig = new Rig { KernelFails = new IOException("no ovpn module netdev") };
        var e = rig.Start(ClientDcoMode.Auto, tcp: false, kernelStatus: null);
        Assert.Equal(ClientEngineKind.Userspace, e.Kind);
        Assert.Equal("auto: kernel data path failed to start: no ovpn module netdev", e.Reason);
    }

    [Fact]
    public void Explicit_userspace_fails_loudly_instead_of_falling_back()
    {
        var rig = new Rig { UserspaceFails = new IOException(NoMultiQueue) };
        var ex = Assert.Throws<IOException>(() => rig.Start(ClientDcoMode.Userspace));
        Assert.Equal(NoMultiQueue, ex.Message);
        Assert.Equal([ClientEngineKind.Userspace], rig.Attempts); // the managed engine was never tried
        Assert.Empty(rig.Warnings);
    }

    [Fact]
    public void Explicit_kernel_fails_loudly_instead_of_falling_back()
    {
        var rig = new Rig { KernelFails = new IOException("no ovpn module netdev") };
        Assert.Throws<IOException>(() => rig.Start(ClientDcoMode.Kernel));
        Assert.Equal([ClientEngineKind.Kernel], rig.Attempts);
    }

    [Fact]
    public void Unexpected_errors_propagate_even_in_auto()
    {
        // Not a "cannot run here" failure (a bug, say): auto must not hide it behind a fallback.
        var rig = new Rig { UserspaceFails = new NullReferenceException("bug") };
        Assert.Throws<NullReferenceException>(() => rig.Start(ClientDcoMode.Auto, tcp: true, kernelStatus: null));
        Assert.Equal([ClientEngineKind.Userspace], rig.Attempts);
    }

    [Fact]
    public void Auto_with_a_working_userspace_engine_does_not_warn()
    {
        var rig = new Rig();
        var e = rig.Start(ClientDcoMode.Auto, tcp: true);
        Assert.Equal(ClientEngineKind.Userspace, e.Kind);
        Assert.Empty(rig.Warnings);
    }
}
