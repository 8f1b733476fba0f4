// SPDX-License-Identifier: MIT
using Ovpn.Protocol.Keys;

namespace Ovpn.Protocol.Options;

/// <summary>
/// Server-side data-cipher choice (protocol notes section 11 step 6, OpenVPN
/// <c>ncp_get_best_cipher</c>): the peer list is IV_CIPHERS if present, else
/// AES-256-GCM:AES-128-GCM if IV_NCP≥2 (2.4 clients), else empty. Walk the SERVER's list in order
/// and take the first cipher that is in the peer list, or that equals the `cipher` of the
/// client's options string (only consulted when the client sent no IV_CIPHERS). Otherwise,
/// if the peer gave no NCP information at all, use the configured fallback; else fail.
/// Non-AEAD ciphers can only be chosen when the server list (or fallback) contains them.
/// </summary>
public static class CipherNegotiation
{
    public const string NoSharedCipherReason = "Data channel cipher negotiation failed (no shared cipher)";

    public static bool TrySelect(IReadOnlyList<DataCipher> serverCiphers, PeerInfo pi, string? clientOptionsString,
        DataCipher? fallback, out DataCipher chosen, out string failureReason)
    {
        ArgumentNullException.ThrowIfNull(serverCiphers);
        ArgumentNullException.ThrowIfNull(pi);

        List<DataCipher> peer;
        DataCipher? occCipher = null;
        if (pi.IvCiphers is not null)
        {
            peer = DataCipherNames.ParseList(string.Join(':', pi.IvCiphers));
        }
        else
        {
            peer = pi.IvNcp >= 2 ? [DataCipher.Aes256Gcm, DataCipher.Aes128Gcm] : [];
            var occ = clientOptionsString is null ? null : OptionsString.GetField(clientOptionsString, "cipher");
            if (occ is not null && DataCipherNames.TryParse(occ, out var oc))
            {
                occCipher = oc;
            }
        }

        foreach (var c in serverCiphers)
        {
            if (Contains(peer, c) || occCipher == c)
            {
                chosen = c;
                failureReason = "";
                return true;
            }
        }

        // "No info at all": neither IV_CIPHERS nor IV_NCP>=2 (a pre-2.4 client).
        if (fallback is { } fb && pi.IvCiphers is null && pi.IvNcp < 2)
        {
            chosen = fb;
            failureReason = "";
            return true;
        }

        chosen = default;
        failureReason = NoSharedCipherReason;
        return false;
    }

    /// <summary>
    /// Client side (2.6 <c>check_pull_client_ncp</c>/<c>check_session_cipher</c>): a pushed
    /// `cipher` must be in the client's own list; without a push, the server's OCC `cipher` is
    /// used if the client allows it, then the fallback. Unparseable pushed names (BF-CBC, ...)
    /// fail with a reason naming them.
    /// </summary>
    public static bool TryAcceptPushed(IReadOnlyList<DataCipher> clientCiphers, string? pushedCipher, string? serverOptionsString,
        DataCipher? fallback, out DataCipher chosen, out string failureReason)
    {
        ArgumentNullException.ThrowIfNull(clientCiphers);
        chosen = default;
        if (!string.IsNullOrWhiteSpace(pushedCipher))
        {
            if (!DataCipherNames.TryParse(pushedCipher, out var pc))
            {
                failureReason = $"server requires cipher {pushedCipher.Trim()}; not supported";
                return false;
            }

            if (!Contains(clientCiphers, pc))
            {
                failureReason = $"negotiated cipher not allowed - {DataCipherNames.ToName(pc)} not in data-ciphers";
                return false;
            }

            chosen = pc;
            failureReason = "";
            return true;
        }

        var occ = serverOptionsString is null ? null : OptionsString.GetField(serverOptionsString, "cipher");
        if (occ is not null && DataCipherNames.TryParse(occ, out var oc) && Contains(clientCiphers, oc))
        {
            chosen = oc;
            failureReason = "";
            return true;
        }

        if (fallback is { } fb)
        {
            chosen = fb;
            failureReason = "";
            return true;
        }

        failureReason = "server did not push a cipher and no usable fallback exists";
        return false;
    }

    private static bool Contains(IReadOnlyList<DataCipher> list, DataCipher c)
    {
        for (int i = 0; i < list.Count; i++)
        {
            if (list[i] == c)
            {
                return true;
            }
        }

        return false;
    }
}
