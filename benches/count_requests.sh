#!/usr/bin/env bash
# Instructions of the proxy child of `proxy_load` (user space, all its threads), counted by
# valgrind's callgrind: the 1 KiB origin in its own process, curl sending N keep-alive
# requests on one connection (absolute-form, `curl -x`). Run it for two N and divide the
# difference of the totals by the difference of N, so that start-up and shutdown cancel
# (`benches/count_diff.py` does it per function too).
#
#   cargo bench -p waylay-benches --bench proxy_load --no-run
#   ADDONS=4 N=100 OUT=/tmp/a bash benches/count_requests.sh
#   ADDONS=4 N=1100 OUT=/tmp/b bash benches/count_requests.sh
#   python3 benches/count_diff.py /tmp/a/callgrind.out /tmp/b/callgrind.out 1000
#
# EXTRA names one more addon of the child (`WAYLAY_LOAD_EXTRA`): `addheader` (the seed's
# AddHeader, on `response` only), `noop-response` (a no-op on `response` only), `py-noop`,
# `py-addheader` (with `--features python`).
#
# WEB=1 registers the web UI's addon (`waylay+web`), WEB=2 also reads its `/updates`
# WebSocket for the whole run, as a browser would (`waylay+web+ws`; a python3 stdlib client).
#
# PYTHONHASHSEED is fixed (0 unless set): with a random seed per run, CPython's dict and
# set layouts differ from run to run and the Python scenarios moved by about ±700
# instructions per request; fixed, by ±15.
#
# Prints the total; the callgrind profile is kept in $OUT (default a temp dir).
set -euo pipefail
ADDONS=${ADDONS:-0}
WEB=${WEB:-0}
EXTRA=${EXTRA:-}
N=${N:-1000}
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${BIN:-$(ls -t "$root"/target/release/deps/proxy_load-* | grep -v '\.d$' | head -1)}
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
mkfifo "$OUT/origin.in" "$OUT/proxy.in"
WAYLAY_LOAD_CHILD=origin "$bin" <"$OUT/origin.in" >"$OUT/origin.addr" &
exec 3>"$OUT/origin.in"
PYTHONHASHSEED=${PYTHONHASHSEED:-0} WAYLAY_LOAD_CHILD=waylay WAYLAY_LOAD_ADDONS=$ADDONS WAYLAY_LOAD_WORKERS=1 WAYLAY_LOAD_WEB=$WEB WAYLAY_LOAD_EXTRA=$EXTRA \
  WAYLAY_LOAD_CONFDIR="$OUT" valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.out" "$bin" <"$OUT/proxy.in" >"$OUT/proxy.addr" 2>"$OUT/valgrind.log" &
vg=$!
exec 4>"$OUT/proxy.in"
for _ in $(seq 600); do
  [[ -s "$OUT/origin.addr" && -s "$OUT/proxy.addr" ]] && break
  sleep 0.1
done
origin=$(head -1 "$OUT/origin.addr")
read -r proxy ui <"$OUT/proxy.addr"
reader=
if [[ $WEB -ge 2 ]]; then
  # The bench's own token (proxy_load's WEB_TOKEN), on loopback.
  python3 - "$ui" >"$OUT/reader.log" 2>&1 3>&- 4>&- <<'PY' &
import socket, sys
host, port = sys.argv[1].rsplit(":", 1)
s = socket.create_connection((host, int(port)))
s.sendall(f"GET /updates HTTP/1.1\r\nHost: {sys.argv[1]}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
          "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
          "Authorization: Bearer 00000000000000000000000000000bec\r\n\r\n".encode())
n = 0
while True:
    b = s.recv(65536)
    if not b:
        break
    n += len(b)
print("read", n, "bytes")
PY
  reader=$!
  sleep 1
fi
url="http://$origin/1k?[1-$N]"
curl -s -x "http://$proxy" "$url" >/dev/null
# Lets the last batch reach the reader.
[[ -n $reader ]] && sleep 1
exec 4>&-
exec 3>&-
wait "$vg" || true
[[ -n $reader ]] && { wait "$reader" || true; cat "$OUT/reader.log"; }
total=$(grep -h '^summary:' "$OUT"/callgrind.out* | awk '{s+=$2} END {print s}')
echo "addons=$ADDONS extra=${EXTRA:-none} web=$WEB N=$N Ir=$total profile=$OUT/callgrind.out"
