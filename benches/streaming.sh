#!/usr/bin/env bash
# Streaming stays flat: 1 GiB down and 1 GiB up through the geolb binary, its RSS sampled all
# along (every 50 ms, from /proc). The node is `geolb sim` in its own process: it streams a
# deterministic blob, and answers an upload with the length and SHA-256 of what it received,
# which this script checks.
#
#   bash benches/streaming.sh               # 1 GiB each way (~1 min on 2 cores + build)
#   SIZE=$((256 << 20)) bash benches/streaming.sh
#
# Reported: geolb's RSS before, its peak during each transfer, and the growth; exit 1 when a
# transfer fails or arrives altered, or when the growth reaches LIMIT_MIB (default 16).
# Loopback only; every process started here is stopped on exit.

set -euo pipefail

SIZE=${SIZE:-$((1 << 30))}
LIMIT_MIB=${LIMIT_MIB:-16}
PORT=${BASE_PORT:-19380}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
GEOLB="${CARGO_TARGET_DIR:-$ROOT/target}/release/geolb"
TMP=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT
die() { echo "streaming: FAIL: $*" >&2; exit 1; }
for tool in curl sha256sum; do command -v "$tool" >/dev/null || die "$tool is required"; done
if [[ -z ${SKIP_BUILD:-} ]]; then
    (cd "$ROOT" && timeout 1800 cargo build --release --quiet --bin geolb)
fi

NODE=$PORT PROXY=$((PORT + 1)) ADMIN=$((PORT + 2))
cat >"$TMP/geolb.toml" <<EOF
[listen]
http = ["127.0.0.1:$PROXY"]
[admin]
listen = "127.0.0.1:$ADMIN"
[log]
access = false
[limits]
max_body = 0
[[nodes]]
name = "gs-1"
url = "http://127.0.0.1:$NODE"
master = 1
EOF
RUST_LOG=warn "$GEOLB" sim --name gs-1 --listen "127.0.0.1:$NODE" --config "$TMP/geolb.toml" >"$TMP/sim.log" 2>&1 &
PIDS+=($!)
RUST_LOG=warn "$GEOLB" --config "$TMP/geolb.toml" >"$TMP/geolb.log" 2>&1 &
GEOLB_PID=$!
PIDS+=("$GEOLB_PID")
for _ in $(seq 1 100); do
    [[ $(curl -s --max-time 1 "http://127.0.0.1:$ADMIN/status" | grep -Ec '"state": ?"up"') == 1 ]] && break
    sleep 0.1
done
[[ $(curl -s --max-time 1 "http://127.0.0.1:$ADMIN/status" | grep -Ec '"state": ?"up"') == 1 ]] \
    || { cat "$TMP/geolb.log" >&2; die "geolb's node is not up"; }

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$GEOLB_PID/status"; }
# sample FILE: writes geolb's peak RSS (KiB) to FILE until killed.
sample() {
    local peak=0 now
    while :; do
        now=$(rss_kib) || break
        ((now <= peak)) || { peak=$now; echo "$peak" >"$1"; }
        sleep 0.05
    done
}

# transfer NAME CMD...: runs CMD while sampling; prints "NAME before peak growth" in KiB.
transfer() {
    local name=$1 before peak
    shift
    # A few small requests first: pools and buffers in place.
    for _ in 1 2 3; do curl -sf -o /dev/null "http://127.0.0.1:$PROXY/geoserver/wms?request=GetCapabilities"; done
    before=$(rss_kib)
    echo "$before" >"$TMP/peak"
    sample "$TMP/peak" &
    local sampler=$!
    "$@" || { kill "$sampler"; die "$name failed"; }
    kill "$sampler"
    wait "$sampler" 2>/dev/null || true
    peak=$(cat "$TMP/peak")
    echo "$name $before $peak $((peak - before))"
}

blob="http://127.0.0.1:$PROXY/geoserver/www/__sim/blob?bytes=$SIZE&seed=3"
down() {
    local got
    got=$(curl -sf --max-time 600 "$blob" | wc -c)
    [[ $got == "$SIZE" ]] || { echo "downloaded $got bytes, not $SIZE" >&2; return 1; }
}
up() {
    # The upload: the same blob, taken from the node directly, posted through geolb as a REST
    # import (the master's pool); the node answers with the length and hash it received.
    local want head
    want=$(curl -sf --max-time 600 "http://127.0.0.1:$NODE/geoserver/www/__sim/blob?bytes=$SIZE&seed=5" | sha256sum | cut -d' ' -f1)
    head=$(curl -sf --max-time 600 "http://127.0.0.1:$NODE/geoserver/www/__sim/blob?bytes=$SIZE&seed=5" \
        | curl -sf --max-time 600 -D - -o /dev/null -H 'Content-Type: application/zip' -T - \
            -X POST "http://127.0.0.1:$PROXY/geoserver/rest/imports/1/tasks") || return 1
    grep -qi "^x-body-sha256: $want" <<<"${head//$'\r'/}" || { echo "upload arrived altered: $head" >&2; return 1; }
}

printf '%-9s %12s %12s %12s   (%s MiB each way, limit %s MiB)\n' transfer "RSS before" peak growth "$((SIZE >> 20))" "$LIMIT_MIB"
fail=
for t in down up; do
    read -r name before peak grew < <(transfer "$t" "$t")
    printf '%-9s %9d KiB %8d KiB %8d KiB\n' "$name" "$before" "$peak" "$grew"
    ((grew < LIMIT_MIB * 1024)) || fail=1
done
[[ -z $fail ]] || die "geolb's memory grew by $LIMIT_MIB MiB or more"
echo "streaming: flat"
