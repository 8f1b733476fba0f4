// SPDX-License-Identifier: MIT
using System.Net;
using System.Text.Json;
using System.Text.RegularExpressions;
using Microsoft.Playwright;
using Ovpn.ControlPlane.Config;
using Ovpn.Testing;

namespace Ovpn.Admin.Tests;

/// <summary>Browser tests against a real `ovpnas serve` (see <see cref="ServeFixture"/>).</summary>
[Collection("serve")]
public sealed class AdminUiTests(ServeFixture f) : IClassFixture<ServeFixture>
{
    private string Stored(string key) => ConfigStore.Open(f.DataDir).Get(key)!;

    /// <summary>
    /// fetch() inside the browser page (same origin, its cookies). Playwright's own request API runs
    /// in the driver process, outside the server's network namespace, so it cannot be used here.
    /// </summary>
    private static async Task<(int Status, string Body)> FetchAsync(IPage page, string method, string path, string? body = null,
        string contentType = "application/json", string? token = null)
    {
        var r = await page.EvaluateAsync<JsonElement>(
            @"async ([m, p, b, ct, t]) => {
                const h = {};
                if (b !== null) h['content-type'] = ct;
                if (t !== null) h['X-CSRF-TOKEN'] = t;
                const r = await fetch(p, { method: m, headers: h, body: b, credentials: 'same-origin', redirect: 'manual' });
                return { status: r.status, body: await r.text() };
            }", new object?[] { method, path, body, contentType, token });
        return (r.GetProperty("status").GetInt32(), r.GetProperty("body").GetString() ?? "");
    }

    private static async Task<string> DcoRowAsync(IPage page) => (await page.TextContentAsync("#dco-state"))!.Trim();

    /// <summary>Reloads the status page until the offload row satisfies <paramref name="done"/> (20 s bound).</summary>
    private static async Task<string> WaitForRowAsync(IPage page, Func<string, bool> done)
    {
        string last = "";
        for (int i = 0; i < 40; i++)
        {
            if (await page.Locator("#dco-state").CountAsync() == 1)
            {
                last = await DcoRowAsync(page);
                if (done(last))
                {
                    return last;
                }
            }

            await Task.Delay(500);
            await page.GotoAsync(page.Url.Split('?')[0]);
        }

        return last;
    }

    [Fact]
    public async Task PagesAndApiNeedALogin()
    {
        await using var ctx = await f.NewContextAsync();
        var page = await ctx.NewPageAsync();
        foreach (var path in new[] { "/status", "/config/advanced", "/config/vpn", "/users" })
        {
            await page.GotoAsync(f.BaseUrl + path);
            Assert.Matches(new Regex("/login\\?ReturnUrl="), page.Url);
        }

        Assert.Equal(401, (await FetchAsync(page, "GET", "/api/status")).Status);
        var profile = await FetchAsync(page, "GET", "/users/admin/profile");
        Assert.NotEqual(200, profile.Status);
        Assert.DoesNotContain("BEGIN", profile.Body);
        var post = await FetchAsync(page, "POST", "/api/config", $"{{\"{ConfigKeys.TunMtu}\":\"1500\"}}");
        Assert.True(post.Status is 400 or 401, $"status {post.Status}");
        Assert.Equal("1420", Stored(ConfigKeys.TunMtu));

        // Wrong password: refused with a message, no session.
        await page.GotoAsync(f.BaseUrl + "/login");
        await page.FillAsync("#username", ServeFixture.AdminUser);
        await page.FillAsync("#password", "wrong");
        await page.ClickAsync("#login");
        Assert.Contains("Login failed", await page.TextContentAsync("[role=alert]"));
        Assert.Equal(401, (await FetchAsync(page, "GET", "/api/status")).Status);
    }

    [Fact]
    public async Task AuthCookieIsHttpOnlyAndSecure()
    {
        var (ctx, _) = await f.LoginAsync();
        await using var _c = ctx;
        var cookies = await ctx.CookiesAsync();
        var auth = Assert.Single(cookies, c => c.Name == "ovpnas.auth");
        Assert.True(auth.HttpOnly);
        Assert.True(auth.Secure);
        Assert.Equal(SameSiteAttribute.Strict, auth.SameSite);
    }

    [Fact]
    public async Task StateChangesNeedTheAntiForgeryToken()
    {
        var (ctx, page) = await f.LoginAsync();
        await using var _c = ctx;
        // Logged in, but no token: refused, nothing stored.
        Assert.Equal(200, (await FetchAsync(page, "GET", "/api/status")).Status);
        var bad = await FetchAsync(page, "POST", "/api/config", $"{{\"{ConfigKeys.HostName}\":\"evil.example\"}}");
        Assert.Equal(400, bad.Status);
        Assert.Contains("anti-forgery", bad.Body);
        Assert.Equal(ServeFixture.ServerIp, Stored(ConfigKeys.HostName));

        // A form post without the hidden field is refused too.
        var form = await FetchAsync(page, "POST", "/users/add", "name=mallory", "application/x-www-form-urlencoded");
        Assert.Equal(400, form.Status);
        Assert.DoesNotContain("mallory", f.Cli("sacli", "UserPropGet").Out);

        // With the token from the page: accepted.
        var token = await page.GetAttributeAsync("meta[name=csrf-token]", "content");
        var ok = await FetchAsync(page, "POST", "/api/config", $"{{\"{ConfigKeys.HostName}\":\"vpn.example.org\"}}", token: token);
        Assert.Equal(200, ok.Status);
        Assert.Equal("vpn.example.org", Stored(ConfigKeys.HostName));
        var invalid = await FetchAsync(page, "POST", "/api/config", $"{{\"{ConfigKeys.TunMtu}\":\"500\"}}", token: token);
        Assert.Equal(400, invalid.Status);
        Assert.Contains("576..65536", invalid.Body);
        Assert.Equal(200, (await FetchAsync(page, "POST", "/api/config", $"{{\"{ConfigKeys.HostName}\":\"{ServeFixture.ServerIp}\"}}", token: token)).Status);
    }

    [Fact]
    public async Task DcoSwitchSaveAndUpdateChangesTheStatusRow()
    {
        var (ctx, page) = await f.LoginAsync();
        await using var _c = ctx;
        Assert.Equal("false", Stored(ConfigKeys.Dco));
        var before = await DcoRowAsync(page);
        Assert.Contains("disabled in configuration", before);

        await page.GotoAsync(f.BaseUrl + "/config/advanced");
        Assert.False(await page.IsCheckedAsync("#dco"));
        Assert.Contains("Prefer kernel OpenVPN data channel offloading if available (ovpn-dco)", await page.TextContentAsync("form#advanced"));
        await page.CheckAsync("#dco");
        await page.ClickAsync("#save");
        Assert.Contains("Settings saved", await page.TextContentAsync("#notice"));
        Assert.Equal("true", Stored(ConfigKeys.Dco));
        Assert.True(await page.IsCheckedAsync("#dco"));

        // Saved, not yet applied: the running server still reports the old state.
        await page.GotoAsync(f.BaseUrl + "/status");
        Assert.Equal(before, await DcoRowAsync(page));

        await page.GotoAsync(f.BaseUrl + "/config/advanced");
        await page.ClickAsync("#update");
        await page.WaitForURLAsync(new Regex("/status"));
        Assert.Contains("Running server updated", await page.TextContentAsync("#notice"));
        // Switching offload mode restarts the VPN service in-process: wait for the new row.
        var after = await WaitForRowAsync(page, t => t != before);
        Assert.NotEqual(before, after);
        Assert.DoesNotContain("disabled in configuration", after);
        // This machine has no ovpn kernel module: offload is preferred but not available, with the reason.
        Assert.Matches("^(Not available: |Active|Available but inactive)", after);

        // The CLI reads the same state from the management socket.
        var (rc, json, _) = f.Cli("sacli", "Status");
        Assert.Equal(0, rc);
        using var doc = JsonDocument.Parse(json);
        var dco = doc.RootElement.GetProperty("kernelDataChannelOffloading");
        Assert.True(dco.GetProperty("configured").GetBoolean());
        Assert.Equal(after, dco.GetProperty("text").GetString());

        // And back off, applied again.
        await page.GotoAsync(f.BaseUrl + "/config/advanced");
        await page.UncheckAsync("#dco");
        await page.ClickAsync("#save");
        await page.ClickAsync("#update");
        await page.WaitForURLAsync(new Regex("/status"));
        Assert.Equal(before, await WaitForRowAsync(page, t => t == before));
    }

    [Fact]
    public async Task MtuIsValidatedAndTheOldValueKept()
    {
        var (ctx, page) = await f.LoginAsync();
        await using var _c = ctx;
        await page.GotoAsync(f.BaseUrl + "/config/advanced");
        await page.FillAsync("#tun_mtu", "1400");
        await page.ClickAsync("#save");
        Assert.Equal("1400", await page.InputValueAsync("#tun_mtu"));
        Assert.Equal("1400", Stored(ConfigKeys.TunMtu));

        await page.FillAsync("#tun_mtu", "500");
        await page.ClickAsync("#save");
        var error = await page.TextContentAsync("#error");
        Assert.Contains("vpn.server.tun_mtu", error);
        Assert.Contains("'500'", error);
        Assert.Contains("576..65536", error);
        Assert.Equal("1400", await page.InputValueAsync("#tun_mtu"));
        Assert.Equal("1400", Stored(ConfigKeys.TunMtu));

        await page.FillAsync("#tun_mtu", "1420");
        await page.ClickAsync("#save");
        Assert.Contains("Settings saved", await page.TextContentAsync("#notice"));
        Assert.Equal("1420", await page.InputValueAsync("#tun_mtu"));
        Assert.Equal("1420", Stored(ConfigKeys.TunMtu));
    }

    [Fact]
    public async Task DirectivesAreReviewedOnTheAdvancedPage()
    {
        var (ctx, page) = await f.LoginAsync();
        await using var _c = ctx;
        await page.GotoAsync(f.BaseUrl + "/config/advanced");
        await page.FillAsync("#server_config_text", "keepalive 10 60\nfragment 1300");
        await page.ClickAsync("#save");
        var rows = await page.Locator("#review tr.Incompatible").AllTextContentsAsync();
        Assert.Contains(rows, r => r.Contains("fragment 1300") && r.Contains("line 2"));
        Assert.Contains(await page.Locator("#review tr.Compatible").AllTextContentsAsync(), r => r.Contains("keepalive"));
        await page.FillAsync("#server_config_text", "");
        await page.ClickAsync("#save");
        Assert.Equal(0, await page.Locator("#review tr.Incompatible").CountAsync());
    }

    [Fact]
    public async Task AddUserAndDownloadProfile()
    {
        var (ctx, page) = await f.LoginAsync();
        await using var _c = ctx;
        await page.GotoAsync(f.BaseUrl + "/users");
        await page.FillAsync("#new-name", "bob");
        await page.ClickAsync("#add");
        Assert.Contains("User 'bob' added", await page.TextContentAsync("#notice"));
        var row = page.Locator("tr[data-user=bob]");
        Assert.Equal(1, await row.CountAsync());

        var download = await page.RunAndWaitForDownloadAsync(() => row.Locator("a.profile").ClickAsync());
        Assert.Equal("bob.ovpn", download.SuggestedFilename);
        var path = await download.PathAsync();
        var text = await File.ReadAllTextAsync(path!);
        Assert.Contains("client", text);
        Assert.Contains($"remote {ServeFixture.ServerIp} 1194 udp", text);
        Assert.Contains("<cert>", text);
        Assert.Contains("BEGIN", text);
        Assert.Contains("<tls-crypt>", text);

        // Adding the same name again is refused with a message.
        await page.FillAsync("#new-name", "bob");
        await page.ClickAsync("#add");
        Assert.Contains("already exists", await page.TextContentAsync("#error"));
    }

    [Fact]
    public async Task RepeatedFailuresLockTheAccount()
    {
        f.Cli("sacli", "-u", "locky", "-k", "prop_superuser", "-v", "true", "UserPropPut");
        f.Cli("sacli", "-u", "locky", "--new_pass", "Right-Pass-1", "SetLocalPassword");
        await using var ctx = await f.NewContextAsync();
        var page = await ctx.NewPageAsync();
        for (int i = 0; i < 5; i++)
        {
            await page.GotoAsync(f.BaseUrl + "/login");
            await page.FillAsync("#username", "locky");
            await page.FillAsync("#password", "wrong" + i);
            await page.ClickAsync("#login");
            Assert.Contains("Login failed", await page.TextContentAsync("[role=alert]"));
        }

        await page.GotoAsync(f.BaseUrl + "/login");
        await page.FillAsync("#username", "locky");
        await page.FillAsync("#password", "Right-Pass-1");
        await page.ClickAsync("#login");
        Assert.Contains("locked", await page.TextContentAsync("[role=alert]"));
        Assert.Equal(401, (await FetchAsync(page, "GET", "/api/status")).Status);
    }

    [Fact]
    public async Task NonAdminUserCannotLogIn()
    {
        f.Cli("sacli", "-u", "plain", "--new_pass", "Plain-Pass-1", "SetLocalPassword");
        await using var ctx = await f.NewContextAsync();
        var page = await ctx.NewPageAsync();
        await page.GotoAsync(f.BaseUrl + "/login");
        await page.FillAsync("#username", "plain");
        await page.FillAsync("#password", "Plain-Pass-1");
        await page.ClickAsync("#login");
        Assert.Contains("Login failed", await page.TextContentAsync("[role=alert]"));
    }

    [Fact]
    public async Task StockClientConnectsWithTheDownloadedProfileAndShowsUpInStatus()
    {
        Requirements.RequireOrFail(Requirement.OpenVpn);
        var (ctx, page) = await f.LoginAsync();
        await using var _c = ctx;
        await page.GotoAsync(f.BaseUrl + "/users");
        await page.FillAsync("#new-name", "carol");
        await page.ClickAsync("#add");
        var download = await page.RunAndWaitForDownloadAsync(() => page.Locator("tr[data-user=carol] a.profile").ClickAsync());
        var profile = await File.ReadAllTextAsync((await download.PathAsync())!);

        await using var vpn = OpenVpnProcess.Start(f.ClientNs, profile);
        await vpn.WaitInitializedAsync(TimeSpan.FromSeconds(60));
        var ping = await TrafficCheck.PingAsync(f.ClientNs, IPAddress.Parse("172.27.224.1"), count: 3);
        Assert.Equal(0.0, ping.Loss);

        await page.GotoAsync(f.BaseUrl + "/status");
        Assert.Equal("1", (await page.TextContentAsync("#client-count"))!.Trim());
        var row = page.Locator("#clients tr.client", new() { HasText = "carol" });
        Assert.Equal(1, await row.CountAsync());
        var cells = await row.Locator("td").AllTextContentsAsync();
        Assert.Equal("carol", cells[0]);
        Assert.StartsWith("172.27.224.", cells[2]);
        Assert.Equal("AES-256-GCM", cells[4]);
        Assert.False(string.IsNullOrWhiteSpace(cells[5]) || cells[5] == "none", $"data path '{cells[5]}'");
        Assert.True(long.Parse(cells[6], System.Globalization.CultureInfo.InvariantCulture) > 0, "bytes in");

        var (rc, json, _) = f.Cli("sacli", "VPNStatus");
        Assert.Equal(0, rc);
        using var doc = JsonDocument.Parse(json);
        var client = Assert.Single(doc.RootElement.GetProperty("clients").EnumerateArray());
        Assert.Equal("carol", client.GetProperty("commonName").GetString());
        Assert.True(client.GetProperty("peerId").ValueKind == JsonValueKind.Number);
        Assert.True(client.GetProperty("packetsIn").GetInt64() >= 3);
    }
}
