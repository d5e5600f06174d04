# shellcheck shell=bash # sourced by chaos/lib/common.sh
# Steady load during an experiment: quantaid-loadtest's `chaos` scenario (open model),
# which also revokes tokens and sessions throughout and probes them on every target
# (loadtest/README.md). Sourced by chaos/lib/common.sh.

# chaos_load_start SECS RATE: seeds users and OAuth clients (through the first target
# and PostgreSQL at $CHAOS_PG_PORT, or $CHAOS_DATABASE_URL), starts RATE requests/s for
# SECS seconds against $CHAOS_TARGETS, and returns once the measured load runs (phase
# `before`). The load's report goes to $CHAOS_REPORT.
chaos_load_start() {
    local secs=$1 rate=$2 i
    [ -n "${CHAOS_TARGETS:-}" ] || die "chaos_load_start: CHAOS_TARGETS is empty"
    : >"$CHAOS_WORK/events"
    rm -f "$CHAOS_WORK/load.started" "$CHAOS_WORK/load.rc"
    local quick_flag=()
    [ "$CHAOS_QUICK" = 1 ] && quick_flag=(--quick)
    (
        # Secrets reach the generator through its environment only.
        export LOADTEST_BASE_URL=${CHAOS_TARGETS%%,*} LOADTEST_TARGETS=$CHAOS_TARGETS
        export LOADTEST_DATABASE_URL=${CHAOS_DATABASE_URL:-postgresql://quantaid:$QUANTAID_DB_PASSWORD@127.0.0.1:$CHAOS_PG_PORT/quantaid}
        export LOADTEST_ADMIN_TOKEN=$ADMIN_TOKEN
        export LOADTEST_USERS=${LOADTEST_USERS:-1000} LOADTEST_CLIENTS=${LOADTEST_CLIENTS:-10}
        export LOADTEST_CHAOS_SECS=$secs LOADTEST_CHAOS_RATE=$rate
        export LOADTEST_CHAOS_EVENTS=$CHAOS_WORK/events LOADTEST_CHAOS_READY=$CHAOS_WORK/load.started
        export LOADTEST_CHAOS_JSON=$CHAOS_REPORT/chaos.json
        export LOADTEST_CONDITIONS="chaos experiment $CHAOS_NAME${CHAOS_CONDITIONS:+; $CHAOS_CONDITIONS}"
        # shellcheck disable=SC2016 # $0, $@ and $LOADTEST_CHAOS_READY belong to the inner sh
        chaos_spawn load sh -c '"$0" chaos "$@"; echo $? >"$LOADTEST_CHAOS_READY.rc"' \
            "$BIN_DIR/quantaid-loadtest" "${quick_flag[@]}" --out "$CHAOS_REPORT"
    )
    for ((i = 0; i < 1800; i++)); do
        [ -f "$CHAOS_WORK/load.started" ] && { say "load: $rate/s for $secs s against $CHAOS_TARGETS"; return 0; }
        chaos_alive load || { tail -n 30 "$CHAOS_WORK/load.log" >&2; die "the load generator stopped before the load began"; }
        sleep 0.1
    done
    die "the load did not begin within 180 s (log: $CHAOS_WORK/load.log)"
}

# chaos_phase NAME: a new phase of the experiment begins now (the first is `before`).
chaos_phase() {
    printf '%s %s\n' "$(date +%s%3N)" "$1" >>"$CHAOS_WORK/events"
    say "phase: $1"
}

# chaos_load_wait: waits for the load to end and its report ($CHAOS_REPORT/chaos.json).
chaos_load_wait() {
    local i
    for ((i = 0; i < 6000; i++)); do
        chaos_alive load || break
        sleep 0.1
    done
    chaos_alive load && die "the load generator did not end"
    [ -f "$CHAOS_REPORT/chaos.json" ] || { tail -n 30 "$CHAOS_WORK/load.log" >&2; die "the load generator wrote no chaos.json"; }
    cp "$CHAOS_WORK/load.log" "$CHAOS_REPORT/load.log" 2>/dev/null || true
}
