// SPDX-License-Identifier: MIT
using Ovpn.ControlPlane.Config;
using Ovpn.ControlPlane.Dco;
using Ovpn.ControlPlane.Sessions;
using Ovpn.Protocol.Keys;

namespace Ovpn.Server.Management;

/// <summary>
/// Enforces the DCO rules on the control-plane options at start: with vpn.server.daemon.ovpndco on,
/// no compression framing is accepted and only AEAD ciphers are negotiated (the kernel does AEAD
/// only). Layer 2 is refused by ServerFactory already. The reasons are in <see cref="DcoRules.Review"/>.
/// </summary>
public static class DcoPolicy
{
    public static ControlPlaneOptions Apply(ControlPlaneOptions control, ServerSettings settings)
    {
        if (!settings.Dco)
        {
            return control;
        }

        var review = DcoRules.Review(settings);
        var aead = control.DataCiphers.Where(DataCipherNames.IsAead).ToList();
        return control with
        {
            AllowCompressionStubs = review.CompressionAllowed,
            DataCiphers = aead.Count > 0 ? aead : control.DataCiphers,
            FallbackCipher = control.FallbackCipher is { } fb && !DataCipherNames.IsAead(fb) ? null : control.FallbackCipher,
        };
    }
}
