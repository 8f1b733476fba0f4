# SPDX-License-Identifier: MIT
# Shared set-up for bench/scale.sh and bench/forward.sh (sourced, not run): the namespaces of
# bench/netns.sh on 10.202.0.0/24, Release builds of ovpnas and the benchmark tool, a
# throwaway PKI and config for the stock openvpn server (every simulated client shares one
# certificate, hence duplicate-cn), and a matching client profile. Cleans up on exit.
# SCALE_CLIENT_KEY=ec gives the simulated clients an ECDSA P-256 certificate (for both servers,
# signed by each server's CA; the server certificates stay RSA-2048) so the generator's own
# per-handshake CertificateVerify signature is cheap; default rsa (RSA-2048).
# BENCH_SERVER_ENV="VAR=value ..." (space-separated) is added to the ovpnas server's environment.
BENCH_NS_TAG=scb BENCH_NET=10.202.0
# shellcheck source=bench/netns.sh
source "$(cd "$(dirname "$0")" && pwd)/netns.sh"
dotnet build -c Release "$root/bench/Ovpn.Benchmarks" >/dev/null
BENCH=$(find "$OVPN_ARTIFACTS/bin/Ovpn.Benchmarks" -path '*release*' -name Ovpn.Benchmarks.dll | head -1)

# ---- PKI for the stock server (throwaway): every simulated client shares one certificate ----
P=$W/pki; mkdir -p "$P"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=scale-ca -keyout "$P/ca.key" -out "$P/ca.crt" 2>/dev/null
for who in server client; do
  newkey=rsa:2048; [[ $who == client && ${SCALE_CLIENT_KEY:-rsa} == ec ]] && newkey="ec -pkeyopt ec_paramgen_curve:P-256"
  # shellcheck disable=SC2086
  openssl req -newkey $newkey -nodes -subj "/CN=$who" -keyout "$P/$who.key" -out "$P/$who.csr" 2>/dev/null
  ext=$W/$who.ext
  if [[ $who == server ]]; then printf 'extendedKeyUsage=serverAuth\nkeyUsage=digitalSignature,keyEncipherment\n' >"$ext"; else echo "extendedKeyUsage=clientAuth" >"$ext"; fi
  openssl x509 -req -in "$P/$who.csr" -CA "$P/ca.crt" -CAkey "$P/ca.key" -CAcreateserial -days 2 -extfile "$ext" -out "$P/$who.crt" 2>/dev/null
done
openvpn --genkey secret "$P/tc.key" >/dev/null
cat >"$W/stock-server.conf" <<CONF
dev tun
proto udp
port 1194
local $SRV_IP
server 10.8.0.0 255.255.0.0
topology subnet
max-clients 10000
duplicate-cn
ca $P/ca.crt
cert $P/server.crt
key $P/server.key
dh none
tls-crypt $P/tc.key
data-ciphers AES-256-GCM
keepalive 10 120
verb 1
CONF
{
  echo "client"; echo "dev tun"; echo "remote $SRV_IP 1194 udp"; echo "nobind"; echo "remote-cert-tls server"
  echo "data-ciphers AES-256-GCM"
  echo "<ca>"; cat "$P/ca.crt"; echo "</ca>"; echo "<cert>"; cat "$P/client.crt"; echo "</cert>"
  echo "<key>"; cat "$P/client.key"; echo "</key>"; echo "<tls-crypt>"; cat "$P/tc.key"; echo "</tls-crypt>"
} >"$W/stock.ovpn"


# tun_rx NS: packets all TUN devices in the namespace received from their process (what a VPN server
# forwarded into the kernel).
tun_rx() { ip netns exec "$1" sh -c 'for d in /sys/class/net/*; do n=${d##*/}; case $n in tun*|as0t*) cat "$d/statistics/rx_packets";; esac; done' | awk '{s+=$1} END {print s+0}'; }

# ec_client_cert DIR PROFILE: an ECDSA P-256 certificate for user "scale" signed by the ovpnas CA of
# DIR (key read from its database with sqlite3), recorded in its certificates table (the server
# refuses serials it did not issue), and swapped into PROFILE's <cert>/<key> blocks.
ec_client_cert() {
  local D=$1 prof=$2 e=$W/ovpnas-ec serial
  mkdir -p "$e"
  sqlite3 "$D/ovpnas.db" "SELECT content FROM pki_files WHERE name='ca.crt'" >"$e/ca.crt"
  sqlite3 "$D/ovpnas.db" "SELECT content FROM pki_files WHERE name='ca.key'" >"$e/ca.key"
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=scale -keyout "$e/c.key" -out "$e/c.csr" 2>/dev/null
  printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n' >"$e/ext"
  serial=5A$(openssl rand -hex 15 | tr a-f A-F)
  openssl x509 -req -in "$e/c.csr" -CA "$e/ca.crt" -CAkey "$e/ca.key" -set_serial "0x$serial" -days 2 -sha256 -extfile "$e/ext" -out "$e/c.crt" 2>/dev/null
  rm -f "$e/ca.key"
  sqlite3 "$D/ovpnas.db" "INSERT INTO certificates (serial, user, kind, cert_pem, key_pem, not_after_unix, created_unix) VALUES ('$serial', 'scale', 'client', readfile('$e/c.crt'), NULL, $(( $(date +%s) + 172800 )), $(date +%s))"
  awk -v crt="$e/c.crt" -v key="$e/c.key" '
    /^<cert>/ { print; while ((getline l < crt) > 0) print l; skip=1; next }
    /^<key>/  { print; while ((getline l < key) > 0) print l; skip=1; next }
    /^<\/(cert|key)>/ { skip=0 }
    !skip { print }' "$prof" >"$prof.ec" && mv "$prof.ec" "$prof"
}

# start_ovpnas DIR OFFLOAD(true|false): init a data dir with user "scale" and a UDP profile in $W/ovpnas-udp.ovpn, start the server; sets SPID.
start_ovpnas() {
  local D=$1
  ovpnas init --data-dir "$D" --hostname $SRV_IP >/dev/null
  ovpnas user add scale --data-dir "$D" >/dev/null
  ovpnas sacli --data-dir "$D" -k vpn.daemon.0.client.netmask_bits -v 16 ConfigPut >/dev/null
  ovpnas sacli --data-dir "$D" -k vpn.server.daemon.ovpndco -v "$2" ConfigPut >/dev/null
  ovpnas sacli --data-dir "$D" -k vpn.server.ping_restart -v 120 ConfigPut >/dev/null
  ovpnas profile scale --data-dir "$D" --out "$W/ovpnas.ovpn" >/dev/null
  [[ ${SCALE_CLIENT_KEY:-rsa} == ec ]] && ec_client_cert "$D" "$W/ovpnas.ovpn"
  grep -v '^remote ' "$W/ovpnas.ovpn" > "$W/ovpnas-udp.ovpn"; echo "remote $SRV_IP 1194 udp" >> "$W/ovpnas-udp.ovpn"
  # shellcheck disable=SC2086  # BENCH_SERVER_ENV is a list of words
  ip netns exec "$S" env OVPNAS_LOG_LEVEL=Warning OVPNAS_ADMIN=off ${BENCH_SERVER_ENV:-} dotnet "$OVPNAS" serve --data-dir "$D" >"$W/ovpnas-$2.log" 2>&1 & SPID=$!; PIDS+=("$SPID")
  sleep 4
}
