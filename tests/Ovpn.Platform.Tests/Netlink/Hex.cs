// SPDX-License-Identifier: MIT
namespace Ovpn.Platform.Tests.Netlink;

internal static class Hex
{
    /// <summary>Hex with free whitespace and `|` separators, so expected layouts can be written field by field.</summary>
    public static byte[] B(string s) => Convert.FromHexString(new string(s.Where(Uri.IsHexDigit).ToArray()));

    public static string Of(byte[] b) => Convert.ToHexString(b).ToLowerInvariant();
}
