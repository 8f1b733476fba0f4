// SPDX-License-Identifier: MIT
using BenchmarkDotNet.Running;

namespace Ovpn.Benchmarks;

public static class Program
{
    public static int Main(string[] args)
    {
        if (args.Length > 0 && args[0] == "loadgen")
        {
            return LoadGen.Run(args[1..]);
        }

        BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
        return 0;
    }
}
