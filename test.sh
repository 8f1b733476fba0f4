#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Runs every test suite: unit tests, interop tests against the real openvpn binary in network
# namespaces (needs root, /dev/net/tun, openvpn, iperf3), browser tests (chromium).
# Prints one closing line "tests: N passed, N failed, N skipped".
set -uo pipefail
cd "$(dirname "$0")"

if [ "$(id -u)" -ne 0 ]; then
  echo "test.sh: run as root: the interop tests create network namespaces and TUN devices" >&2
  exit 1
fi

dotnet build OvpnAccessServer.slnx -nologo -v quiet 2>&1 | tail -n 3
[ "${PIPESTATUS[0]}" -eq 0 ] || { echo "test.sh: build failed" >&2; exit 1; }

log=$(mktemp)
status=0
# Each test project in turn, so a crash in one shows which.
for proj in $(ls -d tests/*/ | sort); do
  csproj=$(ls "$proj"*.csproj 2>/dev/null | head -n 1)
  [ -n "$csproj" ] || continue
  grep -q "<IsTestProject>true</IsTestProject>\|Microsoft.NET.Test.Sdk" "$csproj" || continue
  echo "== $(basename "$proj")"
  timeout 1800 dotnet test "$csproj" --no-build -nologo --blame-hang-timeout 10m 2>&1 | tee -a "$log" | grep -E "^(Passed!|Failed!)|\[FAIL\]|Error Message" -A3
  rc=${PIPESTATUS[0]}
  [ "$rc" -eq 0 ] || status=1
done

# The kernel offload tests boot a VM (QEMU, Debian's 6.1 kernel, the real ovpn-dco-v2 module):
# slow, so they run when OVPN_KERNEL_DCO=1 (CI sets it). Their result counts as one test.
kernel_passed=0; kernel_failed=0; kernel_skipped=0
if [ "${OVPN_KERNEL_DCO:-0}" = "1" ]; then
  echo "== kernel-dco (VM)"
  KDCO_INSTALL=1 timeout 1500 tests/kernel-dco/ci.sh > /tmp/kernel-dco.log 2>&1
  krc=$?
  tail -n 40 /tmp/kernel-dco.log
  case $krc in
    0) kernel_passed=1 ;;
    77) kernel_skipped=1; echo "kernel-dco: skipped: $(grep -m1 'SKIPPED' /tmp/kernel-dco.log)" ;;
    *) kernel_failed=1; status=1 ;;
  esac
fi

# Sum the per-assembly results into one line.
passed=$(grep -oE "Passed: +[0-9]+" "$log" | awk '{s+=$2} END {print s+0}')
failed=$(grep -oE "Failed: +[0-9]+" "$log" | awk '{s+=$2} END {print s+0}')
skipped=$(grep -oE "Skipped: +[0-9]+" "$log" | awk '{s+=$2} END {print s+0}')
rm -f "$log"
passed=$((passed + kernel_passed)); failed=$((failed + kernel_failed)); skipped=$((skipped + kernel_skipped))
echo "tests: $passed passed, $failed failed, $skipped skipped"
if [ "$passed" -eq 0 ]; then
  echo "test.sh: no test ran" >&2
  exit 1
fi
[ "$failed" -eq 0 ] || status=1
exit $status
