#!/usr/bin/env bash
# Runs a load-test scenario against a fresh QuantaID stack and writes its report.
#
#   loadtest/run.sh <scenario|all> [--quick] [--out DIR]
#
# Scenarios (loadtest/README.md says what each offers and must show):
#   login            1000 users: log in, browse with think time, log in again now and then
#   login-ramp       the pure login ramp to 1000 users
#   token-rate       client_credentials at 500/s for 10 minutes
#   token-stepup     500/s, +250/s every 30 s, until a step misses the criteria
#   pool-exhaustion  a pool of 4 and slow queries: quick 503s, then recovery on its own
#   all              each of the above in turn
#
# For each scenario it installs what is missing (scripts/setup.sh), builds the backend,
# the proxy and the load generator in release mode, starts PostgreSQL, Redis, the backend
# and the proxy (scripts/stack.sh, in a temporary state directory, proxy on :8080), seeds
# 10,000 users and 20 OAuth clients, runs the scenario against the proxy, writes the
# report, and stops and removes the stack, also on failure or Ctrl-C.
#
# --quick runs each scenario for at most 60 s at a scale a shared CI machine sustains
# (CI runs `all --quick`); without it, full scale and duration (docs/design.md, performance targets).
# --out DIR is the report directory (default loadtest/reports/<scenario>[-quick]-<UTC time>;
# with `all`, one subdirectory per scenario). The exit code is 1 if a criterion failed.
#
# Ports: the stack's defaults (Postgres 55432, Redis 56379, backend 8081/9091, proxy
# 8080/9090); stop a stack of your own first (scripts/stack.sh down), or move this one
# with the QUANTAID_* port settings scripts/stack.sh documents.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

SCENARIOS=(login login-ramp token-rate token-stepup pool-exhaustion)

say() { printf '==> %s\n' "$*"; }
die() { printf 'loadtest: error: %s\n' "$*" >&2; exit 2; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }

scenario=""
quick=()
out=""
while (($#)); do
    case $1 in
    --quick) quick=(--quick) ;;
    --out) out=${2:?--out needs a directory}; shift ;;
    -h | --help) usage; exit 0 ;;
    -*) die "unknown option $1" ;;
    *) scenario=$1 ;;
    esac
    shift
done
[ -n "$scenario" ] || { usage >&2; exit 2; }
if [ "$scenario" != all ] && [[ " ${SCENARIOS[*]} " != *" $scenario "* ]]; then
    die "unknown scenario '$scenario' (one of: ${SCENARIOS[*]} all)"
fi

# rustup's cargo may be installed but missing from a non-login shell's PATH.
if ! command -v cargo >/dev/null && [ -x "$HOME/.cargo/bin/cargo" ]; then PATH=$HOME/.cargo/bin:$PATH; fi
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/quantaid-target}
scripts/setup.sh
say "building the backend, the proxy and the load generator (release) into $CARGO_TARGET_DIR"
cargo build --release -p quantaid-backend -p quantaid-proxy -p quantaid-loadtest
LOADTEST_BIN=$CARGO_TARGET_DIR/release/quantaid-loadtest

kv() { sed -n "s/^$1=//p" "$2" | tail -n 1; }

# The current run's scratch directory: the stack's state and the stack's own log.
WORK=""
stop_stack() {
    [ -n "$WORK" ] || return 0
    QUANTAID_STACK_DIR=$WORK/stack scripts/stack.sh down >>"$WORK/stack.log" 2>&1 || true
    rm -rf "$WORK/stack"
}
cleanup() {
    stop_stack
    [ -z "$WORK" ] || rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# run_one SCENARIO REPORT_DIR: a fresh stack, the scenario, the report; returns its exit code.
run_one() {
    local name=$1 report=$2 code=0
    mkdir -p "$report"
    report=$(cd "$report" && pwd)
    WORK=$(mktemp -d /var/tmp/quantaid-loadtest.XXXXXX)
    chmod 711 "$WORK" # the postgres system user must reach the cluster inside
    local stack=$WORK/stack

    # The pool-exhaustion scenario needs a pool that slow queries can use up.
    local -a settings=()
    if [ "$name" = pool-exhaustion ]; then
        settings=(QUANTAID_DB_POOL_MIN=1 QUANTAID_DB_POOL_MAX=4 QUANTAID_DB_POOL_WAIT_MS=500)
    fi

    say "$name: starting the stack in $stack"
    if ! env "${settings[@]}" QUANTAID_STACK_DIR="$stack" scripts/stack.sh up >"$WORK/stack.log" 2>&1; then
        tail -n 40 "$WORK/stack.log" >&2
        cp "$WORK/stack.log" "$report/" || true
        die "the stack did not start"
    fi
    local secrets=$stack/secrets.env state=$stack/stack.env
    local proxy_addr pg_port
    proxy_addr=$(kv QUANTAID_PROXY_LISTEN_ADDR "$state")
    pg_port=$(kv QUANTAID_PG_PORT "$state")

    local conditions
    conditions="release build of $(git rev-parse --short HEAD 2>/dev/null || echo 'an unknown commit')"
    conditions+="; $(redis-server --version | cut -d' ' -f1-3)"
    conditions+="; backend pool ${settings[*]:-QUANTAID_DB_POOL_MAX=100 (default)}"

    # Secrets reach the load generator through its environment only (`export` is a
    # builtin: no command line ever holds them).
    (
        for setting in "${settings[@]}"; do export "${setting?}"; done
        export LOADTEST_BASE_URL="http://$proxy_addr" LOADTEST_CONDITIONS="$conditions"
        LOADTEST_DATABASE_URL="postgresql://quantaid:$(kv QUANTAID_DB_PASSWORD "$secrets")@127.0.0.1:$pg_port/quantaid"
        LOADTEST_ADMIN_TOKEN=$(kv QUANTAID_BOOTSTRAP_ADMIN_TOKEN "$secrets")
        export LOADTEST_DATABASE_URL LOADTEST_ADMIN_TOKEN
        exec "$LOADTEST_BIN" "$name" "${quick[@]}" --out "$report"
    ) || code=$?

    # Keep the end of each log beside the report; the whole logs go with the stack.
    local log
    for log in backend proxy postgres; do
        tail -n 200 "$stack/$log.log" >"$report/$log.log.tail" 2>/dev/null || true
    done
    # The stack's start-up log is dropped: it prints the (now dead) stack's demo credentials.
    stop_stack
    rm -rf "$WORK"
    WORK=""
    return "$code"
}

stamp=$(date -u +%Y%m%dT%H%M%SZ)
suffix=${quick:+-quick}
if [ "$scenario" = all ]; then
    base=${out:-loadtest/reports/all$suffix-$stamp}
    failed=()
    for name in "${SCENARIOS[@]}"; do
        run_one "$name" "$base/$name" || failed+=("$name")
    done
    say "reports in $base"
    printf 'loadtest: %d passed, %d failed\n' $((${#SCENARIOS[@]} - ${#failed[@]})) ${#failed[@]}
    if ((${#failed[@]})); then
        printf 'loadtest: criteria failed in: %s\n' "${failed[*]}" >&2
        exit 1
    fi
else
    run_one "$scenario" "${out:-loadtest/reports/$scenario$suffix-$stamp}"
fi
