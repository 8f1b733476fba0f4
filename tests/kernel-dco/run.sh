#!/bin/bash
# SPDX-License-Identifier: MIT
# Kernel DCO test: builds ovpn-dco-v2.ko for Debian's 6.1 kernel, the C# driver, an initramfs, boots the
# kernel under QEMU and runs tests/kernel-dco/guest/driver.sh inside (KernelDataPlane against the real module).
# Exit: 0 passed, 1 failed, 77 SKIPPED (a prerequisite is missing; the reason is printed on the
# "RESULT: SKIPPED:" line), 124 the VM run hit its timeout.
# Env: KDCO_INSTALL=1 runs 00-install.sh (apt) first; KDCO_VM_TIMEOUT (default 720 s) bounds the VM; KDCO_FLOW_TEST=0 skips the openvpn flow;
# KDCO_IPERF_TIME (default 3 s) per iperf3 run;
# WORK, KVER, ACCEL, SMP, MEM as in common.sh / 30-run-vm.sh.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
T0=$(date +%s)
skip() { echo "RESULT: SKIPPED: $*"; exit 77; }
step() { local t=$(date +%s); echo "=== $* ($(date +%T))"; "$@"; local rc=$?; echo "=== rc=$rc in $(( $(date +%s) - t ))s: $(basename "$1")"; return $rc; }

if [ "${KDCO_INSTALL:-0}" = 1 ]; then
  [ "$(id -u)" = 0 ] || skip "KDCO_INSTALL=1 needs root for apt-get"
  step "$here/00-install.sh" || { echo "RESULT: FAILED: package installation"; exit 1; }
fi
. "$here/common.sh"
[ "$(uname -s)" = Linux ] || skip "not Linux"
[ "$(uname -m)" = x86_64 ] || skip "the guest recipe is for x86_64 (host is $(uname -m))"
[ "$(id -u)" = 0 ] || skip "needs root (qemu exports / read-only with 9p passthrough; the guest runs as root)"
command -v qemu-system-x86_64 >/dev/null || skip "no qemu-system-x86_64 (apt-get install qemu-system-x86, or KDCO_INSTALL=1)"
[ -n "$KVER" ] || skip "no Debian 6.1 kernel headers in /usr/src (linux-headers-amd64 on bookworm, or KDCO_INSTALL=1)"
[ -f "$VMLINUZ" ] || skip "no guest kernel image $VMLINUZ (linux-image-amd64)"
[ -r "$VMLINUZ" ] || skip "guest kernel image $VMLINUZ not readable"
[ -d "/lib/modules/$KVER/kernel" ] || skip "no /lib/modules/$KVER (modules of the guest kernel)"
[ -n "$DCO_SRC" ] || skip "no ovpn-dco module source in /usr/src (openvpn-dco-dkms)"
[ -x /bin/busybox ] || skip "no /bin/busybox (busybox-static)"
command -v dotnet >/dev/null || skip "no dotnet SDK"
command -v make >/dev/null && command -v gcc >/dev/null || skip "no make/gcc to build the module"
echo "kernel-dco: guest kernel $KVER, module source $DCO_SRC, accel $ACCEL, work $WORK"
mkdir -p "$WORK"

if [ ! -f "$MODULE_KO" ] || [ "${KDCO_REBUILD:-0}" = 1 ]; then
  step "$here/10-build-module.sh" || { echo "RESULT: FAILED: module build"; exit 1; }
fi
ovpn_note="upstream ovpn API: SKIPPED (set KDCO_OVPN_SRC to ovpn-backports pre-patched sources to test it)"
if [ -n "${KDCO_OVPN_SRC:-}" ]; then
  if [ -f "$OVPN_KO" ] && [ "${KDCO_REBUILD:-0}" != 1 ]; then export KDCO_WITH_OVPN=1
  else
    step "$here/11-build-ovpn.sh"; r=$?
    case $r in 0) export KDCO_WITH_OVPN=1 ;; 77) ;; *) echo "RESULT: FAILED: ovpn module build"; exit 1 ;; esac
  fi
  [ "${KDCO_WITH_OVPN:-0}" = 1 ] && ovpn_note="upstream ovpn API: tested ($OVPN_KO)"
fi
echo "kernel-dco: $ovpn_note"
step "$here/20-make-initramfs.sh" || { echo "RESULT: FAILED: initramfs"; exit 1; }
# The guest runs the host's dotnet from the read-only root, so build here.
t=$(date +%s)
echo "=== dotnet build DcoDriver ($(date +%T))"
dotnet build "$here/DcoDriver/DcoDriver.csproj" -c Release -o "$WORK/driver" -nologo -v q > "$WORK/driver-build.log" 2>&1 \
  || { tail -30 "$WORK/driver-build.log"; echo "RESULT: FAILED: driver build"; exit 1; }
echo "=== rc=0 in $(( $(date +%s) - t ))s: dotnet build"
export KDCO_DRIVER=$WORK/driver/DcoDriver.dll

# Full flow (KDCO_FLOW_TEST=0 to skip): the real `ovpnas serve` + a data dir and client profile made with our CLI on the host
# (faster than inside the TCG guest). Server address 10.201.0.1 exists only inside the VM's namespaces.
if [ "${KDCO_FLOW_TEST:-1}" = 1 ]; then
  t=$(date +%s); echo "=== dotnet build ovpnas, data dir ($(date +%T))"
  { dotnet build "$REPO_ROOT/src/Ovpn.Cli/Ovpn.Cli.csproj" -c Release -o "$WORK/cli" -nologo -v q &&
    rm -rf "$WORK/flow-data" &&
    dotnet "$WORK/cli/ovpnas.dll" init --data-dir "$WORK/flow-data" --hostname 10.201.0.1 &&
    dotnet "$WORK/cli/ovpnas.dll" user add alice --data-dir "$WORK/flow-data" &&
    dotnet "$WORK/cli/ovpnas.dll" sacli -k vpn.server.daemon.ovpndco -v true ConfigPut --data-dir "$WORK/flow-data" &&
    dotnet "$WORK/cli/ovpnas.dll" profile alice --data-dir "$WORK/flow-data" --out "$WORK/flow-alice.ovpn"; } > "$WORK/flow-build.log" 2>&1 \
    || { tail -30 "$WORK/flow-build.log"; echo "RESULT: FAILED: flow build/setup"; exit 1; }
  echo "=== rc=0 in $(( $(date +%s) - t ))s: flow build + setup"
  export KDCO_FLOW=$KDCO_DIR/guest/flow.sh KDCO_FLOW_DATA=$WORK/flow-data KDCO_FLOW_PROFILE=$WORK/flow-alice.ovpn KDCO_CLI=$WORK/cli/ovpnas.dll
fi

step "$here/30-run-vm.sh" "$here/guest/all.sh" "${KDCO_VM_TIMEOUT:-720}"; rc=$?
total=$(( $(date +%s) - T0 ))
if [ $rc = 0 ]; then echo "RESULT: PASSED in ${total}s ($ovpn_note)"; exit 0; fi
last=$(ls -1dt "$WORK"/runs/all-* 2>/dev/null | head -1)
if [ -n "$last" ] && [ ! -f "$last/rc" ]; then echo "RESULT: TIMEOUT/NO-RESULT: the guest did not finish (see $last/console.log) after ${total}s"; exit 124; fi
grep -q '^SKIP: ' "$last/guest.log" 2>/dev/null && skip "inside the VM: $(sed -n 's/^SKIP: //p' "$last/guest.log" | head -1)"
echo "RESULT: FAILED after ${total}s (see $last/guest.log)"; exit 1
