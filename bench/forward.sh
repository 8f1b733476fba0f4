#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Forwarding load generator: PEERS simulated clients (our client protocol code, real handshakes,
# no TUN) connect to (a) the stock openvpn 2.6 server, (b) ovpnas without offload (daemons) and
# (c) ovpnas with offload (UDP GRO into the TUN on) and (d) the same with OVPN_TUN_UDP_GRO=0 (UDP
# written to the TUN datagram by datagram: the engine before UDP GRO), then send TOTAL pre-sealed DATA_V2 packets of SIZE bytes round-robin
# as fast as the generator can: BURST packets of one client per UDP GSO send (BURST=1: one sendto
# per packet, the generator's first version, which limited what it could offer).
#
# What counts as forwarded (the same for every row): inner packets that reached the server's
# network stack intact. Each inner packet is IPv4/UDP with valid IP and UDP checksums, from the
# client's VPN address to the server's tunnel address, port 9; a counting sink
# (`Ovpn.Benchmarks udpsink`, UDP_GRO on) listens on port 9 in the server's namespace. Forwarded =
# datagrams the sink read (payload bytes / (SIZE-28)) + the sink socket's drops (receive buffer
# full). The kernel drops packets with a bad IP header or UDP checksum before the sink, so they do
# not count. TUN rx_packets are NOT used: a server that writes GSO frames (one frame = up to 64
# datagrams) is counted once per frame there; tun_frames in the output is that counter, for
# information. Printed: packets/s and Gbit/s (inner IP bytes) over the generator's send time, and
# the ratio to (a).
# ROWS="a c d" runs a subset. PERF=1: also perf-records (call graphs) the offload servers (rows c,
# d) for 1 s from the generator's "blast: sending" marker into $PERF_DIR/perf-ROW.data (default
# /tmp/forward-perf), with DOTNET_PerfMapEnabled=1 and W^X off so JIT frames have names; the
# profiler's overhead skews those rows' figures, so take figures from a run without PERF.
# Namespaces only; needs root.
set -euo pipefail
PEERS=${1:-64}; TOTAL=${2:-300000}; SIZE=${3:-1400}; BURST=${4:-32}
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/common.sh
source "$here/common.sh"

declare -A PPS GBPS OFF
PERF=${PERF:-0}; PERF_DIR=${PERF_DIR:-/tmp/forward-perf}; ROWS=${ROWS:-a b c d}
[[ $PERF == 1 ]] && export DOTNET_PerfMapEnabled=1 DOTNET_EnableWriteXorExecute=0
row() { [[ " $ROWS " == *" $1 "* ]]; }
run_blast() { # label profile
  local before after line secs fwd sink spid gpid ppid=""
  before=$(tun_rx "$S")
  ip netns exec "$S" dotnet "$BENCH" udpsink --port 9 --payload $((SIZE - 28)) >"$W/sink-$1.log" 2>&1 & spid=$!; PIDS+=("$spid")
  wait_log "$W/sink-$1.log" "sink: ready" 15
  ip netns exec "$C" dotnet "$BENCH" scale --profile "$2" --clients "$PEERS" --concurrency 32 --timeout 300 \
    --blast-packets "$TOTAL" --blast-size "$SIZE" --blast-burst "$BURST" >"$W/gen-$1.log" 2>&1 & gpid=$!; PIDS+=("$gpid")
  if [[ $PERF == 1 && ( $1 == c || $1 == d ) ]] && wait_log "$W/gen-$1.log" "blast: sending" 300; then
    mkdir -p "$PERF_DIR"; perf record -g -o "$PERF_DIR/perf-$1.data" -p "$SPID" -- sleep 1 2>"$PERF_DIR/record-$1.log" & ppid=$!
  fi
  wait "$gpid" || true
  [[ -n $ppid ]] && { wait "$ppid" || true; }
  line=$(grep '^blast: peers' "$W/gen-$1.log" || echo "blast: failed")
  after=$(tun_rx "$S")
  kill -TERM "$spid"; wait "$spid" || true
  sink=$(grep '^sink: bytes' "$W/sink-$1.log" || echo "sink: failed")
  fwd=$(( $(echo "$sink" | grep -oE 'datagrams=[0-9]+' | cut -d= -f2 || echo 0) + $(echo "$sink" | grep -oE 'socket_drops=[0-9]+' | cut -d= -f2 || echo 0) ))
  secs=$(echo "$line" | grep -oE 'seconds=[0-9.]+' | cut -d= -f2)
  PPS[$1]=$(awk -v f="$fwd" -v s="${secs:-0}" 'BEGIN{ if (s>0) printf "%.0f", f/s; else print 0}')
  GBPS[$1]=$(awk -v f="$fwd" -v s="${secs:-0}" -v b="$SIZE" 'BEGIN{ if (s>0) printf "%.2f", f*b*8/s/1e9; else print 0}')
  OFF[$1]=$(echo "$line" | grep -oE 'offered_pps=[0-9]+' | cut -d= -f2)
  echo "($1) $line"
  echo "($1) $sink forwarded=$fwd tun_frames=$((after - before))"
}

if row a; then
  ip netns exec "$S" openvpn --config "$W/stock-server.conf" >"$W/a-server.log" 2>&1 & SPID=$!; PIDS+=("$SPID")
  wait_log "$W/a-server.log" "Initialization Sequence Completed" 15
  run_blast a "$W/stock.ovpn"
  kill "$SPID" 2>/dev/null || true; wait "$SPID" 2>/dev/null || true
fi

if row b; then
  start_ovpnas "$W/daemons" false
  run_blast b "$W/ovpnas-udp.ovpn"
  kill "$SPID" 2>/dev/null || true; wait "$SPID" 2>/dev/null || true
fi

if row c; then
  start_ovpnas "$W/offload" true
  run_blast c "$W/ovpnas-udp.ovpn"
  kill "$SPID" 2>/dev/null || true; wait "$SPID" 2>/dev/null || true
fi

if row d; then
  export OVPN_TUN_UDP_GRO=0
  start_ovpnas "$W/offload-noudpgro" true
  unset OVPN_TUN_UDP_GRO
  run_blast d "$W/ovpnas-udp.ovpn"
  kill "$SPID" 2>/dev/null || true; wait "$SPID" 2>/dev/null || true
fi

echo
echo "Forwarded to a UDP sink behind the TUN, $PEERS peers, $TOTAL packets of $SIZE B, burst $BURST, $(nproc) cores, $(date -u +%F)"
printf '%-28s %12s %14s %10s %8s\n' server offered_pps forwarded_pps Gbit/s ratio
for l in $ROWS; do
  case $l in a) n="(a) stock openvpn 2.6";; b) n="(b) ovpnas daemons";; c) n="(c) ovpnas offload";; d) n="(d) offload, no UDP GRO";; esac
  r=$(awk -v x="${PPS[$l]:-0}" -v y="${PPS[a]:-0}" 'BEGIN{ if (y>0) printf "%.2fx", x/y; else print "n/a"}')
  printf '%-28s %12s %14s %10s %8s\n' "$n" "${OFF[$l]:-?}" "${PPS[$l]:-?}" "${GBPS[$l]:-?}" "$r"
done
