// SPDX-License-Identifier: MIT
using System.Globalization;
using System.Net;
using System.Text;
using Microsoft.AspNetCore.Antiforgery;
using Microsoft.AspNetCore.Authentication;
using Microsoft.AspNetCore.Authentication.Cookies;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Ovpn.ControlPlane.Config;
using Ovpn.ControlPlane.Dco;
using Ovpn.Server.Management;

namespace Ovpn.Admin;

/// <summary>Server-rendered HTML pages. Forms post back with the anti-forgery token as a hidden field.</summary>
internal static class AdminPages
{
    private const string Css = """
        body{font-family:system-ui,sans-serif;margin:0;color:#222}
        header{background:#1b3a5c;color:#fff;padding:.6em 1em;display:flex;gap:1.2em;align-items:center}
        header a{color:#fff;text-decoration:none} header form{margin-left:auto}
        main{padding:1em 1.5em;max-width:70em}
        table{border-collapse:collapse;margin:.5em 0} td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}
        .error{background:#fde2e2;border:1px solid #c33;padding:.5em;margin:.5em 0}
        .notice{background:#e2f4e2;border:1px solid #393;padding:.5em;margin:.5em 0}
        .Incompatible{color:#a00} .Warning{color:#a60} .Compatible{color:#060}
        label{display:block;margin:.6em 0 .2em} textarea{width:100%;min-height:6em;font-family:monospace}
        """;

    public static void Map(WebApplication app)
    {
        app.MapGet("/login", (HttpContext ctx) => Html(ctx, "Log in", LoginForm(ctx, null), loggedIn: false)).AllowAnonymous();
        app.MapPost("/login", (Func<HttpContext, Task<IResult>>)LoginAsync).AllowAnonymous();
        app.MapPost("/logout", (Func<HttpContext, Task<IResult>>)(async ctx =>
        {
            await ctx.SignOutAsync(CookieAuthenticationDefaults.AuthenticationScheme).ConfigureAwait(false);
            return Results.Redirect("/login");
        }));
        app.MapGet("/", () => Results.Redirect("/status"));
        app.MapGet("/static/app.js", () => Results.Text(AppJs, "text/javascript"));
        app.MapGet("/status", (HttpContext ctx, IManagementTarget t) => Html(ctx, "Status Overview", StatusBody(t, ctx.Request.Query["notice"])));
        app.MapGet("/config/advanced", (HttpContext ctx, AdminService s, IManagementTarget t) => Html(ctx, "Advanced VPN", AdvancedBody(ctx, s, t, null, null)));
        app.MapPost("/config/advanced", async (HttpContext ctx, AdminService s, IManagementTarget t) =>
        {
            var f = await ctx.Request.ReadFormAsync().ConfigureAwait(false);
            var values = new Dictionary<string, string?>
            {
                [ConfigKeys.Dco] = f["dco"] == "true" ? "true" : "false",
                [ConfigKeys.TunMtu] = f["tun_mtu"].ToString(),
                [ConfigKeys.ServerConfigText] = f["server_config_text"].ToString(),
                [ConfigKeys.ClientConfigText] = f["client_config_text"].ToString(),
            };
            var errors = s.SaveConfig(values);
            return Html(ctx, "Advanced VPN", AdvancedBody(ctx, s, t, errors,
                errors.Count == 0 ? "Settings saved. Click \"Update Running Server\" to apply them to the running server." : null));
        });
        app.MapGet("/config/vpn", (HttpContext ctx, AdminService s) => Html(ctx, "VPN Settings", VpnBody(ctx, s, null, null)));
        app.MapPost("/config/vpn", async (HttpContext ctx, AdminService s) =>
        {
            var f = await ctx.Request.ReadFormAsync().ConfigureAwait(false);
            var values = new Dictionary<string, string?>
            {
                [ConfigKeys.HostName] = f["hostname"].ToString(),
                [ConfigKeys.Protocols] = f["protocols"].ToString(),
                [ConfigKeys.UdpPort] = f["udp_port"].ToString(),
                [ConfigKeys.TcpPort] = f["tcp_port"].ToString(),
                [ConfigKeys.PoolNetwork] = f["pool_network"].ToString(),
                [ConfigKeys.PoolNetmaskBits] = f["pool_bits"].ToString(),
                [ConfigKeys.RerouteGw] = f["reroute_gw"] == "true" ? "true" : "false",
            };
            var lists = new Dictionary<string, IReadOnlyList<string>>
            {
                [ConfigKeys.PrivateNetworkPrefix] = Lines(f["routes"].ToString()),
                [ConfigKeys.DnsPrefix] = Lines(f["dns"].ToString()),
            };
            var errors = s.SaveConfig(values, lists);
            return Html(ctx, "VPN Settings", VpnBody(ctx, s, errors,
                errors.Count == 0 ? "Settings saved. Click \"Update Running Server\" to apply them to the running server." : null));
        });
        app.MapPost("/server/update", (IManagementTarget t) =>
        {
            string notice;
            try
            {
                var r = t.Reload();
                notice = "Running server updated. " +
                    (r.Applied.Count > 0 ? "Applied: " + string.Join("; ", r.Applied) + ". " : "No live changes. ") +
                    (r.Restarting ? "Restarting the VPN service for: " + string.Join("; ", r.RestartRequired) + "." : "");
            }
            catch (Exception e)
            {
                notice = "Update failed: " + e.Message;
            }

            return Results.Redirect("/status?notice=" + Uri.EscapeDataString(notice));
        });
        app.MapGet("/users", (HttpContext ctx, AdminService s) => Html(ctx, "User Management", UsersBody(ctx, s, null, null)));
        app.MapPost("/users/add", async (HttpContext ctx, AdminService s) =>
        {
            var f = await ctx.Request.ReadFormAsync().ConfigureAwait(false);
            return UserAction(ctx, s, () => s.AddUser(f["name"].ToString().Trim(), f["password"].ToString(), f["superuser"] == "true"), $"User '{f["name"]}' added.");
        });
        app.MapPost("/users/delete", async (HttpContext ctx, AdminService s) =>
        {
            var f = await ctx.Request.ReadFormAsync().ConfigureAwait(false);
            var name = f["name"].ToString();
            return UserAction(ctx, s, () =>
            {
                if (name == ctx.User.Identity?.Name)
                {
                    throw new AdminException("you cannot delete the account you are logged in with");
                }

                if (!s.DeleteUser(name))
                {
                    throw new AdminException($"no such user '{name}'");
                }
            }, $"User '{name}' deleted (certificates revoked).");
        });
        app.MapPost("/users/password", async (HttpContext ctx, AdminService s) =>
        {
            var f = await ctx.Request.ReadFormAsync().ConfigureAwait(false);
            var name = f["name"].ToString();
            return UserAction(ctx, s, () => s.SetPassword(name, f["password"].ToString()), $"Password of '{name}' set.");
        });
        app.MapGet("/users/{name}/profile", (string name, AdminService s) => AdminApi.Profile(s, name));
    }

    private static List<string> Lines(string text) =>
        text.Replace("\r\n", "\n").Split('\n').Select(l => l.Trim()).Where(l => l.Length > 0).ToList();

    private static IResult UserAction(HttpContext ctx, AdminService s, Action action, string ok)
    {
        try
        {
            action();
            return Html(ctx, "User Management", UsersBody(ctx, s, null, ok));
        }
        catch (AdminException e)
        {
            return Html(ctx, "User Management", UsersBody(ctx, s, e.Message, null), 400);
        }
    }

    private static async Task<IResult> LoginAsync(HttpContext ctx)
    {
        var f = await ctx.Request.ReadFormAsync().ConfigureAwait(false);
        var user = f["username"].ToString().Trim();
        var pass = f["password"].ToString();
        var throttle = ctx.RequestServices.GetRequiredService<LoginThrottle>();
        var svc = ctx.RequestServices.GetRequiredService<AdminService>();
        var addr = ctx.Connection.RemoteIpAddress?.ToString() ?? "?";
        if (throttle.LockedFor(user, addr) is { } wait)
        {
            return Html(ctx, "Log in", LoginForm(ctx, $"Too many failed logins: locked, try again in {Math.Ceiling(wait.TotalMinutes)} minute(s)."), 429, loggedIn: false);
        }

        if (user.Length == 0 || pass.Length == 0 || !svc.VerifyAdmin(user, pass))
        {
            throttle.Failed(user, addr);
            ControlPlane.Log.Warn("admin", $"failed admin login for '{user}' from {addr}");
            return Html(ctx, "Log in", LoginForm(ctx, "Login failed: wrong user name or password, or not an admin user."), 401, loggedIn: false);
        }

        throttle.Succeeded(user);
        await ctx.SignInAsync(CookieAuthenticationDefaults.AuthenticationScheme, AdminHost.Principal(user)).ConfigureAwait(false);
        ControlPlane.Log.Info("admin", $"admin '{user}' logged in from {addr}");
        return Results.Redirect("/status");
    }

    private static string H(string? s) => WebUtility.HtmlEncode(s ?? "");

    private static string Token(HttpContext ctx)
    {
        var t = ctx.RequestServices.GetRequiredService<IAntiforgery>().GetAndStoreTokens(ctx);
        return $"<input type=\"hidden\" name=\"{H(t.FormFieldName)}\" value=\"{H(t.RequestToken)}\">";
    }

    private static IResult Html(HttpContext ctx, string title, string body, int status = 200, bool loggedIn = true)
    {
        var sb = new StringBuilder();
        sb.Append("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>").Append(H(title)).Append(" - ovpnas Admin</title>");
        if (loggedIn)
        {
            var t = ctx.RequestServices.GetRequiredService<IAntiforgery>().GetAndStoreTokens(ctx);
            sb.Append("<meta name=\"csrf-token\" content=\"").Append(H(t.RequestToken)).Append("\">");
            sb.Append("<script src=\"/static/app.js\" defer></script>");
        }

        sb.Append("<style>").Append(Css).Append("</style></head><body><header><strong>ovpnas Admin</strong>");
        if (loggedIn)
        {
            sb.Append("<a href=\"/status\">Status Overview</a><a href=\"/config/vpn\">VPN Settings</a>")
              .Append("<a href=\"/config/advanced\">Advanced VPN</a><a href=\"/users\">User Management</a>")
              .Append("<form method=\"post\" action=\"/logout\">").Append(Token(ctx))
              .Append("<button type=\"submit\">Log out ").Append(H(ctx.User.Identity?.Name)).Append("</button></form>");
        }

        sb.Append("</header><main><h1>").Append(H(title)).Append("</h1>").Append(body).Append("</main></body></html>");
        return Results.Content(sb.ToString(), "text/html; charset=utf-8", Encoding.UTF8, status);
    }

    private static string LoginForm(HttpContext ctx, string? error) =>
        (error is null ? "" : $"<div class=\"error\" role=\"alert\">{H(error)}</div>") +
        "<form method=\"post\" action=\"/login\">" + Token(ctx) +
        "<label for=\"username\">Username</label><input id=\"username\" name=\"username\" autocomplete=\"username\" required>" +
        "<label for=\"password\">Password</label><input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required>" +
        "<p><button type=\"submit\" id=\"login\">Sign In</button></p></form>";

    private static string Notice(string? notice, string? error) =>
        (notice is { Length: > 0 } ? $"<div class=\"notice\" role=\"status\" id=\"notice\">{H(notice)}</div>" : "") +
        (error is { Length: > 0 } ? $"<div class=\"error\" role=\"alert\" id=\"error\">{H(error)}</div>" : "");

    private static string StatusBody(IManagementTarget t, string? notice)
    {
        var sb = new StringBuilder(Notice(notice, null));
        ServiceStatus st;
        VpnStatus vs;
        try
        {
            st = t.GetStatus();
            vs = t.GetVpnStatus();
        }
        catch (Exception e)
        {
            return sb.Append(Notice(null, "The VPN service is not available: " + e.Message)).ToString();
        }

        var d = st.KernelDataChannelOffloading;
        sb.Append("<table id=\"status\">")
          .Append("<tr><th>VPN Server</th><td id=\"svc-state\">").Append(H(st.State)).Append(" (pid ").Append(st.Pid).Append(", since ").Append(H(st.StartedAt.ToString("u", CultureInfo.InvariantCulture))).Append(")</td></tr>")
          .Append("<tr id=\"dco-row\"><th>Kernel data channel offloading</th><td id=\"dco-state\" data-state=\"").Append(H(d.State.ToString())).Append("\">").Append(H(d.Text)).Append("</td></tr>")
          .Append("<tr><th>Data channel engine</th><td id=\"engine\">").Append(H(st.DataEngine)).Append(' ').Append(H(st.DataEngineVersion)).Append("</td></tr>")
          .Append("<tr><th>Listeners</th><td>").Append(H(string.Join(", ", st.Listeners))).Append("</td></tr>")
          .Append("<tr><th>Connected clients</th><td id=\"client-count\">").Append(st.Clients).Append("</td></tr></table>");
        if (d.Blockers.Count > 0 || d.Warnings.Count > 0)
        {
            sb.Append("<h2>Offload review</h2><ul id=\"dco-reasons\">");
            foreach (var b in d.Blockers)
            {
                sb.Append("<li class=\"Incompatible\">").Append(H(b)).Append("</li>");
            }

            foreach (var w in d.Warnings)
            {
                sb.Append("<li class=\"Warning\">").Append(H(w)).Append("</li>");
            }

            sb.Append("</ul>");
        }

        sb.Append("<h2>Connected users</h2><table id=\"clients\"><tr><th>Common name</th><th>Real address</th><th>VPN address</th><th>Peer-id</th><th>Cipher</th><th>Data path</th><th>Bytes in</th><th>Bytes out</th><th>Packets in / out</th><th>Connected since</th></tr>");
        foreach (var c in vs.Clients)
        {
            sb.Append("<tr class=\"client\"><td>").Append(H(c.CommonName)).Append("</td><td>").Append(H(c.RealAddress)).Append("</td><td>").Append(H(c.VpnAddress))
              .Append("</td><td>").Append(c.PeerId?.ToString(CultureInfo.InvariantCulture) ?? "").Append("</td><td>").Append(H(c.Cipher))
              .Append("</td><td>").Append(H(c.DataPath)).Append(c.DataPathReason is null ? "" : " (" + H(c.DataPathReason) + ")")
              .Append("</td><td>").Append(c.BytesIn).Append("</td><td>").Append(c.BytesOut).Append("</td><td>").Append(c.PacketsIn).Append(" / ").Append(c.PacketsOut)
              .Append("</td><td>").Append(H(c.ConnectedAt.ToString("u", CultureInfo.InvariantCulture))).Append("</td></tr>");
        }

        if (vs.Clients.Count == 0)
        {
            sb.Append("<tr><td colspan=\"10\">No users connected.</td></tr>");
        }

        return sb.Append("</table>").ToString();
    }

    private static string AdvancedBody(HttpContext ctx, AdminService s, IManagementTarget t, IReadOnlyList<ConfigError>? errors, string? notice)
    {
        var c = s.Config;
        var settings = ServerSettings.From(c);
        var sb = new StringBuilder(Notice(notice, errors is { Count: > 0 }
            ? string.Join(" ", errors.Select(e => e.Message)) + " The stored values were kept."
            : null));
        sb.Append("<form method=\"post\" action=\"/config/advanced\" id=\"advanced\">").Append(Token(ctx))
          .Append("<label><input type=\"checkbox\" id=\"dco\" name=\"dco\" value=\"true\"").Append(settings.Dco ? " checked" : "")
          .Append("> Prefer kernel OpenVPN data channel offloading if available (ovpn-dco)</label>")
          .Append("<label for=\"tun_mtu\">VPN tunnel MTU</label><input id=\"tun_mtu\" name=\"tun_mtu\" inputmode=\"numeric\" value=\"")
          .Append(settings.TunMtu).Append("\"> <small>576..65536, 1420 recommended</small>")
          .Append("<label for=\"server_config_text\">Additional OpenVPN server directives (vpn.server.config_text)</label><textarea id=\"server_config_text\" name=\"server_config_text\">")
          .Append(H(settings.ServerConfigText)).Append("</textarea>")
          .Append("<label for=\"client_config_text\">Additional OpenVPN client directives (vpn.client.config_text)</label><textarea id=\"client_config_text\" name=\"client_config_text\">")
          .Append(H(settings.ClientConfigText)).Append("</textarea>")
          .Append("<p><button type=\"submit\" id=\"save\">Save Settings</button></p></form>")
          .Append(UpdateButton(ctx));

        var review = DcoRules.Review(settings);
        sb.Append("<h2>Data channel offload review of the saved settings</h2><table id=\"review\"><tr><th>Source</th><th>Directive</th><th>DCO</th><th>Why</th></tr>");
        foreach (var f in review.Findings)
        {
            sb.Append("<tr class=\"").Append(f.Compatibility).Append("\"><td>").Append(H(f.Source)).Append(f.LineNumber > 0 ? " line " + f.LineNumber : "")
              .Append("</td><td><code>").Append(H(f.Line)).Append("</code></td><td>").Append(f.Compatibility).Append("</td><td>").Append(H(f.Reason)).Append("</td></tr>");
        }

        if (review.Findings.Count == 0)
        {
            sb.Append("<tr><td colspan=\"4\">Nothing to report: no additional directives.</td></tr>");
        }

        return sb.Append("</table>").ToString();
    }

    private static string UpdateButton(HttpContext ctx) =>
        "<form method=\"post\" action=\"/server/update\">" + Token(ctx) + "<button type=\"submit\" id=\"update\">Update Running Server</button></form>";

    private static string VpnBody(HttpContext ctx, AdminService s, IReadOnlyList<ConfigError>? errors, string? notice)
    {
        var st = ServerSettings.From(s.Config);
        var proto = st.UdpEnabled && st.TcpEnabled ? "both" : st.UdpEnabled ? "udp" : "tcp";
        string Opt(string v) => $"<option value=\"{v}\"{(v == proto ? " selected" : "")}>{v}</option>";
        var sb = new StringBuilder(Notice(notice, errors is { Count: > 0 } ? string.Join(" ", errors.Select(e => e.Message)) + " The stored values were kept." : null));
        sb.Append("<form method=\"post\" action=\"/config/vpn\" id=\"vpn\">").Append(Token(ctx))
          .Append("<h2>Network</h2><label for=\"hostname\">Hostname or IP address</label><input id=\"hostname\" name=\"hostname\" value=\"").Append(H(st.Hostname)).Append("\">")
          .Append("<label for=\"protocols\">Protocols</label><select id=\"protocols\" name=\"protocols\">").Append(Opt("both")).Append(Opt("udp")).Append(Opt("tcp")).Append("</select>")
          .Append("<label for=\"udp_port\">UDP port</label><input id=\"udp_port\" name=\"udp_port\" value=\"").Append(st.UdpPort).Append("\">")
          .Append("<label for=\"tcp_port\">TCP port</label><input id=\"tcp_port\" name=\"tcp_port\" value=\"").Append(st.TcpPort).Append("\">")
          .Append("<label for=\"pool_network\">Dynamic IP address network</label><input id=\"pool_network\" name=\"pool_network\" value=\"").Append(H(st.Pool.Network.ToString())).Append("\">")
          .Append("<label for=\"pool_bits\">Netmask bits</label><input id=\"pool_bits\" name=\"pool_bits\" value=\"").Append(st.Pool.PrefixLength).Append("\">")
          .Append("<h2>Routing</h2><label for=\"routes\">Private subnets clients can reach (one CIDR per line)</label><textarea id=\"routes\" name=\"routes\">")
          .Append(H(string.Join("\n", st.PrivateRoutes))).Append("</textarea>")
          .Append("<label><input type=\"checkbox\" id=\"reroute_gw\" name=\"reroute_gw\" value=\"true\"").Append(st.RerouteGateway ? " checked" : "").Append("> Route all client Internet traffic through the VPN</label>")
          .Append("<h2>DNS</h2><label for=\"dns\">DNS servers pushed to clients (one per line)</label><textarea id=\"dns\" name=\"dns\">")
          .Append(H(string.Join("\n", st.DnsServers))).Append("</textarea>")
          .Append("<p><button type=\"submit\" id=\"save\">Save Settings</button></p></form>").Append(UpdateButton(ctx));
        return sb.ToString();
    }

    private static string UsersBody(HttpContext ctx, AdminService s, string? error, string? notice)
    {
        var sb = new StringBuilder(Notice(notice, error));
        sb.Append("<table id=\"users\"><tr><th>User</th><th>Admin</th><th>Local password</th><th>Actions</th></tr>");
        foreach (var u in s.Users.List())
        {
            var n = H(u.Name);
            sb.Append("<tr data-user=\"").Append(n).Append("\"><td>").Append(n).Append("</td><td>").Append(s.IsAdmin(u.Name) ? "yes" : "no")
              .Append("</td><td>").Append(u.HasPassword ? "set" : "none").Append("</td><td>")
              .Append("<a class=\"profile\" href=\"/users/").Append(Uri.EscapeDataString(u.Name)).Append("/profile\" download>Download profile</a> ")
              .Append("<form method=\"post\" action=\"/users/password\" style=\"display:inline\">").Append(Token(ctx))
              .Append("<input type=\"hidden\" name=\"name\" value=\"").Append(n).Append("\"><input type=\"password\" name=\"password\" placeholder=\"new password\" aria-label=\"new password for ").Append(n).Append("\"><button type=\"submit\">Set password</button></form> ")
              .Append("<form method=\"post\" action=\"/users/delete\" style=\"display:inline\">").Append(Token(ctx))
              .Append("<input type=\"hidden\" name=\"name\" value=\"").Append(n).Append("\"><button type=\"submit\" class=\"delete\">Delete</button></form>")
              .Append("</td></tr>");
        }

        sb.Append("</table><h2>Add user</h2><form method=\"post\" action=\"/users/add\" id=\"add-user\">").Append(Token(ctx))
          .Append("<label for=\"new-name\">User name</label><input id=\"new-name\" name=\"name\" required>")
          .Append("<label for=\"new-password\">Local password (optional)</label><input id=\"new-password\" name=\"password\" type=\"password\">")
          .Append("<label><input type=\"checkbox\" name=\"superuser\" value=\"true\"> Admin (prop_superuser)</label>")
          .Append("<p><button type=\"submit\" id=\"add\">Add user</button></p></form>");
        return sb.ToString();
    }

    // Refreshes the status row and counters without a page reload; the pages work without it.
    private const string AppJs = """
        "use strict";
        (function () {
          const row = document.getElementById("dco-state");
          if (!row) return;
          async function refresh() {
            try {
              const r = await fetch("/api/status", { credentials: "same-origin" });
              if (!r.ok) return;
              const s = await r.json();
              const d = s.kernelDataChannelOffloading;
              row.textContent = d.text;
              row.dataset.state = d.state;
              document.getElementById("client-count").textContent = s.clients;
            } catch (e) { /* server restarting: keep the last values */ }
          }
          setInterval(refresh, 5000);
        })();
        """;
}
