// SPDX-License-Identifier: MIT
using System.Net;
using Ovpn.DataPlane;
using Ovpn.Platform.Netlink;
using Ovpn.Protocol.Keys;

namespace Ovpn.Platform.Dco;

/// <summary>The message layer of one kernel API generation; <see cref="KernelDataPlane"/> is written against this.</summary>
internal interface IDcoDialect
{
    string FamilyName { get; }
    string LinkKind { get; }
    string ModuleSysfsName { get; }
    NetlinkMessageWriter NewLink(string name, byte mode);
    NetlinkMessageWriter NewPeer(ushort fam, int ifindex, uint peerId, int fd, IPEndPoint remote, IPAddress? vpn4, IPAddress? vpn6);
    NetlinkMessageWriter SetPeer(ushort fam, int ifindex, uint peerId, uint interval, uint timeout);
    NetlinkMessageWriter DelPeer(ushort fam, int ifindex, uint peerId);
    NetlinkMessageWriter GetPeer(ushort fam, int ifindex, uint peerId);
    NetlinkMessageWriter GetPeersDump(ushort fam, int ifindex);
    NetlinkMessageWriter NewKey(ushort fam, int ifindex, KeyConfig key);
    NetlinkMessageWriter SwapKeys(ushort fam, int ifindex, uint peerId);
    NetlinkMessageWriter DelKey(ushort fam, int ifindex, uint peerId, KeySlot slot);
    PeerStats ParsePeer(NetlinkMessage reply);
    DcoNotification? ParseNotification(NetlinkMessage msg, ushort fam);

    static IDcoDialect For(string family) => family switch
    {
        OvpnDcoV2.FamilyName => DcoV2Dialect.Instance,
        OvpnUpstream.FamilyName => UpstreamDialect.Instance,
        _ => throw new NotSupportedException($"unknown kernel DCO family '{family}' (known: {OvpnDcoV2.FamilyName}, {OvpnUpstream.FamilyName})"),
    };
}

internal sealed class DcoV2Dialect : IDcoDialect
{
    public static readonly DcoV2Dialect Instance = new();
    public string FamilyName => OvpnDcoV2.FamilyName;
    public string LinkKind => OvpnDcoV2.LinkKind;
    public string ModuleSysfsName => OvpnDcoV2.ModuleSysfsName;
    public NetlinkMessageWriter NewLink(string name, byte mode) => OvpnDcoV2.NewLink(name, mode);
    public NetlinkMessageWriter NewPeer(ushort fam, int ifindex, uint peerId, int fd, IPEndPoint remote, IPAddress? vpn4, IPAddress? vpn6)
        => OvpnDcoV2.NewPeer(fam, ifindex, peerId, fd, remote, vpn4, vpn6);
    public NetlinkMessageWriter SetPeer(ushort fam, int ifindex, uint peerId, uint interval, uint timeout) => OvpnDcoV2.SetPeer(fam, ifindex, peerId, interval, timeout);
    public NetlinkMessageWriter DelPeer(ushort fam, int ifindex, uint peerId) => OvpnDcoV2.DelPeer(fam, ifindex, peerId);
    public NetlinkMessageWriter GetPeer(ushort fam, int ifindex, uint peerId) => OvpnDcoV2.GetPeer(fam, ifindex, peerId);
    public NetlinkMessageWriter GetPeersDump(ushort fam, int ifindex) => OvpnDcoV2.GetPeersDump(fam, ifindex);
    public NetlinkMessageWriter NewKey(ushort fam, int ifindex, KeyConfig k)
        => OvpnDcoV2.NewKey(fam, ifindex, k.PeerId, k.Slot, k.KeyId, k.Cipher, k.Encrypt.CipherKey, k.Encrypt.NonceTail, k.Decrypt.CipherKey, k.Decrypt.NonceTail);
    public NetlinkMessageWriter SwapKeys(ushort fam, int ifindex, uint peerId) => OvpnDcoV2.SwapKeys(fam, ifindex, peerId);
    public NetlinkMessageWriter DelKey(ushort fam, int ifindex, uint peerId, KeySlot slot) => OvpnDcoV2.DelKey(fam, ifindex, peerId, slot);
    public PeerStats ParsePeer(NetlinkMessage reply) => OvpnDcoV2.ParsePeer(reply);
    public DcoNotification? ParseNotification(NetlinkMessage msg, ushort fam)
        => OvpnDcoV2.ParseDelPeerNotification(msg, fam) is { } d ? new DcoNotification.PeerDeleted(d.IfIndex, d.PeerId, d.Reason) : null;
}

internal sealed class UpstreamDialect : IDcoDialect
{
    public static readonly UpstreamDialect Instance = new();
    public string FamilyName => OvpnUpstream.FamilyName;
    public string LinkKind => OvpnUpstream.LinkKind;
    public string ModuleSysfsName => OvpnUpstream.ModuleSysfsName;
    public NetlinkMessageWriter NewLink(string name, byte mode) => OvpnUpstream.NewLink(name, mode);
    public NetlinkMessageWriter NewPeer(ushort fam, int ifindex, uint peerId, int fd, IPEndPoint remote, IPAddress? vpn4, IPAddress? vpn6)
        => OvpnUpstream.PeerNew(fam, ifindex, peerId, fd, remote, vpn4, vpn6);
    public NetlinkMessageWriter SetPeer(ushort fam, int ifindex, uint peerId, uint interval, uint timeout) => OvpnUpstream.PeerSet(fam, ifindex, peerId, interval, timeout);
    public NetlinkMessageWriter DelPeer(ushort fam, int ifindex, uint peerId) => OvpnUpstream.PeerDel(fam, ifindex, peerId);
    public NetlinkMessageWriter GetPeer(ushort fam, int ifindex, uint peerId) => OvpnUpstream.PeerGet(fam, ifindex, peerId);
    public NetlinkMessageWriter GetPeersDump(ushort fam, int ifindex) => OvpnUpstream.PeerGetDump(fam, ifindex);
    public NetlinkMessageWriter NewKey(ushort fam, int ifindex, KeyConfig k)
        => OvpnUpstream.KeyNew(fam, ifindex, k.PeerId, k.Slot, k.KeyId, k.Cipher, k.Encrypt.CipherKey, k.Encrypt.NonceTail, k.Decrypt.CipherKey, k.Decrypt.NonceTail);
    public NetlinkMessageWriter SwapKeys(ushort fam, int ifindex, uint peerId) => OvpnUpstream.KeySwap(fam, ifindex, peerId);
    public NetlinkMessageWriter DelKey(ushort fam, int ifindex, uint peerId, KeySlot slot) => OvpnUpstream.KeyDel(fam, ifindex, peerId, slot);
    public PeerStats ParsePeer(NetlinkMessage reply) => OvpnUpstream.ParsePeer(reply);
    public DcoNotification? ParseNotification(NetlinkMessage msg, ushort fam) => OvpnUpstream.ParseNotification(msg, fam);
}
