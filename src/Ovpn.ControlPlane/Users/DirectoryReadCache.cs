// SPDX-License-Identifier: MIT
using Microsoft.Data.Sqlite;
using Ovpn.ControlPlane.Config;

namespace Ovpn.ControlPlane.Users;

/// <summary>
/// Memo of the database reads every client handshake makes (is this certificate serial ours and is
/// it revoked, does the user exist, the user's/group's/__DEFAULT__ properties), for a long-running
/// server. Without it each handshake opened the database file four or five times (no connection
/// pooling) and parsed each statement again.
///
/// Freshness contract (the reason this is safe for revocation): every look-up first runs
/// <c>PRAGMA data_version</c> on the cache's own long-lived connection. SQLite changes that value
/// whenever any other connection, in this process or another (the <c>ovpnas user</c>/<c>sacli</c>
/// commands), has committed a change to the file since the previous call on this connection; on a
/// change the whole memo is dropped. The cache itself never writes, so every write anywhere is seen
/// by the next look-up: a revoked certificate or denied user is refused on the next handshake,
/// exactly as with uncached reads. Stores that write through the same process also call
/// <see cref="Invalidate"/> after their commit (belt and braces; costs nothing).
/// Not covered: replacing the database file itself (init --force) under a running server.
///
/// Thread-safe: one lock around the connection and the memo (a look-up holds it for a few
/// microseconds on a hit; SQLite connections are not thread-safe).
/// </summary>
public sealed class DirectoryReadCache : IDisposable
{
    /// <summary>Bound on memo entries (certificate serials are unique per client): past it the memo starts over.</summary>
    private const int MaxEntries = 100_000;

    private readonly Lock _gate = new();
    private readonly SqliteConnection _conn;
    private readonly SqliteCommand _dataVersion;
    private readonly SqliteCommand _revoked;
    private readonly SqliteParameter _revokedSerial;
    private readonly SqliteCommand _userExists;
    private readonly SqliteParameter _userExistsName;
    private readonly SqliteCommand _props;
    private readonly SqliteParameter _propsUser;
    private readonly Dictionary<string, bool?> _revokedBySerial = new(StringComparer.Ordinal);
    private readonly Dictionary<string, bool> _userExistsByName = new(StringComparer.Ordinal);
    private readonly Dictionary<string, IReadOnlyDictionary<string, string>> _propsByUser = new(StringComparer.Ordinal);
    private long _seenVersion = long.MinValue;
    private bool _disposed;

    public DirectoryReadCache(OvpnDatabase db)
    {
        _conn = db.OpenConnection();
        _dataVersion = Command("PRAGMA data_version");
        _revoked = Command("SELECT revoked FROM certificates WHERE serial = $s");
        _revokedSerial = _revoked.Parameters.Add("$s", SqliteType.Text);
        _userExists = Command("SELECT 1 FROM users WHERE name = $n");
        _userExistsName = _userExists.Parameters.Add("$n", SqliteType.Text);
        _props = Command("SELECT key, value FROM user_props WHERE user = $u");
        _propsUser = _props.Parameters.Add("$u", SqliteType.Text);
    }

    /// <summary>Look-ups that went to the database / were answered from the memo (tests, diagnostics).</summary>
    public long Misses { get; private set; }

    public long Hits { get; private set; }

    /// <summary>Null if the serial (uppercase hex) was never issued by this CA, else its revoked flag.</summary>
    public bool? IsRevoked(string serial)
    {
        lock (_gate)
        {
            Refresh();
            if (_revokedBySerial.TryGetValue(serial, out var v))
            {
                Hits++;
                return v;
            }

            Misses++;
            _revokedSerial.Value = serial;
            v = _revoked.ExecuteScalar() is long r ? r != 0 : null;
            _revokedBySerial[serial] = v;
            return v;
        }
    }

    public bool UserExists(string name)
    {
        lock (_gate)
        {
            Refresh();
            if (_userExistsByName.TryGetValue(name, out var v))
            {
                Hits++;
                return v;
            }

            Misses++;
            _userExistsName.Value = name;
            v = _userExists.ExecuteScalar() is not null;
            _userExistsByName[name] = v;
            return v;
        }
    }

    /// <summary>A user's (or group's, or __DEFAULT__'s) own properties; read-only, shared: copy before changing.</summary>
    public IReadOnlyDictionary<string, string> GetProperties(string user)
    {
        lock (_gate)
        {
            Refresh();
            if (_propsByUser.TryGetValue(user, out var v))
            {
                Hits++;
                return v;
            }

            Misses++;
            _propsUser.Value = user;
            var d = new Dictionary<string, string>(StringComparer.Ordinal);
            using (var r = _props.ExecuteReader())
            {
                while (r.Read())
                {
                    d[r.GetString(0)] = r.GetString(1);
                }
            }

            _propsByUser[user] = d;
            return d;
        }
    }

    /// <summary>Drops the memo (called by stores after a write they committed).</summary>
    public void Invalidate()
    {
        lock (_gate)
        {
            Clear();
        }
    }

    public void Dispose()
    {
        lock (_gate)
        {
            if (_disposed)
            {
                return;
            }

            _disposed = true;
            _dataVersion.Dispose();
            _revoked.Dispose();
            _userExists.Dispose();
            _props.Dispose();
            _conn.Dispose();
        }
    }

    /// <summary>Caller holds the lock. Drops the memo if anyone committed a change since the last look-up.</summary>
    private void Refresh()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        long version = (long)_dataVersion.ExecuteScalar()!;
        if (version != _seenVersion || _revokedBySerial.Count + _userExistsByName.Count + _propsByUser.Count > MaxEntries)
        {
            Clear();
            _seenVersion = version;
        }
    }

    private void Clear()
    {
        _revokedBySerial.Clear();
        _userExistsByName.Clear();
        _propsByUser.Clear();
        _seenVersion = long.MinValue;
    }

    private SqliteCommand Command(string sql)
    {
        var cmd = _conn.CreateCommand();
        cmd.CommandText = sql;
        return cmd;
    }
}
