# SPDX-License-Identifier: MIT
# Sourced by the bench scripts (not run): two namespaces "$S" (server) and "$C" (client) joined by a
# veth pair on NET.0/24 (server .1, client .2; nothing leaves them), a work folder "$W", the
# PIDS list of processes to stop, and a cleanup on exit that kills them and deletes it all.
# Set before sourcing: BENCH_NS_TAG (short name prefix, unique per script) and BENCH_NET (e.g. 10.201.0).
here=$(cd "$(dirname "$0")" && pwd); root=$(cd "$here/.." && pwd)
S=$BENCH_NS_TAG$$s; C=$BENCH_NS_TAG$$c; W=$(mktemp -d "/tmp/${BENCH_NS_TAG}bench.XXXX")
SRV_IP=$BENCH_NET.1; CLI_IP=$BENCH_NET.2
export OVPN_ARTIFACTS=${OVPN_ARTIFACTS:-/tmp/art-bench}
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do [[ -n "$p" ]] && kill "$p" 2>/dev/null || true; done
  sleep 1
  for p in "${PIDS[@]:-}"; do [[ -n "$p" ]] && kill -9 "$p" 2>/dev/null || true; done
  ip netns del "$S" 2>/dev/null || true; ip netns del "$C" 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT
ip netns add "$S"; ip netns add "$C"
ip link add "${BENCH_NS_TAG:0:1}$$s" type veth peer name "${BENCH_NS_TAG:0:1}$$c"
ip link set "${BENCH_NS_TAG:0:1}$$s" netns "$S"; ip link set "${BENCH_NS_TAG:0:1}$$c" netns "$C"
ip -n "$S" addr add "$SRV_IP/24" dev "${BENCH_NS_TAG:0:1}$$s"; ip -n "$C" addr add "$CLI_IP/24" dev "${BENCH_NS_TAG:0:1}$$c"
for n in "$S" "$C"; do ip -n "$n" link set lo up; done
ip -n "$S" link set "${BENCH_NS_TAG:0:1}$$s" up; ip -n "$C" link set "${BENCH_NS_TAG:0:1}$$c" up

dotnet build -c Release "$root/src/Ovpn.Cli" >/dev/null
OVPNAS=$(find "$OVPN_ARTIFACTS/bin/Ovpn.Cli" -path '*release*' -name ovpnas.dll | head -1)
ovpnas() { dotnet "$OVPNAS" "$@"; }
wait_log() { for _ in $(seq 1 $(( $3 * 5 ))); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.2; done; return 1; }
