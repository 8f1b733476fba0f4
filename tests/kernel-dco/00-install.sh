#!/bin/bash
# SPDX-License-Identifier: MIT
# Step 0 (host, needs root + Debian apt): the packages the kernel-DCO VM test needs.
#   qemu-system-x86     the VM
#   linux-image-amd64   Debian's 6.1 kernel for the guest (the host kernel may not load modules)
#   linux-headers-amd64 to build ovpn-dco-v2.ko for that kernel
#   openvpn-dco-dkms    the ovpn-dco-v2 module source (in /usr/src/ovpn-dco-*), pulls gcc/make
#   busybox-static, cpio, kmod: the initramfs
# A few minutes on a fresh bookworm machine (~130 s measured for the shared recipe).
set -euo pipefail
t0=$(date +%s)
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends \
  qemu-system-x86 linux-image-amd64 linux-headers-amd64 openvpn-dco-dkms dkms \
  busybox-static cpio kmod iproute2 procps openvpn
echo "00-install: done in $(( $(date +%s) - t0 ))s"
