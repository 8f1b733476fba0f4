// SPDX-License-Identifier: MIT
using System.Text;

namespace Ovpn.Protocol.Options;

/// <summary>One pushed option: name and space-separated arguments (quotes removed).</summary>
public sealed record PushOption(string Name, IReadOnlyList<string> Args)
{
    public override string ToString() => Args.Count == 0 ? Name : Name + " " + string.Join(' ', Args);
}

/// <summary>
/// Builds PUSH_REPLY control messages from an ordered option list (protocol notes section 15).
/// Like 2.6 <c>send_push_reply</c>: a message is capped at PUSH_BUNDLE_SIZE (1024) minus 84
/// bytes of slack; when the next option would not fit, the message gets
/// <c>,push-continuation 2</c> and a new <c>PUSH_REPLY</c> starts; the last message of a split
/// reply ends with <c>,push-continuation 1</c>. Messages are returned without the trailing NUL
/// (the control-message encoder adds it).
/// </summary>
public sealed class PushReplyBuilder
{
    public const string Command = "PUSH_REPLY";
    public const int PushBundleSize = 1024;
    public const int Slack = 84;

    private readonly List<string> _options = [];
    private readonly int _capacity;

    /// <param name="bundleSize">Total budget per message (default 1024, like OpenVPN).</param>
    public PushReplyBuilder(int bundleSize = PushBundleSize)
    {
        if (bundleSize < 200)
        {
            throw new ArgumentOutOfRangeException(nameof(bundleSize), "bundle size too small");
        }

        _capacity = bundleSize - Slack;
    }

    public IReadOnlyList<string> Options => _options;

    /// <summary>Adds one option line such as "route 10.0.0.0 255.0.0.0". Commas and control
    /// characters are refused: a comma would split the option on the client.</summary>
    public PushReplyBuilder Add(string option)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(option);
        foreach (var ch in option)
        {
            if (ch == ',' || char.IsControl(ch))
            {
                throw new ArgumentException($"push option must not contain ',' or control characters: '{option}'", nameof(option));
            }
        }

        // Leave room for "PUSH_REPLY," and ",push-continuation 2" around a single option.
        if (Command.Length + 1 + option.Length + 1 >= _capacity)
        {
            throw new ArgumentException("push option too long", nameof(option));
        }

        _options.Add(option.Trim());
        return this;
    }

    public PushReplyBuilder Add(string name, params string[] args) =>
        Add(args.Length == 0 ? name : name + " " + string.Join(' ', args));

    /// <summary>Returns one or more messages; an empty option list gives just "PUSH_REPLY".</summary>
    public List<string> Build()
    {
        var messages = new List<string>();
        var sb = new StringBuilder(Command);
        foreach (var opt in _options)
        {
            if (sb.Length + 1 + opt.Length >= _capacity)
            {
                sb.Append(",push-continuation 2");
                messages.Add(sb.ToString());
                sb.Clear().Append(Command);
            }

            sb.Append(',').Append(opt);
        }

        if (messages.Count > 0)
        {
            sb.Append(",push-continuation 1");
        }

        messages.Add(sb.ToString());
        return messages;
    }
}

/// <summary>
/// Client-side PUSH_REPLY parsing with continuation: feed each received message to
/// <see cref="TryAdd"/> until <see cref="IsComplete"/>. Options are split like config lines
/// (whitespace-separated, double quotes group, backslash escapes inside quotes). The
/// push-continuation option itself is consumed and not listed.
/// </summary>
public sealed class PushReplyParser
{
    private readonly List<PushOption> _options = [];

    public IReadOnlyList<PushOption> Options => _options;

    public bool IsComplete { get; private set; }

    public int MessageCount { get; private set; }

    /// <summary>False (with an error) if the message is not a PUSH_REPLY, is malformed, or
    /// arrives after the reply was already complete.</summary>
    public bool TryAdd(string message, out string? error)
    {
        error = null;
        if (IsComplete)
        {
            error = "push reply already complete";
            return false;
        }

        message = message.TrimEnd('\0');
        string rest;
        if (message == PushReplyBuilder.Command)
        {
            rest = "";
        }
        else if (message.StartsWith(PushReplyBuilder.Command + ",", StringComparison.Ordinal))
        {
            rest = message[(PushReplyBuilder.Command.Length + 1)..];
        }
        else
        {
            error = "not a PUSH_REPLY message";
            return false;
        }

        var parsed = new List<PushOption>();
        int continuation = 0;
        foreach (var item in rest.Split(','))
        {
            if (string.IsNullOrWhiteSpace(item))
            {
                continue;
            }

            if (!TryTokenize(item, out var tokens, out error))
            {
                return false;
            }

            if (tokens.Count == 0)
            {
                continue;
            }

            if (tokens[0] == "push-continuation")
            {
                if (tokens.Count != 2 || !int.TryParse(tokens[1], out continuation) || continuation is not (1 or 2))
                {
                    error = $"bad push-continuation: '{item}'";
                    return false;
                }

                continue;
            }

            parsed.Add(new PushOption(tokens[0], tokens.GetRange(1, tokens.Count - 1).ToArray()));
        }

        _options.AddRange(parsed);
        MessageCount++;
        IsComplete = continuation != 2;
        return true;
    }

    /// <summary>Parses a single message without continuation handling.</summary>
    public static IReadOnlyList<PushOption> Parse(string message)
    {
        var p = new PushReplyParser();
        if (!p.TryAdd(message, out var error))
        {
            throw new FormatException(error);
        }

        return p.Options;
    }

    /// <summary>First option with this name, or null.</summary>
    public PushOption? Find(string name)
    {
        foreach (var o in _options)
        {
            if (o.Name == name)
            {
                return o;
            }
        }

        return null;
    }

    private static bool TryTokenize(string line, out List<string> tokens, out string? error)
    {
        tokens = [];
        error = null;
        var cur = new StringBuilder();
        bool inToken = false, inQuote = false;
        for (int i = 0; i < line.Length; i++)
        {
            char ch = line[i];
            if (inQuote)
            {
                if (ch == '\\' && i + 1 < line.Length)
                {
                    cur.Append(line[++i]);
                }
                else if (ch == '"')
                {
                    inQuote = false;
                }
                else
                {
                    cur.Append(ch);
                }
            }
            else if (ch == '"')
            {
                inQuote = true;
                inToken = true;
            }
            else if (ch is ' ' or '\t')
            {
                if (inToken)
                {
                    tokens.Add(cur.ToString());
                    cur.Clear();
                    inToken = false;
                }
            }
            else
            {
                cur.Append(ch);
                inToken = true;
            }
        }

        if (inQuote)
        {
            error = $"unterminated quote in push option '{line}'";
            return false;
        }

        if (inToken)
        {
            tokens.Add(cur.ToString());
        }

        return true;
    }
}
