// SPDX-License-Identifier: MIT
using System.Runtime.CompilerServices;

[assembly: InternalsVisibleTo("Ovpn.Client.Tests")]
[assembly: InternalsVisibleTo("Ovpn.Benchmarks")]
