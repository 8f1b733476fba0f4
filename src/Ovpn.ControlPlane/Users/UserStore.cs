// SPDX-License-Identifier: MIT
using System.Text.RegularExpressions;
using Ovpn.ControlPlane.Config;

namespace Ovpn.ControlPlane.Users;

public sealed record UserRecord(string Name, DateTimeOffset Created, bool HasPassword);

/// <summary>
/// Users, their local passwords and free-form properties (Access Server "UserProp" keys such as
/// "type" or "prop_autologin"). Thread-safe (each call uses its own connection).
/// With a <see cref="DirectoryReadCache"/> (the running server's), <see cref="Exists"/> and the
/// property reads are answered from it (it re-reads after any committed change, from any process);
/// every write here also invalidates it.
/// </summary>
public sealed partial class UserStore
{
    private readonly OvpnDatabase _db;
    private readonly DirectoryReadCache? _cache;

    public UserStore(OvpnDatabase db, DirectoryReadCache? cache = null)
    {
        _db = db;
        _cache = cache;
    }

    public static UserStore Open(string dataDir) => new(OvpnDatabase.Open(dataDir));

    // Names end up as certificate CNs, file names and in profiles: keep them to a safe alphabet.
    [GeneratedRegex(@"^[A-Za-z0-9_][A-Za-z0-9_.@-]{0,63}$")]
    private static partial Regex NamePattern();

    public static void ValidateName(string name)
    {
        if (!NamePattern().IsMatch(name))
            throw new AdminException($"invalid user name '{name}': allowed 1..64 characters of A-Z a-z 0-9 _ . @ - (not starting with . @ -)");
    }

    public bool Exists(string name)
    {
        if (_cache is not null)
            return _cache.UserExists(name);
        using var c = _db.OpenConnection();
        using var cmd = c.CreateCommand();
        cmd.CommandText = "SELECT 1 FROM users WHERE name = $n";
        cmd.Parameters.AddWithValue("$n", name);
        return cmd.ExecuteScalar() is not null;
    }

    /// <summary>Adds a user; throws <see cref="AdminException"/> if the name is invalid or taken.</summary>
    public void Add(string name, string? password = null)
    {
        ValidateName(name);
        if (Exists(name))
            throw new AdminException($"user '{name}' already exists");
        Insert(name, password is null ? null : PasswordHasher.Hash(password));
    }

    /// <summary>Adds the user if missing (Access Server creates users on first UserPropPut).</summary>
    public void EnsureExists(string name)
    {
        ValidateName(name);
        if (!Exists(name))
            Insert(name, null);
    }

    private void Insert(string name, string? digest)
    {
        using var c = _db.OpenConnection();
        using var cmd = c.CreateCommand();
        cmd.CommandText = "INSERT OR IGNORE INTO users (name, created_unix, password_digest) VALUES ($n, $t, $d)";
        cmd.Parameters.AddWithValue("$n", name);
        cmd.Parameters.AddWithValue("$t", DateTimeOffset.UtcNow.ToUnixTimeSeconds());
        cmd.Parameters.AddWithValue("$d", (object?)digest ?? DBNull.Value);
        cmd.ExecuteNonQuery();
        _cache?.Invalidate();
    }

    public IReadOnlyList<UserRecord> List()
    {
        using var c = _db.OpenConnection();
        using var cmd = c.CreateCommand();
        cmd.CommandText = "SELECT name, created_unix, password_digest IS NOT NULL FROM users ORDER BY name";
        using var r = cmd.ExecuteReader();
        var list = new List<UserRecord>();
        while (r.Read())
            list.Add(new UserRecord(r.GetString(0), DateTimeOffset.FromUnixTimeSeconds(r.GetInt64(1)), r.GetInt64(2) != 0));
        return list;
    }

    /// <summary>Deletes the user and their properties. Certificates are kept (revoked) by the caller.</summary>
    public bool Delete(string name)
    {
        using var c = _db.OpenConnection();
        using var tx = c.BeginTransaction();
        using var cmd = c.CreateCommand();
        cmd.Transaction = tx;
        cmd.CommandText = "DELETE FROM user_props WHERE user = $n; DELETE FROM users WHERE name = $n;";
        cmd.Parameters.AddWithValue("$n", name);
        var n = cmd.ExecuteNonQuery();
        tx.Commit();
        _cache?.Invalidate();
        return n > 0;
    }

    public void SetPassword(string name, string password)
    {
        if (password.Length == 0)
            throw new AdminException("the password must not be empty");
        EnsureExists(name);
        var digest = PasswordHasher.Hash(password);
        using var c = _db.OpenConnection();
        using var cmd = c.CreateCommand();
        cmd.CommandText = "UPDATE users SET password_digest = $d WHERE name = $n";
        cmd.Parameters.AddWithValue("$n", name);
        cmd.Parameters.AddWithValue("$d", digest);
        cmd.ExecuteNonQuery();
        _cache?.Invalidate();
    }

    /// <summary>False for unknown users, users without a local password and wrong passwords.</summary>
    public bool VerifyPassword(string name, string password)
    {
        using var c = _db.OpenConnection();
        using var cmd = c.CreateCommand();
        cmd.CommandText = "SELECT password_digest FROM users WHERE name = $n";
        cmd.Parameters.AddWithValue("$n", name);
        return cmd.ExecuteScalar() is string digest && PasswordHasher.Verify(password, digest);
    }

    public void SetProperty(string user, string key, string value)
    {
        if (key.Length == 0)
            throw new AdminException("a user property key must not be empty");
        EnsureExists(user);
        using var c = _db.OpenConnection();
        using var cmd = c.CreateCommand();
        cmd.CommandText = "INSERT INTO user_props (user, key, value) VALUES ($u, $k, $v) ON CONFLICT(user, key) DO UPDATE SET value = excluded.value";
        cmd.Parameters.AddWithValue("$u", user);
        cmd.Parameters.AddWithValue("$k", key);
        cmd.Parameters.AddWithValue("$v", value);
        cmd.ExecuteNonQuery();
        _cache?.Invalidate();
    }

    public string? GetProperty(string user, string key) => GetProperties(user).GetValueOrDefault(key);

    public SortedDictionary<string, string> GetProperties(string user)
    {
        if (_cache is not null)
            return new SortedDictionary<string, string>(_cache.GetProperties(user).ToDictionary(StringComparer.Ordinal), StringComparer.Ordinal);
        using var c = _db.OpenConnection();
        using var cmd = c.CreateCommand();
        cmd.CommandText = "SELECT key, value FROM user_props WHERE user = $u";
        cmd.Parameters.AddWithValue("$u", user);
        using var r = cmd.ExecuteReader();
        var d = new SortedDictionary<string, string>(StringComparer.Ordinal);
        while (r.Read())
            d[r.GetString(0)] = r.GetString(1);
        return d;
    }

    /// <summary>The record whose properties apply to every user that does not set them (Access Server's name).</summary>
    public const string DefaultRecord = "__DEFAULT__";

    /// <summary>
    /// A property as it applies to <paramref name="user"/>, with Access Server's precedence: the
    /// user's own value, else its group's (the user property <c>conn_group</c> names a record of
    /// <c>type</c> group), else the <c>__DEFAULT__</c> record's. Null when none sets it.
    /// </summary>
    public string? GetEffectiveProperty(string user, string key) => GetEffectiveProperties(user).GetValueOrDefault(key);

    /// <summary>All properties that apply to <paramref name="user"/> (user over group over __DEFAULT__).</summary>
    public SortedDictionary<string, string> GetEffectiveProperties(string user)
    {
        var own = GetProperties(user);
        var result = new SortedDictionary<string, string>(StringComparer.Ordinal);
        foreach (var (k, v) in GetProperties(DefaultRecord))
            result[k] = v;
        if (own.TryGetValue("conn_group", out var group) && group != user)
        {
            var g = GetProperties(group);
            if (g.TryGetValue("type", out var type) && type == "group")
            {
                foreach (var (k, v) in g)
                {
                    if (k != "type")
                        result[k] = v;
                }
            }
        }

        foreach (var (k, v) in own)
            result[k] = v;
        return result;
    }

    public bool DeleteProperty(string user, string key)
    {
        using var c = _db.OpenConnection();
        using var cmd = c.CreateCommand();
        cmd.CommandText = "DELETE FROM user_props WHERE user = $u AND key = $k";
        cmd.Parameters.AddWithValue("$u", user);
        cmd.Parameters.AddWithValue("$k", key);
        var removed = cmd.ExecuteNonQuery() > 0;
        _cache?.Invalidate();
        return removed;
    }
}
