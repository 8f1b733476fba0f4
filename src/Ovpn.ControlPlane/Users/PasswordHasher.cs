// SPDX-License-Identifier: MIT
using System.Globalization;
using System.Security.Cryptography;
using System.Text;

namespace Ovpn.ControlPlane.Users;

/// <summary>
/// PBKDF2-HMAC-SHA256 password digests in the form "pbkdf2-sha256$ITERATIONS$SALT_B64$HASH_B64".
/// 600 000 iterations (OWASP 2023 guidance for PBKDF2-SHA256); 16-byte salt, 32-byte hash.
/// The iteration count is stored so it can be raised later without invalidating old digests.
/// </summary>
public static class PasswordHasher
{
    public const int Iterations = 600_000;
    private const string Scheme = "pbkdf2-sha256";

    public static string Hash(string password, int iterations = Iterations)
    {
        var salt = RandomNumberGenerator.GetBytes(16);
        var hash = Rfc2898DeriveBytes.Pbkdf2(Encoding.UTF8.GetBytes(password), salt, iterations, HashAlgorithmName.SHA256, 32);
        return string.Create(CultureInfo.InvariantCulture, $"{Scheme}${iterations}${Convert.ToBase64String(salt)}${Convert.ToBase64String(hash)}");
    }

    /// <summary>Constant-time check of a password against a stored digest; false for malformed digests.</summary>
    public static bool Verify(string password, string digest)
    {
        var parts = digest.Split('$');
        if (parts.Length != 4 || parts[0] != Scheme
            || !int.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out var iterations) || iterations is < 1 or > 10_000_000)
            return false;
        byte[] salt, expected;
        try
        {
            salt = Convert.FromBase64String(parts[2]);
            expected = Convert.FromBase64String(parts[3]);
        }
        catch (FormatException)
        {
            return false;
        }
        if (expected.Length == 0)
            return false;
        var actual = Rfc2898DeriveBytes.Pbkdf2(Encoding.UTF8.GetBytes(password), salt, iterations, HashAlgorithmName.SHA256, expected.Length);
        return CryptographicOperations.FixedTimeEquals(actual, expected);
    }
}
