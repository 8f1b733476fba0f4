#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Runs the seal/open micro benchmarks (BenchmarkDotNet, in-process, short job) and prints each
# result as MB/s next to `openssl speed -evp <cipher> -bytes <size>` on the same machine, with the
# ratio. Short job (5 x 200 ms iterations) by default. Usage: bench/crypto-ratio.sh [--full]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
art=${OVPN_ARTIFACTS:-/tmp/art-bench}
out=${BDN_OUT:-/tmp/bdn-crypto}
job="--job short --warmupCount 2 --iterationCount 5 --iterationTime 200"
[[ "${1:-}" == "--full" ]] && job=""
export OVPN_ARTIFACTS=$art
dotnet build -c Release "$root/bench/Ovpn.Benchmarks" >/dev/null
dll=$(find "$art/bin/Ovpn.Benchmarks" -path '*release*' -name Ovpn.Benchmarks.dll | head -1)
rm -rf "$out"
# shellcheck disable=SC2086
dotnet "$dll" --filter '*SealOpen*' $job --inProcess --exporters csv --artifacts "$out" >"$out.log" 2>&1 || { tail -30 "$out.log"; exit 1; }
csv=$(find "$out/results" -name '*SealOpen*-report.csv' | head -1)

declare -A OSSL
for c in aes-128-gcm aes-256-gcm chacha20-poly1305; do
  for s in 64 512 1400; do
    # "type 1400 bytes" row; the value is in 1000s of bytes per second ("123456.78k").
    v=$(openssl speed -evp "$c" -bytes "$s" -seconds 2 2>/dev/null | awk -v c="$c" 'tolower($1)==c {gsub("k","",$2); print $2}')
    OSSL["$c/$s"]=$v
  done
done

printf '%-18s %-8s %6s %-5s %10s %9s %10s %12s %6s\n' cipher impl bytes op ns/packet alloc MB/s openssl_MB/s ratio
python3 - "$csv" <<'PY' | while read -r cipher impl size op ns alloc mbs; do
import csv, sys, re
names = {"Aes128Gcm": "aes-128-gcm", "Aes256Gcm": "aes-256-gcm", "ChaCha20Poly1305": "chacha20-poly1305"}
def ns(v):
    v = v.replace(",", "").strip()
    m = re.match(r"([\d.]+)\s*(ns|μs|us|ms)", v)
    f = {"ns": 1, "μs": 1e3, "us": 1e3, "ms": 1e6}[m.group(2)]
    return float(m.group(1)) * f
for r in csv.DictReader(open(sys.argv[1])):
    t = ns(r["Mean"]); size = int(r["Size"])
    print(names[r["Cipher"]], r["Impl"], size, r["Method"], f"{t:.1f}", r.get("Allocated", "?").replace(" ", ""), f"{size / t * 1000:.1f}")
PY
  o=${OSSL["$cipher/$size"]:-}
  if [[ -n "$o" ]]; then
    omb=$(awk -v k="$o" 'BEGIN{printf "%.1f", k*1000/1e6}')
    ratio=$(awk -v a="$mbs" -v b="$omb" 'BEGIN{printf "%.2f", a/b}')
  else omb="n/a"; ratio="n/a"; fi
  printf '%-18s %-8s %6s %-5s %10s %9s %10s %12s %6s\n' "$cipher" "$impl" "$size" "$op" "$ns" "$alloc" "$mbs" "$omb" "$ratio"
done
echo "(openssl speed measures encryption only; ratio = our MB/s / openssl MB/s, single core)"
