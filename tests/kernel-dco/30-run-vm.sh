#!/bin/bash
# SPDX-License-Identifier: MIT
# Step 3: boot the guest kernel in qemu and run GUEST_SCRIPT as root inside; prints the guest log.
# usage: 30-run-vm.sh guest/script.sh [timeout_seconds]   (env: ACCEL=kvm|tcg, SMP, MEM, and
# KDCO_* variables, which are forwarded into the guest). The VM has NO network card: all traffic
# stays inside it. Exit 0 only when the guest script exited 0.
set -euo pipefail
. "$(dirname "$0")/common.sh"
script=${1:?guest script}; tmo=${2:-900}
SMP=${SMP:-2}; MEM=${MEM:-3072}
[ -f "$INITRAMFS" ] || "$KDCO_DIR/20-make-initramfs.sh"
name=$(basename "$script" .sh)
RUN=$WORK/runs/$name-$(date +%Y%m%d-%H%M%S); mkdir -p "$RUN"
cp "$script" "$RUN/guest.sh"; mkdir -p "$RUN/lib"; cp "$KDCO_DIR"/guest/*.sh "$RUN/lib/"
{ echo "export MODULE_KO='$MODULE_KO' REPO_ROOT='$REPO_ROOT' WORK='$WORK'"
  [ "${KDCO_WITH_OVPN:-0}" = 1 ] && echo "export OVPN_KO='$OVPN_KO'"
  for v in $(compgen -v | grep '^KDCO_' || true); do echo "export $v='${!v}'"; done; } > "$RUN/env"
cat > "$RUN/stage2.sh" <<'S2'
#!/bin/bash
# PID 1 inside the VM (on the overlayed, read-only host root).
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm; mount -t devpts devpts /dev/pts; mount -t tmpfs tmpfs /dev/shm
cd /xfer; . /xfer/env
# A fresh /tmp, unless the work folder (module, builds, data dir) is itself under the host's /tmp (e.g. a CI
# clone there): then keep the overlayed host /tmp, which is writable too (tmpfs upper layer).
mount -t tmpfs tmpfs /run; case "$WORK/" in /tmp/*) ;; *) mount -t tmpfs tmpfs /tmp ;; esac
hostname kdco-vm; ip link set lo up
modprobe virtio-rng 2>/dev/null
echo "STAGE2: kernel $(uname -r), $(nproc) cpus, uptime $(cut -d' ' -f1 /proc/uptime)s"
start=$(date +%s.%N)
bash /xfer/guest.sh > /xfer/guest.log 2>&1; rc=$?
echo $rc > /xfer/rc
echo "STAGE2: guest.sh rc=$rc after $(awk -v a=$start -v b=$(date +%s.%N) 'BEGIN{printf "%.1f", b-a}')s"
sync; echo o > /proc/sysrq-trigger; sleep 10; poweroff -f
S2
case "$ACCEL" in
  kvm) accel=(-accel kvm -cpu host,-arch-capabilities) ;;
  *)   accel=(-accel tcg,thread=multi -cpu max) ;;
esac
echo "30-run-vm: $name accel=$ACCEL smp=$SMP mem=${MEM}M kernel=$KVER timeout=${tmo}s run=$RUN"
echo "30-run-vm: host loadavg before: $(cut -d' ' -f1-3 /proc/loadavg)"
t0=$(ts)
set +e
timeout --kill-after=10 "$tmo" qemu-system-x86_64 "${accel[@]}" -smp "$SMP" -m "$MEM" \
  -machine pc -nodefaults -display none -no-reboot -nic none \
  -kernel "$VMLINUZ" -initrd "$INITRAMFS" \
  -append "console=ttyS0 rdinit=/init panic=-1 loglevel=4 mitigations=off" \
  -serial "file:$RUN/console.log" \
  -device virtio-rng-pci \
  -fsdev local,id=hostroot,path=/,security_model=passthrough,readonly=on,multidevs=remap \
  -device virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot \
  -fsdev local,id=xfer,path="$RUN",security_model=passthrough \
  -device virtio-9p-pci,fsdev=xfer,mount_tag=xfer \
  > "$RUN/qemu.log" 2>&1
qrc=$?
set -e
echo "30-run-vm: qemu exit $qrc after $(since "$t0")s; guest rc=$(cat "$RUN/rc" 2>/dev/null || echo none); host loadavg after: $(cut -d' ' -f1-3 /proc/loadavg)"
[ "$qrc" = 124 ] && echo "30-run-vm: TIMEOUT after ${tmo}s"
grep -E 'STAGE2|INIT-FAIL|Kernel panic' "$RUN/console.log" | tr -d '\r' || true
echo "--- guest.log ($RUN/guest.log) ---"; cat "$RUN/guest.log" 2>/dev/null || echo "(no guest.log)"
[ "$(cat "$RUN/rc" 2>/dev/null)" = 0 ]
