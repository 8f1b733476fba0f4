// SPDX-License-Identifier: MIT
namespace Ovpn.ControlPlane.Config;

/// <summary>A config value was refused. The stored value is unchanged.</summary>
public sealed class ConfigValidationException : Exception
{
    public string Key { get; }
    public string? Value { get; }
    public string Allowed { get; }

    public ConfigValidationException(string key, string? value, string allowed)
        : base($"invalid value '{value}' for config key '{key}': allowed {allowed}")
    {
        Key = key;
        Value = value;
        Allowed = allowed;
    }
}

/// <summary>
/// An administrative request that cannot be carried out as asked (unknown user, name taken, data
/// directory not initialized...). The CLI maps it to exit code 1 like a validation error.
/// </summary>
public sealed class AdminException(string message) : Exception(message);
