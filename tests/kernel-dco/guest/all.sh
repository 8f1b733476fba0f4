# SPDX-License-Identifier: MIT
# Runs INSIDE the VM: driver.sh (KernelDataPlane unit-level checks against the module), then flow.sh
# (our control plane + kernel data plane with a stock openvpn client) unless KDCO_FLOW is empty.
set -u
here=/xfer/lib
bash $here/driver.sh; d=$?
echo "=== driver.sh rc=$d"
f=0
if [ -n "${KDCO_FLOW:-}" ]; then bash $here/flow.sh; f=$?; echo "=== flow.sh rc=$f"; fi
grep -q '^SKIP: ' /xfer/guest.log 2>/dev/null && exit 3
[ $d = 0 ] && [ $f = 0 ]
