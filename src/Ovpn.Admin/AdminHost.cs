// SPDX-License-Identifier: MIT
using System.Net;
using System.Security.Claims;
using System.Text.Json;
using Microsoft.AspNetCore.Antiforgery;
using Microsoft.AspNetCore.Authentication;
using Microsoft.AspNetCore.Authentication.Cookies;
using Microsoft.AspNetCore.Authorization;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.DataProtection;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Ovpn.ControlPlane.Config;
using Ovpn.Server.Management;

namespace Ovpn.Admin;

/// <summary>Where the admin web server listens. Port null = cs.https.port from the config database.</summary>
public sealed record AdminOptions
{
    public IPAddress Address { get; init; } = IPAddress.IPv6Any;

    public int? Port { get; init; }
}

/// <summary>
/// The admin web UI and its JSON API over HTTPS (self-signed certificate in the data directory).
/// Every page and API call needs a login of an admin user (prop_superuser=true + local password);
/// state-changing requests need an anti-forgery token (form field or X-CSRF-TOKEN header).
/// </summary>
public sealed class AdminHost : IAsyncDisposable
{
    public const string CsrfHeader = "X-CSRF-TOKEN";
    private readonly WebApplication _app;

    private AdminHost(WebApplication app, Uri baseUri)
    {
        _app = app;
        BaseUri = baseUri;
    }

    /// <summary>e.g. https://[::]:943/ (the bound address and port).</summary>
    public Uri BaseUri { get; }

    public int Port => BaseUri.Port;

    public static async Task<AdminHost> StartAsync(IManagementTarget target, string dataDir, AdminOptions? options = null, CancellationToken ct = default)
    {
        options ??= new AdminOptions();
        var store = ConfigStore.Open(dataDir);
        int port = options.Port ?? store.GetInt(ConfigKeys.HttpsPort);
        var cert = AdminCertificate.LoadOrCreate(dataDir, store.GetString(ConfigKeys.HostName));

        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { Args = [], ContentRootPath = dataDir });
        builder.Logging.ClearProviders();
        builder.WebHost.ConfigureKestrel(k =>
        {
            k.AddServerHeader = false;
            k.Listen(options.Address, port, l => l.UseHttps(cert));
        });

        var keysDir = Directory.CreateDirectory(Path.Combine(dataDir, "admin-keys"));
        File.SetUnixFileMode(keysDir.FullName, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        builder.Services.AddDataProtection().PersistKeysToFileSystem(keysDir).SetApplicationName("ovpnas-admin");
        builder.Services.AddSingleton(target);
        builder.Services.AddSingleton(new AdminService(dataDir));
        builder.Services.AddSingleton(new LoginThrottle(TimeProvider.System));
        builder.Services.AddAntiforgery(o =>
        {
            o.HeaderName = CsrfHeader;
            o.Cookie.Name = "ovpnas.af";
            o.Cookie.HttpOnly = true;
            o.Cookie.SecurePolicy = Microsoft.AspNetCore.Http.CookieSecurePolicy.Always;
            o.Cookie.SameSite = SameSiteMode.Strict;
        });
        builder.Services.AddAuthentication(CookieAuthenticationDefaults.AuthenticationScheme).AddCookie(o =>
        {
            o.Cookie.Name = "ovpnas.auth";
            o.Cookie.HttpOnly = true;
            o.Cookie.SecurePolicy = Microsoft.AspNetCore.Http.CookieSecurePolicy.Always;
            o.Cookie.SameSite = SameSiteMode.Strict;
            o.ExpireTimeSpan = TimeSpan.FromMinutes(30);
            o.SlidingExpiration = true;
            o.LoginPath = "/login";
            o.LogoutPath = "/logout";
            o.Events.OnRedirectToLogin = ctx =>
            {
                if (ctx.Request.Path.StartsWithSegments("/api"))
                {
                    ctx.Response.StatusCode = StatusCodes.Status401Unauthorized;
                    return Task.CompletedTask;
                }

                ctx.Response.Redirect(ctx.RedirectUri);
                return Task.CompletedTask;
            };
            o.Events.OnValidatePrincipal = async ctx =>
            {
                // A user who lost prop_superuser (or was deleted) is logged out at the next request.
                var svc = ctx.HttpContext.RequestServices.GetRequiredService<AdminService>();
                if (ctx.Principal?.Identity?.Name is not { } n || !svc.IsAdmin(n))
                {
                    ctx.RejectPrincipal();
                    await ctx.HttpContext.SignOutAsync(CookieAuthenticationDefaults.AuthenticationScheme).ConfigureAwait(false);
                }
            };
        });
        builder.Services.AddAuthorization(o => o.FallbackPolicy = new AuthorizationPolicyBuilder().RequireAuthenticatedUser().Build());

        var app = builder.Build();
        app.Use(async (ctx, next) =>
        {
            ctx.Response.Headers["X-Frame-Options"] = "DENY";
            ctx.Response.Headers["X-Content-Type-Options"] = "nosniff";
            ctx.Response.Headers["Referrer-Policy"] = "no-referrer";
            ctx.Response.Headers["Content-Security-Policy"] = "default-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'";
            ctx.Response.Headers["Strict-Transport-Security"] = "max-age=31536000";
            ctx.Response.Headers.CacheControl = "no-store";
            await next(ctx).ConfigureAwait(false);
        });
        app.UseAuthentication();
        app.UseAuthorization();
        app.Use(async (ctx, next) =>
        {
            if (!HttpMethods.IsGet(ctx.Request.Method) && !HttpMethods.IsHead(ctx.Request.Method) && !HttpMethods.IsOptions(ctx.Request.Method))
            {
                var af = ctx.RequestServices.GetRequiredService<IAntiforgery>();
                try
                {
                    await af.ValidateRequestAsync(ctx).ConfigureAwait(false);
                }
                catch (AntiforgeryValidationException)
                {
                    ctx.Response.StatusCode = StatusCodes.Status400BadRequest;
                    ctx.Response.ContentType = "text/plain; charset=utf-8";
                    await ctx.Response.WriteAsync("refused: anti-forgery token missing or invalid\n").ConfigureAwait(false);
                    return;
                }
            }

            await next(ctx).ConfigureAwait(false);
        });

        AdminPages.Map(app);
        AdminApi.Map(app);

        await app.StartAsync(ct).ConfigureAwait(false);
        var addr = app.Services.GetRequiredService<Microsoft.AspNetCore.Hosting.Server.IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        var uri = new Uri(addr.Replace("[::]", "localhost", StringComparison.Ordinal).Replace("0.0.0.0", "localhost", StringComparison.Ordinal));
        ControlPlane.Log.Info("admin", $"admin web UI on https port {uri.Port}");
        return new AdminHost(app, uri);
    }

    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync().ConfigureAwait(false);
        await _app.DisposeAsync().ConfigureAwait(false);
    }

    internal static ClaimsPrincipal Principal(string user) =>
        new(new ClaimsIdentity([new Claim(ClaimTypes.Name, user), new Claim(ClaimTypes.Role, "admin")], CookieAuthenticationDefaults.AuthenticationScheme));

    internal static readonly JsonSerializerOptions Json = ManagementJson.Options;
}
