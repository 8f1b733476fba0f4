// SPDX-License-Identifier: MIT
namespace Ovpn.Cli;

public static class Program
{
    public static int Main(string[] args)
    {
        Console.Error.WriteLine("ovpnas: not built yet");
        return 2;
    }
}
