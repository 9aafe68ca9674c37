#!/usr/bin/env bash
# User-space instructions per proxied request, counted by valgrind's callgrind: the steady figure to
# compare two commits by on a noisy machine (shared/notes/profile.md).
#
#   bash benches/instructions.sh                 # the working tree
#   bash benches/instructions.sh 5d0505c HEAD    # two commits, built in temporary worktrees
#
# For each build: one `geolb sim` node, geolb in front of it under callgrind with one worker thread
# and the access log off, h2load sending N GetMaps over 4 keep-alive HTTP/1.1 connections. Each
# figure is (run of 2,400 requests - run of 400) / 2,000, so start-up work cancels out.
# Needs valgrind and h2load (Debian's valgrind and nghttp2-client). Loopback only.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TMP=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    [[ -n "${KEEP_TMP:-}" ]] || rm -rf "$TMP"
}
trap cleanup EXIT

for tool in valgrind h2load callgrind_annotate; do
    command -v "$tool" >/dev/null || { echo "instructions: $tool is missing (apt-get install valgrind nghttp2-client)" >&2; exit 2; }
done

PORT=${BASE_PORT:-19080}
NODE=$PORT
PROXY=$((PORT + 1))
ADMIN=$((PORT + 2))
TARGET="http://127.0.0.1:$PROXY/geoserver/wms?service=WMS&version=1.3.0&request=GetMap&layers=topp:states&bbox=-180,-90,180,90&width=256&height=256&crs=EPSG:4326&format=image/png"

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
    for _ in $(seq 1 200); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    echo "instructions: nothing listens on port $1" >&2
    exit 1
}

# Instructions of geolb serving `n` requests (from its start to its stop).
instructions() {
    local geolb=$1 n=$2 out="$TMP/callgrind.$RANDOM"
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
    TOKIO_WORKER_THREADS=1 RUST_LOG=error valgrind --tool=callgrind --callgrind-out-file="$out" \
        "$geolb" --config "$TMP/geolb.toml" 2>"$TMP/valgrind.log" &
    local pid=$!
    wait_port "$PROXY"
    # Wait until the node is admitted (one passing check).
    for _ in $(seq 1 200); do
        if curl -sf -o /dev/null "$TARGET"; then break; fi
        sleep 0.1
    done
    h2load --h1 -n "$n" -c 4 "$TARGET" >"$TMP/h2load.log" || { cat "$TMP/h2load.log" >&2; exit 1; }
    grep -q "$n succeeded" "$TMP/h2load.log" || { cat "$TMP/h2load.log" >&2; exit 1; }
    kill -TERM "$pid"
    wait "$pid" || true
    callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }'
}

per_request() {
    local geolb=$1
    local small big
    small=$(instructions "$geolb" 400)
    big=$(instructions "$geolb" 2400)
    echo $(((big - small) / 2000))
}

revs=("$@")
[[ ${#revs[@]} -gt 0 ]] || revs=(worktree)
bins=()
for rev in "${revs[@]}"; do
    bins+=("$(build "$rev")")
done
# The node: the first build's simulator (the same one for every measurement).
"${bins[0]}" sim --name gs-1 --listen "127.0.0.1:$NODE" >/dev/null 2>&1 &
PIDS+=($!)
wait_port "$NODE"
for i in "${!revs[@]}"; do
    echo "${revs[$i]}: $(per_request "${bins[$i]}") instructions per proxied request"
done
