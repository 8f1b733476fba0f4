// SPDX-License-Identifier: MIT
namespace Ovpn.Protocol.Tests.Control;

/// <summary>
/// Known-answer fixtures captured from a stock OpenVPN 2.6.14 client. How they were made:
/// <c>openvpn --genkey secret ta.key</c>, then (throwaway self-signed cert as ca/cert/key)
/// <c>timeout 7 openvpn --client --dev null --proto udp --remote 127.0.0.1 PORT --nobind ... WRAP</c>
/// while <c>tcpdump -i lo -w</c> captured the UDP payloads (nothing listened on PORT, so these are the
/// HARD_RESET_CLIENT_V2 packet and its retransmissions). WRAP was:
/// TlsCrypt: <c>--tls-crypt ta.key</c>; TlsAuthSha256Dir1: <c>--tls-auth ta.key 1 --auth SHA256</c>;
/// TlsAuthSha1Dir1: <c>--tls-auth ta.key 1</c>; TlsAuthSha512NoDir: <c>--tls-auth ta.key --auth SHA512</c>.
/// Server replies: <c>openvpn --tls-server --dev null --proto udp --local 127.0.0.1 --lport PORT --dh none
/// ... WRAP</c> (p2p TLS server, WRAP = <c>--tls-crypt ta.key</c> or <c>--tls-auth ta.key 0 --auth SHA256</c>);
/// the first captured client reset of the matching mode was sent to it from a UDP socket and its
/// HARD_RESET_SERVER_V2 reply recorded.
/// The key is throwaway test material only.
/// </summary>
internal static class OpenVpnCaptures
{
    public const string StaticKeyText = """
#
# 2048 bit OpenVPN static key
#
-----BEGIN OpenVPN Static key V1-----
6986ec9283d53214cb0b665762619804
b8bb38cedb84fc300795ec3ea2ce5795
d65a111dea981280397e375eb9b88159
d1fb372b50082fa328e06a729acb7da8
792b3105202add5663715d507a04c9a2
dae1aa642d5a38154f9ae5fbb7bac6f1
c3d8cf396f08672642cba5b8c4007295
5243b83eb68106e3f619a72b549054c8
1d31dbc6203bb01958de2aec3ce6a6c6
078e7c25b8a4a970bb04b5750818d728
5f6373bbfae36a87548d80324aeeeac7
8c507a71dee639f544263fd567bbc54c
7165009729f0cd54fa32043b805de17c
194e4ea369ec95ab66c09329a35ac537
f168819377d48d6d3cb8328e5e04f997
b404913074a86b362e2bb0514692f5a1
-----END OpenVPN Static key V1-----
""";

    public static readonly string[] TlsCrypt =
    [
        "38208e80ca2000a0a2000000016b0a9603d4785061870db9b5a56793f42bdb8b2e18c867dfe2a1a05582dd6f662996e2944153ceac48",
        "38208e80ca2000a0a2000000026b0a9603e553b59244f539a834e2f7b8bf74068b460a55f62aff68bf0f8db40fec002a43efa831a7c8",
        "38208e80ca2000a0a2000000036b0a9603b8a8d268fd96da0f147a44214bda083e2e0e20dd71b857a3bb3a57eba118e580116bcbd91a",
    ];

    public static readonly string[] TlsAuthSha256Dir1 =
    [
        "3851fec7eb1d46864a87f4326e42c45962c1b684a71c6222eb0639d4e5f9573e46f9c3e32020a34279000000016b0a96030000000000",
        "3851fec7eb1d46864a9cc024834d13d887090a104c7ff3e19c94cce35d104fcab3882678dc7dafb473000000026b0a96030000000000",
        "3851fec7eb1d46864a02484cc9b85da4737989dd114ea1aa9706d669c9f496515cb0f62cc9964d7e5c000000036b0a96030000000000",
    ];

    public static readonly string[] TlsAuthSha1Dir1 =
    [
        "389f318647b736520be13111a2b069698a7dfffb885809280c05f4c197000000016b0a96030000000000",
        "389f318647b736520b27e2700a011e0f3050bbd9c7010b0b63bd70af39000000026b0a96030000000000",
        "389f318647b736520b3a0607d5be87c863763d85ecf014c02dabbf9735000000036b0a96030000000000",
    ];

    public static readonly string[] TlsAuthSha512NoDir =
    [
        "3845eb5a505dc36cdd2b056e69fd113fbac23441153f3271feee26501186f93f3d30c811094e0bcedf8cae424f564160a9136f136fa7505372751049719035b0fa819ce43324168052000000016b0a96110000000000",
        "3845eb5a505dc36cdd8057ae7d4fe5cd8a67125dd8bda77a118b8fe0fd223eed2e5abb97c598d58f89725ddf125d73c1b0ba0d794c67b28a6409fae1063ead33d5e879783863cb5ab8000000026b0a96110000000000",
        "3845eb5a505dc36cdd0f7090fc6a27d9830aa85d54da3c208125fd1a51d925a0c5c9207e826524023334299546479eb056477578f7394af76470e156530604206908a06caa6c6be608000000036b0a96110000000000",
    ];

    public const string TlsCryptServerReply =
        "4011ca4cff2b3baa15000000016b0a97690ae96a78f1f620374186c053761ef31883ab054cfd58d10c79fd4bc673c72549dc566cfe9f8ca21bd098ad410a164bea3d";

    public const string TlsAuthSha256Dir0ServerReply =
        "4004728d9ba8a0aac78f5d0c4c655df18c497e0c2c43d10f1e305ae9b4f2fe3259d1b1ee8612f9276b000000016b0a9770010000000051fec7eb1d46864a00000000";
}
