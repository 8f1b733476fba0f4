#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Quick start: build ovpnas, create a data dir with an embedded SQLite database and a fresh PKI,
# add a user, write its client profile, and run the server in the foreground (Ctrl-C stops it).
#   sudo ./scripts/quickstart.sh [--hostname HOST] [--data-dir DIR] [--user NAME]
set -euo pipefail
cd "$(dirname "$0")/.."

HOSTNAME_ARG="$(hostname -I 2>/dev/null | awk '{print $1}')"
DATA_DIR=/var/lib/ovpnas
USER_NAME=client1
while [ $# -gt 0 ]; do
  case "$1" in
    --hostname) HOSTNAME_ARG="$2"; shift 2 ;;
    --data-dir) DATA_DIR="$2"; shift 2 ;;
    --user) USER_NAME="$2"; shift 2 ;;
    *) echo "usage: $0 [--hostname HOST] [--data-dir DIR] [--user NAME]" >&2; exit 1 ;;
  esac
done

if [ "$(id -u)" -ne 0 ]; then
  echo "quickstart: run as root (the server creates a TUN device and binds ports 443/1194)" >&2
  exit 1
fi
if ! command -v dotnet >/dev/null 2>&1; then
  echo "quickstart: the .NET 10 SDK is required (https://learn.microsoft.com/dotnet/core/install/linux-debian)" >&2
  exit 1
fi
if [ ! -c /dev/net/tun ]; then
  echo "quickstart: /dev/net/tun is missing (modprobe tun, or give the container the device)" >&2
  exit 1
fi

dotnet publish src/Ovpn.Cli -c Release -o out/ovpnas --nologo -v quiet
OVPNAS="dotnet out/ovpnas/ovpnas.dll"

if [ ! -f "$DATA_DIR/ovpnas.db" ]; then
  $OVPNAS init --data-dir "$DATA_DIR" --hostname "${HOSTNAME_ARG:-localhost}"
fi
if ! $OVPNAS user list --data-dir "$DATA_DIR" | cut -f1 | grep -qx "$USER_NAME"; then
  $OVPNAS user add "$USER_NAME" --data-dir "$DATA_DIR"
fi
$OVPNAS profile "$USER_NAME" --data-dir "$DATA_DIR" --out "$DATA_DIR/$USER_NAME.ovpn"
# Admin web UI account "openvpn" (as Access Server names it), with a random password on first run.
if [ ! -f "$DATA_DIR/.admin-created" ]; then
  ADMIN_PASS=$(head -c 12 /dev/urandom | base64 | tr -d '/+=')
  $OVPNAS sacli --data-dir "$DATA_DIR" -u openvpn -k prop_superuser -v true UserPropPut >/dev/null
  $OVPNAS sacli --data-dir "$DATA_DIR" -u openvpn --new_pass "$ADMIN_PASS" SetLocalPassword >/dev/null
  touch "$DATA_DIR/.admin-created"
  echo "quickstart: admin web UI https://${HOSTNAME_ARG:-localhost}:943/ user 'openvpn' password '$ADMIN_PASS'"
fi
echo "quickstart: client profile written to $DATA_DIR/$USER_NAME.ovpn"
echo "quickstart: connect with: openvpn --config $USER_NAME.ovpn"
exec $OVPNAS serve --data-dir "$DATA_DIR"
