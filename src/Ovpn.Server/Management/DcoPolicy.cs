// SPDX-License-Identifier: MIT
using Ovpn.ControlPlane;
using Ovpn.ControlPlane.Config;
using Ovpn.ControlPlane.Dco;
using Ovpn.ControlPlane.Sessions;
using Ovpn.Protocol.Keys;

namespace Ovpn.Server.Management;

/// <summary>
/// The DCO rules at start, with vpn.server.daemon.ovpndco on: offloaded peers only ever use AEAD
/// ciphers, DATA_V2 and no compression framing (the kernel and our offload engine carry nothing
/// else). Clients that need more (a CBC cipher the admin listed, stub compression framing) are not
/// refused: the data path selector puts them on the non-offload daemon with the reason, so offload
/// stays on for everyone else. Layer 2 is refused by ServerFactory. Reasons: <see cref="DcoRules.Review"/>.
/// </summary>
public static class DcoPolicy
{
    public static ControlPlaneOptions Apply(ControlPlaneOptions control, ServerSettings settings)
    {
        if (!settings.Dco)
        {
            return control;
        }

        var legacy = control.DataCiphers.Where(c => !DataCipherNames.IsAead(c)).Select(DataCipherNames.ToName).ToList();
        if (legacy.Count > 0)
        {
            Log.Info("dco", $"not offloaded: {string.Join(", ", legacy)} (not AEAD); clients that negotiate them use the non-offload daemon");
        }

        Log.Info("dco", "compression is off; clients whose profile frames data with comp-lzo/compress use the non-offload daemon");
        return control;
    }
}
