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

        if (args.Length > 0 && args[0] == "udpgso")
        {
            return UdpGsoBench.Run(args[1..]);
        }

        if (args.Length > 0 && args[0] == "udpsink")
        {
            return UdpSink.Run(args[1..]);
        }

        if (args.Length > 0 && args[0] == "scale")
        {
            return ScaleBench.RunAsync(args[1..]).GetAwaiter().GetResult();
        }

        BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
        return 0;
    }
}
