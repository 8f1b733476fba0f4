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
