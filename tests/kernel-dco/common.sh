# SPDX-License-Identifier: MIT
# Sourced by the kernel-dco scripts. Everything built goes to $WORK (default: tests/kernel-dco/.work,
# git-ignored) so a run never writes into /lib/modules or other system folders.
KDCO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$KDCO_DIR/../.." && pwd)
WORK=${WORK:-$KDCO_DIR/.work}
# Guest kernel: newest installed Debian 6.1 kernel with headers (override with KVER=...).
if [ -z "${KVER:-}" ]; then
  KVER=$(ls -1 /usr/src 2>/dev/null | sed -n 's/^linux-headers-\(6\.1\.[0-9]*-[0-9]*-amd64\)$/\1/p' | sort -V | tail -1)
fi
VMLINUZ=/boot/vmlinuz-$KVER
INITRAMFS=$WORK/initramfs-$KVER.cpio.gz
DCO_SRC=$(ls -1d /usr/src/ovpn-dco-* 2>/dev/null | sort -V | tail -1)
MODULE_KO=$WORK/module-$KVER/ovpn-dco-v2.ko
OVPN_KO=$WORK/module-$KVER/ovpn.ko
# KVM only with real VT-x/AMD-V; a kvm_pvm /dev/kvm (no vmx/svm flag) cannot boot a stock kernel -> TCG.
if [ -z "${ACCEL:-}" ]; then
  if [ -w /dev/kvm ] && grep -qwE 'vmx|svm' /proc/cpuinfo; then ACCEL=kvm; else ACCEL=tcg; fi
fi
ts() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}'; }
