# SPDX-License-Identifier: MIT
# Runs INSIDE the VM as root, after driver.sh loaded the module(s): our control plane + KernelDataPlane
# (ServerFlow) in namespace kdco-srv, stock openvpn client in kdco-cli (veth 10.201.0.0/24, VM-local).
# Per round: handshake, device kind, ping + iperf3 through the kernel data path, kernel peer stats, a
# client-initiated renegotiation (key swap in the kernel), client EXIT -> peer deleted, device removed at stop.
# Round 1: server on ovpn-dco-v2, client with its own DCO. Round 2 (only when the upstream ovpn module was
# loaded by driver.sh): server on the upstream ovpn family, client in userspace (--disable-dco).
set -u
T0=$(date +%s.%N)
log() { echo "[+$(awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN{printf "%6.1f", b-a}')s] $*"; }
fails=0
check() { if [ "$2" = 0 ]; then log "CHECK $1: PASS ${3:-}"; else log "CHECK $1: FAIL ${3:-}"; fails=$((fails+1)); fi; }
waitfor() { # file pattern seconds
  local i=0; while [ $i -lt $(( $3 * 2 )) ]; do grep -qE "$2" "$1" 2>/dev/null && return 0; sleep 0.5; i=$((i+1)); done; return 1; }
OUT=/xfer/out; mkdir -p $OUT
CPID=""; SPID=""
cleanup() {
  [ -n "$CPID" ] && kill "$CPID" 2>/dev/null
  [ -n "$SPID" ] && kill "$SPID" 2>/dev/null
  sleep 1; ip netns del kdco-srv 2>/dev/null; ip netns del kdco-cli 2>/dev/null
}
trap cleanup EXIT
modprobe tun
ip netns add kdco-srv; ip netns add kdco-cli
ip link add kdco-s type veth peer name kdco-c
ip link set kdco-s netns kdco-srv; ip link set kdco-c netns kdco-cli
ip -n kdco-srv addr add 10.201.0.1/24 dev kdco-s; ip -n kdco-srv link set kdco-s up; ip -n kdco-srv link set lo up
ip -n kdco-cli addr add 10.201.0.2/24 dev kdco-c; ip -n kdco-cli link set kdco-c up; ip -n kdco-cli link set lo up

round() { # $1 family, $2 kind, $3 client dco 1|0
  local fam=$1 kind=$2 cdco=$3 tag=$1 extra="" last rxb
  [ "$cdco" = 1 ] || extra="--disable-dco"
  log "===== round: server family $fam, client $([ "$cdco" = 1 ] && echo 'with DCO' || echo 'userspace (--disable-dco)')"
  ip netns exec kdco-srv timeout 900 dotnet "$KDCO_FLOW" "$KDCO_FLOW_DATA" 800 "$fam" > $OUT/server-$tag.log 2>&1 &
  SPID=$!
  waitfor $OUT/server-$tag.log 'Initialization Sequence Completed|Unhandled|Exception' 120
  grep -q 'Initialization Sequence Completed' $OUT/server-$tag.log; check "[$tag] server started on kernel data plane" $? "$(grep -m1 'data plane:' $OUT/server-$tag.log)"
  ip -n kdco-srv -details link show as0t0 > $OUT/as0t0-$tag.txt 2>&1; sed 's/^/  /' $OUT/as0t0-$tag.txt
  sed -n 3p $OUT/as0t0-$tag.txt | grep -qE "^ *$kind "; check "[$tag] as0t0 is an $kind device" $?

  ip netns exec kdco-cli openvpn --config "$KDCO_FLOW_PROFILE" --verb 4 --reneg-sec 30 $extra \
    --log $OUT/client-$tag.log --writepid /tmp/cli.pid --daemon
  sleep 1; CPID=$(cat /tmp/cli.pid 2>/dev/null)
  waitfor $OUT/client-$tag.log 'Initialization Sequence Completed' 120; check "[$tag] client connected" $? "$(grep -m1 -oE 'Data Channel: cipher.*' $OUT/client-$tag.log)"
  grep -hE 'DCO device|net_iface_new|DCO version|disable-dco|TUN/TAP device' $OUT/client-$tag.log | head -3 | sed 's/^/  client: /'
  ip netns exec kdco-cli ping -c 3 -W 5 172.27.224.1 > $OUT/ping1-$tag.txt 2>&1; check "[$tag] ping through the tunnel" $? "$(grep -oE '[0-9]+ received' $OUT/ping1-$tag.txt)"

  ip netns exec kdco-srv iperf3 -s -B 172.27.224.1 -1 > $OUT/iperf-srv-$tag.txt 2>&1 &
  sleep 1
  ip netns exec kdco-cli timeout 60 iperf3 -c 172.27.224.1 -t ${KDCO_IPERF_TIME:-3} -f m > $OUT/iperf-$tag.txt 2>&1
  check "[$tag] iperf3 through the kernel data path" $? "$(grep -E 'receiver$' $OUT/iperf-$tag.txt | grep -oE '[0-9.]+ Mbits/sec')"
  sleep 2.5
  last=$(grep '^STATUS peer ' $OUT/server-$tag.log | tail -1); echo "  $last"
  rxb=$(sed -n 's/.*vpn-rx [0-9]*p\/\([0-9]*\)B.*/\1/p' <<<"$last")
  [ "${rxb:-0}" -gt 1000000 ]; check "[$tag] kernel GET_PEER stats count the iperf traffic" $? "vpn-rx ${rxb:-?} bytes"

  log "waiting for the client's renegotiation (reneg-sec 30)"
  waitfor $OUT/client-$tag.log 'TLS: soft reset' 90; check "[$tag] renegotiation happened" $?
  waitfor $OUT/server-$tag.log 'is now primary' 30
  ip netns exec kdco-cli ping -c 3 -W 5 172.27.224.1 > $OUT/ping2-$tag.txt 2>&1; check "[$tag] ping after renegotiation (new key in kernel)" $? "$(grep -oE '[0-9]+ received' $OUT/ping2-$tag.txt)"

  log "client exit (explicit-exit-notify) -> DEL_PEER"
  kill "$CPID"; CPID=""
  waitfor $OUT/server-$tag.log 'SESSION-CLOSED' 20; sleep 2.5
  last=$(grep '^STATUS peers=' $OUT/server-$tag.log | tail -1); echo "  $last"
  grep -q '^STATUS peers=0' <<<"$last"; check "[$tag] peer removed from the kernel after client exit" $?

  kill "$SPID"; for i in $(seq 1 40); do kill -0 "$SPID" 2>/dev/null || break; sleep 0.5; done; SPID=""
  ip -n kdco-srv link show as0t0 >/dev/null 2>&1; [ $? != 0 ]; check "[$tag] as0t0 removed at server stop" $?
  log "server log (sessions):"; grep -vE '^STATUS' $OUT/server-$tag.log | grep -E 'session|tls|SESSION|stopped' | tail -10 | sed 's/^/  /'
  for i in $(seq 1 20); do ip -n kdco-cli link show tun0 >/dev/null 2>&1 || break; sleep 0.5; done
}

managed() { # optional comparison: the same client against `ovpnas serve` (managed userspace data plane)
  log "===== compare: ovpnas serve (managed data plane), client with DCO"
  ip netns exec kdco-srv timeout 300 dotnet "$KDCO_CLI" serve --data-dir "$KDCO_FLOW_DATA" > $OUT/server-managed.log 2>&1 &
  SPID=$!
  waitfor $OUT/server-managed.log 'Initialization Sequence Completed' 120
  ip netns exec kdco-cli openvpn --config "$KDCO_FLOW_PROFILE" --verb 3 --log $OUT/client-managed.log --writepid /tmp/cli.pid --daemon
  sleep 1; CPID=$(cat /tmp/cli.pid 2>/dev/null)
  waitfor $OUT/client-managed.log 'Initialization Sequence Completed' 120
  ip netns exec kdco-srv iperf3 -s -B 172.27.224.1 -1 > /dev/null 2>&1 &
  sleep 1
  ip netns exec kdco-cli timeout 60 iperf3 -c 172.27.224.1 -t ${KDCO_IPERF_TIME:-3} -f m > $OUT/iperf-managed.txt 2>&1
  log "COMPARE managed data plane: iperf3 $(grep -E 'receiver$' $OUT/iperf-managed.txt | grep -oE '[0-9.]+ Mbits/sec' || echo failed)"
  kill "$CPID"; CPID=""; sleep 2
  kill "$SPID"; for i in $(seq 1 40); do kill -0 "$SPID" 2>/dev/null || break; sleep 0.5; done; SPID=""
  for i in $(seq 1 20); do ip -n kdco-cli link show tun0 >/dev/null 2>&1 || break; sleep 0.5; done
}

[ "${KDCO_COMPARE:-0}" = 1 ] && [ -n "${KDCO_CLI:-}" ] && managed
round ovpn-dco-v2 ovpn-dco "${KDCO_CLIENT_DCO:-1}"
if [ -d /sys/module/ovpn ]; then round ovpn ovpn 0; else log "round 2 (server on upstream ovpn): SKIPPED (module not loaded)"; fi
grep -hE 'iperf3 through' /xfer/guest.log | sed 's/^.*CHECK/  CHECK/' ; grep -h 'COMPARE' /xfer/guest.log | sed 's/^/  /'
log "flow: $fails failure(s)"
[ $fails = 0 ]
