#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Forwarding load generator: PEERS simulated clients (our client protocol code, real handshakes,
# no TUN) connect to (a) the stock openvpn 2.6 server, (b) ovpnas without offload (daemons) and
# (c) ovpnas with offload, then send TOTAL pre-sealed DATA_V2 packets of SIZE bytes round-robin
# as fast as the generator can: BURST packets of one client per UDP GSO send (BURST=1: one sendto
# per packet, the generator's first version, which limited what it could offer). Prints what each server forwarded into its TUN devices (packets/s and
# Gbit/s, from the devices' rx counters) and the ratio to (a). Namespaces only; needs root.
# Usage: bench/forward.sh [PEERS] [TOTAL] [SIZE] [BURST]   (default 64 300000 1400 32)
set -euo pipefail
PEERS=${1:-64}; TOTAL=${2:-300000}; SIZE=${3:-1400}; BURST=${4:-32}
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/common.sh
source "$here/common.sh"

declare -A PPS GBPS OFF
run_blast() { # label profile
  local before after line secs fwd
  before=$(tun_rx "$S")
  line=$(ip netns exec "$C" dotnet "$BENCH" scale --profile "$2" --clients "$PEERS" --concurrency 32 --timeout 300 \
         --blast-packets "$TOTAL" --blast-size "$SIZE" --blast-burst "$BURST" | grep '^blast:' || echo "blast: failed")
  after=$(tun_rx "$S")
  secs=$(echo "$line" | grep -oE 'seconds=[0-9.]+' | cut -d= -f2)
  fwd=$((after - before))
  PPS[$1]=$(awk -v f="$fwd" -v s="${secs:-0}" 'BEGIN{ if (s>0) printf "%.0f", f/s; else print 0}')
  GBPS[$1]=$(awk -v f="$fwd" -v s="${secs:-0}" -v b="$SIZE" 'BEGIN{ if (s>0) printf "%.2f", f*b*8/s/1e9; else print 0}')
  OFF[$1]=$(echo "$line" | grep -oE 'offered_pps=[0-9]+' | cut -d= -f2)
  echo "($1) $line forwarded=$fwd"
}

ip netns exec "$S" openvpn --config "$W/stock-server.conf" >"$W/a-server.log" 2>&1 & SPID=$!; PIDS+=("$SPID")
wait_log "$W/a-server.log" "Initialization Sequence Completed" 15
run_blast a "$W/stock.ovpn"
kill "$SPID" 2>/dev/null || true; wait "$SPID" 2>/dev/null || true

start_ovpnas "$W/daemons" false
run_blast b "$W/ovpnas-udp.ovpn"
kill "$SPID" 2>/dev/null || true; wait "$SPID" 2>/dev/null || true

start_ovpnas "$W/offload" true
run_blast c "$W/ovpnas-udp.ovpn"
kill "$SPID" 2>/dev/null || true; wait "$SPID" 2>/dev/null || true

echo
echo "Forwarding to TUN, $PEERS peers, $TOTAL packets of $SIZE B, burst $BURST, $(nproc) cores, $(date -u +%F)"
printf '%-28s %12s %14s %10s %8s\n' server offered_pps forwarded_pps Gbit/s ratio
for l in a b c; do
  case $l in a) n="(a) stock openvpn 2.6";; b) n="(b) ovpnas daemons";; c) n="(c) ovpnas offload";; esac
  r=$(awk -v x="${PPS[$l]:-0}" -v y="${PPS[a]:-0}" 'BEGIN{ if (y>0) printf "%.2fx", x/y; else print "n/a"}')
  printf '%-28s %12s %14s %10s %8s\n' "$n" "${OFF[$l]:-?}" "${PPS[$l]:-?}" "${GBPS[$l]:-?}" "$r"
done
