// SPDX-License-Identifier: MIT
// Interop tests create namespaces, TUN devices and real openvpn processes: run them one at a time.
[assembly: CollectionBehavior(DisableTestParallelization = true)]
