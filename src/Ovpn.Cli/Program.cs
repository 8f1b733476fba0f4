// SPDX-License-Identifier: MIT
using System.CommandLine;
using System.Text.Json;
using Ovpn.ControlPlane.Client;
using Ovpn.ControlPlane.Config;
using Ovpn.ControlPlane.Pki;
using Ovpn.ControlPlane.Users;

namespace Ovpn.Cli;

/// <summary>
/// The ovpnas command. Exit codes: 0 ok, 1 usage or validation error (message on stderr),
/// 2 runtime error (including features not implemented yet).
/// </summary>
public static class Program
{
    public const int ExitOk = 0;
    public const int ExitUsage = 1;
    public const int ExitRuntime = 2;
    public const string DefaultDataDir = "/var/lib/ovpnas";

    public static int Main(string[] args) => Run(args, Console.Out, Console.Error);

    /// <summary>Runs the command line with explicit output writers (used by tests).</summary>
    public static int Run(string[] args, TextWriter stdout, TextWriter stderr)
    {
        try
        {
            var cli = new Cli(stdout, stderr);
            var root = cli.BuildRoot();
            // No "@file" response files: a value such as a password may legitimately start with '@'.
            var parse = root.Parse(args, new ParserConfiguration { ResponseFileTokenReplacer = null });
            return parse.Invoke(new InvocationConfiguration { Output = stdout, Error = stderr, EnableDefaultExceptionHandler = false });
        }
        catch (Exception ex)
        {
            // Actions catch their own errors; this is the last line for failures in the parser itself.
            stderr.WriteLine($"ovpnas: {ex.Message} ({ex.GetType().Name})");
            return ExitRuntime;
        }
    }
}

internal sealed class Cli(TextWriter stdout, TextWriter stderr)
{
    private readonly Option<string> _dataDir = new("--data-dir")
    {
        Description = "Data directory (database with config, users and PKI)",
        DefaultValueFactory = _ => Program.DefaultDataDir,
        Recursive = true,
        HelpName = "DIR",
    };

    private static readonly JsonSerializerOptions Json = new() { WriteIndented = true };

    public RootCommand BuildRoot()
    {
        var root = new RootCommand("ovpnas: OpenVPN-compatible access server");
        root.Options.Add(_dataDir);
        root.Subcommands.Add(InitCommand());
        root.Subcommands.Add(UserCommand());
        root.Subcommands.Add(ProfileCommand());
        root.Subcommands.Add(SacliCommand());
        root.Subcommands.Add(ServeCommand());
        root.Subcommands.Add(ConnectCommand());
        root.Subcommands.Add(DoctorCommand());
        root.Subcommands.Add(DcoReloadCommand.Create(DataDir, stdout, stderr));
        return root;
    }

    // Every action body runs through here so exceptions become exit codes consistently.
    private int Guard(Func<int> body)
    {
        try
        {
            return body();
        }
        catch (Exception ex)
        {
            return Report(ex);
        }
    }

    private async Task<int> GuardAsync(Func<Task<int>> body)
    {
        try
        {
            return await body().ConfigureAwait(false);
        }
        catch (Exception ex)
        {
            return Report(ex);
        }
    }

    private int Report(Exception ex)
    {
        switch (ex)
        {
            case ConfigValidationException or AdminException:
                stderr.WriteLine("ovpnas: " + ex.Message);
                return Program.ExitUsage;
            case OperationCanceledException:
                stderr.WriteLine("ovpnas: cancelled");
                return Program.ExitRuntime;
            default:
                stderr.WriteLine($"ovpnas: {ex.Message} ({ex.GetType().Name})");
                return Program.ExitRuntime;
        }
    }

    private string DataDir(ParseResult p) => p.GetValue(_dataDir) ?? Program.DefaultDataDir;

    private Command InitCommand()
    {
        var hostname = new Option<string?>("--hostname") { Description = "Host name or address clients connect to (written into profiles and the server certificate SAN)" };
        var force = new Option<bool>("--force") { Description = "Replace an existing database, PKI and users" };
        var cmd = new Command("init", "Create the data directory, database, CA, server certificate and tls-crypt key") { hostname, force };
        cmd.SetAction(p => Guard(() =>
        {
            var dir = DataDir(p);
            if (OvpnDatabase.Exists(dir))
            {
                if (!p.GetValue(force))
                    throw new AdminException($"'{dir}' is already initialized (use --force to start over; this discards the PKI and users)");
                OvpnDatabase.Delete(dir);
            }
            var host = p.GetValue(hostname);
            // Validate before creating anything so a bad name leaves no half-made directory.
            host = host is null ? ConfigKeys.All.First(k => k.Name == ConfigKeys.HostName).DefaultValue! : ConfigKeys.Normalize(ConfigKeys.HostName, host);
            var db = OvpnDatabase.Create(dir);
            var config = new ConfigStore(db);
            config.Put(ConfigKeys.HostName, host);
            CertificateAuthority.Initialize(db, host);
            stdout.WriteLine($"initialized {db.DataDirectory} (host name {host})");
            return Program.ExitOk;
        }));
        return cmd;
    }

    private Command UserCommand()
    {
        var user = new Command("user", "Manage users");

        var name = new Argument<string>("NAME");
        var password = new Option<string?>("--password") { Description = "Local password (stored as a PBKDF2-SHA256 digest)" };
        var add = new Command("add", "Add a user and issue their client certificate") { name, password };
        add.SetAction(p => Guard(() =>
        {
            var db = OvpnDatabase.Open(DataDir(p));
            var users = new UserStore(db);
            var n = p.GetValue(name)!;
            users.Add(n, p.GetValue(password));
            var cert = CertificateAuthority.Open(db).IssueClientCertificate(n);
            stdout.WriteLine($"added user {n} (certificate serial {cert.Serial})");
            return Program.ExitOk;
        }));
        user.Subcommands.Add(add);

        var list = new Command("list", "List users with their certificate state");
        list.SetAction(p => Guard(() =>
        {
            var db = OvpnDatabase.Open(DataDir(p));
            var ca = CertificateAuthority.Open(db);
            foreach (var u in new UserStore(db).List())
            {
                var certs = ca.ListCertificates(u.Name);
                int active = certs.Count(c => !c.Revoked), revoked = certs.Count(c => c.Revoked);
                stdout.WriteLine($"{u.Name}\tpassword={(u.HasPassword ? "yes" : "no")}\tcerts={active}\trevoked={revoked}");
            }
            return Program.ExitOk;
        }));
        user.Subcommands.Add(list);

        var revokeName = new Argument<string>("NAME");
        var revoke = new Command("revoke", "Revoke all certificates of a user") { revokeName };
        revoke.SetAction(p => Guard(() =>
        {
            var db = OvpnDatabase.Open(DataDir(p));
            var n = p.GetValue(revokeName)!;
            if (!new UserStore(db).Exists(n))
                throw new AdminException($"no such user '{n}'");
            var count = CertificateAuthority.Open(db).RevokeUser(n);
            stdout.WriteLine($"revoked {count} certificate(s) of {n}");
            return Program.ExitOk;
        }));
        user.Subcommands.Add(revoke);

        var delName = new Argument<string>("NAME");
        var del = new Command("del", "Delete a user (their certificates stay revoked)") { delName };
        del.SetAction(p => Guard(() =>
        {
            var db = OvpnDatabase.Open(DataDir(p));
            var n = p.GetValue(delName)!;
            var users = new UserStore(db);
            if (!users.Exists(n))
                throw new AdminException($"no such user '{n}'");
            CertificateAuthority.Open(db).RevokeUser(n);
            users.Delete(n);
            stdout.WriteLine($"deleted user {n}");
            return Program.ExitOk;
        }));
        user.Subcommands.Add(del);
        return user;
    }

    private Command ProfileCommand()
    {
        var name = new Argument<string>("NAME");
        var output = new Option<string?>("--out") { Description = "Write the profile to FILE (mode 0600) instead of stdout", HelpName = "FILE" };
        var cmd = new Command("profile", "Write a user's .ovpn connection profile") { name, output };
        cmd.SetAction(p => Guard(() =>
        {
            var text = BuildProfile(DataDir(p), p.GetValue(name)!);
            var file = p.GetValue(output);
            if (file is null)
                stdout.Write(text);
            else
                WritePrivateFile(file, text);
            return Program.ExitOk;
        }));
        return cmd;
    }

    private static string BuildProfile(string dataDir, string user)
    {
        var db = OvpnDatabase.Open(dataDir);
        return ClientProfileBuilder.Build(new ConfigStore(db), CertificateAuthority.Open(db), new UserStore(db), user);
    }

    private static void WritePrivateFile(string path, string text)
    {
        // The profile holds a private key: create it 0600 and tighten an existing file too.
        using (var fs = new FileStream(path, new FileStreamOptions
        {
            Mode = FileMode.Create,
            Access = FileAccess.Write,
            UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite,
        }))
        using (var w = new StreamWriter(fs))
            w.Write(text);
        File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite);
    }

    private Command SacliCommand()
    {
        var key = new Option<string?>("--key", "-k") { Description = "Config or property key" };
        var value = new Option<string?>("--value", "-v") { Description = "Value" };
        var user = new Option<string?>("--user", "-u") { Description = "User name" };
        var pfilt = new Option<string?>("--pfilt") { Description = "ConfigQuery: only keys with this prefix" };
        var newPass = new Option<string?>("--new_pass") { Description = "SetLocalPassword: the new password" };
        var verb = new Argument<string>("VERB")
        {
            Description = "ConfigPut | ConfigQuery | ConfigDel | UserPropPut | UserPropGet | UserPropDel | SetLocalPassword | GetUserlogin | start | stop | Status | VPNStatus",
        };
        var cmd = new Command("sacli", "Access Server style admin verbs (the verb may appear anywhere)") { key, value, user, pfilt, newPass, verb };
        cmd.SetAction((p, ct) => GuardAsync(async () =>
        {
            var dir = DataDir(p);
            string Need(Option<string?> o, string what) =>
                p.GetValue(o) ?? throw new AdminException($"sacli {p.GetValue(verb)}: {what} is required");
            switch (p.GetValue(verb)!.ToLowerInvariant())
            {
                case "configput":
                    ConfigStore.Open(dir).Put(Need(key, "--key/-k"), Need(value, "--value/-v"));
                    return Program.ExitOk;
                case "configdel":
                    ConfigStore.Open(dir).Delete(Need(key, "--key/-k"));
                    return Program.ExitOk;
                case "configquery":
                    stdout.WriteLine(JsonSerializer.Serialize(ConfigStore.Open(dir).Query(p.GetValue(pfilt) ?? ""), Json));
                    return Program.ExitOk;
                case "userpropput":
                    UserStore.Open(dir).SetProperty(Need(user, "--user/-u"), Need(key, "--key/-k"), Need(value, "--value/-v"));
                    return Program.ExitOk;
                case "userpropdel":
                    UserStore.Open(dir).DeleteProperty(Need(user, "--user/-u"), Need(key, "--key/-k"));
                    return Program.ExitOk;
                case "userpropget":
                {
                    var users = UserStore.Open(dir);
                    var result = new SortedDictionary<string, SortedDictionary<string, string>>(StringComparer.Ordinal);
                    var only = p.GetValue(user);
                    foreach (var u in users.List())
                    {
                        if (only is not null && u.Name != only)
                            continue;
                        var props = users.GetProperties(u.Name);
                        if (p.GetValue(key) is { } k)
                            props = new SortedDictionary<string, string>(props.Where(kv => kv.Key == k).ToDictionary(), StringComparer.Ordinal);
                        result[u.Name] = props;
                    }
                    if (only is not null && result.Count == 0)
                        throw new AdminException($"no such user '{only}'");
                    stdout.WriteLine(JsonSerializer.Serialize(result, Json));
                    return Program.ExitOk;
                }
                case "setlocalpassword":
                    UserStore.Open(dir).SetPassword(Need(user, "--user/-u"), Need(newPass, "--new_pass"));
                    return Program.ExitOk;
                case "getuserlogin":
                    stdout.Write(BuildProfile(dir, Need(user, "--user/-u")));
                    return Program.ExitOk;
                case "start":
                    return await ServerCommands.StartAsync(dir, stdout, ct).ConfigureAwait(false);
                case "stop":
                    return await ServerCommands.StopAsync(dir, stdout, ct).ConfigureAwait(false);
                case "status":
                    return await ServerCommands.StatusAsync(dir, stdout, ct).ConfigureAwait(false);
                case "vpnstatus":
                    return await ServerCommands.VpnStatusAsync(dir, stdout, ct).ConfigureAwait(false);
                default:
                    throw new AdminException($"unknown sacli verb '{p.GetValue(verb)}'");
            }
        }));
        return cmd;
    }

    private Command ServeCommand()
    {
        var cmd = new Command("serve", "Run the VPN server in the foreground");
        cmd.SetAction((p, ct) => GuardAsync(() => ServerCommands.ServeAsync(DataDir(p), ct)));
        return cmd;
    }

    private Command ConnectCommand()
    {
        var profile = new Argument<string?>("PROFILE") { Description = "Path of an .ovpn profile", Arity = ArgumentArity.ZeroOrOne };
        var status = new Option<bool>("--status") { Description = "Print the running client's status (path, cipher, peer-id, counters) and exit" };
        var dco = new Option<string>("--dco")
        {
            Description = "Data channel offload: auto (kernel module if usable, else userspace offload engine), userspace, kernel, off (managed engine; also the profile's disable-dco)",
            DefaultValueFactory = _ => "auto",
        };
        dco.AcceptOnlyFromAmong("auto", "userspace", "kernel", "off");
        var cmd = new Command("connect", "Connect to a server with a profile (client with the data channel in the offload engine)") { profile, status, dco };
        cmd.SetAction((p, ct) => GuardAsync(() =>
        {
            if (p.GetValue(status))
            {
                return ServerCommands.ConnectAsync(DataDir(p), "--status", ct);
            }

            string? path = p.GetValue(profile);
            if (string.IsNullOrEmpty(path))
            {
                throw new AdminException("connect: a PROFILE is required (or --status)");
            }

            return ServerCommands.ConnectAsync(DataDir(p), path, ClientDcoModes.Parse(p.GetValue(dco)), ct);
        }));
        return cmd;
    }

    private Command DoctorCommand()
    {
        var cmd = new Command("doctor", "Check the environment (TUN, kernel DCO, ports)");
        cmd.SetAction((p, ct) => GuardAsync(() => ServerCommands.DoctorAsync(DataDir(p), stdout, ct)));
        return cmd;
    }
}
