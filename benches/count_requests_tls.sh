#!/usr/bin/env bash
# Instructions (valgrind's callgrind; user space, all threads) of the `waylay` release binary
# per intercepted HTTPS keep-alive request, as the shared harness's S2 makes them: curl sends
# CONNECT, does TLS with waylay (trusting its CA), then N `GET /1k` on that one connection;
# waylay intercepts and forwards each over one TLS connection to an nginx origin. It is
# `benches/count_connections.sh` with `KEEPALIVE=1` (same settings: `KEY_TYPE`, `ORIGIN`,
# `STRACE`, `BIN`, `OUT`). Two N, and the difference per request:
#
#   cargo build --release -p waylay
#   N=200 OUT=/tmp/a bash benches/count_requests_tls.sh
#   N=1200 OUT=/tmp/b bash benches/count_requests_tls.sh
#   python3 benches/count_diff.py /tmp/a/callgrind.out /tmp/b/callgrind.out 1000
set -euo pipefail
KEEPALIVE=1 exec bash "$(dirname "$0")/count_connections.sh" "$@"
