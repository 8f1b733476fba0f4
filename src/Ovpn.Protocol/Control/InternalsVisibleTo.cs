// SPDX-License-Identifier: MIT
using System.Runtime.CompilerServices;

// Tests reach the AES-CTR helper and body codec directly to check them against independent math.
[assembly: InternalsVisibleTo("Ovpn.Protocol.Tests")]
