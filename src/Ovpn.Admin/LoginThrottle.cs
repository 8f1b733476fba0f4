// SPDX-License-Identifier: MIT
using System.Collections.Concurrent;

namespace Ovpn.Admin;

/// <summary>
/// Lockout after repeated failed logins: after <see cref="MaxFailures"/> failures for a user name
/// (or 4x that from one client address) within the window, further attempts are refused for
/// <see cref="LockoutTime"/>, even with the right password.
/// </summary>
public sealed class LoginThrottle(TimeProvider time)
{
    public int MaxFailures { get; init; } = 5;

    public TimeSpan Window { get; init; } = TimeSpan.FromMinutes(15);

    public TimeSpan LockoutTime { get; init; } = TimeSpan.FromMinutes(5);

    private readonly ConcurrentDictionary<string, Entry> _entries = new(StringComparer.Ordinal);

    private sealed class Entry
    {
        public int Failures;
        public DateTimeOffset WindowStart;
        public DateTimeOffset LockedUntil;
    }

    /// <summary>How long the user name or address is still locked; null if not locked.</summary>
    public TimeSpan? LockedFor(string user, string address)
    {
        var now = time.GetUtcNow();
        foreach (var k in Keys(user, address))
        {
            if (_entries.TryGetValue(k, out var e))
            {
                lock (e)
                {
                    if (e.LockedUntil > now)
                    {
                        return e.LockedUntil - now;
                    }
                }
            }
        }

        return null;
    }

    public void Failed(string user, string address)
    {
        var now = time.GetUtcNow();
        foreach (var (k, limit) in new[] { ("u:" + user.ToLowerInvariant(), MaxFailures), ("a:" + address, MaxFailures * 4) })
        {
            var e = _entries.GetOrAdd(k, _ => new Entry { WindowStart = now });
            lock (e)
            {
                if (now - e.WindowStart > Window)
                {
                    e.WindowStart = now;
                    e.Failures = 0;
                }

                if (++e.Failures >= limit)
                {
                    e.LockedUntil = now + LockoutTime;
                    e.Failures = 0;
                    e.WindowStart = now;
                }
            }
        }
    }

    public void Succeeded(string user) => _entries.TryRemove("u:" + user.ToLowerInvariant(), out _);

    private static string[] Keys(string user, string address) => ["u:" + user.ToLowerInvariant(), "a:" + address];
}
