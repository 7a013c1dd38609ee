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
# Prints the total; the callgrind profile is kept in $OUT (default a temp dir).
set -euo pipefail
ADDONS=${ADDONS:-0}
N=${N:-1000}
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${BIN:-$(ls -t "$root"/target/release/deps/proxy_load-* | grep -v '\.d$' | head -1)}
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
mkfifo "$OUT/origin.in" "$OUT/proxy.in"
WAYLAY_LOAD_CHILD=origin "$bin" <"$OUT/origin.in" >"$OUT/origin.addr" &
exec 3>"$OUT/origin.in"
WAYLAY_LOAD_CHILD=waylay WAYLAY_LOAD_ADDONS=$ADDONS WAYLAY_LOAD_WORKERS=1 \
  WAYLAY_LOAD_CONFDIR="$OUT" valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.out" "$bin" <"$OUT/proxy.in" >"$OUT/proxy.addr" 2>"$OUT/valgrind.log" &
vg=$!
exec 4>"$OUT/proxy.in"
for _ in $(seq 600); do
  [[ -s "$OUT/origin.addr" && -s "$OUT/proxy.addr" ]] && break
  sleep 0.1
done
origin=$(head -1 "$OUT/origin.addr")
proxy=$(head -1 "$OUT/proxy.addr")
url="http://$origin/1k?[1-$N]"
curl -s -x "http://$proxy" "$url" >/dev/null
exec 4>&-
exec 3>&-
wait "$vg" || true
total=$(grep -h '^summary:' "$OUT"/callgrind.out* | awk '{s+=$2} END {print s}')
echo "addons=$ADDONS N=$N Ir=$total profile=$OUT/callgrind.out"
