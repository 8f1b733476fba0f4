# SPDX-License-Identifier: MIT
# Runs INSIDE the VM as root: loads our build of ovpn-dco-v2.ko and runs the C# driver
# (KernelDataPlane against the real module). Exit code = the driver's.
set -u
T0=$(date +%s.%N)
log() { echo "[+$(awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN{printf "%6.1f", b-a}')s] $*"; }
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1 HOME=/root
log "kernel $(uname -r)"
# Dependencies first (the module is outside /lib/modules, so modprobe cannot resolve them for us).
modprobe udp_tunnel; modprobe ip6_udp_tunnel
# No udev here: CPU-feature crypto drivers are not auto-loaded.
modprobe aesni_intel 2>/dev/null; modprobe ghash_clmulni_intel 2>/dev/null
[ -d /sys/module/ovpn_dco_v2 ] || insmod "$MODULE_KO" || { log "insmod $MODULE_KO FAILED"; exit 1; }
log "loaded $(basename "$MODULE_KO"), version $(cat /sys/module/ovpn_dco_v2/version 2>/dev/null)"
DRIVER=${KDCO_DRIVER:?KDCO_DRIVER not set}
log "== driver: dotnet $DRIVER"
timeout 600 dotnet "$DRIVER" as0t0; rc=$?
log "driver rc=$rc"
if [ -n "${OVPN_KO:-}" ]; then
  log "== upstream 'ovpn' module (ovpn-backports build): $(basename "$OVPN_KO")"
  if [ -d /sys/module/ovpn ] || insmod "$OVPN_KO"; then
    log "loaded, version $(cat /sys/module/ovpn/version 2>/dev/null)"
    timeout 600 dotnet "$DRIVER" as1t0 ovpn; r2=$?
    log "driver (ovpn) rc=$r2"; [ $rc = 0 ] && rc=$r2
  else
    log "insmod $OVPN_KO FAILED"; rc=1
  fi
fi
log "dmesg (ovpn lines):"; dmesg | grep -iE 'ovpn' | tail -15
exit $rc
