// SPDX-License-Identifier: MIT
using Ovpn.ControlPlane.Config;
using Ovpn.ControlPlane.Users;

namespace Ovpn.ControlPlane.Tests.Config;

public sealed class UserStoreTests : IDisposable
{
    private readonly TempDataDir _dir = new();
    private readonly UserStore _users;

    public UserStoreTests() => _users = new UserStore(_dir.CreateDatabase());

    public void Dispose() => _dir.Dispose();

    [Fact]
    public void PasswordDigestRoundTrip()
    {
        var digest = PasswordHasher.Hash("correct horse", iterations: 1000);
        Assert.StartsWith("pbkdf2-sha256$1000$", digest);
        Assert.True(PasswordHasher.Verify("correct horse", digest));
        Assert.False(PasswordHasher.Verify("correct horsE", digest));
        Assert.False(PasswordHasher.Verify("correct horse", digest.Replace("$1000$", "$1001$")));
        Assert.False(PasswordHasher.Verify("x", "garbage"));
        Assert.NotEqual(digest, PasswordHasher.Hash("correct horse", iterations: 1000)); // random salt
    }

    [Fact]
    public void DefaultIterationCountIs600k()
    {
        _users.Add("alice", "pw1");
        Assert.True(_users.VerifyPassword("alice", "pw1"));
        Assert.False(_users.VerifyPassword("alice", "pw2"));
        Assert.False(_users.VerifyPassword("nobody", "pw1"));
        using var c = OvpnDatabase.Open(_dir.Path).OpenConnection();
        using var cmd = c.CreateCommand();
        cmd.CommandText = "SELECT password_digest FROM users WHERE name = 'alice'";
        Assert.StartsWith("pbkdf2-sha256$600000$", (string)cmd.ExecuteScalar()!);
    }

    [Fact]
    public void AddListDeleteAndProperties()
    {
        _users.Add("bob");
        Assert.Throws<AdminException>(() => _users.Add("bob"));
        Assert.Throws<AdminException>(() => _users.Add("-rf"));
        Assert.Throws<AdminException>(() => _users.Add("a b"));
        _users.SetProperty("carol", "type", "user_connect");   // creates carol
        Assert.Equal(["bob", "carol"], _users.List().Select(u => u.Name));
        Assert.Equal("user_connect", _users.GetProperty("carol", "type"));
        _users.SetProperty("carol", "type", "admin");
        Assert.Equal("admin", _users.GetProperty("carol", "type"));
        Assert.True(_users.DeleteProperty("carol", "type"));
        Assert.Null(_users.GetProperty("carol", "type"));
        Assert.True(_users.Delete("bob"));
        Assert.False(_users.Exists("bob"));
    }
}

public sealed class UserPropertyPrecedenceTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "ovpnas-prec-" + Guid.NewGuid().ToString("N"));
    private readonly Ovpn.ControlPlane.Users.UserStore _users;

    public UserPropertyPrecedenceTests()
    {
        _users = new Ovpn.ControlPlane.Users.UserStore(Ovpn.ControlPlane.Config.OvpnDatabase.Create(_dir));
    }

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void UserBeatsGroupBeatsDefault()
    {
        _users.SetProperty("__DEFAULT__", "prop_deny", "true");
        _users.SetProperty("__DEFAULT__", "prop_autologin", "true");
        _users.SetProperty("staff", "type", "group");
        _users.SetProperty("staff", "prop_deny", "false");
        _users.SetProperty("alice", "conn_group", "staff");
        _users.SetProperty("bob", "type", "user_connect");
        _users.SetProperty("carol", "conn_group", "staff");
        _users.SetProperty("carol", "prop_deny", "true");

        Assert.Equal("false", _users.GetEffectiveProperty("alice", "prop_deny"));   // group over default
        Assert.Equal("true", _users.GetEffectiveProperty("alice", "prop_autologin")); // default fills the rest
        Assert.Equal("true", _users.GetEffectiveProperty("bob", "prop_deny"));      // no group: default
        Assert.Equal("true", _users.GetEffectiveProperty("carol", "prop_deny"));    // user over group
        Assert.Null(_users.GetEffectiveProperty("alice", "access_to.0"));
        Assert.DoesNotContain("type", _users.GetEffectiveProperties("alice").Keys.Where(k => _users.GetProperty("alice", k) is null));
    }

    [Fact]
    public void ARecordThatIsNotAGroupGivesNothing()
    {
        _users.SetProperty("notagroup", "prop_deny", "true");
        _users.SetProperty("dave", "conn_group", "notagroup");
        Assert.Null(_users.GetEffectiveProperty("dave", "prop_deny"));
    }
}
