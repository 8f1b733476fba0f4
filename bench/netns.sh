# SPDX-License-Identifier: MIT
# Sourced by the bench scripts (not run): two namespaces "$S" (server) and "$C" (client) joined by a
# veth pair on NET.0/24 (server .1, client .2; nothing leaves them), a work folder "$W", the
# PIDS list of processes to stop, and a cleanup on exit that kills them and deletes it all.
# Set before sourcing: BENCH_NS_TAG (short name prefix, unique per script) and BENCH_NET (e.g. 10.201.0).
# BENCH_VETH_GRO=1 (default) turns GRO on for both veth ends. Why: a real server's NIC driver runs
# NAPI and has GRO on by default (`ethtool -k eth0` shows generic-receive-offload: on), so a burst
# of datagrams from one client that arrives within one NAPI poll is coalesced for a UDP socket that
# asked for it (UDP_GRO) and handed up one by one to a socket that did not (the stock server's),
# both within the kernel's normal behaviour. veth is the odd one out: GRO is off and it has no NAPI
# unless GRO or XDP is enabled, so without this every datagram is a separate socket wake-up for
# every server row. It applies to every row equally. BENCH_VETH_GRO=0 keeps the veth defaults
# (the setting of the runs before 2026-11-28 15:00); needs ethtool (apt-get install ethtool).
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
BENCH_VETH_GRO=${BENCH_VETH_GRO:-1}
if [[ $BENCH_VETH_GRO == 1 ]]; then
  command -v ethtool >/dev/null || { echo "BENCH_VETH_GRO=1 needs ethtool (apt-get install ethtool) or set BENCH_VETH_GRO=0" >&2; exit 1; }
  ip netns exec "$S" ethtool -K "${BENCH_NS_TAG:0:1}$$s" gro on
  ip netns exec "$C" ethtool -K "${BENCH_NS_TAG:0:1}$$c" gro on
fi
echo "veth GRO: $(ip netns exec "$S" ethtool -k "${BENCH_NS_TAG:0:1}$$s" 2>/dev/null | awk '/generic-receive-offload/{print $2}' || echo unknown) (BENCH_VETH_GRO=$BENCH_VETH_GRO)"

dotnet build -c Release "$root/src/Ovpn.Cli" >/dev/null
OVPNAS=$(find "$OVPN_ARTIFACTS/bin/Ovpn.Cli" -path '*release*' -name ovpnas.dll | head -1)
ovpnas() { dotnet "$OVPNAS" "$@"; }
wait_log() { for _ in $(seq 1 $(( $3 * 5 ))); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.2; done; return 1; }
