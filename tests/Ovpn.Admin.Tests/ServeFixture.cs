// SPDX-License-Identifier: MIT
using System.Text.RegularExpressions;
using Microsoft.Playwright;
using Ovpn.Testing;

namespace Ovpn.Admin.Tests;

/// <summary>
/// A real `ovpnas serve` (VPN + management socket + admin UI) in its own network namespace, joined
/// to a client namespace by a veth pair, and a headless Debian chromium started inside the server
/// namespace (through a wrapper that runs it under `ip netns exec`), so the browser reaches the
/// admin UI at https://localhost:943 of that namespace only.
/// </summary>
public sealed partial class ServeFixture : IAsyncLifetime
{
    public const string AdminUser = "admin";
    public const string AdminPassword = "Adm1n-Pass!";
    public const string ServerIp = "10.211.7.1";
    public const string ChromiumPath = "/usr/bin/chromium";

    public NetNs ServerNs { get; private set; } = null!;
    public NetNs ClientNs { get; private set; } = null!;
    public string DataDir { get; } = Directory.CreateTempSubdirectory("ovpnas-admin-test-").FullName;
    public NetNsProcess Server { get; private set; } = null!;
    public IPlaywright Playwright { get; private set; } = null!;
    public IBrowser Browser { get; private set; } = null!;
    public string BaseUrl => "https://localhost:943";
    private string _wrapper = "";

    public static string OvpnasDll => Path.Combine(AppContext.BaseDirectory, "ovpnas.dll");

    [GeneratedRegex("admin web UI on https port")]
    private static partial Regex AdminReady();

    public async Task InitializeAsync()
    {
        Requirements.RequireOrFail(Requirement.Root, Requirement.Tun);
        if (!File.Exists(ChromiumPath))
        {
            throw new RequirementMissingException($"{ChromiumPath} missing: apt-get install -y chromium");
        }

        NetNs.CleanupStale();
        (ServerNs, ClientNs) = NetNs.CreateVethPair(ServerIp + "/24", "10.211.7.2/24");
        Cli("init", "--hostname", ServerIp);
        Cli("sacli", "-u", AdminUser, "-k", "prop_superuser", "-v", "true", "UserPropPut");
        Cli("sacli", "-u", AdminUser, "--new_pass", AdminPassword, "SetLocalPassword");

        Server = ServerNs.Start("dotnet", OvpnasDll, "serve", "--data-dir", DataDir);
        await Server.WaitForLineAsync(AdminReady(), TimeSpan.FromSeconds(60));

        _wrapper = Path.Combine(DataDir, "chromium-in-ns.sh");
        File.WriteAllText(_wrapper, $"#!/bin/sh\nexec ip netns exec {ServerNs.Name} {ChromiumPath} \"$@\"\n");
        File.SetUnixFileMode(_wrapper, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);

        Playwright = await Microsoft.Playwright.Playwright.CreateAsync();
        Browser = await Playwright.Chromium.LaunchAsync(new BrowserTypeLaunchOptions
        {
            ExecutablePath = _wrapper,
            Headless = true,
            Args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"],
            Timeout = 60_000,
        });
    }

    /// <summary>Runs the ovpnas command line in-process against the test's data directory.</summary>
    public (int Rc, string Out, string Err) Cli(params string[] args)
    {
        var o = new StringWriter();
        var e = new StringWriter();
        Ovpn.Cli.ServerCommands.Errors = e;
        int rc = Ovpn.Cli.Program.Run([.. args, "--data-dir", DataDir], o, e);
        if (rc != 0 && args[0] != "sacli")
        {
            throw new InvalidOperationException($"ovpnas {string.Join(' ', args)} failed ({rc}): {e}");
        }

        return (rc, o.ToString(), e.ToString());
    }

    public async Task<IBrowserContext> NewContextAsync() =>
        await Browser.NewContextAsync(new BrowserNewContextOptions { IgnoreHTTPSErrors = true, AcceptDownloads = true });

    /// <summary>A page logged in as the admin user.</summary>
    public async Task<(IBrowserContext, IPage)> LoginAsync(string user = AdminUser, string password = AdminPassword)
    {
        var ctx = await NewContextAsync();
        var page = await ctx.NewPageAsync();
        page.SetDefaultTimeout(20_000);
        await page.GotoAsync(BaseUrl + "/login");
        await page.FillAsync("#username", user);
        await page.FillAsync("#password", password);
        await page.ClickAsync("#login");
        await page.WaitForURLAsync(new Regex("/status$"));
        return (ctx, page);
    }

    public string ServerLog => Server?.Tail(60) ?? "";

    public async Task DisposeAsync()
    {
        try
        {
            if (Browser is not null)
            {
                await Browser.CloseAsync();
            }

            Playwright?.Dispose();
        }
        finally
        {
            if (Server is not null)
            {
                Server.Signal(15);
                await Server.WaitForExitAsync(TimeSpan.FromSeconds(15));
                await Server.DisposeAsync();
            }

            ClientNs?.Dispose();
            ServerNs?.Dispose();
            try
            {
                Directory.Delete(DataDir, true);
            }
            catch (IOException)
            {
            }
        }
    }
}
