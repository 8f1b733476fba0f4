// SPDX-License-Identifier: MIT
using Ovpn.Protocol.Data;

namespace Ovpn.Protocol.Options;

/// <summary>
/// Server choice of the stub compression framing for one client, mirroring 2.6
/// <c>compress migrate</c> (protocol notes section 14.4): only a client whose OCC options string
/// contains <c>comp-lzo</c> frames its packets; then push <c>compress stub-v2</c> if it advertises
/// IV_COMP_STUBv2=1, else push <c>comp-lzo no</c> and use the 0xFA framing both ways. Clients
/// without comp-lzo get no framing and no compression option pushed (so DCO clients never see
/// <c>comp-lzo no</c>).
/// </summary>
public static class CompressionNegotiation
{
    public static CompressionFramingMode SelectForServer(PeerInfo pi, string? clientOptionsString, out string? pushOption)
    {
        ArgumentNullException.ThrowIfNull(pi);
        if (!OptionsString.HasField(clientOptionsString, "comp-lzo"))
        {
            pushOption = null;
            return CompressionFramingMode.None;
        }

        if (pi.CompStubV2)
        {
            pushOption = "compress stub-v2";
            return CompressionFramingMode.CompStubV2;
        }

        pushOption = "comp-lzo no";
        return CompressionFramingMode.LzoStub;
    }
}
