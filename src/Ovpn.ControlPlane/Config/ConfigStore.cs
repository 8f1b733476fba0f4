// SPDX-License-Identifier: MIT
using System.Globalization;

namespace Ovpn.ControlPlane.Config;

/// <summary>
/// Typed access to the config key/value table. Values are validated against
/// <see cref="ConfigKeys"/> before they are written; a refused value leaves the stored one as is.
/// Thread-safe (each call uses its own connection).
/// </summary>
public sealed class ConfigStore
{
    private readonly OvpnDatabase _db;

    public ConfigStore(OvpnDatabase db) => _db = db;

    /// <summary>Opens the config of an initialized data directory.</summary>
    public static ConfigStore Open(string dataDir) => new(OvpnDatabase.Open(dataDir));

    public OvpnDatabase Database => _db;

    /// <summary>The stored value, else the key's default, else null (indexed keys have no default).</summary>
    public string? Get(string key) => GetStored(key) ?? (ConfigKeys.TryGet(key, out var d) ? d.DefaultValue : null);

    public string? GetStored(string key)
    {
        using var c = _db.OpenConnection();
        using var cmd = c.CreateCommand();
        cmd.CommandText = "SELECT value FROM config WHERE key = $k";
        cmd.Parameters.AddWithValue("$k", key);
        return cmd.ExecuteScalar() as string;
    }

    /// <summary>Validates and stores a value. Throws <see cref="ConfigValidationException"/>.</summary>
    public void Put(string key, string value)
    {
        var normalized = ConfigKeys.Normalize(key, value);
        using var c = _db.OpenConnection();
        using var cmd = c.CreateCommand();
        cmd.CommandText = "INSERT INTO config (key, value) VALUES ($k, $v) ON CONFLICT(key) DO UPDATE SET value = excluded.value";
        cmd.Parameters.AddWithValue("$k", key);
        cmd.Parameters.AddWithValue("$v", normalized);
        cmd.ExecuteNonQuery();
    }

    /// <summary>Removes a stored value (the default applies again). Returns false if none was stored.</summary>
    public bool Delete(string key)
    {
        using var c = _db.OpenConnection();
        using var cmd = c.CreateCommand();
        cmd.CommandText = "DELETE FROM config WHERE key = $k";
        cmd.Parameters.AddWithValue("$k", key);
        return cmd.ExecuteNonQuery() > 0;
    }

    /// <summary>
    /// Keys starting with <paramref name="prefix"/> (ordinal) and their effective values, sorted by
    /// key. With <paramref name="includeDefaults"/> the defaults of unset plain keys are included.
    /// </summary>
    public SortedDictionary<string, string> Query(string prefix = "", bool includeDefaults = true)
    {
        var result = new SortedDictionary<string, string>(StringComparer.Ordinal);
        if (includeDefaults)
        {
            foreach (var d in ConfigKeys.PlainKeys)
                if (d.Name.StartsWith(prefix, StringComparison.Ordinal) && d.DefaultValue is { } dv)
                    result[d.Name] = dv;
        }
        using var c = _db.OpenConnection();
        using var cmd = c.CreateCommand();
        // substr() instead of LIKE: keys contain '_' which LIKE treats as a wildcard.
        cmd.CommandText = "SELECT key, value FROM config WHERE substr(key, 1, length($p)) = $p";
        cmd.Parameters.AddWithValue("$p", prefix);
        using var r = cmd.ExecuteReader();
        while (r.Read())
            result[r.GetString(0)] = r.GetString(1);
        return result;
    }

    public bool GetBool(string key) => Require(key) == "true";

    public int GetInt(string key) => int.Parse(Require(key), NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture);

    public string GetString(string key) => Require(key);

    /// <summary>Values of an indexed key family (prefix.0, prefix.1, ...) ordered by index.</summary>
    public IReadOnlyList<string> GetIndexed(string prefix)
    {
        var items = new List<(int Index, string Value)>();
        foreach (var (k, v) in Query(prefix + ".", includeDefaults: false))
            if (ConfigKeys.TryParseIndex(k.AsSpan(prefix.Length + 1), out var i))
                items.Add((i, v));
        return items.OrderBy(x => x.Index).Select(x => x.Value).ToList();
    }

    private string Require(string key) =>
        Get(key) ?? throw new InvalidOperationException($"config key '{key}' has no value and no default");

    /// <summary>Builds the immutable snapshot the server reads at start.</summary>
    public ServerSettings GetServerSettings() => ServerSettings.From(this);
}
