// SPDX-License-Identifier: MIT
using Ovpn.Protocol.Options;

namespace Ovpn.Protocol.Tests.Options;

public class PushReplyTests
{
    [Fact]
    public void Single_message_keeps_order()
    {
        var b = new PushReplyBuilder()
            .Add("route-gateway 10.8.0.1").Add("topology", "subnet").Add("ping 10").Add("ping-restart 60")
            .Add("ifconfig 10.8.0.2 255.255.255.0").Add("peer-id 0").Add("cipher AES-256-GCM")
            .Add("protocol-flags cc-exit tls-ekm dyn-tls-crypt").Add("tun-mtu 1500");
        var msgs = b.Build();
        Assert.Single(msgs);
        Assert.Equal("PUSH_REPLY,route-gateway 10.8.0.1,topology subnet,ping 10,ping-restart 60,ifconfig 10.8.0.2 255.255.255.0," +
                     "peer-id 0,cipher AES-256-GCM,protocol-flags cc-exit tls-ekm dyn-tls-crypt,tun-mtu 1500", msgs[0]);
    }

    // Captured 2026-11-28: OpenVPN 2.6.14 server (`--server 10.77.0.0 255.255.255.0 --topology subnet
    // --keepalive 10 60`, verb 4) "SENT CONTROL [client]" to a default 2.6.14 client.
    private const string Real26PushReply =
        "PUSH_REPLY,route-gateway 10.77.0.1,topology subnet,ping 10,ping-restart 60,ifconfig 10.77.0.2 255.255.255.0," +
        "peer-id 0,cipher AES-256-GCM,protocol-flags cc-exit tls-ekm dyn-tls-crypt,tun-mtu 1500";

    [Fact]
    public void Parses_and_rebuilds_real_openvpn_push_reply()
    {
        var p = new PushReplyParser();
        Assert.True(p.TryAdd(Real26PushReply, out var err), err);
        Assert.True(p.IsComplete);
        Assert.Equal(["route-gateway", "topology", "ping", "ping-restart", "ifconfig", "peer-id", "cipher", "protocol-flags", "tun-mtu"],
            p.Options.Select(o => o.Name).ToArray());
        Assert.Equal(["cc-exit", "tls-ekm", "dyn-tls-crypt"], p.Find("protocol-flags")!.Args);
        Assert.Equal(["10.77.0.2", "255.255.255.0"], p.Find("ifconfig")!.Args);

        var b = new PushReplyBuilder();
        foreach (var o in p.Options)
        {
            b.Add(o.ToString());
        }

        Assert.Equal([Real26PushReply], b.Build());
    }

    [Fact]
    public void Empty_push()
    {
        Assert.Equal(["PUSH_REPLY"], new PushReplyBuilder().Build());
        var p = new PushReplyParser();
        Assert.True(p.TryAdd("PUSH_REPLY", out _));
        Assert.True(p.IsComplete);
        Assert.Empty(p.Options);
    }

    [Fact]
    public void Refuses_commas_and_control_chars()
    {
        var b = new PushReplyBuilder();
        Assert.Throws<ArgumentException>(() => b.Add("route 10.0.0.0,255.0.0.0"));
        Assert.Throws<ArgumentException>(() => b.Add("route\n"));
        Assert.Throws<ArgumentException>(() => b.Add(new string('x', 1000)));
    }

    [Fact]
    public void Splits_with_continuation_and_parser_reassembles()
    {
        var b = new PushReplyBuilder();
        var expected = new List<string>();
        for (int i = 0; i < 120; i++)
        {
            var o = $"route 10.{i / 256}.{i % 256}.0 255.255.255.0";
            expected.Add(o);
            b.Add(o);
        }

        var msgs = b.Build();
        Assert.True(msgs.Count >= 3);
        for (int i = 0; i < msgs.Count; i++)
        {
            Assert.StartsWith("PUSH_REPLY,", msgs[i]);
            Assert.True(msgs[i].Length < PushReplyBuilder.PushBundleSize, $"message {i} is {msgs[i].Length} bytes");
            Assert.EndsWith(i == msgs.Count - 1 ? ",push-continuation 1" : ",push-continuation 2", msgs[i]);
        }

        var p = new PushReplyParser();
        foreach (var m in msgs)
        {
            Assert.False(p.IsComplete);
            Assert.True(p.TryAdd(m + "\0", out var err), err);
        }

        Assert.True(p.IsComplete);
        Assert.Equal(msgs.Count, p.MessageCount);
        Assert.Equal(expected, p.Options.Select(o => o.ToString()).ToList());
        Assert.False(p.TryAdd("PUSH_REPLY,route 1.2.3.4", out _)); // already complete
    }

    [Fact]
    public void Parser_splits_args_and_handles_quotes()
    {
        var opts = PushReplyParser.Parse("PUSH_REPLY,dhcp-option DOMAIN \"my corp.example\",redirect-gateway def1 bypass-dhcp,  block-outside-dns ,,ifconfig 10.8.0.2 255.255.255.0");
        Assert.Equal(4, opts.Count);
        Assert.Equal("dhcp-option", opts[0].Name);
        Assert.Equal(["DOMAIN", "my corp.example"], opts[0].Args);
        Assert.Equal(["def1", "bypass-dhcp"], opts[1].Args);
        Assert.Equal("block-outside-dns", opts[2].Name);
        Assert.Empty(opts[2].Args);
        Assert.Equal(["10.8.0.2", "255.255.255.0"], opts[3].Args);
    }

    [Fact]
    public void Parser_rejects_bad_input()
    {
        var p = new PushReplyParser();
        Assert.False(p.TryAdd("AUTH_FAILED,nope", out var err));
        Assert.NotNull(err);
        Assert.False(p.TryAdd("PUSH_REPLYX", out _));
        Assert.False(p.TryAdd("PUSH_REPLY,dhcp-option DOMAIN \"unterminated", out _));
        Assert.False(p.TryAdd("PUSH_REPLY,push-continuation 7", out _));
        Assert.Empty(p.Options);
        Assert.True(p.TryAdd("PUSH_REPLY,peer-id 3,push-continuation 2", out _));
        Assert.False(p.IsComplete);
        Assert.Equal(["3"], p.Find("peer-id")!.Args);
        Assert.True(p.TryAdd("PUSH_REPLY,cipher AES-128-GCM", out _)); // no continuation option = final
        Assert.True(p.IsComplete);
        Assert.Equal("AES-128-GCM", p.Find("cipher")!.Args[0]);
    }
}
