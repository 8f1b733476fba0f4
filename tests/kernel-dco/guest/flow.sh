# SPDX-License-Identifier: MIT
# Runs INSIDE the VM as root, after driver.sh loaded the module: our control plane + KernelDataPlane
# (ServerFlow) in namespace kdco-srv, stock openvpn client in kdco-cli (veth 10.201.0.0/24, VM-local).
# Checks: handshake, kind ovpn-dco, ping + iperf3 through the kernel data path, kernel peer stats,
# a client-initiated renegotiation (key swap), EXIT -> peer deleted, device removed at server stop.
set -u
T0=$(date +%s.%N)
log() { echo "[+$(awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN{printf "%6.1f", b-a}')s] $*"; }
fails=0
check() { if [ "$2" = 0 ]; then log "CHECK $1: PASS ${3:-}"; else log "CHECK $1: FAIL ${3:-}"; fails=$((fails+1)); fi; }
waitfor() { # file pattern seconds
  local i=0; while [ $i -lt $(( $3 * 2 )) ]; do grep -qE "$2" "$1" 2>/dev/null && return 0; sleep 0.5; i=$((i+1)); done; return 1; }
OUT=/xfer/out; mkdir -p $OUT
CLIENT_DCO=${KDCO_CLIENT_DCO:-1}
cleanup() {
  [ -n "${CPID:-}" ] && kill "$CPID" 2>/dev/null
  [ -n "${SPID:-}" ] && kill "$SPID" 2>/dev/null
  sleep 1; ip netns del kdco-srv 2>/dev/null; ip netns del kdco-cli 2>/dev/null
}
trap cleanup EXIT
modprobe tun
ip netns add kdco-srv; ip netns add kdco-cli
ip link add kdco-s type veth peer name kdco-c
ip link set kdco-s netns kdco-srv; ip link set kdco-c netns kdco-cli
ip -n kdco-srv addr add 10.201.0.1/24 dev kdco-s; ip -n kdco-srv link set kdco-s up; ip -n kdco-srv link set lo up
ip -n kdco-cli addr add 10.201.0.2/24 dev kdco-c; ip -n kdco-cli link set kdco-c up; ip -n kdco-cli link set lo up

log "== server: ServerFlow (control plane + KernelDataPlane), data dir $KDCO_FLOW_DATA"
ip netns exec kdco-srv timeout 900 dotnet "$KDCO_FLOW" "$KDCO_FLOW_DATA" 800 > $OUT/server.log 2>&1 &
SPID=$!
waitfor $OUT/server.log 'Initialization Sequence Completed|Unhandled|Exception' 120
grep -q 'Initialization Sequence Completed' $OUT/server.log; check "server started on kernel data plane" $? "$(grep -m1 'data plane:' $OUT/server.log)"
ip -n kdco-srv -details link show as0t0 | tee $OUT/as0t0.txt | sed 's/^/  /'
grep -q 'ovpn-dco' $OUT/as0t0.txt; check "as0t0 is an ovpn-dco device" $?

extra=""; [ "$CLIENT_DCO" = 1 ] || extra="--disable-dco"
log "== client: stock $(openvpn --version | head -1 | cut -d' ' -f1-2) $extra (reneg-sec 40)"
ip netns exec kdco-cli openvpn --config "$KDCO_FLOW_PROFILE" --verb 4 --reneg-sec 40 \
  $extra --log $OUT/client.log --writepid /tmp/cli.pid --daemon
sleep 1; CPID=$(cat /tmp/cli.pid 2>/dev/null)
waitfor $OUT/client.log 'Initialization Sequence Completed' 120; check "client connected" $? "$(grep -m1 -oE 'Data Channel: cipher.*' $OUT/client.log)"
grep -hE 'DCO device|net_iface_new|DCO version' $OUT/client.log | head -3 | sed 's/^/  client: /'
ip netns exec kdco-cli ping -c 3 -W 5 172.27.224.1 > $OUT/ping1.txt 2>&1; check "ping through the tunnel" $? "$(grep -oE '[0-9]+ received' $OUT/ping1.txt)"

ip netns exec kdco-srv iperf3 -s -B 172.27.224.1 -1 > $OUT/iperf-srv.txt 2>&1 &
sleep 1
ip netns exec kdco-cli timeout 60 iperf3 -c 172.27.224.1 -t ${KDCO_IPERF_TIME:-3} -f m > $OUT/iperf.txt 2>&1; rc=$?
check "iperf3 through the kernel data path" $rc "$(grep -E 'receiver$' $OUT/iperf.txt | grep -oE '[0-9.]+ Mbits/sec')"
sleep 2.5
last=$(grep '^STATUS peer ' $OUT/server.log | tail -1); echo "  $last"
rxb=$(sed -n 's/.*vpn-rx [0-9]*p\/\([0-9]*\)B.*/\1/p' <<<"$last")
[ "${rxb:-0}" -gt 1000000 ]; check "kernel GET_PEER stats count the iperf traffic" $? "vpn-rx ${rxb:-?} bytes"

log "== waiting for the client's renegotiation (reneg-sec 40)"
waitfor $OUT/client.log 'key_id=1|KEY_ID 1|key-id 1|TLS: soft reset' 90; check "renegotiation happened" $?
sleep 5
ip netns exec kdco-cli ping -c 3 -W 5 172.27.224.1 > $OUT/ping2.txt 2>&1; check "ping after renegotiation (new key in kernel)" $? "$(grep -oE '[0-9]+ received' $OUT/ping2.txt)"

log "== client exit (explicit-exit-notify) -> DEL_PEER"
kill "$CPID"; CPID=""
sleep 6
last=$(grep '^STATUS peers=' $OUT/server.log | tail -1); echo "  $last"
grep -q '^STATUS peers=0' <<<"$last"; check "peer removed from the kernel after client exit" $?
grep -E 'SESSION-CLOSED' $OUT/server.log | tail -2 | sed 's/^/  /'

kill "$SPID"; for i in $(seq 1 40); do kill -0 "$SPID" 2>/dev/null || break; sleep 0.5; done; SPID=""
ip -n kdco-srv link show as0t0 >/dev/null 2>&1; [ $? != 0 ]; check "as0t0 removed at server stop" $?
log "server log tail:"; grep -vE '^STATUS' $OUT/server.log | tail -15 | sed 's/^/  /'
log "client log (DCO/key lines):"; grep -hE 'DCO|Data Channel|soft reset|key_id|Initialization|SIGTERM|exit' $OUT/client.log | tail -12 | sed 's/^/  /'
log "flow: $fails failure(s)"
[ $fails = 0 ]
