// SPDX-License-Identifier: MIT
using Ovpn.ControlPlane.Dco;

namespace Ovpn.Server.Management;

/// <summary>Turns configuration, running engine and kernel probe into the offload status row.</summary>
public static class DcoStatusBuilder
{
    public static bool IsKernelEngine(string engine) =>
        engine.Contains("kernel", StringComparison.OrdinalIgnoreCase) || engine.Contains("dco", StringComparison.OrdinalIgnoreCase);

    public static DcoStatus Build(bool configured, string engine, string engineVersion, KernelDcoInfo kernel, DcoReview review)
    {
        DcoState state;
        string text;
        string? reason;
        if (IsKernelEngine(engine))
        {
            state = DcoState.Active;
            reason = null;
            text = $"Active: {engine} {engineVersion}".TrimEnd();
        }
        else if (!kernel.Available)
        {
            state = DcoState.NotAvailable;
            reason = configured ? kernel.Reason : $"disabled in configuration; also {kernel.Reason}";
            text = $"Not available: {reason}";
        }
        else
        {
            state = DcoState.AvailableInactive;
            reason = !configured ? "disabled in configuration (vpn.server.daemon.ovpndco = false)"
                : !review.Offloadable ? "configuration prevents offload: " + string.Join("; ", review.Blockers)
                : $"the running data path is {engine}; apply with a restart";
            text = $"Available but inactive ({kernel.Module} {kernel.Version}): {reason}";
        }

        return new DcoStatus(state, text, configured, engine, engineVersion, reason, kernel,
            review.Blockers.ToList(), review.Warnings.ToList(), review.OffloadedCiphers);
    }
}
