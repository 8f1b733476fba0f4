// SPDX-License-Identifier: MIT
using Ovpn.ControlPlane.Config;
using Ovpn.ControlPlane.Pki;
using Ovpn.ControlPlane.Users;

namespace Ovpn.Admin;

/// <summary>One refused value: the key, the value given, and what is allowed.</summary>
public sealed record ConfigError(string Key, string? Value, string Allowed, string Message);

/// <summary>
/// What the pages and the JSON API do with the data directory. Saving is all-or-nothing: every
/// value is validated first, and if one is refused nothing is written (the old values stay).
/// </summary>
public sealed class AdminService(string dataDir)
{
    public string DataDir => dataDir;

    public ConfigStore Config => ConfigStore.Open(dataDir);

    public UserStore Users => UserStore.Open(dataDir);

    /// <summary>
    /// Validates and stores plain keys, and replaces the lists of indexed keys given in
    /// <paramref name="lists"/> (prefix → values). Returns the errors; empty means saved.
    /// </summary>
    public IReadOnlyList<ConfigError> SaveConfig(IReadOnlyDictionary<string, string?> values, IReadOnlyDictionary<string, IReadOnlyList<string>>? lists = null)
    {
        var errors = new List<ConfigError>();
        var normalized = new List<(string Key, string Value)>();
        foreach (var (k, v) in values)
        {
            if (ConfigKeys.TryGet(k, out var def) && def.Indexed)
            {
                errors.Add(new ConfigError(k, v, "a plain key (use the list form for indexed keys)", $"'{k}' is an indexed key"));
                continue;
            }

            try
            {
                normalized.Add((k, ConfigKeys.Normalize(k, v)));
            }
            catch (ConfigValidationException e)
            {
                errors.Add(new ConfigError(e.Key, e.Value, e.Allowed, e.Message));
            }
        }

        var listItems = new List<(string Prefix, List<string> Values)>();
        foreach (var (prefix, items) in lists ?? new Dictionary<string, IReadOnlyList<string>>())
        {
            var ok = new List<string>();
            for (int i = 0; i < items.Count; i++)
            {
                var key = $"{prefix}.{i}";
                try
                {
                    ok.Add(ConfigKeys.Normalize(key, items[i]));
                }
                catch (ConfigValidationException e)
                {
                    errors.Add(new ConfigError(e.Key, e.Value, e.Allowed, e.Message));
                }
            }

            listItems.Add((prefix, ok));
        }

        if (errors.Count > 0)
        {
            return errors;
        }

        var store = Config;
        foreach (var (k, v) in normalized)
        {
            store.Put(k, v);
        }

        foreach (var (prefix, items) in listItems)
        {
            foreach (var k in store.Query(prefix + ".", includeDefaults: false).Keys)
            {
                store.Delete(k);
            }

            for (int i = 0; i < items.Count; i++)
            {
                store.Put($"{prefix}.{i}", items[i]);
            }
        }

        return errors;
    }

    /// <summary>True if the user may log in to the admin UI (prop_superuser=true and a local password).</summary>
    public bool VerifyAdmin(string user, string password)
    {
        var users = Users;
        // Verify first, always: the PBKDF2 cost is paid also for unknown users and non-admins.
        bool passwordOk = users.VerifyPassword(user, password);
        return passwordOk && IsAdmin(users, user);
    }

    public bool IsAdmin(string user) => IsAdmin(Users, user);

    private static bool IsAdmin(UserStore users, string user) =>
        users.Exists(user) && string.Equals(users.GetProperty(user, "prop_superuser"), "true", StringComparison.OrdinalIgnoreCase);

    public void AddUser(string name, string? password, bool superuser)
    {
        var users = Users;
        users.Add(name, string.IsNullOrEmpty(password) ? null : password);
        if (superuser)
        {
            users.SetProperty(name, "prop_superuser", "true");
        }
    }

    public bool DeleteUser(string name)
    {
        var db = OvpnDatabase.Open(dataDir);
        var users = new UserStore(db);
        if (!users.Exists(name))
        {
            return false;
        }

        CertificateAuthority.Open(db).RevokeUser(name);
        return users.Delete(name);
    }

    public void SetPassword(string name, string password)
    {
        var users = Users;
        if (!users.Exists(name))
        {
            throw new AdminException($"no such user '{name}'");
        }

        users.SetPassword(name, password);
    }

    public string BuildProfile(string user)
    {
        var db = OvpnDatabase.Open(dataDir);
        return ClientProfileBuilder.Build(new ConfigStore(db), CertificateAuthority.Open(db), new UserStore(db), user);
    }
}
