# SPDX-License-Identifier: MIT
# Sourced by the bench scripts (not run): two namespaces "$S" (server) and "$C" (client) joined by a
# veth pair on NET.0/24 (server .1, client .2; nothing leaves them), a work folder "$W", the
# PIDS list of processes to stop, and a cleanup on exit that kills them and deletes it all.
# Set before sourcing: BENCH_NS_TAG (short name prefix, unique per script) and BENCH_NET (e.g. 10.201.0).
# BENCH_VETH_GRO=1 (default) turns GRO on for both veth ends, as a real NIC has it. Why: a real
# server's NIC driver runs NAPI with GRO on by default (`ethtool -k eth0`: generic-receive-offload:
# on), so datagrams of one client that arrive within one NAPI poll are coalesced for a UDP socket
# that asked for it (UDP_GRO, ours) and handed up one by one to a socket that did not (the stock
# server's). veth is the odd one out: GRO is off, and even with it on veth skips GRO for locally
# sent UDP unless rx-udp-gro-forwarding is also on (a veth-only shortcut, veth_skb_is_eligible_for_gro),
# so both are switched on. Applies to every row equally. Note that veth then runs NAPI in the
# sender's softirq right after each send, so a poll mostly holds one datagram: with GRO alone there
# is little to coalesce.
# BENCH_VETH_RXUSECS=N (default 0 = off) models a NIC's interrupt coalescing (ethtool rx-usecs):
# gro_flush_timeout N us + napi_defer_hard_irqs 2 on both ends, so a NAPI poll takes what arrived
# within ~N us (measured: 50 us turns one-datagram polls into ~40-datagram GRO messages for a
# UDP_GRO socket). BENCH_VETH_GRO=0 keeps the veth defaults (the runs before 2026-11-28 15:00).
# Needs ethtool (apt-get install ethtool).
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
BENCH_VETH_GRO=${BENCH_VETH_GRO:-1}; BENCH_VETH_RXUSECS=${BENCH_VETH_RXUSECS:-0}
for end in "$S:${BENCH_NS_TAG:0:1}$$s" "$C:${BENCH_NS_TAG:0:1}$$c"; do
  ns=${end%%:*}; dev=${end#*:}
  if [[ $BENCH_VETH_GRO == 1 ]]; then
    command -v ethtool >/dev/null || { echo "BENCH_VETH_GRO=1 needs ethtool (apt-get install ethtool) or set BENCH_VETH_GRO=0" >&2; exit 1; }
    ip netns exec "$ns" ethtool -K "$dev" gro on rx-udp-gro-forwarding on
  fi
  if [[ $BENCH_VETH_RXUSECS != 0 ]]; then
    ip netns exec "$ns" sh -c "echo $(( BENCH_VETH_RXUSECS * 1000 )) >/sys/class/net/$dev/gro_flush_timeout && echo 2 >/sys/class/net/$dev/napi_defer_hard_irqs"
  fi
done
echo "veth: gro $(ip netns exec "$S" ethtool -k "${BENCH_NS_TAG:0:1}$$s" 2>/dev/null | awk '/generic-receive-offload/{print $2}'), gro_flush_timeout $(ip netns exec "$S" cat /sys/class/net/"${BENCH_NS_TAG:0:1}$$s"/gro_flush_timeout) ns (BENCH_VETH_GRO=$BENCH_VETH_GRO BENCH_VETH_RXUSECS=$BENCH_VETH_RXUSECS)"

dotnet build -c Release "$root/src/Ovpn.Cli" >/dev/null
OVPNAS=$(find "$OVPN_ARTIFACTS/bin/Ovpn.Cli" -path '*release*' -name ovpnas.dll | head -1)
ovpnas() { dotnet "$OVPNAS" "$@"; }
wait_log() { for _ in $(seq 1 $(( $3 * 5 ))); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.2; done; return 1; }
