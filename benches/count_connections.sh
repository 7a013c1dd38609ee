#!/usr/bin/env bash
# Instructions (valgrind's callgrind; user space, all threads) of the `waylay` release binary
# per new intercepted HTTPS connection, as the shared harness's S3 makes them: CONNECT, a
# full TLS handshake with the proxy (the client resumes nothing), one `GET /1k` with
# `Connection: close`, the connection closed; waylay dials the origin over TLS for each.
# The origin is nginx (as in the harness) on a free loopback port with a self-signed
# certificate (`KEY_TYPE` rsa2048, the harness's default, or ec256), or any HTTPS origin
# serving `/1k` named by `ORIGIN=host:port` (the host name is sent as is: `localhost`, as
# the harness does, makes waylay resolve a name). The client is curl, one connection at a
# time (`--no-sessionid`: no TLS resumption towards the proxy). waylay runs as the harness
# starts it (`-q --listen-host 127.0.0.1 -k`), with its own CA (RSA-2048) in `$OUT`.
#
# Run it for two N and divide the difference of the totals by the difference of N, so that
# start-up and shutdown cancel (`benches/count_diff.py` does it per function too):
#
#   cargo build --release -p waylay
#   N=50 OUT=/tmp/a bash benches/count_connections.sh
#   N=250 OUT=/tmp/b bash benches/count_connections.sh
#   python3 benches/count_diff.py /tmp/a/callgrind.out /tmp/b/callgrind.out 200
#
# `STRACE=1` runs the proxy under `strace -f -c` instead and keeps the system-call summary
# in `$OUT/strace.txt` (the same two-N difference gives calls per connection).
#
# `KEEPALIVE=1` (what `benches/count_requests_tls.sh` sets) makes it the harness's S2
# instead: one curl, one CONNECT, one TLS connection to the proxy (verified with waylay's CA,
# `--cacert`) and N keep-alive `GET /1k` on it; waylay keeps one TLS connection to the
# origin. The two-N difference is then instructions per intercepted HTTPS request.
# `SCHEME=http` (with `KEEPALIVE=1`) makes it the plain path the same way (the harness's
# S1): absolute-form `GET http://localhost:PORT/1k` to the proxy, nginx without TLS, so the
# difference of the two per-request figures is what TLS on both sides costs.
#
# Prints the total; the profile is kept in $OUT (default a temp dir).
set -euo pipefail
N=${N:-100}
KEEPALIVE=${KEEPALIVE:-0}
SCHEME=${SCHEME:-https}
ssl=ssl
[[ $SCHEME == http ]] && ssl=
KEY_TYPE=${KEY_TYPE:-rsa2048}
STRACE=${STRACE:-0}
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${BIN:-$root/target/release/waylay}
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT/confdir" "$OUT/nginx"
nginx_bin=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}

keyopt() {
  case $KEY_TYPE in
    rsa2048) echo "-newkey rsa:2048" ;;
    ec256) echo "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1" ;;
    *) echo "KEY_TYPE must be rsa2048 or ec256" >&2; exit 2 ;;
  esac
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_listening() {
  for _ in $(seq 600); do
    (exec 9<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on 127.0.0.1:$1" >&2
  return 1
}

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

if [[ ! -s $OUT/confdir/waylay-ca.pem ]]; then
  openssl req -x509 -newkey rsa:2048 -noenc -days 30 -keyout "$OUT/ca.key" -out "$OUT/ca.pem" \
    -subj "/CN=count_connections CA" -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
  cat "$OUT/ca.key" "$OUT/ca.pem" >"$OUT/confdir/waylay-ca.pem"
fi

if [[ -z ${ORIGIN:-} ]]; then
  n=$OUT/nginx
  # shellcheck disable=SC2046
  openssl req -x509 $(keyopt) -noenc -days 30 -keyout "$n/origin.key" -out "$n/origin.pem" \
    -subj "/CN=localhost" -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" 2>/dev/null
  mkdir -p "$n/www" "$n/tmp"
  head -c 1024 /dev/zero | tr '\0' 'x' >"$n/www/1k"
  oport=$(free_port)
  cat >"$n/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $n/nginx.pid;
error_log $n/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $n/tmp/body;
    proxy_temp_path $n/tmp/proxy;
    fastcgi_temp_path $n/tmp/fastcgi;
    uwsgi_temp_path $n/tmp/uwsgi;
    scgi_temp_path $n/tmp/scgi;
    types { }
    default_type application/octet-stream;
    keepalive_requests 100000000;
    ssl_certificate $n/origin.pem;
    ssl_certificate_key $n/origin.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:SSL:10m;
    server {
        listen 127.0.0.1:$oport $ssl;
        server_name localhost;
        root $n/www;
        location = /1k { }
        location / { return 404; }
    }
}
EOF
  "$nginx_bin" -e "$n/error.log" -c "$n/nginx.conf" &
  pids+=($!)
  wait_listening "$oport"
  ORIGIN=localhost:$oport
fi

port=$(free_port)
args=(-q --listen-host 127.0.0.1 -p "$port" --set "confdir=$OUT/confdir" -k)
if [[ $STRACE == 1 ]]; then
  strace -f ${STRACE_ARGS:--c} -o "$OUT/strace.txt" "$bin" "${args[@]}" 2>"$OUT/proxy.log" &
else
  valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.out" \
    "$bin" "${args[@]}" 2>"$OUT/valgrind.log" &
fi
proxy=$!
pids+=("$proxy")
wait_listening "$port"

if [[ $KEEPALIVE == 1 ]]; then
  # One connection for all N (curl re-uses it; `%{num_connects}` sums to 1).
  curl_args=(--cacert "$OUT/ca.pem")
else
  curl_args=(-k --no-sessionid -H 'Connection: close')
fi
codes=$(curl -s "${curl_args[@]}" -x "http://127.0.0.1:$port" \
  -o /dev/null -w '%{http_code} connects=%{num_connects}\n' "$SCHEME://$ORIGIN/1k?[1-$N]" |
  sort | uniq -c | tr -s ' ')
# strace passes no signal on: the proxy is its child.
target=$proxy
[[ $STRACE == 1 ]] && target=$(ps -o pid= --ppid "$proxy" | tr -d ' ')
kill -TERM "$target"
wait "$proxy" || true
if [[ $STRACE == 1 ]]; then
  total=$(awk '$NF == "total" {print $4}' "$OUT/strace.txt")
  echo "N=$N status:$codes syscalls=$total summary=$OUT/strace.txt"
else
  total=$(grep -h '^summary:' "$OUT"/callgrind.out* | awk '{s+=$2} END {print s}')
  echo "N=$N status:$codes Ir=$total profile=$OUT/callgrind.out"
fi
