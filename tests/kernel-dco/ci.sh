#!/bin/bash
# SPDX-License-Identifier: MIT
# CI entry point: runs run.sh under a hard time budget and reports one of PASSED / FAILED / SKIPPED (reason) /
# TIMEOUT. Exit codes are passed through (0, 1, 77 skipped, 124 timeout) so CI can show a skip as a skip,
# never as a pass. Budget: KDCO_BUDGET seconds (default 900 = 15 min).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
budget=${KDCO_BUDGET:-900}
log=$(mktemp /tmp/kernel-dco-ci.XXXXXX.log)
timeout --kill-after=30 "$budget" "$here/run.sh" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
case $rc in
  0)   echo "kernel-dco: PASSED" ;;
  77)  echo "kernel-dco: SKIPPED ($(sed -n 's/^RESULT: SKIPPED: //p' "$log" | tail -1))" ;;
  124|137) echo "kernel-dco: TIMEOUT (budget ${budget}s)"; rc=124 ;;
  *)   echo "kernel-dco: FAILED (rc=$rc)"; rc=1 ;;
esac
rm -f "$log"
exit $rc
