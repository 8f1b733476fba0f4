// SPDX-License-Identifier: MIT
namespace Ovpn.Cli.Tests;

public sealed record CliResult(int ExitCode, string Stdout, string Stderr);

/// <summary>Runs the ovpnas command in-process against a temporary data directory.</summary>
public sealed class CliHarness : IDisposable
{
    public string DataDir { get; } = Path.Combine(Path.GetTempPath(), "ovpnas-cli-" + Guid.NewGuid().ToString("N"));

    public CliResult Run(params string[] args)
    {
        var o = new StringWriter();
        var e = new StringWriter();
        var code = Program.Run([.. args, "--data-dir", DataDir], o, e);
        return new CliResult(code, o.ToString(), e.ToString());
    }

    public CliResult RunOk(params string[] args)
    {
        var r = Run(args);
        Assert.True(r.ExitCode == 0, $"ovpnas {string.Join(' ', args)} -> {r.ExitCode}: {r.Stderr}");
        return r;
    }

    public void Dispose()
    {
        if (Directory.Exists(DataDir))
            Directory.Delete(DataDir, recursive: true);
    }
}
