# SPDX-License-Identifier: MIT
# Runs INSIDE the VM as root, after driver.sh loaded ovpn-dco-v2: the real product. `ovpnas serve` (data dir
# made with `ovpnas init/user add/sacli ConfigPut vpn.server.daemon.ovpndco=true/profile` on the host) in
# namespace kdco-srv, the stock openvpn 2.6 client in kdco-cli (veth 10.201.0.0/24, VM-local only).
#   A. kernel offload, client with its own DCO: log line + module version, as0t0 kind ovpn-dco, ping both
#      ways, iperf3, device counters, sacli Status, client renegotiation (reneg-sec) + traffic after it,
#      client exit -> peer gone from the kernel (GET_PEER dump by DcoDriver --peers).
#   B. same server, client --disable-dco: ping both ways, transfer; then `ovpnas dco-reload` (server stop ->
#      module reload -> server start) while connected: the client reconnects by itself, traffic flows; exit.
#   D. OUR client: `ovpnas connect --dco kernel` (kernel module in P2P mode, ovpncN) against the same
#      kernel server: its log line names the engine + module version, ip -details kind ovpn-dco, ping both
#      ways, iperf3, `connect --status` path = kernel + GET_PEER counters, SIGTERM -> device removed, the
#      server logs the exit and drops the peer from its kernel.
#   C. module unloaded (rmmod), server restarted: log says the kernel module is not used and why, the
#      userspace offload engine serves (as0t0 is a tun device), ping both ways + iperf3.
set -u
T0=$(date +%s.%N)
log() { echo "[+$(awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN{printf "%6.1f", b-a}')s] $*"; }
fails=0
check() { if [ "$2" = 0 ]; then log "CHECK $1: PASS ${3:-}"; else log "CHECK $1: FAIL ${3:-}"; fails=$((fails+1)); fi; }
waitfor() { # file pattern seconds
  local i=0; while [ $i -lt $(( $3 * 2 )) ]; do grep -qE "$2" "$1" 2>/dev/null && return 0; sleep 0.5; i=$((i+1)); done; return 1; }
proof() { sed 's/^/    | /'; } # indent quoted log lines
OUT=${KDCO_OUT:-/xfer/out}; mkdir -p $OUT
NS=${KDCO_NS:-kdco}; NSS=$NS-srv; NSC=$NS-cli
S() { ip netns exec $NSS "$@"; }
C() { ip netns exec $NSC "$@"; }
D=$KDCO_FLOW_DATA; CLI=$KDCO_CLI; PROFILE=$KDCO_FLOW_PROFILE
CPID=""; SPID=""
cleanup() {
  [ -n "$CPID" ] && kill "$CPID" 2>/dev/null
  [ -n "${DPID:-}" ] && kill "$DPID" 2>/dev/null
  for p in $(serverpids); do kill "$p" 2>/dev/null; done
  sleep 1; ip netns del $NSS 2>/dev/null; ip netns del $NSC 2>/dev/null
}
serverpids() { pgrep -f "$CLI serve --data-dir $D" || true; }
trap cleanup EXIT
modprobe tun
ip netns add $NSS; ip netns add $NSC
ip link add $NS-s type veth peer name $NS-c
ip link set $NS-s netns $NSS; ip link set $NS-c netns $NSC
ip -n $NSS addr add 10.201.0.1/24 dev $NS-s; ip -n $NSS link set $NS-s up; ip -n $NSS link set lo up
ip -n $NSC addr add 10.201.0.2/24 dev $NS-c; ip -n $NSC link set $NS-c up; ip -n $NSC link set lo up
MODVER=$(cat /sys/module/ovpn_dco_v2/version 2>/dev/null)
log "module ovpn_dco_v2 version: ${MODVER:-not loaded}"

start_server() { # $1 log file
  S dotnet "$CLI" serve --data-dir "$D" > "$1" 2>&1 &
  SPID=$!
  waitfor "$1" 'Initialization Sequence Completed|Unhandled|rror' 120
  grep -q 'Initialization Sequence Completed' "$1"; check "server started ($(basename "$1"))" $?
}
stop_server() {
  local p; for p in $(serverpids); do kill "$p"; done
  for i in $(seq 1 60); do [ -z "$(serverpids)" ] && break; sleep 0.5; done; SPID=""
  [ -z "$(serverpids)" ]; check "server stopped (SIGTERM)" $?
}
start_client() { # $1 tag, rest: extra openvpn options
  local tag=$1; shift
  rm -f $OUT/client-$tag.log
  C openvpn --config "$PROFILE" --verb 3 --log $OUT/client-$tag.log --writepid /tmp/cli.pid --daemon "$@"
  sleep 1; CPID=$(cat /tmp/cli.pid 2>/dev/null)
  waitfor $OUT/client-$tag.log 'Initialization Sequence Completed' 120; check "[$tag] client connected" $? "$(grep -m1 -oE 'Data Channel: cipher.*' $OUT/client-$tag.log)"
  grep -hE 'DCO|dco' $OUT/client-$tag.log | head -2 | proof
}
stop_client() { kill "$CPID" 2>/dev/null; for i in $(seq 1 20); do kill -0 "$CPID" 2>/dev/null || break; sleep 0.5; done; CPID=""
  for i in $(seq 1 20); do C ip link show tun0 >/dev/null 2>&1 || break; sleep 0.5; done; }
addr() { ip -n $1 -o -4 addr show dev $2 2>/dev/null | awk '{print $4}' | cut -d/ -f1 | head -1; }
pings() { # $1 tag
  local sip cip; sip=$(addr $NSS as0t0); cip=$(addr $NSC tun0)
  C ping -c 3 -W 5 "$sip" > $OUT/ping-c2s-$1.txt 2>&1; check "[$1] ping client -> server $sip" $? "$(grep -oE '[0-9]+ received' $OUT/ping-c2s-$1.txt)"
  S ping -c 3 -W 5 "$cip" > $OUT/ping-s2c-$1.txt 2>&1; check "[$1] ping server -> client $cip" $? "$(grep -oE '[0-9]+ received' $OUT/ping-s2c-$1.txt)"
}
iperf() { # $1 tag
  local sip; sip=$(addr $NSS as0t0)
  S iperf3 -s -B "$sip" -1 > $OUT/iperf-srv-$1.txt 2>&1 &
  sleep 1.5
  C timeout 60 iperf3 -c "$sip" -t ${KDCO_IPERF_TIME:-3} -f m > $OUT/iperf-$1.txt 2>&1
  check "[$1] iperf3 through the tunnel" $? "$(grep -E 'receiver$' $OUT/iperf-$1.txt | grep -oE '[0-9.]+ Mbits/sec')"
}
kpeers() { S dotnet "$KDCO_DRIVER" --peers as0t0 2>&1; }
status() { # $1 tag, $2 expected text (fixed string)
  S dotnet "$CLI" sacli Status --data-dir "$D" > $OUT/status-$1.txt 2>&1; local rc=$?
  if grep -q 'not implemented' $OUT/status-$1.txt; then log "CHECK [$1] sacli Status: NOT AVAILABLE ($(head -1 $OUT/status-$1.txt))"
  else grep -E '"(state|text|dataEngine|dataEngineVersion|module|version|reason)"' $OUT/status-$1.txt | head -8 | proof
       [ $rc = 0 ] && grep -qF "$2" $OUT/status-$1.txt; check "[$1] sacli Status (rc $rc) reports: $2" $?; fi
}

# ---------- A: kernel offload, client with DCO
SL=$OUT/server-kernel.log
log "===== A: ovpnas serve with vpn.server.daemon.ovpndco=true, module loaded; client with DCO"
start_server $SL
grep -E 'data channel offload|as0t0|as0t1|data plane' $SL | proof
grep -qF "data channel offload: active: kernel ovpn-dco-v2 " $SL && grep -qF "(kernel module ovpn_dco_v2 $MODVER)" $SL
check "[A] server log: kernel offload active with module version $MODVER" $?
ip -n $NSS -details link show as0t0 > $OUT/as0t0-A.txt 2>&1; proof < $OUT/as0t0-A.txt
sed -n 3p $OUT/as0t0-A.txt | grep -qE '^ *ovpn-dco '; check "[A] ip -details: as0t0 is an ovpn-dco device" $?
start_client A --reneg-sec 40
pings A
iperf A
rxb=$(ip -n $NSS -s -j link show as0t0 | grep -oE '"rx":\{"bytes":[0-9]+' | grep -oE '[0-9]+$')
[ "${rxb:-0}" -gt 1000000 ]; check "[A] as0t0 (kernel device) counted the iperf traffic" $? "rx ${rxb:-?} bytes"
kpeers | tee $OUT/peers-A1.txt | proof
grep -q '^PEERS 1 ' $OUT/peers-A1.txt; check "[A] kernel holds the client's peer (GET_PEER dump)" $?
status A "Active: kernel ovpn-dco-v2 $MODVER"
log "waiting for the client's renegotiation (reneg-sec 40)"
waitfor $OUT/client-A.log 'TLS: soft reset' 90; check "[A] client renegotiated" $? "$(grep -m1 'TLS: soft reset' $OUT/client-A.log | cut -c1-90)"
sleep 3
grep -E 'soft reset|primary|renegot' $SL | tail -3 | proof
pings A-after-reneg
iperf A-after-reneg
log "client exit (explicit-exit-notify)"
stop_client; sleep 2
grep -E 'disconnected' $SL | tail -1 | proof
kpeers | tee $OUT/peers-A2.txt | proof
grep -q '^PEERS 0 ' $OUT/peers-A2.txt; check "[A] peer removed from the kernel after client exit" $?

# ---------- B: client --disable-dco, then dco-reload while connected
log "===== B: same server, client --disable-dco (userspace client)"
start_client B --disable-dco
pings B
iperf B
log "===== B: ovpnas dco-reload while the client is connected"
if S dotnet "$CLI" --help 2>&1 | grep -q 'dco-reload'; then how="ovpnas dco-reload"
  S dotnet "$CLI" dco-reload --data-dir "$D" --module "$MODULE_KO" --log $OUT/server-reload.log --wait 90 > $OUT/dco-reload.txt 2>&1; rrc=$?
else how="DcoDriver --dco-reload (DcoReloadCommand; not registered in ovpnas yet)"
  S dotnet "$KDCO_DRIVER" --dco-reload "$D" "$MODULE_KO" $OUT/server-reload.log > $OUT/dco-reload.txt 2>&1; rrc=$?
fi
proof < $OUT/dco-reload.txt
check "[B] $how: stop, module reload, start" $rrc
grep -qF "data channel offload: active: kernel ovpn-dco-v2" $OUT/server-reload.log; check "[B] restarted server uses the reloaded module" $?
grep -qE 'RESTART|SIGUSR1' $OUT/client-B.log; check "[B] client got RESTART / restarted" $? "$(grep -m1 -E 'RESTART|SIGUSR1' $OUT/client-B.log | cut -c1-100)"
waitfor_n() { local i=0; while [ $i -lt 240 ]; do [ "$(grep -c 'Initialization Sequence Completed' $OUT/client-B.log)" -ge 2 ] && return 0; sleep 0.5; i=$((i+1)); done; return 1; }
waitfor_n; check "[B] client reconnected on its own after dco-reload" $?
sleep 1; pings B-after-reload
stop_client; sleep 2
kpeers | tee $OUT/peers-B.txt | proof
grep -q '^PEERS 0 ' $OUT/peers-B.txt; check "[B] peer removed from the kernel after client exit" $?
stop_server
ip -n $NSS link show as0t0 >/dev/null 2>&1; [ $? != 0 ]; check "[B] as0t0 removed at server stop" $?

# ---------- D: OUR client (`ovpnas connect --dco kernel`) on the kernel module in P2P mode
log "===== D: ovpnas serve (kernel MP) + ovpnas connect --dco kernel (kernel P2P)"
SL=$OUT/server-kernel-D.log; CL=$OUT/client-D.log; CD=$OUT/cdata-D
start_server $SL
rm -rf "$CD"; mkdir -p "$CD"
# Not through the C() function: a backgrounded function is a subshell, and SIGTERM must reach the client itself
# (ip netns exec execs dotnet, so $! is the client).
ip netns exec $NSC dotnet "$CLI" connect "$PROFILE" --dco kernel --data-dir "$CD" > $CL 2>&1 &
DPID=$!
waitfor $CL 'Initialization Sequence Completed|Unhandled|cannot set up|giving up' 120
grep -q 'Initialization Sequence Completed' $CL; check "[D] ovpnas connect --dco kernel connected" $?
grep -E 'data channel|TUN .* up|rror' $CL | head -4 | proof
grep -qF "data channel offload: kernel ovpn-dco-v2 $MODVER (P2P" $CL; check "[D] client log names the kernel engine + module version $MODVER (P2P)" $? \
  "$(grep -m1 -oE 'data channel offload: kernel[^;]*' $CL)"
CIF=$(grep -m1 -oE 'TUN [a-z0-9]+ up' $CL | awk '{print $2}'); CIF=${CIF:-ovpnc0}
ip -n $NSC -details link show "$CIF" > $OUT/cif-D.txt 2>&1; proof < $OUT/cif-D.txt
sed -n 3p $OUT/cif-D.txt | grep -qE '^ *ovpn-dco '; check "[D] ip -details: client $CIF is an ovpn-dco device" $?
sip=$(addr $NSS as0t0); cip=$(addr $NSC "$CIF")
C ping -c 3 -W 5 "$sip" > $OUT/ping-c2s-D.txt 2>&1; check "[D] ping client -> server $sip" $? "$(grep -oE '[0-9]+ received' $OUT/ping-c2s-D.txt)"
S ping -c 3 -W 5 "$cip" > $OUT/ping-s2c-D.txt 2>&1; check "[D] ping server -> client $cip" $? "$(grep -oE '[0-9]+ received' $OUT/ping-s2c-D.txt)"
iperf D
C dotnet "$CLI" connect --status --data-dir "$CD" > $OUT/cstatus-D.txt 2>&1
grep -E '"(state|path|tun|vpnRxBytes|vpnTxBytes)"' $OUT/cstatus-D.txt | proof
grep -qE '"path": "kernel ovpn-dco-v2 ' $OUT/cstatus-D.txt; check "[D] connect --status: path is the kernel" $?
vtx=$(grep -oE '"vpnTxBytes": [0-9]+' $OUT/cstatus-D.txt | grep -oE '[0-9]+$')
[ "${vtx:-0}" -gt 100000 ]; check "[D] connect --status counters (GET_PEER) counted the iperf traffic" $? "vpnTxBytes ${vtx:-?}"
kpeers | tee $OUT/peers-D1.txt | proof
grep -q '^PEERS 1 ' $OUT/peers-D1.txt; check "[D] server kernel holds our client's peer" $?
log "client SIGTERM"
kill -TERM $DPID; for i in $(seq 1 30); do kill -0 $DPID 2>/dev/null || break; sleep 0.5; done
kill -0 $DPID 2>/dev/null; [ $? != 0 ]; check "[D] client exited on SIGTERM" $?; DPID=""
tail -3 $CL | proof
C ip link show "$CIF" >/dev/null 2>&1; [ $? != 0 ]; check "[D] client interface $CIF removed" $?
sleep 2
grep -E 'disconnected|EXIT|exit' $SL | tail -2 | proof
grep -qE 'disconnected|EXIT' $SL; check "[D] server logs the client's exit" $?
kpeers | tee $OUT/peers-D2.txt | proof
grep -q '^PEERS 0 ' $OUT/peers-D2.txt; check "[D] peer removed from the server's kernel after client exit" $?
stop_server

# ---------- C: module unloaded -> userspace offload engine
log "===== C: rmmod ovpn_dco_v2, restart ovpnas serve"
# The host's openvpn-dco-dkms package may have installed the module under /lib/modules (visible in the guest):
# the genl family lookup would then auto-load it again. Block that (the guest's /etc is a tmpfs overlay), so
# this round sees what a host without the module sees.
echo "install ovpn_dco_v2 /bin/false" > /etc/modprobe.d/kdco-block-ovpn-dco.conf
rmmod ovpn_dco_v2; [ ! -d /sys/module/ovpn_dco_v2 ]; check "[C] module unloaded (and auto-load blocked)" $?
SL=$OUT/server-userspace.log
start_server $SL
grep -E 'data channel offload|as0t0|data plane' $SL | proof
grep -qE "data channel offload: active: .*userspace.*kernel module not used: .+" $SL; check "[C] server log: userspace offload engine, kernel module not used + reason" $?
ip -n $NSS -details link show as0t0 > $OUT/as0t0-C.txt 2>&1; proof < $OUT/as0t0-C.txt
sed -n 3p $OUT/as0t0-C.txt | grep -qE '^ *tun '; check "[C] as0t0 is a tun device (userspace)" $?
start_client C
pings C
iperf C
status C "Not available: "
stop_client; stop_server
[ ! -d /sys/module/ovpn_dco_v2 ]; check "[C] module still unloaded after the round" $?
rm -f /etc/modprobe.d/kdco-block-ovpn-dco.conf; insmod "$MODULE_KO" 2>/dev/null # leave the module as driver.sh found it
grep -hE 'iperf3 through' /xfer/guest.log 2>/dev/null | sed 's/^.*CHECK/  CHECK/'
log "flow: $fails failure(s)"
[ $fails = 0 ]
