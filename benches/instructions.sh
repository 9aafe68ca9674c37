#!/usr/bin/env bash
# User-space instructions and system calls per proxied request: the steady figures to compare two
# commits (or geolb and haproxy) by on a noisy machine. Instructions are counted by valgrind's
# callgrind, system calls by `strace -f -c`.
#
#   bash benches/instructions.sh                  # the working tree, and haproxy
#   bash benches/instructions.sh 5d0505c HEAD     # two commits (built in temporary worktrees)
#   HAPROXY=0 bash benches/instructions.sh        # geolb only
#   FLOOR=1 bash benches/instructions.sh          # also hyper on both sides and nothing else
#                                                  # (benches/hyper_floor.rs): hyper's own floor
#   PROFILE=/tmp/cg HAPROXY=0 bash benches/instructions.sh   # keep the callgrind profile of the
#                                                  # long run (callgrind_annotate --inclusive=yes)
#
# The setup of shared/notes/profile.md: one nginx node serving a 1 KiB answer to a GetMap, the
# proxy in front of it with one worker thread (geolb: TOKIO_WORKER_THREADS=1, access log off;
# haproxy: nbthread 1, no log), h2load sending N GetMaps over 4 keep-alive HTTP/1.1 connections.
# Each figure is (run of 2,400 requests - run of 400) / 2,000: start-up work cancels out.
# Needs valgrind, strace, h2load and nginx (and haproxy); installs them from Debian when missing.
# Loopback only.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TMP=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    [[ -n "${KEEP_TMP:-}" ]] || rm -rf "$TMP"
}
trap cleanup EXIT

need=()
for tool in valgrind:valgrind strace:strace h2load:nghttp2-client nginx:nginx haproxy:haproxy; do
    command -v "${tool%%:*}" >/dev/null || need+=("${tool##*:}")
done
if ((${#need[@]})); then
    apt-get install -y -qq "${need[@]}" >/dev/null 2>&1 ||
        { apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null; }
fi

PORT=${BASE_PORT:-19080}
NODE=$PORT
PROXY=$((PORT + 1))
ADMIN=$((PORT + 2))
PATH_Q='/geoserver/wms?service=WMS&version=1.3.0&request=GetMap&layers=topp:states&bbox=-180,-90,180,90&width=256&height=256&crs=EPSG:4326&format=image/png'
TARGET="http://127.0.0.1:$PROXY$PATH_Q"

# A release build of a commit (or of the working tree): the path of its binary.
build() {
    local rev=$1
    if [[ $rev == worktree ]]; then
        (cd "$ROOT" && cargo build --release --quiet)
        echo "${CARGO_TARGET_DIR:-$ROOT/target}/release/geolb"
        return
    fi
    local dir="$TMP/src-$rev"
    git -C "$ROOT" worktree add --detach --quiet "$dir" "$rev"
    (cd "$dir" && CARGO_TARGET_DIR="$TMP/target-$rev" cargo build --release --quiet)
    git -C "$ROOT" worktree remove --force "$dir"
    echo "$TMP/target-$rev/release/geolb"
}

wait_port() {
    for _ in $(seq 1 400); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    echo "instructions: nothing listens on port $1" >&2
    exit 1
}

# The node: nginx answering 1 KiB to every path.
head -c 1024 /dev/urandom >"$TMP/blob"
cat >"$TMP/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $TMP/nginx.pid;
error_log $TMP/nginx.err;
events { worker_connections 1024; }
http {
    access_log off;
    keepalive_requests 100000;
    server {
        listen 127.0.0.1:$NODE;
        location / { root $TMP; default_type image/png; try_files /blob =404; }
    }
}
EOF
nginx -c "$TMP/nginx.conf" &
PIDS+=($!)
wait_port "$NODE"

cat >"$TMP/geolb.toml" <<EOF
[listen]
http = ["127.0.0.1:$PROXY"]
[admin]
listen = "127.0.0.1:$ADMIN"
[log]
access = false
[health]
interval = "30s"
expect_body = ""
[[nodes]]
name = "gs-1"
url = "http://127.0.0.1:$NODE"
master = 1
EOF
cat >"$TMP/haproxy.cfg" <<EOF
global
    nbthread 1
defaults
    mode http
    timeout connect 5s
    timeout client 50s
    timeout server 50s
    http-reuse always
frontend front
    bind 127.0.0.1:$PROXY
    default_backend nodes
backend nodes
    server gs-1 127.0.0.1:$NODE
EOF

# Runs the proxy (`$@`) under `tool` while h2load sends `n` requests; prints the tool's figure.
measure() {
    local tool=$1 n=$2
    shift 2
    local out="$TMP/out.$RANDOM"
    case $tool in
        callgrind) valgrind --tool=callgrind --callgrind-out-file="$out" "$@" 2>"$TMP/tool.log" & ;;
        strace) strace -f -c -o "$out" "$@" 2>"$TMP/tool.log" & ;;
    esac
    local pid=$!
    wait_port "$PROXY"
    for _ in $(seq 1 200); do
        if curl -sf -o /dev/null "$TARGET"; then break; fi
        sleep 0.1
    done
    h2load --h1 -n "$n" -c 4 "$TARGET" >"$TMP/h2load.log" || { cat "$TMP/h2load.log" >&2; exit 1; }
    grep -q "$n succeeded" "$TMP/h2load.log" || { cat "$TMP/h2load.log" >&2; exit 1; }
    # The proxy itself: valgrind runs it in its own process, strace as its child.
    case $tool in
        callgrind) kill -TERM "$pid" ;;
        strace) pkill -TERM -P "$pid" ;;
    esac
    wait "$pid" || true
    if [[ -n ${PROFILE:-} && $tool == callgrind && $n -gt 1000 ]]; then cp "$out" "$PROFILE"; fi
    case $tool in
        callgrind) callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }' ;;
        strace) awk '$NF == "total" { print $(NF-2) }' "$out" ;;
    esac
}

per_request() {
    local tool=$1
    shift
    local small big
    small=$(measure "$tool" 400 "$@")
    big=$(measure "$tool" 2400 "$@")
    awk -v s="$small" -v b="$big" 'BEGIN { printf "%.1f", (b - s) / 2000 }'
}

report() {
    local what=$1
    shift
    printf '%-12s %10s instructions %6s system calls per proxied request\n' "$what" \
        "$(per_request callgrind "$@")" "$(per_request strace "$@")"
}

revs=("$@")
[[ ${#revs[@]} -gt 0 ]] || revs=(worktree)
bins=()
for rev in "${revs[@]}"; do
    bins+=("$(build "$rev")")
done
for i in "${!revs[@]}"; do
    (
        export TOKIO_WORKER_THREADS=1 RUST_LOG=error
        report "${revs[$i]}" "${bins[$i]}" --config "$TMP/geolb.toml"
    )
done
if [[ ${FLOOR:-0} != 0 ]]; then
    (cd "$ROOT" && cargo build --release --quiet --example hyper_floor)
    (
        export TOKIO_WORKER_THREADS=1
        report hyper-floor "${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/hyper_floor" \
            "127.0.0.1:$PROXY" "127.0.0.1:$NODE"
    )
fi
if [[ ${HAPROXY:-1} != 0 ]]; then
    report haproxy haproxy -db -f "$TMP/haproxy.cfg"
fi
