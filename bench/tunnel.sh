#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Tunnel throughput: stock openvpn client -> (a) stock openvpn 2.6 server, (b) ovpnas (offload
# off), (c) ovpnas with vpn.server.daemon.ovpndco=true, (d) our client (`ovpnas connect --dco off`,
# managed single-threaded engine) -> ovpnas with offload, and (e) our client with its own data channel
# offload (`--dco userspace`: offload engine in client mode) -> ovpnas with offload, in one run.
# Two network namespaces joined
# by a veth pair (10.201.0.0/24); nothing leaves them. For each server: iperf3 TCP 1 stream,
# TCP 4 streams and UDP, client -> server through the tunnel; prints Mbit/s, the ratio to (a) and
# the server's CPU seconds per GB moved (utime+stime of the server process over the test).
# Row (f) = (c) with OVPN_TUN_COALESCE=0 (no IFF_VNET_HDR, one TUN write per packet) to show what
# the TUN coalescing (userspace GRO) saves; for (c)/(f) the TUN's average received packet size is
# printed (above the MTU = GSO super-packets were written). Row (m) = (c) with receive moderation
# (OVPN_RX_MODERATION_US=${BENCH_RX_MOD_US:-50}: the UDP reader sleeps that long instead of a poll
# wake-up per datagram while a stream is coming in, like a NIC's rx-usecs). Row (t) = (c) with
# OVPN_TUN_TSO=0 (the kernel segments TCP before the TUN and the engine reads one packet per read())
# to show what read-side TSO saves; it matters for the download direction: BENCH_REVERSE=1 runs every
# test with iperf3 -R (server -> client through the tunnel, the usual VPN direction), same columns
# (cpu/GB is still the server's, now the sender's). BENCH_ROWS selects rows
# (default all but m and t). BENCH_VETH_GRO=0/1 (default 1): GRO on the veth pair, see bench/netns.sh.
# Needs root. Usage: [BENCH_ROWS="a c f"] bench/tunnel.sh [seconds-per-test]   (default 10)
set -euo pipefail
T=${1:-10}
ROWS=" ${BENCH_ROWS:-a b c d e f} "
RXMOD=${BENCH_RX_MOD_US:-50}
REV=(); DIR="client -> server"
if [[ ${BENCH_REVERSE:-0} == 1 ]]; then REV=(-R); DIR="server -> client (iperf3 -R)"; fi
BENCH_NS_TAG=dpb BENCH_NET=10.201.0
# shellcheck source=bench/netns.sh
source "$(cd "$(dirname "$0")" && pwd)/netns.sh"
TCK=$(getconf CLK_TCK)
cpu_s() { awk -v t="$TCK" '{print ($14+$15)/t}' "/proc/$1/stat"; }
# Context switches (voluntary + involuntary) summed over the server's threads: ~ its sleeps/wake-ups.
csw() { cat /proc/"$1"/task/*/status 2>/dev/null | awk '/ctxt_switches/{s+=$2} END{print s+0}'; }

# ---- PKI for the stock server (openssl CLI; throwaway) ----
P=$W/pki; mkdir -p "$P"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=bench-ca -keyout "$P/ca.key" -out "$P/ca.crt" 2>/dev/null
for who in server client; do
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=$who" -keyout "$P/$who.key" -out "$P/$who.csr" 2>/dev/null
  ext=$W/$who.ext; if [[ $who == server ]]; then echo "extendedKeyUsage=serverAuth" >"$ext"; else echo "extendedKeyUsage=clientAuth" >"$ext"; fi
  openssl x509 -req -in "$P/$who.csr" -CA "$P/ca.crt" -CAkey "$P/ca.key" -CAcreateserial -days 2 -extfile "$ext" -out "$P/$who.crt" 2>/dev/null
done
openvpn --genkey secret "$P/tc.key" >/dev/null
cat >"$W/stock-server.conf" <<CONF
dev tun
proto udp
port 1194
local $SRV_IP
server 10.8.0.0 255.255.255.0
topology subnet
ca $P/ca.crt
cert $P/server.crt
key $P/server.key
dh none
tls-crypt $P/tc.key
data-ciphers AES-256-GCM
keepalive 10 60
verb 3
CONF
cat >"$W/stock-client.conf" <<CONF
client
dev tun
proto udp
remote $SRV_IP 1194
nobind
ca $P/ca.crt
cert $P/client.crt
key $P/client.key
tls-crypt $P/tc.key
data-ciphers AES-256-GCM
verb 3
CONF

declare -A RES CPU CSW
run_tests() { # label server-pid server-tun-ip
  local label=$1 spid=$2 tip=$3
  ip netns exec "$S" iperf3 -s -B "$tip" -D --pidfile "$W/iperf.pid" >/dev/null 2>&1; sleep 0.5
  PIDS+=("$(cat "$W/iperf.pid")")
  for t in tcp1 tcp4 udp; do
    case $t in
      tcp1) args=(-t "$T") ;;
      tcp4) args=(-t "$T" -P 4) ;;
      udp)  args=(-t "$T" -u -b 2000M -l 1400) ;;
    esac
    args+=("${REV[@]}")
    local c0; c0=$(cpu_s "$spid"); local w0; w0=$(csw "$spid")
    ip netns exec "$C" iperf3 -c "$tip" "${args[@]}" -J >"$W/$label-$t.json" 2>/dev/null || true
    local c1; c1=$(cpu_s "$spid"); local w1; w1=$(csw "$spid")
    read -r mbps bytes < <(python3 -c '
import json,sys
try:
  j=json.load(open(sys.argv[1])); e=j["end"]
  s=e.get("sum_received") or e.get("sum")
  bps=s["bits_per_second"]; by=s["bytes"]
  print("%.0f %d" % (bps/1e6, by))
except Exception: print("0 0")' "$W/$label-$t.json")
    RES[$label/$t]=$mbps
    CSW[$label/$t]=$(awk -v a="$w0" -v b="$w1" -v by="$bytes" 'BEGIN{ if (by>0) printf "%.0f", (b-a)/(by/1e6); else print "n/a"}')
    CPU[$label/$t]=$(awk -v a="$c0" -v b="$c1" -v by="$bytes" 'BEGIN{ if (by>0) printf "%.2f", (b-a)/(by/1e9); else print "n/a"}')
  done
  kill "$(cat "$W/iperf.pid")" 2>/dev/null || true
}

# ---- (a) stock openvpn server ----
if [[ $ROWS == *" a "* ]]; then
ip netns exec "$S" openvpn --config "$W/stock-server.conf" >"$W/a-server.log" 2>&1 & SPID=$!; PIDS+=("$SPID")
wait_log "$W/a-server.log" "Initialization Sequence Completed" 15
ip netns exec "$C" openvpn --config "$W/stock-client.conf" >"$W/a-client.log" 2>&1 & CPID=$!; PIDS+=("$CPID")
if wait_log "$W/a-client.log" "Initialization Sequence Completed" 30; then run_tests a "$SPID" 10.8.0.1; else echo "(a) client did not connect"; tail -5 "$W/a-client.log"; fi
kill "$CPID" "$SPID" 2>/dev/null || true; wait "$CPID" "$SPID" 2>/dev/null || true
fi

# ---- (b) ovpnas, (c) ovpnas with offload ----
D=$W/ovpnas
ovpnas init --data-dir "$D" --hostname $SRV_IP >/dev/null
ovpnas user add bench --data-dir "$D" >/dev/null
ovpnas profile bench --data-dir "$D" --out "$W/bench.ovpn" >/dev/null
# Our client takes the profile's remotes in order: keep only the UDP ones, like the stock client's --proto udp.
grep -v '^remote .*tcp' "$W/bench.ovpn" >"$W/bench-udp.ovpn"
for mode in b c d e f m t; do
  [[ $ROWS == *" $mode "* ]] || continue
  coalesce=1; [[ $mode == f ]] && coalesce=0
  rxmod=0; [[ $mode == m ]] && rxmod=$RXMOD
  tso=1; [[ $mode == t ]] && tso=0
  if [[ $mode != b ]]; then
    ovpnas sacli -k vpn.server.daemon.ovpndco -v true ConfigPut --data-dir "$D" >/dev/null || echo "(c) could not set vpn.server.daemon.ovpndco"
  else
    ovpnas sacli -k vpn.server.daemon.ovpndco -v false ConfigPut --data-dir "$D" >/dev/null || true
  fi
  OVPN_TUN_TSO=$tso OVPN_RX_MODERATION_US=$rxmod OVPN_TUN_COALESCE=$coalesce ip netns exec "$S" dotnet "$OVPNAS" serve --data-dir "$D" >"$W/$mode-server.log" 2>&1 & SPID=$!; PIDS+=("$SPID")
  wait_log "$W/$mode-server.log" "listening on UDP" 30 || { echo "($mode) server did not start"; tail -5 "$W/$mode-server.log"; }
  grep -i -m2 "offload\|engine" "$W/$mode-server.log" | sed "s/^/($mode) /" || true
  if [[ $mode == d || $mode == e ]]; then
    # (d) our own client with its data channel in the managed in-process engine (--dco off), (e) the
    # same client with the userspace offload engine in client mode (--dco userspace); both against (c)'s server.
    if [[ $mode == d ]]; then dco=off; else dco=userspace; fi
    mkdir -p "$W/cli-$mode"
    ip netns exec "$C" dotnet "$OVPNAS" connect "$W/bench-udp.ovpn" --dco "$dco" --data-dir "$W/cli-$mode" >"$W/$mode-client.log" 2>&1 & CPID=$!; PIDS+=("$CPID")
    ready="TUN .* up:"
  else
    ip netns exec "$C" openvpn --config "$W/bench.ovpn" --proto udp >"$W/$mode-client.log" 2>&1 & CPID=$!; PIDS+=("$CPID")
    ready="Initialization Sequence Completed"
  fi
  if wait_log "$W/$mode-client.log" "$ready" 30; then
    grep -m1 "data channel" "$W/$mode-client.log" | sed "s/^/($mode) client: /" || true
    run_tests "$mode" "$SPID" 172.27.224.1
    if [[ $mode == c || $mode == f || $mode == m || $mode == t ]]; then
      # rx = written by the engine (above the MTU: GRO super-packets); tx = read by the engine
      # (above the MTU: TSO super-packets, one read() each).
      ip -n "$S" -s -j link show as0t0 2>/dev/null | python3 -c '
import json,sys
try:
  j=json.load(sys.stdin)[0]["stats64"]
  for d in ("rx","tx"):
    s=j[d]; print("(%s) TUN %s: %d packets, %d bytes, %.0f bytes/packet" % (sys.argv[1], d, s["packets"], s["bytes"], s["bytes"]/max(1,s["packets"])))
except Exception as e: print("(%s) TUN counters unavailable: %s" % (sys.argv[1], e))' "$mode" || true
    fi
  else echo "($mode) client did not connect"; tail -5 "$W/$mode-client.log"; fi
  kill "$CPID" 2>/dev/null || true; kill -TERM "$SPID" 2>/dev/null || true; wait "$CPID" "$SPID" 2>/dev/null || true
done

echo
echo "Tunnel throughput, $DIR, ${T}s per test, $(nproc) cores, $(date -u +%F)"
printf '%-28s %8s %8s %8s | %7s %7s %7s | %9s %9s %9s\n' server tcp1 tcp4 udp r_tcp1 r_tcp4 r_udp cpu/GB1 cpu/GB4 cpu/GBudp
for m in a b c d e f m t; do
  [[ $ROWS == *" $m "* ]] || continue
  case $m in a) name="(a) stock openvpn 2.6";; b) name="(b) ovpnas";; c) name="(c) ovpnas offload";;
    d) name="(d) ovpnas client+offload";; e) name="(e) ovpnas client-dco+offld";; f) name="(f) offload, no TUN GRO";;
    m) name="(m) offload, rx mod ${RXMOD}us";; t) name="(t) offload, no TUN TSO";; esac
  r=(); for t in tcp1 tcp4 udp; do
    base=${RES[a/$t]:-0}; v=${RES[$m/$t]:-0}
    r+=("$(awk -v v="$v" -v b="$base" 'BEGIN{ if (b>0) printf "%.2fx", v/b; else print "n/a"}')")
  done
  printf '%-28s %8s %8s %8s | %7s %7s %7s | %9s %9s %9s\n' "$name" "${RES[$m/tcp1]:-n/a}" "${RES[$m/tcp4]:-n/a}" "${RES[$m/udp]:-n/a}" \
    "${r[0]}" "${r[1]}" "${r[2]}" "${CPU[$m/tcp1]:-n/a}" "${CPU[$m/tcp4]:-n/a}" "${CPU[$m/udp]:-n/a}"
done
echo "(Mbit/s received by the iperf3 receiver; r_* = ratio to (a); cpu/GB = server CPU seconds per GB moved)"
for m in a b c d e f m t; do
  [[ $ROWS == *" $m "* ]] || continue
  echo "($m) server context switches per MB: tcp1 ${CSW[$m/tcp1]:-n/a}, tcp4 ${CSW[$m/tcp4]:-n/a}, udp ${CSW[$m/udp]:-n/a}"
done
