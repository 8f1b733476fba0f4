// SPDX-License-Identifier: MIT
using Microsoft.Data.Sqlite;

namespace Ovpn.ControlPlane.Config;

/// <summary>
/// The embedded SQLite database in DATA_DIR/ovpnas.db. It holds the config key/values, users and
/// their properties, issued certificates (with the revocation flag) and the PKI files (CA key,
/// server key, tls-crypt key) in the <c>pki_files</c> table. Keeping the private keys inside the
/// database (file mode 0600, directory 0700) means one file to back up and no partial states
/// where the DB and loose key files disagree.
/// Thread-safe: every operation opens its own connection (no pooling, so nothing keeps the file
/// open after a command ends).
/// </summary>
public sealed class OvpnDatabase
{
    public const string FileName = "ovpnas.db";

    // Migrations run in order; index + 1 is the schema version they produce. Never edit an old
    // entry: add a new one.
    private static readonly string[] Migrations =
    [
        """
        CREATE TABLE config (key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL);
        CREATE TABLE users (name TEXT PRIMARY KEY NOT NULL, created_unix INTEGER NOT NULL, password_digest TEXT NULL);
        CREATE TABLE user_props (user TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (user, key));
        CREATE TABLE certificates (
            serial TEXT PRIMARY KEY NOT NULL,      -- uppercase hex, as X509Certificate2.SerialNumber
            user TEXT NULL,                        -- NULL for the CA and server certificates
            kind TEXT NOT NULL,                    -- 'ca' | 'server' | 'client'
            cert_pem TEXT NOT NULL,
            key_pem TEXT NULL,                     -- client keys are kept so profiles can be re-downloaded
            not_after_unix INTEGER NOT NULL,
            created_unix INTEGER NOT NULL,
            revoked INTEGER NOT NULL DEFAULT 0,
            revoked_unix INTEGER NULL);
        CREATE INDEX certificates_user ON certificates(user);
        CREATE TABLE pki_files (name TEXT PRIMARY KEY NOT NULL, content TEXT NOT NULL, created_unix INTEGER NOT NULL);
        """,
    ];

    public static int LatestSchemaVersion => Migrations.Length;

    private readonly string _connectionString;

    public string DataDirectory { get; }
    public string DatabasePath { get; }

    private OvpnDatabase(string dataDir)
    {
        DataDirectory = Path.GetFullPath(dataDir);
        DatabasePath = Path.Combine(DataDirectory, FileName);
        _connectionString = new SqliteConnectionStringBuilder
        {
            DataSource = DatabasePath,
            Mode = SqliteOpenMode.ReadWriteCreate,
            Pooling = false,
            DefaultTimeout = 10,
        }.ToString();
    }

    public static bool Exists(string dataDir) => File.Exists(Path.Combine(dataDir, FileName));

    /// <summary>Opens an existing database and applies pending migrations.</summary>
    /// <exception cref="AdminException">The data directory is not initialized.</exception>
    public static OvpnDatabase Open(string dataDir)
    {
        if (!Exists(dataDir))
            throw new AdminException($"data directory '{dataDir}' is not initialized (run 'ovpnas init --data-dir {dataDir}')");
        var db = new OvpnDatabase(dataDir);
        db.Migrate();
        return db;
    }

    /// <summary>Creates the data directory (0700) and a fresh database file (0600).</summary>
    public static OvpnDatabase Create(string dataDir)
    {
        Directory.CreateDirectory(dataDir, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        // CreateDirectory keeps the mode of an existing directory; tighten it either way.
        File.SetUnixFileMode(dataDir, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        var path = Path.Combine(dataDir, FileName);
        if (!File.Exists(path))
        {
            // Create the file ourselves first so it never exists with a wider mode.
            using var fs = new FileStream(path, new FileStreamOptions
            {
                Mode = FileMode.CreateNew,
                Access = FileAccess.Write,
                UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite,
            });
        }
        var db = new OvpnDatabase(dataDir);
        db.Migrate();
        return db;
    }

    /// <summary>Removes the database and its WAL side files (used by init --force).</summary>
    public static void Delete(string dataDir)
    {
        foreach (var suffix in new[] { "", "-wal", "-shm", "-journal" })
        {
            var p = Path.Combine(dataDir, FileName + suffix);
            if (File.Exists(p))
                File.Delete(p);
        }
    }

    public SqliteConnection OpenConnection()
    {
        var c = new SqliteConnection(_connectionString);
        c.Open();
        using var cmd = c.CreateCommand();
        cmd.CommandText = "PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000;";
        cmd.ExecuteNonQuery();
        return c;
    }

    public int GetSchemaVersion()
    {
        using var c = OpenConnection();
        using var cmd = c.CreateCommand();
        cmd.CommandText = "SELECT COALESCE(MAX(version), 0) FROM schema_version";
        return Convert.ToInt32(cmd.ExecuteScalar(), System.Globalization.CultureInfo.InvariantCulture);
    }

    private void Migrate()
    {
        using var c = OpenConnection();
        using (var cmd = c.CreateCommand())
        {
            // WAL is persistent in the file; readers (the running server) do not block the CLI.
            cmd.CommandText = """
                PRAGMA journal_mode = WAL;
                CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY NOT NULL, applied_unix INTEGER NOT NULL);
                """;
            cmd.ExecuteNonQuery();
        }
        using var tx = c.BeginTransaction(System.Data.IsolationLevel.Serializable);
        int current;
        using (var cmd = c.CreateCommand())
        {
            cmd.Transaction = tx;
            cmd.CommandText = "SELECT COALESCE(MAX(version), 0) FROM schema_version";
            current = Convert.ToInt32(cmd.ExecuteScalar(), System.Globalization.CultureInfo.InvariantCulture);
        }
        if (current > Migrations.Length)
            throw new AdminException($"database schema version {current} is newer than this program supports ({Migrations.Length})");
        for (int v = current; v < Migrations.Length; v++)
        {
            using var cmd = c.CreateCommand();
            cmd.Transaction = tx;
            cmd.CommandText = Migrations[v] + "; INSERT INTO schema_version (version, applied_unix) VALUES ($v, $t);";
            cmd.Parameters.AddWithValue("$v", v + 1);
            cmd.Parameters.AddWithValue("$t", DateTimeOffset.UtcNow.ToUnixTimeSeconds());
            cmd.ExecuteNonQuery();
        }
        tx.Commit();
    }
}
