// SPDX-License-Identifier: MIT
namespace Ovpn.ControlPlane;

public enum LogLevel { Debug, Info, Warning, Error }

/// <summary>
/// Minimal process log: one line per event, "time level [area] message". Thread-safe. Key material
/// never reaches it: key types print as "&lt;redacted&gt;".
/// </summary>
public static class Log
{
    private static readonly object Gate = new();
    private static TextWriter _out = Console.Error;

    public static LogLevel MinLevel { get; set; } = LogLevel.Info;

    /// <summary>Extra sink for tests and the status API (last lines).</summary>
    public static event Action<string>? LineWritten;

    public static void SetOutput(TextWriter writer)
    {
        lock (Gate)
        {
            _out = writer;
        }
    }

    public static void Write(LogLevel level, string area, string message)
    {
        if (level < MinLevel)
        {
            return;
        }

        string line = $"{DateTime.UtcNow:yyyy-MM-dd HH:mm:ss.fff} {level.ToString().ToUpperInvariant(),-7} [{area}] {message}";
        lock (Gate)
        {
            _out.WriteLine(line);
            _out.Flush();
        }

        LineWritten?.Invoke(line);
    }

    public static void Debug(string area, string message) => Write(LogLevel.Debug, area, message);

    public static void Info(string area, string message) => Write(LogLevel.Info, area, message);

    public static void Warn(string area, string message) => Write(LogLevel.Warning, area, message);

    public static void Error(string area, string message) => Write(LogLevel.Error, area, message);
}
