#!/usr/bin/env bash
# Compares the proxy built from another commit (the base) with the proxy of this tree
# (the head) on the cached paths, interleaved in one run so both see the same machine:
# both proxies run at once against one stack (same backend, Redis and PostgreSQL), and
# each round measures base then head for cached POST /oauth/introspect and
# GET /v1/auth/check at 64 and 256 connections (wrk -t2, closed loop).
#
#   scripts/bench-proxy-ab.sh --base REV [--rounds N] [--duration SECS] [--out FILE]
#
# Each row: req/s, p50, p99, non-2xx or socket errors, and the CPU time the proxy and
# Redis spent per request (from /proc, utime + stime). The summary gives the median
# of the rounds per cell and head/base. The base binary is cached per commit under
# /var/tmp/quantaid-cache/bench-ab. All traffic goes to 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."

BASE="" ROUNDS=3 DURATION=6 OUT=""
while [ $# -gt 0 ]; do
    case $1 in
    --base) BASE=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    *) echo "usage: $0 --base REV [--rounds N] [--duration SECS] [--out FILE]" >&2; exit 2 ;;
    esac
done
[ -n "$BASE" ] || { echo "usage: $0 --base REV [--rounds N] [--duration SECS] [--out FILE]" >&2; exit 2; }
BASE_SHA=$(git rev-parse --verify "$BASE^{commit}")

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/quantaid-target}
CACHE=/var/tmp/quantaid-cache/bench-ab
scripts/setup.sh >/dev/null
mkdir -p "$CACHE"

WORK=$(mktemp -d /tmp/quantaid-ab.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    scripts/stack.sh down >/dev/null 2>&1 || true
    git worktree remove --force "$WORK/base-tree" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

# The base proxy, built once per commit in a throwaway worktree.
BASE_BIN=$CACHE/quantaid-proxy-$BASE_SHA
if [ ! -x "$BASE_BIN" ]; then
    echo "==> building the base proxy ($BASE_SHA)"
    git worktree add --detach "$WORK/base-tree" "$BASE_SHA" >/dev/null
    (cd "$WORK/base-tree" && cargo build --release -q -p quantaid-proxy)
    cp "$CARGO_TARGET_DIR/release/quantaid-proxy" "$BASE_BIN.tmp" && mv "$BASE_BIN.tmp" "$BASE_BIN"
fi
echo "==> building the head proxy and the stack"
cargo build --release -q -p quantaid-backend -p quantaid-proxy
cp "$CARGO_TARGET_DIR/release/quantaid-proxy" "$WORK/quantaid-proxy-head"

export QUANTAID_STACK_DIR=${QUANTAID_BENCH_STACK_DIR:-/var/tmp/quantaid-bench-ab-stack}
export QUANTAID_PG_PORT=45532 QUANTAID_REDIS_PORT=46479
export QUANTAID_LISTEN_ADDR=127.0.0.1:48181 QUANTAID_METRICS_ADDR=127.0.0.1:49191
export QUANTAID_PROXY_LISTEN_ADDR=127.0.0.1:48180 QUANTAID_PROXY_METRICS_ADDR=127.0.0.1:49190
# Access log lines cost CPU per request: QUANTAID_BENCH_LOG_LEVEL=info measures them too.
export QUANTAID_LOG_LEVEL=${QUANTAID_BENCH_LOG_LEVEL:-warn}
scripts/stack.sh up >"$WORK/up.log" 2>&1 || { tail -n 30 "$WORK/up.log"; exit 1; }
# The stack's own proxy is not measured: it would share the cores.
kill "$(cat "$QUANTAID_STACK_DIR/proxy.pid")"
# shellcheck disable=SC1091
. "$QUANTAID_STACK_DIR/secrets.env"
# shellcheck disable=SC1091
. "$QUANTAID_STACK_DIR/demo.env"
BASIC=$(printf '%s:%s' "$DEMO_CLIENT_ID" "$DEMO_CLIENT_SECRET" | base64 -w0)

# start_proxy NAME BINARY PORT METRICS_PORT: runs it, waits until ready, warms its
# cache with a token of its own (the two builds may store entries differently).
start_proxy() {
    (
        export QUANTAID_BACKEND_ADDR=$QUANTAID_LISTEN_ADDR
        export QUANTAID_PROXY_LISTEN_ADDR=127.0.0.1:$3 QUANTAID_PROXY_METRICS_ADDR=127.0.0.1:$4
        export QUANTAID_REDIS_HOST=127.0.0.1:$QUANTAID_REDIS_PORT QUANTAID_REDIS_PASSWORD
        export QUANTAID_INTERNAL_TOKEN QUANTAID_BOOTSTRAP_ADMIN_TOKEN
        exec "$2" >"$WORK/$1.log" 2>&1 </dev/null
    ) &
    PIDS+=($!)
    echo $! >"$WORK/$1.pid"
    local url=http://127.0.0.1:$3 i token
    for i in $(seq 100); do
        curl -fsS -o /dev/null "$url/ready" 2>/dev/null && break
        [ "$i" = 100 ] && { echo "$1 proxy did not become ready" >&2; tail -n 20 "$WORK/$1.log" >&2; exit 1; }
        sleep 0.1
    done
    token=$(curl -fsS -u "$DEMO_CLIENT_ID:$DEMO_CLIENT_SECRET" -d grant_type=client_credentials "$url/oauth/token" | jq -r .access_token)
    curl -fsS -o /dev/null -u "$DEMO_CLIENT_ID:$DEMO_CLIENT_SECRET" --data-urlencode "token=$token" "$url/oauth/introspect"
    curl -fsS -o /dev/null -H "Authorization: Bearer $token" "$url/v1/auth/check"
    local done_fn='done = function(s) io.write(string.format("ERRORS %d\n", s.errors.status + s.errors.connect + s.errors.read + s.errors.write + s.errors.timeout)) end'
    printf 'wrk.method = "POST"\nwrk.body = "token=%s"\nwrk.headers["Content-Type"] = "application/x-www-form-urlencoded"\nwrk.headers["Authorization"] = "Basic %s"\n%s\n' \
        "$token" "$BASIC" "$done_fn" >"$WORK/$1-introspect.lua"
    printf 'wrk.headers["Authorization"] = "Bearer %s"\n%s\n' "$token" "$done_fn" >"$WORK/$1-check.lua"
}
start_proxy base "$BASE_BIN" 48170 49170
start_proxy head "$WORK/quantaid-proxy-head" 48160 49160
REDIS_PID=$(cat "$QUANTAID_STACK_DIR/redis.pid")

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICK_US=$((1000000 / $(getconf CLK_TCK)))
ROWS=$WORK/rows.tsv
# measure SIDE ROUTE CONNECTIONS: one wrk run, one row.
measure() {
    local port path out p0 r0 p1 r1 pid
    if [ "$1" = base ]; then port=48170; else port=48160; fi
    if [ "$2" = introspect ]; then path=/oauth/introspect; else path=/v1/auth/check; fi
    pid=$(cat "$WORK/$1.pid")
    p0=$(cpu_ticks "$pid") r0=$(cpu_ticks "$REDIS_PID")
    out=$(wrk -t2 -c"$3" -d"${DURATION}s" --latency -s "$WORK/$1-$2.lua" "http://127.0.0.1:$port$path" 2>&1)
    p1=$(cpu_ticks "$pid") r1=$(cpu_ticks "$REDIS_PID")
    awk -v side="$1" -v route="$2" -v c="$3" -v dp=$(((p1 - p0) * TICK_US)) -v dr=$(((r1 - r0) * TICK_US)) '
        /requests in/ { n = $1 }
        /^Requests\/sec:/ { rps = $2 }
        $1 == "50%" { p50 = $2 }
        $1 == "99%" { p99 = $2 }
        /^ERRORS/ { errors = $2 }
        END { printf "%s\t%s\t%s\t%.0f\t%s\t%s\t%s\t%.1f\t%.1f\n", route, c, side, rps, p50, p99, errors, dp / n, dr / n }' <<<"$out" |
        tee -a "$ROWS"
}

echo "==> $ROUNDS rounds of ${DURATION}s per cell; base $BASE_SHA, head $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . || echo ' with uncommitted changes')"
echo -e "route\tconns\tside\treq/s\tp50\tp99\terrors\tproxy us/req\tredis us/req"
for _ in $(seq "$ROUNDS"); do
    for c in 64 256; do
        for route in introspect check; do
            measure base "$route" "$c"
            measure head "$route" "$c"
        done
    done
done

RESULTS=$WORK/results.md
{
    echo "Conditions: $(nproc) cores ($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n 1)), kernel $(uname -r); wrk -t2, ${DURATION}s per cell,"
    echo "$ROUNDS rounds, base and head interleaved; load generator, both proxies, backend, Redis and PostgreSQL share the machine."
    echo "Base $BASE_SHA, head $(git rev-parse HEAD)$(git diff --quiet HEAD -- . || echo ' with uncommitted changes'). Medians of the rounds:"
    echo
    echo "| route | conns | base req/s | head req/s | head/base | base p99 | head p99 | base proxy µs/req | head proxy µs/req | errors (base, head) |"
    echo "|---|---|---|---|---|---|---|---|---|---|"
    python3 - "$ROWS" <<'PY'
import statistics, sys
from collections import defaultdict
cells = defaultdict(list)
for line in open(sys.argv[1]):
    route, conns, side, rps, p50, p99, errors, proxy_us, redis_us = line.rstrip("\n").split("\t")
    cells[(route, int(conns), side)].append((float(rps), p99, int(errors or 0), float(proxy_us)))
def med(rows, i):
    return statistics.median(r[i] for r in rows)
def med_latency(rows):
    # wrk prints units (us, ms, s); the median of the values in ms.
    def ms(v):
        for unit, k in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
            if v.endswith(unit):
                return float(v[: -len(unit)]) * k
        return float("nan")
    return f"{statistics.median(ms(r[1]) for r in rows):.2f} ms"
for route in ("introspect", "check"):
    for conns in (64, 256):
        base, head = cells[(route, conns, "base")], cells[(route, conns, "head")]
        if not base or not head:
            continue
        print(f"| {route} | {conns} | {med(base, 0):.0f} | {med(head, 0):.0f} | {med(head, 0) / med(base, 0):.2f} "
              f"| {med_latency(base)} | {med_latency(head)} | {med(base, 3):.1f} | {med(head, 3):.1f} "
              f"| {sum(r[2] for r in base)}, {sum(r[2] for r in head)} |")
PY
} >"$RESULTS"
echo
cat "$RESULTS"
if [ -n "$OUT" ]; then cp "$RESULTS" "$OUT"; fi
