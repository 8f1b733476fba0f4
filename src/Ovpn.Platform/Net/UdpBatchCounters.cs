// SPDX-License-Identifier: MIT
namespace Ovpn.Platform.Net;

/// <summary>
/// A snapshot of a <see cref="UdpBatchSocket"/>'s counters (for benchmarks and tests; the engine
/// keeps its own per-peer statistics). Datagrams are what the caller sees (one per
/// <see cref="Ovpn.DataPlane.Offload.PacketBuffer"/>); syscalls and messages are what the kernel saw.
/// </summary>
public readonly record struct UdpBatchCounters(
    long DatagramsSent,
    long SendSyscalls,
    long GsoMessages,
    long GsoDatagrams,
    long GsoFallbacks,
    long DatagramsReceived,
    long ReceiveSyscalls,
    long GroMessages,
    long GroDatagrams);
