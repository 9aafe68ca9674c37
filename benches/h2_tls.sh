#!/usr/bin/env bash
# HTTP/2 over TLS: geolb vs HAProxy (and the TLS HTTP/1.1 keep-alive case), in front of the same
# nginx node answering 1 KiB, on loopback, one after the other in one run, same settings.
#
#   bash benches/h2_tls.sh                    # ROUNDS=3 medians, ~2 min + build
#   ROUNDS=1 DURATION=5 bash benches/h2_tls.sh
#
# Each proxy: PROXY_THREADS threads, an ECDSA P-256 certificate (made here with openssl), ALPN h2
# and http/1.1, pooled keep-alive HTTP/1.1 to the node, no access log. The load: h2load with
# 8 connections x 16 concurrent streams (browsers fetching tiles), then h2load --h1 with 32
# keep-alive connections (-m 1). Reported: req/s, the ratio geolb/haproxy in this run (medians
# over ROUNDS, rounds alternate the order), and each proxy's CPU per request (utime+stime).
# Needs h2load (nghttp2-client), nginx, haproxy, openssl: installed from Debian when missing.
# Loopback only; every process started here is stopped on exit.

set -euo pipefail

DURATION=${DURATION:-8}
ROUNDS=${ROUNDS:-3}
PROXY_THREADS=${PROXY_THREADS:-$(nproc)}
PORT=${BASE_PORT:-19280}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
GEOLB="${CARGO_TARGET_DIR:-$ROOT/target}/release/geolb"
TMP=$(mktemp -d)
declare -A PID_OF
log() { printf '[h2_tls %3ds] %s\n' "$SECONDS" "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }
cleanup() {
    local p
    for p in "${PID_OF[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [[ -n ${KEEP_TMP:-} ]] || rm -rf "$TMP"
}
trap cleanup EXIT

need=()
for tool in h2load:nghttp2-client nginx:nginx haproxy:haproxy openssl:openssl curl:curl; do
    command -v "${tool%%:*}" >/dev/null || need+=("${tool##*:}")
done
if ((${#need[@]})); then
    ((EUID == 0)) || die "missing ${need[*]}: run as root, or install them first"
    timeout 300 apt-get update -qq
    DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq "${need[@]}" >/dev/null
fi
if [[ -z ${SKIP_BUILD:-} ]]; then
    (cd "$ROOT" && timeout 1800 cargo build --release --quiet --bin geolb)
fi

NODE=$PORT GEOLB_PORT=$((PORT + 1)) GEOLB_ADMIN=$((PORT + 2)) HAPROXY_PORT=$((PORT + 3))
PATH_Q='/geoserver/wms?service=WMS&version=1.3.0&request=GetMap&layers=topp:states&bbox=-180,-90,180,90&width=256&height=256&crs=EPSG:4326&format=image/png'

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
    -keyout "$TMP/key.pem" -out "$TMP/cert.pem" 2>/dev/null
cat "$TMP/cert.pem" "$TMP/key.pem" >"$TMP/haproxy.pem"

head -c 1024 /dev/urandom >"$TMP/blob"
echo ok >"$TMP/healthz"
chmod 755 "$TMP"
chmod 644 "$TMP/blob" "$TMP/healthz"
cat >"$TMP/nginx.conf" <<EOF
daemon off;
worker_processes 1;
pid $TMP/nginx.pid;
error_log $TMP/nginx.err;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    client_body_temp_path $TMP/nb; proxy_temp_path $TMP/np; fastcgi_temp_path $TMP/nf;
    uwsgi_temp_path $TMP/nu; scgi_temp_path $TMP/ns;
    server {
        listen 127.0.0.1:$NODE backlog=4096;
        root $TMP;
        location = /healthz { default_type text/plain; try_files /healthz =404; }
        location / { default_type image/png; try_files /blob =404; }
    }
}
EOF
cat >"$TMP/geolb.toml" <<EOF
[listen]
https = ["127.0.0.1:$GEOLB_PORT"]
[admin]
listen = "127.0.0.1:$GEOLB_ADMIN"
[log]
access = false
[health]
path = "/healthz"
expect_body = ""
interval = "1s"
[[tls.certs]]
cert = "$TMP/cert.pem"
key = "$TMP/key.pem"
[[nodes]]
name = "gs-1"
url = "http://127.0.0.1:$NODE"
master = 1
EOF
cat >"$TMP/haproxy.cfg" <<EOF
global
    nbthread $PROXY_THREADS
    ssl-default-bind-options ssl-min-ver TLSv1.2
defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 50s
    timeout server 50s
frontend fe
    bind 127.0.0.1:$HAPROXY_PORT ssl crt $TMP/haproxy.pem alpn h2,http/1.1
    option forwardfor
    default_backend nodes
backend nodes
    server gs-1 127.0.0.1:$NODE
EOF

start() {
    local name=$1
    shift
    "$@" >"$TMP/$name.log" 2>&1 &
    PID_OF[$name]=$!
}
wait_https() {
    for _ in $(seq 1 150); do
        curl -skf --max-time 1 -o /dev/null "https://127.0.0.1:$1$PATH_Q" && return 0
        sleep 0.1
    done
    cat "$TMP/$2.log" >&2
    die "$2 does not answer on :$1"
}
# cpu PID: utime+stime of a process, in clock ticks.
cpu() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

start node nginx -c "$TMP/nginx.conf"
start geolb env RUST_LOG=warn TOKIO_WORKER_THREADS="$PROXY_THREADS" "$GEOLB" --config "$TMP/geolb.toml"
start haproxy haproxy -db -f "$TMP/haproxy.cfg"
wait_https "$GEOLB_PORT" geolb
wait_https "$HAPROXY_PORT" haproxy
TICK=$(getconf CLK_TCK)

# run PROXY MODE: one measured h2load run; prints "req/s cpu_us_per_request".
run() {
    local name=$1 mode=$2 port out before after
    port=$([[ $name == geolb ]] && echo "$GEOLB_PORT" || echo "$HAPROXY_PORT")
    local args=(-c 8 -m 16)
    [[ $mode == h2 ]] || args=(--h1 -c 32 -m 1)
    # A warm-up: TLS sessions, pools.
    h2load "${args[@]}" -D 1 "https://127.0.0.1:$port$PATH_Q" >/dev/null 2>&1 || true
    before=$(cpu "${PID_OF[$name]}")
    out=$(h2load "${args[@]}" -D "$DURATION" "https://127.0.0.1:$port$PATH_Q" 2>&1) || { echo "$out" >&2; die "h2load against $name failed"; }
    after=$(cpu "${PID_OF[$name]}")
    grep -q "protocol: $([[ $mode == h2 ]] && echo h2 || echo http/1.1)" <<<"$out" \
        || { echo "$out" >&2; die "$name did not speak $mode"; }
    local reqs failed
    reqs=$(awk '/^requests:/ { print $8 }' <<<"$out")
    failed=$(awk '/^requests:/ { print $10 }' <<<"$out")
    [[ $failed == 0 ]] || { echo "$out" >&2; die "$name: $failed requests failed"; }
    awk -v r="$reqs" -v d="$DURATION" -v c="$((after - before))" -v t="$TICK" \
        'BEGIN { printf "%.0f %.1f\n", r / d, (r ? c / t * 1e6 / r : 0) }'
}
median() { sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

declare -A RPS CPU
for mode in h2 h1; do
    for ((r = 0; r < ROUNDS; r++)); do
        order=(geolb haproxy)
        ((r % 2 == 0)) || order=(haproxy geolb)
        for p in "${order[@]}"; do
            read -r rps us < <(run "$p" "$mode")
            RPS[$mode.$p]+="$rps "
            CPU[$mode.$p]+="$us "
            log "$mode $p round $((r + 1)): $rps req/s, $us us CPU per request"
        done
    done
done

echo
echo "TLS (ECDSA P-256), 1 KiB answers, $PROXY_THREADS proxy threads, ${DURATION}s runs, medians of $ROUNDS, $(date -u +%F), $(nproc) cores"
printf '%-34s %12s %12s %10s %14s\n' load "geolb req/s" "haproxy" "ratio" "CPU/req ratio"
for mode in h2 h1; do
    g=$(tr ' ' '\n' <<<"${RPS[$mode.geolb]}" | grep . | median)
    h=$(tr ' ' '\n' <<<"${RPS[$mode.haproxy]}" | grep . | median)
    gc=$(tr ' ' '\n' <<<"${CPU[$mode.geolb]}" | grep . | median)
    hc=$(tr ' ' '\n' <<<"${CPU[$mode.haproxy]}" | grep . | median)
    what=$([[ $mode == h2 ]] && echo "h2, 8 connections x 16 streams" || echo "HTTP/1.1 keep-alive, 32 conns")
    awk -v w="$what" -v g="$g" -v h="$h" -v gc="$gc" -v hc="$hc" \
        'BEGIN { printf "%-34s %12d %12d %10.2f %14.2f\n", w, g, h, g / h, (hc ? gc / hc : 0) }'
done
