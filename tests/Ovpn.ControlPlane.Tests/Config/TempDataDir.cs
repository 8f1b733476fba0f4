// SPDX-License-Identifier: MIT
using Ovpn.ControlPlane.Config;

namespace Ovpn.ControlPlane.Tests.Config;

/// <summary>A fresh data directory under /tmp, removed on dispose.</summary>
public sealed class TempDataDir : IDisposable
{
    public string Path { get; } = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "ovpnas-test-" + Guid.NewGuid().ToString("N"));

    public OvpnDatabase CreateDatabase() => OvpnDatabase.Create(Path);

    public void Dispose()
    {
        try
        {
            Directory.Delete(Path, recursive: true);
        }
        catch (DirectoryNotFoundException)
        {
        }
    }
}
