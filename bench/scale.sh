#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Scale: N simulated clients (our client-side protocol code, no TUN: bench "scale" mode) connect
# to (a) the stock openvpn 2.6 server and (b) ovpnas, for each N in the list; prints handshakes/s,
# time until all are connected and the server's resident memory per connected idle peer. Two
# network namespaces joined by a veth pair (10.202.0.0/24); nothing leaves them. Needs root.
# Usage: bench/scale.sh [N ...]   (default: 100 1000 5000)
# Profiling: SCALE_PERF=SECONDS records the ovpnas server with `perf record -g` for that long from
# its start (JIT-compiled frames named through DOTNET_PerfMapEnabled=1) and prints the top
# symbols after the table (SCALE_PERF_DELAY=SECONDS starts it that much later, to profile the
# steady state without start-up); SCALE_SKIP_STOCK=1 leaves out the stock server run.
# Server CPU per handshake is printed raw (whole connect phase, includes one-time start-up such as
# .NET's JIT) and steady (after the first SCALE_WARMUP handshakes, default 200: what a
# long-running server pays); the capacity ratio is given for both. SCALE_WINDOW=W also prints the
# server CPU per handshake in consecutive windows of W handshakes (how long warm-up lasts).
# BENCH_SERVER_ENV="VAR=value ..." adds environment variables to the ovpnas server (e.g. runtime
# knobs such as DOTNET_TieredPGO=0, to compare against the built-in settings in one run).
set -euo pipefail
NS=("$@"); [ ${#NS[@]} -gt 0 ] || NS=(100 1000 5000)
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/common.sh
source "$here/common.sh"

declare -A OUT
run_scale() { # label server-pid profile
  for n in "${NS[@]}"; do
    line=$(ip netns exec "$C" dotnet "$BENCH" scale --profile "$3" --clients "$n" --concurrency 64 --server-pid "$2" --timeout 900 --warmup "${SCALE_WARMUP:-200}" --window "${SCALE_WINDOW:-0}" | grep '^scale' || echo "scale: failed")
    echo "$line" | sed "s/^/($1) /"
    OUT[$1/$n]=$(echo "$line" | grep '^scale:' || true)
  done
}

# ---- (a) stock openvpn server ----
if [ -z "${SCALE_SKIP_STOCK:-}" ]; then
ip netns exec "$S" openvpn --config "$W/stock-server.conf" >"$W/a-server.log" 2>&1 & SPID=$!; PIDS+=("$SPID")
wait_log "$W/a-server.log" "Initialization Sequence Completed" 15
run_scale a "$SPID" "$W/stock.ovpn"
kill "$SPID" 2>/dev/null || true; wait "$SPID" 2>/dev/null || true
fi

# ---- (b) ovpnas (offload on: the multi-threaded engine; one control plane) ----
[ -n "${SCALE_PERF:-}" ] && export DOTNET_PerfMapEnabled=1
start_ovpnas "$W/ovpnas" true
PERFPID=
if [ -n "${SCALE_PERF:-}" ]; then
  { sleep "${SCALE_PERF_DELAY:-0}"; perf record -F 499 -g -p "$SPID" -o "$W/perf.data" -- sleep "$SCALE_PERF" >"$W/perf.log" 2>&1; } & PERFPID=$!
fi
run_scale b "$SPID" "$W/ovpnas-udp.ovpn"
if [ -n "$PERFPID" ]; then wait "$PERFPID" || { echo "perf record failed:"; cat "$W/perf.log"; }; fi
kill "$SPID" 2>/dev/null || true; wait "$SPID" 2>/dev/null || true

echo
echo "Scale, UDP, tls-crypt, AES-256-GCM, concurrency 64, $(nproc) cores, $(date -u +%F)"
printf '%-7s %-28s %-28s %-10s %-44s %s\n' clients "stock: hs/s, s, KiB/peer" "ovpnas: hs/s, s, KiB/peer" "hs/s ratio" "server CPU ms/hs raw: stock, ovpnas, capacity" "steady (after ${SCALE_WARMUP:-200} hs): stock, ovpnas, capacity"
for n in "${NS[@]}"; do
  a=${OUT[a/$n]:-}; b=${OUT[b/$n]:-}
  ah=$(echo "$a" | grep -oE ' handshakes_per_s=[0-9.]+' | cut -d= -f2 || true); bh=$(echo "$b" | grep -oE ' handshakes_per_s=[0-9.]+' | cut -d= -f2 || true)
  as=$(echo "$a" | grep -oE ' seconds=[0-9.]+' | cut -d= -f2 || true); bs=$(echo "$b" | grep -oE ' seconds=[0-9.]+' | cut -d= -f2 || true)
  ak=$(echo "$a" | grep -oE 'kb_per_peer=[0-9.-]+' | cut -d= -f2 || true); bk=$(echo "$b" | grep -oE 'kb_per_peer=[0-9.-]+' | cut -d= -f2 || true)
  ratio=$(awk -v x="${bh:-0}" -v y="${ah:-0}" 'BEGIN{ if (y>0) printf "%.2fx", x/y; else print "n/a"}')
  ac=$(echo "$a" | grep -oE ' server_cpu_ms_per_hs=[0-9.]+' | cut -d= -f2 || true); bc=$(echo "$b" | grep -oE ' server_cpu_ms_per_hs=[0-9.]+' | cut -d= -f2 || true)
  # Capacity when the server alone owns the machine: stock openvpn is one thread (1 core), ovpnas
  # spreads handshakes over all cores; capacity = cores / CPU per handshake.
  cap=$(awk -v x="${bc:-0}" -v y="${ac:-0}" -v n="$(nproc)" 'BEGIN{ if (x>0 && y>0) printf "%.2fx", (n/x)/(1/y); else print "n/a"}')
  asc=$(echo "$a" | grep -oE 'steady_server_cpu_ms_per_hs=[0-9.]+' | cut -d= -f2 || true); bsc=$(echo "$b" | grep -oE 'steady_server_cpu_ms_per_hs=[0-9.]+' | cut -d= -f2 || true)
  scap=$(awk -v x="${bsc:-0}" -v y="${asc:-0}" -v n="$(nproc)" 'BEGIN{ if (x>0 && y>0) printf "%.2fx", (n/x)/(1/y); else print "n/a"}')
  printf '%-7s %-28s %-28s %-10s %-44s %s\n' "$n" "${ah:-?}, ${as:-?}, ${ak:-?}" "${bh:-?}, ${bs:-?}, ${bk:-?}" "$ratio" "${ac:-?}, ${bc:-?}, $cap" "${asc:-?}, ${bsc:-?}, $scap"
done

if [ -n "${SCALE_PERF:-}" ]; then
  echo
  echo "Profile of the ovpnas server, ${SCALE_PERF}s from ${SCALE_PERF_DELAY:-0}s after its start (perf, self time by shared object, then by symbol):"
  { perf report -i "$W/perf.data" --no-children --sort dso --stdio -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | head -15; } || true
  { perf report -i "$W/perf.data" --no-children --sort dso,sym --stdio -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | head -40; } || true
fi
