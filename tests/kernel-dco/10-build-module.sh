#!/bin/bash
# SPDX-License-Identifier: MIT
# Step 1: build ovpn-dco-v2.ko from Debian's openvpn-dco-dkms source for the guest kernel with kbuild,
# into $WORK (not via `dkms install`, so the system's /lib/modules is left alone). ~30 s.
set -euo pipefail
. "$(dirname "$0")/common.sh"
[ -n "$KVER" ] || { echo "no linux-headers-6.1.*-amd64 in /usr/src (00-install.sh)" >&2; exit 1; }
[ -n "$DCO_SRC" ] || { echo "no /usr/src/ovpn-dco-* (package openvpn-dco-dkms)" >&2; exit 1; }
t0=$(ts)
B=$WORK/build-ovpn-dco; rm -rf "$B"; mkdir -p "$B" "$(dirname "$MODULE_KO")"
cp -a "$DCO_SRC/." "$B/"
ver=$(sed -n 's/^PACKAGE_VERSION="\(.*\)"/\1/p' "$B/dkms.conf")
# Same invocation dkms uses (dkms.conf MAKE=...), pointed at the 6.1 headers instead of the running kernel.
make -C "$B" -j"$(nproc)" VER="$KVER" KERNEL_SRC="/lib/modules/$KVER/build" REVISION="$ver" > "$WORK/build-module.log" 2>&1 \
  || { tail -30 "$WORK/build-module.log"; exit 1; }
cp "$B/drivers/net/ovpn-dco/ovpn-dco-v2.ko" "$MODULE_KO"
modinfo "$MODULE_KO" 2>/dev/null | grep -E "^(version|depends|vermagic):" || true
echo "10-build-module: $MODULE_KO in $(since "$t0")s"
