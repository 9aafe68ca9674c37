#!/usr/bin/env bash
# End-to-end load benchmark: geolb vs HAProxy vs nginx in front of the same three simulated
# GeoServer nodes, all on loopback, one after the other in one run with the same parameters.
#
#   bash benches/e2e.sh                          # defaults: DURATION=10 CONNECTIONS=32
#   DURATION=20 CONNECTIONS=64 bash benches/e2e.sh
#
# What it does:
#   1. installs haproxy, nginx and wrk from Debian if their binaries are missing;
#   2. builds geolb (cargo build --release);
#   3. starts 3 nodes: `geolb sim --name gs-N --listen 127.0.0.1:PORT`;
#   4. starts geolb, haproxy and nginx, each balancing over the 3 nodes with keep-alive
#      connection reuse to them;
#   5. for each target (one node directly as a reference, then each proxy): a warm-up that also
#      counts which node answered, then the measured wrk run;
#   6. prints a table and THE RESULT: the ratios geolb/haproxy and geolb/nginx measured in this
#      run (absolute numbers depend on the machine; the ratios are what to compare).
#      Columns: req/s, p50/p99 latency (wrk), the proxy's CPU (cores busy, and microseconds per
#      request), the 3 nodes' CPU, and "other": CPU busy with anything else on the machine during
#      the run (a build, another benchmark...). With 2 cores, wrk, the nodes and the proxy all
#      share them, so a run with "other" well above 0 is noisy: its ratios are not to be trusted.
# It fails (exit 1) if a proxy did not spread the load over >= 2 nodes, or if any run saw
# non-2xx responses or socket errors.
#
# Knobs (environment):
#   DURATION       seconds of each measured run (default 10)
#   CONNECTIONS    concurrent keep-alive connections of wrk (default 32)
#   THREADS        wrk threads (default 1: on 2 cores the proxies need the other one)
#   WARMUP         seconds of the warm-up before each measured run (default 2)
#   ROUNDS         rounds over all targets, in rotating order; medians are reported (default 1;
#                  3 gives steadier ratios on a noisy machine, at 3x the time)
#   BASE_PORT      first port of the block used (default 18080; shifted by 100 while busy)
#   GEOLB_BALANCE  geolb's [routing] balance: unset = the project's default
#                  (least-outstanding), or "round-robin" to match haproxy/nginx exactly
#   SKIP_BUILD=1   use the existing target/release/geolb
#   KEEP_TMP=1     keep the temp dir (configs and logs) and print where it is
#
# All traffic goes to 127.0.0.1. Every process started here is stopped on exit (trap).

set -euo pipefail

DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-1}
WARMUP=${WARMUP:-2}
ROUNDS=${ROUNDS:-1}
BASE_PORT=${BASE_PORT:-18080}
GEOLB_BALANCE=${GEOLB_BALANCE:-}

for knob in DURATION CONNECTIONS THREADS WARMUP ROUNDS BASE_PORT; do
    [[ ${!knob} =~ ^[1-9][0-9]*$ ]] || { echo "e2e: $knob must be a positive integer, not '${!knob}'" >&2; exit 2; }
done
((THREADS <= CONNECTIONS)) || { echo "e2e: THREADS must be <= CONNECTIONS" >&2; exit 2; }

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LUA_COUNT="$ROOT/benches/e2e/count_nodes.lua"
GEOLB="${CARGO_TARGET_DIR:-$ROOT/target}/release/geolb"
# The request measured: a WMS GetMap (the simulated node answers a small PNG).
GETMAP_PATH='/geoserver/wms?service=WMS&version=1.3.0&request=GetMap&layers=topp:states&bbox=-180,-90,180,90&width=256&height=256&crs=EPSG:4326&format=image/png'
HEALTH_PATH='/geoserver/ows?service=WMS&version=1.3.0&request=GetCapabilities'

log() { printf '[e2e %3ds] %s\n' "$SECONDS" "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }

# ---------------------------------------------------------------------------------------------
# Cleanup: every background process we start is recorded in PIDS and stopped on exit.
# ---------------------------------------------------------------------------------------------
PIDS=()
declare -A PID_OF # process name -> pid
TMP=$(mktemp -d "${TMPDIR:-/tmp}/geolb-e2e.XXXXXX")

# True while $1 runs (a zombie, i.e. exited but not yet reaped, counts as gone).
alive() {
    local stat
    stat=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
    [[ $stat != Z* ]]
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if ((${#PIDS[@]})); then
        # nginx's workers are children of its master: remember them in case the master must be
        # SIGKILLed (they would outlive it otherwise).
        local pid all=() deadline=$((SECONDS + 10))
        for pid in "${PIDS[@]}"; do
            all+=("$pid")
            mapfile -t -O "${#all[@]}" all < <(ps -o pid= --ppid "$pid" 2>/dev/null | tr -d ' ')
        done
        kill -TERM "${PIDS[@]}" 2>/dev/null || true
        for pid in "${all[@]}"; do
            while alive "$pid" && ((SECONDS < deadline)); do sleep 0.1; done
            if alive "$pid"; then
                log "pid $pid did not stop on SIGTERM: SIGKILL"
                kill -KILL "$pid" 2>/dev/null || true
            fi
        done
        wait "${PIDS[@]}" 2>/dev/null || true
    fi
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
    PIDS+=("$!")
    PID_OF[$name]=$!
}

# show_log NAME: the end of a process's log, for failure messages.
show_log() { log "--- last lines of $1.log:"; tail -n 20 "$TMP/$1.log" >&2 || true; }

# wait_ok NAME URL [SECONDS] [GREP]: polls URL until it answers 2xx (and its body contains GREP
# when given), failing after the deadline or as soon as process NAME has exited.
wait_ok() {
    local name=$1 url=$2 limit=${3:-10} want=${4:-}
    local deadline=$((SECONDS + limit)) body
    while ((SECONDS < deadline)); do
        if ! alive "${PID_OF[$name]}"; then show_log "$name"; die "$name exited during startup"; fi
        if [[ -z $want ]]; then
            curl -sf --max-time 1 -o /dev/null "$url" 2>/dev/null && return 0
        elif body=$(curl -sf --max-time 1 "$url" 2>/dev/null) && [[ $body == *"$want"* ]]; then
            return 0
        fi
        sleep 0.1
    done
    show_log "$name"
    die "$name did not answer $url within ${limit}s"
}

# ---------------------------------------------------------------------------------------------
# 1. Tools: install from Debian only what is missing.
# ---------------------------------------------------------------------------------------------
missing=()
command -v haproxy >/dev/null || missing+=(haproxy)
# nginx-light is the small build (bookworm: a metapackage over nginx); the binary is `nginx`.
command -v nginx >/dev/null || missing+=(nginx-light)
command -v wrk >/dev/null || missing+=(wrk)
for tool in curl ss ps; do
    command -v "$tool" >/dev/null || die "$tool is required (Debian: curl, iproute2, procps)"
done
if ((${#missing[@]})); then
    ((EUID == 0)) || die "missing ${missing[*]}: run as root to install them, or install them first"
    log "installing ${missing[*]}"
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
for tool in haproxy nginx wrk; do command -v "$tool" >/dev/null || die "$tool still missing after install"; done
[[ -r $LUA_COUNT ]] || die "missing $LUA_COUNT"

# ---------------------------------------------------------------------------------------------
# 2. Build geolb.
# ---------------------------------------------------------------------------------------------
if [[ -z ${SKIP_BUILD:-} ]]; then
    log "cargo build --release (the first one takes a few minutes)"
    (cd "$ROOT" && timeout 1800 cargo build --release --quiet --bin geolb)
fi
[[ -x $GEOLB ]] || die "no binary at $GEOLB"

# ---------------------------------------------------------------------------------------------
# 3. Ports: one block of loopback ports, shifted by 100 while any of them is already listening.
# ---------------------------------------------------------------------------------------------
port_busy() { [[ -n $(ss -Htln "sport = :$1" 2>/dev/null) ]]; }
for ((try = 0; ; try++)); do
    ((try < 20)) || die "no free port block found from BASE_PORT=$BASE_PORT"
    base=$((BASE_PORT + 100 * try))
    NODE_PORTS=($((base + 1)) $((base + 2)) $((base + 3)))
    GEOLB_PORT=$((base + 10)) ADMIN_PORT=$((base + 11)) HAPROXY_PORT=$((base + 20)) NGINX_PORT=$((base + 30))
    busy=
    for p in "${NODE_PORTS[@]}" "$GEOLB_PORT" "$ADMIN_PORT" "$HAPROXY_PORT" "$NGINX_PORT"; do
        if port_busy "$p"; then busy=$p; break; fi
    done
    [[ -n $busy ]] || break
done
((base + 30 <= 65535)) || die "BASE_PORT too high"
NODE_NAMES=(gs-1 gs-2 gs-3)

# ---------------------------------------------------------------------------------------------
# 4. The simulated GeoServer nodes.
# ---------------------------------------------------------------------------------------------
for i in 0 1 2; do
    start "${NODE_NAMES[i]}" env RUST_LOG=warn "$GEOLB" sim --name "${NODE_NAMES[i]}" --listen "127.0.0.1:${NODE_PORTS[i]}"
done
for i in 0 1 2; do
    wait_ok "${NODE_NAMES[i]}" "http://127.0.0.1:${NODE_PORTS[i]}$HEALTH_PATH" 10 WMS_Capabilities
done
log "nodes up on 127.0.0.1:${NODE_PORTS[*]}"

# ---------------------------------------------------------------------------------------------
# 5. The proxies: round-robin(-ish) over the 3 nodes, keep-alive connections reused to them,
#    X-Forwarded-* headers set (geolb always sets them, so the others do too), no access logs.
# ---------------------------------------------------------------------------------------------

# geolb (its own defaults otherwise: least-outstanding balancing, pooled HTTP/1.1 to nodes).
{
    printf '[listen]\nhttp = ["127.0.0.1:%s"]\n[admin]\nlisten = "127.0.0.1:%s"\n' "$GEOLB_PORT" "$ADMIN_PORT"
    [[ -z $GEOLB_BALANCE ]] || printf '[routing]\nbalance = "%s"\n' "$GEOLB_BALANCE"
    printf '[health]\ninterval = "1s"\ntimeout = "500ms"\n'
    for i in 0 1 2; do
        printf '[[nodes]]\nname = "%s"\nurl = "http://127.0.0.1:%s"\n' "${NODE_NAMES[i]}" "${NODE_PORTS[i]}"
        ((i > 0)) || printf 'master = 1\n'
    done
} >"$TMP/geolb.toml"
"$GEOLB" check --config "$TMP/geolb.toml" >"$TMP/geolb-check.log" 2>&1 \
    || { cat "$TMP/geolb-check.log" >&2; die "geolb rejects the generated config"; }
start geolb env RUST_LOG=warn "$GEOLB" --config "$TMP/geolb.toml"

# HAProxy: one process, 2 threads, foreground (-db).
cat >"$TMP/haproxy.cfg" <<EOF
global
    nbthread 2
    maxconn 8192

defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 50s
    timeout server 50s

frontend fe
    bind 127.0.0.1:$HAPROXY_PORT
    option forwardfor
    http-request set-header X-Forwarded-Proto http
    http-request set-header X-Forwarded-Host %[req.hdr(host)]
    default_backend geoserver

backend geoserver
    balance roundrobin
    option httpchk GET $HEALTH_PATH
    http-check expect string WMS_Capabilities
$(for i in 0 1 2; do printf '    server %s 127.0.0.1:%s check inter 1s\n' "${NODE_NAMES[i]}" "${NODE_PORTS[i]}"; done)
EOF
haproxy -c -q -f "$TMP/haproxy.cfg" >"$TMP/haproxy-check.log" 2>&1 \
    || { cat "$TMP/haproxy-check.log" >&2; die "haproxy rejects the generated config"; }
start haproxy haproxy -db -f "$TMP/haproxy.cfg"

# nginx: 2 workers, foreground (daemon off in the config), everything it writes under $TMP.
# keepalive_requests is raised on both sides: its default (1000) would make nginx close wrk's
# connections and its own upstream connections every 1000 requests, which the others never do.
mkdir -p "$TMP/nginx"
cat >"$TMP/nginx.conf" <<EOF
daemon off;
worker_processes 2;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log warn;
events { worker_connections 8192; }
http {
    access_log off;
    client_body_temp_path $TMP/nginx/body;
    proxy_temp_path $TMP/nginx/proxy;
    fastcgi_temp_path $TMP/nginx/fastcgi;
    uwsgi_temp_path $TMP/nginx/uwsgi;
    scgi_temp_path $TMP/nginx/scgi;
    keepalive_requests 1000000;
    upstream geoserver {
$(for i in 0 1 2; do printf '        server 127.0.0.1:%s;\n' "${NODE_PORTS[i]}"; done)
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / {
            proxy_pass http://geoserver;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$http_host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto http;
            proxy_set_header X-Forwarded-Host \$http_host;
        }
    }
}
EOF
# -e: where nginx logs before it has read the config (default: /var/log/nginx/error.log).
nginx -t -q -e "$TMP/nginx/error.log" -p "$TMP/nginx" -c "$TMP/nginx.conf" >"$TMP/nginx-check.log" 2>&1 \
    || { cat "$TMP/nginx-check.log" >&2; die "nginx rejects the generated config"; }
start nginx nginx -e "$TMP/nginx/error.log" -p "$TMP/nginx" -c "$TMP/nginx.conf"

# Ready = a GetMap through it answers 200. geolb's nodes start "unknown": wait until its admin
# status shows all three up, so that every proxy starts with the whole cluster.
wait_ok geolb "http://127.0.0.1:$GEOLB_PORT$GETMAP_PATH" 15
deadline=$((SECONDS + 10))
until [[ $(curl -sf --max-time 1 "http://127.0.0.1:$ADMIN_PORT/status" | grep -c '"state": "up"') == 3 ]]; do
    ((SECONDS < deadline)) || { curl -s "http://127.0.0.1:$ADMIN_PORT/status" >&2 || true; die "geolb: not all 3 nodes up within 10s"; }
    sleep 0.2
done
wait_ok haproxy "http://127.0.0.1:$HAPROXY_PORT$GETMAP_PATH" 10
wait_ok nginx "http://127.0.0.1:$NGINX_PORT$GETMAP_PATH" 10
log "proxies up: geolb :$GEOLB_PORT (admin :$ADMIN_PORT), haproxy :$HAPROXY_PORT, nginx :$NGINX_PORT"

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
    for pid in "$@" $(for p in "$@"; do ps -o pid= --ppid "$p" 2>/dev/null; done); do
        # The fields after the ")" that ends the command name: utime, stime are the 12th, 13th.
        fields=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null) || continue
        total=$((total + $(awk '{ print $12 + $13 }' <<<"$fields")))
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
# cores TICKS: the average number of cores TICKS of CPU time kept busy during one measured run.
cores() { awk -v t="$1" -v hz="$CLK_TCK" -v s="$DURATION" 'BEGIN { printf "%.2f", t / hz / s }'; }
# Busy ticks of the whole machine, all cores: user + nice + system + irq + softirq (the kernel may
# charge a process for the softirq work done on its behalf: loopback TCP is mostly that).
machine_ticks() { awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8; exit }' /proc/stat; }

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
        curl -s --max-time 2 -o /dev/null -D - "http://127.0.0.1:$1$GETMAP_PATH" | tr -d '\r' \
            | awk 'tolower($1) == "x-node:" { print $2 }'
    done | sort | uniq -c | awk '{ printf "%s%s=%s", (NR > 1 ? "," : ""), $2, $1 }'
}

# Per target, the values of each round, space-separated (medians are taken at the end).
declare -A RPS P50 P99 CPU NODECPU OTHER SPREAD PORT
TARGETS=()
target() { TARGETS+=("$1"); PORT[$1]=$2; }
target "direct(gs-1)" "${NODE_PORTS[0]}"
target geolb "$GEOLB_PORT"
target haproxy "$HAPROXY_PORT"
target nginx "$NGINX_PORT"
NODE_PIDS=("${PID_OF[gs-1]}" "${PID_OF[gs-2]}" "${PID_OF[gs-3]}")

# bench NAME ROUND: a warm-up that counts which node answered, then the measured run.
bench() {
    local name=$1 round=$2 port=${PORT[$1]} pid=${PID_OF[$1]:-} # no proxy pid for direct(gs-1)
    local url="http://127.0.0.1:$port$GETMAP_PATH" out="$TMP/wrk-$1-r$2"
    log "round $round/$ROUNDS, $name: warm-up ${WARMUP}s, then ${DURATION}s measured"
    timeout $((WARMUP + 30)) wrk -t"$THREADS" -c"$CONNECTIONS" -d"${WARMUP}s" --timeout 5s \
        -s "$LUA_COUNT" "$url" >"$out-warmup.txt" 2>&1 || { cat "$out-warmup.txt" >&2; fail "$name: warm-up wrk failed"; }
    check_wrk "$name (warm-up, round $round)" "$out-warmup.txt"

    # The load spread: under load (the warm-up's counts) and with sequential requests (curl).
    local under_load nodes_seen seq
    under_load=$(awk '$1 == "node" { print $2 "=" $3 }' "$out-warmup.txt" | sort | paste -sd, -)
    nodes_seen=$(awk '$1 == "node" && $2 != "(none)" { n++ } END { print n + 0 }' "$out-warmup.txt")
    seq=$(curl_spread "$port")
    SPREAD[$name]="load: ${under_load:-none}; seq: ${seq:-none}"
    if [[ $name != direct* ]]; then
        ((nodes_seen >= 2)) || fail "$name: under load every answer came from ${under_load:-no node}"
        (($(tr ',' '\n' <<<"$seq" | grep -c .) >= 2)) || fail "$name: 12 sequential requests all went to ${seq:-no node}"
    fi

    # The measured run, with the CPU used meanwhile by the proxy, the nodes, wrk and the machine.
    local p0=0 p1=0 n0 n1 w0 w1 m0 m1
    [[ -z $pid ]] || p0=$(cpu_ticks "$pid")
    n0=$(cpu_ticks "${NODE_PIDS[@]}") m0=$(machine_ticks)
    children_ticks
    w0=$CHILD_TICKS
    timeout $((DURATION + 30)) wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --timeout 5s --latency \
        "$url" >"$out.txt" 2>&1 || { cat "$out.txt" >&2; fail "$name: wrk failed"; }
    [[ -z $pid ]] || p1=$(cpu_ticks "$pid")
    n1=$(cpu_ticks "${NODE_PIDS[@]}") m1=$(machine_ticks)
    children_ticks
    w1=$CHILD_TICKS
    check_wrk "$name (round $round)" "$out.txt"

    local rps p50 p99
    rps=$(awk '/^Requests\/sec:/ { print $2 }' "$out.txt")
    p50=$(to_ms "$(awk '$1 == "50%" { print $2 }' "$out.txt")")
    p99=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$out.txt")")
    if [[ -z $rps || $p50 == nan || $p99 == nan ]]; then
        cat "$out.txt" >&2
        fail "$name: cannot parse wrk's output"
        return 0
    fi
    RPS[$name]+="$rps " P50[$name]+="$p50 " P99[$name]+="$p99 "
    [[ -z $pid ]] || CPU[$name]+="$(cores $((p1 - p0))) "
    NODECPU[$name]+="$(cores $((n1 - n0))) "
    # Busy CPU not used by the proxy, the nodes or wrk: other work on the machine (e.g. a
    # build), plus kernel threads. Much more than ~0.2 cores means a noisy run.
    OTHER[$name]+="$(cores $((m1 - m0 - (p1 - p0) - (n1 - n0) - (w1 - w0)))) "
    if [[ -n $pid ]] && ! alive "$pid"; then show_log "$name"; fail "$name died during the run"; fi
}

log "benchmark: ROUNDS=$ROUNDS DURATION=${DURATION}s CONNECTIONS=$CONNECTIONS THREADS=$THREADS WARMUP=${WARMUP}s, GetMap on 127.0.0.1"
for ((round = 1; round <= ROUNDS; round++)); do
    # Each round starts one target later, so that no target is always first or last.
    for ((i = 0; i < ${#TARGETS[@]}; i++)); do
        bench "${TARGETS[(i + round - 1) % ${#TARGETS[@]}]}" "$round"
    done
done

# ---------------------------------------------------------------------------------------------
# 7. Report.
# ---------------------------------------------------------------------------------------------
# median "V1 V2 ..." FORMAT: the median of the values, printed with FORMAT (n/a when none).
median() {
    tr ' ' '\n' <<<"$1" | grep . | sort -g | awk -v fmt="$2" '{ v[NR] = $1 }
        END { if (NR == 0) print "n/a"; else printf fmt "\n", (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.2f", a / b; else print "n/a" }'; }
us_per_req() { awk -v c="$1" -v r="$2" 'BEGIN { if (c + 0 > 0 && r + 0 > 0) printf "%.1f", c * 1e6 / r; else print "-" }'; }

declare -A M_RPS M_P50 M_P99 M_CPU M_NODE M_OTHER
for t in "${TARGETS[@]}"; do
    M_RPS[$t]=$(median "${RPS[$t]:-}" %.0f) M_P50[$t]=$(median "${P50[$t]:-}" %.2f) M_P99[$t]=$(median "${P99[$t]:-}" %.2f)
    M_CPU[$t]=$(median "${CPU[$t]:-}" %.2f) M_NODE[$t]=$(median "${NODECPU[$t]:-}" %.2f) M_OTHER[$t]=$(median "${OTHER[$t]:-}" %.2f)
done

echo
echo "geolb e2e benchmark — $(nproc) cores, wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s x $ROUNDS round(s), GetMap via 127.0.0.1"
echo "geolb balance: ${GEOLB_BALANCE:-default (least-outstanding)}; haproxy $(haproxy -v | awk 'NR == 1 { print $3 }'); $(nginx -v 2>&1 | sed 's/^nginx version: //')"
((ROUNDS == 1)) || echo "(each number is the median of $ROUNDS rounds)"
echo
fmt='%-13s %10s %8s %8s %8s %8s %8s %8s\n'
# shellcheck disable=SC2059
printf "$fmt" target "req/s" "p50 ms" "p99 ms" "proxy" "proxy" "nodes" "other"
# shellcheck disable=SC2059
printf "$fmt" "" "" "" "" "cores" "us/req" "cores" "cores"
for t in "${TARGETS[@]}"; do
    # shellcheck disable=SC2059
    printf "$fmt" "$t" "${M_RPS[$t]}" "${M_P50[$t]}" "${M_P99[$t]}" "${M_CPU[$t]/n\/a/-}" \
        "$(us_per_req "${M_CPU[$t]}" "${M_RPS[$t]}")" "${M_NODE[$t]}" "${M_OTHER[$t]}"
done
if ((ROUNDS > 1)); then
    echo
    echo "req/s of each round (in run order), to judge the spread behind the medians:"
    for t in "${TARGETS[@]}"; do printf '  %-13s %s\n' "$t" "${RPS[$t]:-}"; done
fi
echo
echo "answers per node (last round: warm-up under load; 12 sequential requests):"
for t in "${TARGETS[@]}"; do printf '  %-13s %s\n' "$t" "${SPREAD[$t]}"; done
echo
echo "RESULT — ratios measured in this run (the absolute numbers above are context only):"
printf '  throughput   geolb/haproxy = %s   geolb/nginx = %s   (>1: geolb serves more req/s)\n' \
    "$(ratio "${M_RPS[geolb]}" "${M_RPS[haproxy]}")" "$(ratio "${M_RPS[geolb]}" "${M_RPS[nginx]}")"
printf '  p99 latency  geolb/haproxy = %s   geolb/nginx = %s   (<1: geolb has the lower p99)\n' \
    "$(ratio "${M_P99[geolb]}" "${M_P99[haproxy]}")" "$(ratio "${M_P99[geolb]}" "${M_P99[nginx]}")"
printf '  CPU/request  geolb/haproxy = %s   geolb/nginx = %s   (<1: geolb spends less CPU per request)\n' \
    "$(ratio "$(us_per_req "${M_CPU[geolb]}" "${M_RPS[geolb]}")" "$(us_per_req "${M_CPU[haproxy]}" "${M_RPS[haproxy]}")")" \
    "$(ratio "$(us_per_req "${M_CPU[geolb]}" "${M_RPS[geolb]}")" "$(us_per_req "${M_CPU[nginx]}" "${M_RPS[nginx]}")")"
printf '  (geolb/direct throughput = %s: what the extra hop costs on this 2-core box)\n' \
    "$(ratio "${M_RPS[geolb]}" "${M_RPS[direct(gs-1)]}")"
noisy=$(for t in "${TARGETS[@]}"; do echo "${OTHER[$t]}"; done | tr ' ' '\n' | awk '$1 > 0.3 { n++ } END { print n + 0 }')
if ((noisy)); then
    echo "  NOTE: $noisy run(s) had > 0.3 cores busy with other work (\"other\" column): the machine was"
    echo "  not quiet, so the ratios are noisy. Rerun on a quiet machine, or raise ROUNDS."
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
echo
echo "OK: every proxy spread the load; no non-2xx responses, no socket errors."
