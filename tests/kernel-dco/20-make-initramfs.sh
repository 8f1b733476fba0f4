#!/bin/bash
# SPDX-License-Identifier: MIT
# Step 2: tiny initramfs (busybox-static + the guest kernel's virtio/9p/overlay modules). Its /init mounts
# the HOST root read-only over virtio-9p under a tmpfs overlay, mounts the run folder at /xfer and
# switch_roots into /xfer/stage2.sh. < 1 s.
set -euo pipefail
. "$(dirname "$0")/common.sh"
t0=$(ts)
B=$WORK/initramfs-root
rm -rf "$B"; mkdir -p "$B"/{bin,dev,proc,sys,lower,rw,newroot,lib/modules}
cp /bin/busybox "$B/bin/busybox"
: > "$B/modules.order"
for m in virtio_pci 9pnet_virtio 9p overlay; do
  modprobe -S "$KVER" --show-depends "$m" | awk '$1=="insmod"{print $2}'
done | awk '!seen[$0]++' | while read -r ko; do
  cp "$ko" "$B/lib/modules/"; basename "$ko" >> "$B/modules.order"
done
cat > "$B/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
for m in $(cat /modules.order); do insmod /lib/modules/$m || echo "insmod $m failed"; done
fail() { echo "INIT-FAIL: $*"; echo o > /proc/sysrq-trigger; sleep 5; poweroff -f; }
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose hostroot /lower || fail "9p hostroot"
mount -t tmpfs -o size=75% tmpfs /rw && mkdir -p /rw/upper /rw/work
mount -t overlay overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work /newroot || fail overlay
mkdir -p /newroot/xfer
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 xfer /newroot/xfer || fail "9p xfer"
umount /proc /sys 2>/dev/null; umount /dev 2>/dev/null
exec switch_root /newroot /bin/bash /xfer/stage2.sh
INIT
chmod +x "$B/init"
(cd "$B" && find . | cpio -o -H newc --quiet | gzip -1) > "$INITRAMFS"
echo "20-make-initramfs: $INITRAMFS ($(du -h "$INITRAMFS" | cut -f1)) in $(since "$t0")s"
