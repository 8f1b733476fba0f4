// SPDX-License-Identifier: MIT
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Ovpn.ControlPlane.Config;
using Ovpn.Server.Management;

namespace Ovpn.Admin;

/// <summary>
/// The JSON API under /api (same documents as `sacli Status` / `VPNStatus` / `ConfigQuery`).
/// POST/DELETE need the X-CSRF-TOKEN header (token from GET /api/csrf or the page's meta tag).
/// </summary>
internal static class AdminApi
{
    public static void Map(WebApplication app)
    {
        var api = app.MapGroup("/api");
        api.MapGet("/status", (IManagementTarget t) => Json(t.GetStatus()));
        api.MapGet("/vpnstatus", (IManagementTarget t) => Json(t.GetVpnStatus()));
        api.MapGet("/dco-review", (IManagementTarget t) => Json(t.GetDcoReview()));
        api.MapGet("/config", (AdminService s, string? prefix) => Json(s.Config.Query(prefix ?? "")));
        api.MapGet("/csrf", (HttpContext ctx, Microsoft.AspNetCore.Antiforgery.IAntiforgery af) =>
            Json(new { header = AdminHost.CsrfHeader, token = af.GetAndStoreTokens(ctx).RequestToken }));
        api.MapPost("/config", async (HttpContext ctx, AdminService s) =>
        {
            Dictionary<string, string?>? body;
            try
            {
                body = await JsonSerializer.DeserializeAsync<Dictionary<string, string?>>(ctx.Request.Body).ConfigureAwait(false);
            }
            catch (JsonException e)
            {
                return Results.BadRequest(new { error = "body must be a JSON object of key: value strings", detail = e.Message });
            }

            if (body is null || body.Count == 0)
            {
                return Results.BadRequest(new { error = "no keys given" });
            }

            var errors = s.SaveConfig(body);
            return errors.Count == 0 ? Json(new { saved = body.Keys }) : Results.Json(new { errors }, AdminHost.Json, statusCode: 400);
        });
        api.MapPost("/server/update", (IManagementTarget t) => Json(t.Reload()));
        api.MapGet("/users", (AdminService s) => Json(s.Users.List().Select(u => new
        {
            name = u.Name,
            hasPassword = u.HasPassword,
            superuser = s.IsAdmin(u.Name),
            created = u.Created,
        })));
        api.MapPost("/users", async (HttpContext ctx, AdminService s) =>
        {
            var body = await JsonSerializer.DeserializeAsync<NewUser>(ctx.Request.Body, AdminHost.Json).ConfigureAwait(false);
            if (body?.Name is null)
            {
                return Results.BadRequest(new { error = "name is required" });
            }

            try
            {
                s.AddUser(body.Name, body.Password, body.Superuser);
                return Json(new { added = body.Name });
            }
            catch (AdminException e)
            {
                return Results.BadRequest(new { error = e.Message });
            }
        });
        api.MapDelete("/users/{name}", (string name, AdminService s) =>
            s.DeleteUser(name) ? Json(new { deleted = name }) : Results.NotFound(new { error = $"no such user '{name}'" }));
        api.MapGet("/users/{name}/profile", (string name, AdminService s) => Profile(s, name));
    }

    internal static IResult Profile(AdminService s, string name)
    {
        try
        {
            UserStoreName(name);
            var text = s.BuildProfile(name);
            return Results.File(System.Text.Encoding.UTF8.GetBytes(text), "application/x-openvpn-profile", name + ".ovpn");
        }
        catch (AdminException e)
        {
            return Results.NotFound(new { error = e.Message });
        }
    }

    private static void UserStoreName(string name) => ControlPlane.Users.UserStore.ValidateName(name);

    private static IResult Json(object value) => Results.Json(value, AdminHost.Json);

    private sealed record NewUser(string? Name, string? Password, bool Superuser);
}
