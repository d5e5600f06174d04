#!/usr/bin/env bash
# Chaos experiments: break a real local QuantaID deployment under steady load and check
# that it keeps its promises (docs/chaos.md says what each experiment shows).
#
#   chaos/run.sh <experiment|all> [--quick] [--k8s] [--out DIR]
#   chaos/run.sh --list
#
# --quick   the short form (each experiment at most 90 s, build excluded); CI runs `all --quick`
# --k8s     inject the faults into a Kubernetes deployment instead (chaos/lib/k8s.sh)
# --out DIR report directory (default chaos/reports/<experiment>[-quick]-<UTC time>;
#           with `all`, one subdirectory per experiment)
# Exit code: 0 when every experiment met its goals, 1 when one did not, 2 on a usage or
# set-up error. It installs what is missing (scripts/setup.sh, Toxiproxy, redis-sentinel)
# and builds the backend, the proxy and the load generator in release mode into
# $CARGO_TARGET_DIR (default /var/tmp/quantaid-target), unless CHAOS_BIN_DIR names a
# directory that already holds them (e.g. a release's binaries, for --k8s).
#
# ---- The contract for experiments (keep it stable: other experiments depend on it) ----
# An experiment is ONE file, chaos/experiments/<name>.sh, defining:
#   EXPERIMENT_SUMMARY="one line: what breaks and what must hold"
#   experiment_run()   the local experiment
#   experiment_k8s()   optional: the same against a cluster (--k8s); absent => not supported
# Nothing else runs when the file is sourced. Each experiment runs in its own bash
# (set -euo pipefail) that has sourced chaos/lib/common.sh (which sources chaos/lib/*.sh),
# with: ROOT, CHAOS_NAME, CHAOS_QUICK (0|1), CHAOS_K8S (0|1), CHAOS_WORK (scratch, deleted
# afterwards), CHAOS_REPORT (its report directory), BIN_DIR (quantaid-backend,
# quantaid-proxy, quantaid-loadtest), and, from chaos_secrets, the shell variables
# QUANTAID_DB_PASSWORD QUANTAID_REDIS_PASSWORD ADMIN_TOKEN INTERNAL_TOKEN (never on a command line).
# Library (chaos/lib/): chaos_port, chaos_spawn NAME CMD..., chaos_kill NAME [SIG],
#   chaos_alive NAME, chaos_wait_http URL [SECS], chaos_prom URL REGEX,
#   chaos_pg_start NAME PORT [CONF...], chaos_pg_stop NAME [MODE], chaos_pg_psql NAME PORT ARGS,
#   chaos_redis_start NAME PORT [CONF...], chaos_redis_cli PORT ARGS,
#   chaos_backend_start NAME API_PORT METRICS_PORT [VAR=VALUE...],
#   chaos_proxy_start NAME PORT METRICS_PORT BACKEND_HOSTPORT [VAR=VALUE...],
#   chaos_topology_basic [PROXIES] [VAR=VALUE...] (sets CHAOS_PG_PORT CHAOS_REDIS_PORT
#   CHAOS_BACKEND CHAOS_BACKEND_METRICS CHAOS_TARGETS CHAOS_PROXY_METRICS),
#   chaos_toxiproxy_start, chaos_toxi_create NAME LISTEN_PORT UPSTREAM,
#   chaos_toxi_add NAME TOXIC TYPE [ATTR=VALUE...], chaos_toxi_remove NAME TOXIC,
#   chaos_toxi_cut NAME, chaos_toxi_restore NAME,
#   chaos_load_start SECS RATE, chaos_phase NAME, chaos_load_wait,
#   chaos_metric KEY, chaos_expect LABEL VALUE OP LIMIT, chaos_note TEXT,
#   chaos_k8s_setup, chaos_k8s_kill_pod, chaos_k8s_wait_ready, chaos_k8s_redis_cli,
#   chaos_k8s_sentinel_master, chaos_k8s_pod_of, chaos_k8s_toxiproxy (the chaos_toxi_* verbs
#   then act on a pod's Toxiproxy sidecar).
# The experiment passes when experiment_run returns 0 and every chaos_expect held.
# Whatever happens (failure, SIGTERM, Ctrl-C), every process started with chaos_spawn
# and every cluster started with chaos_pg_start is killed, and CHAOS_WORK removed; the
# logs' ends are kept in $CHAOS_REPORT/logs/.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

usage() { sed -n '2,/^# ---- The contract/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }
fail() { printf 'chaos: error: %s\n' "$*" >&2; exit 2; }

mapfile -t EXPERIMENTS < <(find chaos/experiments -maxdepth 1 -name '*.sh' -printf '%f\n' | sed 's/\.sh$//' | sort)

experiment="" quick=0 k8s=0 out=""
while (($#)); do
    case $1 in
    --quick) quick=1 ;;
    --k8s) k8s=1 ;;
    --out) out=${2:?--out needs a directory}; shift ;;
    --list) printf '%s\n' "${EXPERIMENTS[@]}"; exit 0 ;;
    -h | --help) usage; exit 0 ;;
    -*) fail "unknown option $1" ;;
    *) [ -z "$experiment" ] || fail "one experiment at a time (or all)"; experiment=$1 ;;
    esac
    shift
done
[ -n "$experiment" ] || { usage >&2; exit 2; }
if [ "$experiment" = all ]; then
    selected=("${EXPERIMENTS[@]}")
elif [[ " ${EXPERIMENTS[*]} " == *" $experiment "* ]]; then
    selected=("$experiment")
else
    fail "unknown experiment '$experiment' (one of: ${EXPERIMENTS[*]} all)"
fi

# ---------------------------------------------------------------------------- build

# rustup's cargo may be installed but missing from a non-login shell's PATH.
if ! command -v cargo >/dev/null && [ -x "$HOME/.cargo/bin/cargo" ]; then PATH=$HOME/.cargo/bin:$PATH; fi
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/quantaid-target}
if [ "$k8s" = 0 ]; then scripts/setup.sh; fi
if [ -n "${CHAOS_BIN_DIR:-}" ]; then
    BIN_DIR=$(cd "$CHAOS_BIN_DIR" && pwd) || fail "CHAOS_BIN_DIR $CHAOS_BIN_DIR is not a directory"
    [ -x "$BIN_DIR/quantaid-loadtest" ] || fail "CHAOS_BIN_DIR has no quantaid-loadtest"
else
    printf '==> building the backend, the proxy and the load generator (release) into %s\n' "$CARGO_TARGET_DIR"
    cargo build --release -p quantaid-backend -p quantaid-proxy -p quantaid-loadtest
    BIN_DIR=$CARGO_TARGET_DIR/release
fi

# ---------------------------------------------------------------------------- running

CHILD=""
# SIGTERM/SIGINT: stop the running experiment (its own traps clean up), then leave.
on_signal() {
    if [ -n "$CHILD" ]; then
        kill -TERM "$CHILD" 2>/dev/null || true
        wait "$CHILD" 2>/dev/null || true
    fi
    exit "$1"
}
trap 'on_signal 143' TERM
trap 'on_signal 130' INT

# run_one NAME REPORT_DIR: the experiment in its own shell; returns 0 if it passed.
run_one() {
    local name=$1 report=$2 work
    mkdir -p "$report"
    report=$(cd "$report" && pwd)
    work=$(mktemp -d /var/tmp/quantaid-chaos.XXXXXX)
    chmod 711 "$work" # the postgres system user must reach the clusters inside
    mkdir -p "$work/pids"
    printf '==> %s%s: report in %s\n' "$name" "$([ "$quick" = 1 ] && echo ' (quick)')" "$report"
    local started=$SECONDS
    (
        set -euo pipefail
        export ROOT CHAOS_NAME=$name CHAOS_QUICK=$quick CHAOS_K8S=$k8s CHAOS_WORK=$work CHAOS_REPORT=$report BIN_DIR
        # shellcheck source=chaos/lib/common.sh
        . chaos/lib/common.sh
        # shellcheck disable=SC2317 # runs from the EXIT trap below
        finish() {
            local rc=$?
            trap - EXIT TERM INT
            chaos_cleanup
            mkdir -p "$CHAOS_REPORT/logs"
            local log rel
            for log in "$CHAOS_WORK"/*.log "$CHAOS_WORK"/*/postgres.log; do
                [ -f "$log" ] || continue
                rel=${log#"$CHAOS_WORK"/}
                tail -n 300 "$log" >"$CHAOS_REPORT/logs/${rel//\//-}.tail"
            done
            chaos_verdict_write "$rc" || rc=1
            cat "$CHAOS_REPORT/verdict.md"
            rm -rf "$CHAOS_WORK"
            exit "$rc"
        }
        trap finish EXIT
        trap 'exit 143' TERM
        trap 'exit 130' INT
        # shellcheck disable=SC1090
        . "chaos/experiments/$name.sh"
        chaos_secrets
        if [ "$CHAOS_K8S" = 1 ]; then
            declare -F experiment_k8s >/dev/null || die "$name has no --k8s form"
            experiment_k8s
        else
            experiment_run
        fi
    ) &
    CHILD=$!
    local rc=0
    wait "$CHILD" || rc=$?
    CHILD=""
    rm -rf "$work"
    # shellcheck disable=SC2031 # the `name` the subshell changes is the library functions' local one
    printf '==> %s: %s in %d s\n' "$name" "$([ "$rc" = 0 ] && echo PASSED || echo FAILED)" $((SECONDS - started))
    return "$rc"
}

stamp=$(date -u +%Y%m%dT%H%M%SZ)
suffix=""
if [ "$quick" = 1 ]; then suffix=-quick; fi
failed=()
if [ "$experiment" = all ]; then
    base=${out:-chaos/reports/all$suffix-$stamp}
    for name in "${selected[@]}"; do
        run_one "$name" "$base/$name" || failed+=("$name")
    done
    printf '==> reports in %s\n' "$base"
else
    run_one "$experiment" "${out:-chaos/reports/$experiment$suffix-$stamp}" || failed+=("$experiment")
fi
printf 'chaos: %d passed, %d failed%s\n' $((${#selected[@]} - ${#failed[@]})) ${#failed[@]} \
    "$( ((${#failed[@]})) && printf ' (%s)' "${failed[*]}")"
((${#failed[@]} == 0))
