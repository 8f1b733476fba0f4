// SPDX-License-Identifier: MIT
using BenchmarkDotNet.Running;

namespace Ovpn.Benchmarks;

public static class Program
{
    public static void Main(string[] args) => BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
}
