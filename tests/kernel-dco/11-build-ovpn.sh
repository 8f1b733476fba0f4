#!/bin/bash
# SPDX-License-Identifier: MIT
# Step 1b (optional): build the upstream "ovpn" module (Linux 6.16+ API) for the 6.1 guest kernel from
# OpenVPN/ovpn-backports pre-patched sources (its `sources` branch or a release tarball), given as a directory
# in KDCO_OVPN_SRC. Neither Debian 12 nor this repository ship them, so without KDCO_OVPN_SRC this step
# exits 77 and the upstream-API checks are reported as skipped. ~15 s.
set -euo pipefail
. "$(dirname "$0")/common.sh"
src=${KDCO_OVPN_SRC:-}
[ -n "$src" ] || { echo "11-build-ovpn: KDCO_OVPN_SRC not set (directory with ovpn-backports pre-patched sources)"; exit 77; }
[ -f "$src/drivers/net/ovpn/main.c" ] || { echo "11-build-ovpn: $src has no drivers/net/ovpn/main.c (need the pre-patched 'sources' tree)"; exit 77; }
t0=$(ts)
B=$WORK/build-ovpn; rm -rf "$B"; mkdir -p "$B" "$(dirname "$OVPN_KO")"
cp -a "$src/." "$B/"
# compat/ovpn-backports-6.1.h fills one helper the backport expects but 6.1 lacks.
make -C "$B" -j"$(nproc)" KERNEL_SRC="/lib/modules/$KVER/build" KCFLAGS="-include $KDCO_DIR/compat/ovpn-backports-6.1.h" \
  > "$WORK/build-ovpn.log" 2>&1 || { tail -30 "$WORK/build-ovpn.log"; exit 1; }
cp "$B/drivers/net/ovpn/ovpn.ko" "$OVPN_KO"
modinfo "$OVPN_KO" 2>/dev/null | grep -E "^(version|depends|vermagic):" || true
echo "11-build-ovpn: $OVPN_KO in $(since "$t0")s"
