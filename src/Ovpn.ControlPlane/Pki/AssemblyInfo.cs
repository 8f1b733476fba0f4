// SPDX-License-Identifier: MIT
using System.Runtime.CompilerServices;

// Tests issue deliberately broken certificates (expired, unrecorded serial) with the CA key.
[assembly: InternalsVisibleTo("Ovpn.ControlPlane.Tests")]
