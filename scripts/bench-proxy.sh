#!/usr/bin/env bash
# Benchmarks the caching proxy against the backend and against a bare hyper server, in
# one run on this machine, and prints (and saves) the numbers:
#
#   throughput  wrk, closed loop, saturating: cached introspection and /v1/auth/check
#               through the proxy, uncached introspection straight to the backend, and
#               quantaid-hello (the ceiling), at 64, 256 and 1000 connections;
#   latency     oha at a fixed offered rate (open model, latency correction on), so the
#               percentiles are not the closed loop's own queue;
#   memory      the proxy's peak RSS (VmHWM) after the load.
#
#   scripts/bench-proxy.sh [--duration SECS] [--rate REQ_PER_S] [--latency-only] [--out FILE]
#
# It runs a stack of its own (scripts/stack.sh with QUANTAID_STACK_DIR) on separate
# ports and stops it at the end. All traffic goes to 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=15
RATE=10000
OUT=""
THROUGHPUT=yes
while [ $# -gt 0 ]; do
    case $1 in
    --duration) DURATION=$2; shift 2 ;;
    --rate) RATE=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --latency-only) THROUGHPUT=no; shift ;;
    *) echo "usage: $0 [--duration SECS] [--rate REQ_PER_S] [--latency-only] [--out FILE]" >&2; exit 2 ;;
    esac
done

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/quantaid-target}
TOOLS=${QUANTAID_TOOLS_DIR:-/var/tmp/quantaid-tools}
scripts/setup.sh >/dev/null
if ! command -v oha >/dev/null && [ ! -x "$TOOLS/bin/oha" ]; then
    echo "==> installing oha (fixed-rate load generator) into $TOOLS"
    cargo install --locked --root "$TOOLS" oha >/dev/null
fi
OHA=$(command -v oha || echo "$TOOLS/bin/oha")
cargo build --release -q -p quantaid-backend -p quantaid-proxy -p quantaid-loadtest

export QUANTAID_STACK_DIR=${QUANTAID_BENCH_STACK_DIR:-/var/tmp/quantaid-bench-stack}
export QUANTAID_PG_PORT=45432 QUANTAID_REDIS_PORT=46379
export QUANTAID_LISTEN_ADDR=127.0.0.1:48081 QUANTAID_METRICS_ADDR=127.0.0.1:49091
export QUANTAID_PROXY_LISTEN_ADDR=127.0.0.1:48080 QUANTAID_PROXY_METRICS_ADDR=127.0.0.1:49090
# Access log lines cost CPU per request: QUANTAID_BENCH_LOG_LEVEL=info measures them too.
export QUANTAID_LOG_LEVEL=${QUANTAID_BENCH_LOG_LEVEL:-warn}
PROXY=http://127.0.0.1:48080 BACKEND=http://127.0.0.1:48081 HELLO=http://127.0.0.1:48090

WORK=$(mktemp -d /tmp/quantaid-bench.XXXXXX)
HELLO_PID=""
cleanup() {
    if [ -n "$HELLO_PID" ]; then kill "$HELLO_PID" 2>/dev/null || true; fi
    scripts/stack.sh down >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

scripts/stack.sh up >"$WORK/up.log" 2>&1 || { tail -n 30 "$WORK/up.log"; exit 1; }
"$CARGO_TARGET_DIR/release/quantaid-hello" 127.0.0.1:48090 &
HELLO_PID=$!

# shellcheck disable=SC1091
. "$QUANTAID_STACK_DIR/demo.env"
BASIC=$(printf '%s:%s' "$DEMO_CLIENT_ID" "$DEMO_CLIENT_SECRET" | base64 -w0)
TOKEN=$(curl -fsS -u "$DEMO_CLIENT_ID:$DEMO_CLIENT_SECRET" -d grant_type=client_credentials "$PROXY/oauth/token" | jq -r .access_token)
# Warm the cache and this replica's knowledge of the client.
curl -fsS -o /dev/null -u "$DEMO_CLIENT_ID:$DEMO_CLIENT_SECRET" --data-urlencode "token=$TOKEN" "$PROXY/oauth/introspect"
curl -fsS -o /dev/null -H "Authorization: Bearer $TOKEN" "$PROXY/v1/auth/check"

cat >"$WORK/introspect.lua" <<LUA
wrk.method = "POST"
wrk.body = "token=$TOKEN"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Authorization"] = "Basic $BASIC"
done = function(summary, latency, requests)
  io.write(string.format("ERRORS %d\n", summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
LUA
cat >"$WORK/get.lua" <<LUA
wrk.headers["Authorization"] = "Bearer $TOKEN"
done = function(summary, latency, requests)
  io.write(string.format("ERRORS %d\n", summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
LUA

RESULTS=$WORK/results.md
{
    echo "Conditions: $(nproc) cores ($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n 1)), kernel $(uname -r);"
    echo "wrk -t2 for ${DURATION}s per cell; load generator, proxy, backend, Redis and PostgreSQL share the machine."
    echo
    echo "| target | connections | req/s | p50 | p99 | non-2xx or socket errors |"
    echo "|---|---|---|---|---|---|"
} >"$RESULTS"

# wrk_row NAME URL SCRIPT CONNECTIONS
wrk_row() {
    local out rps p50 p99 errors
    out=$(wrk -t2 -c"$4" -d"${DURATION}s" --latency -s "$3" "$2" 2>&1)
    rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
    p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
    p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
    errors=$(awk '/^ERRORS/ {print $2}' <<<"$out")
    echo "| $1 | $4 | $rps | $p50 | $p99 | ${errors:-?} |" | tee -a "$RESULTS"
    printf '%s\t%s\t%s\n' "$1" "$4" "$rps" >>"$WORK/rps.tsv"
}

# The goal is stated against the ceiling measured in the same run: each cached row's
# throughput as a fraction of quantaid-hello's at the same connection count.
ratio_rows() {
    {
        echo
        echo "Cached throughput as a fraction of the ceiling (same run, same connections):"
        echo
        echo "| target | connections | fraction of the ceiling |"
        echo "|---|---|---|"
        awk -F'\t' '$1 ~ /ceiling/ {ceiling[$2] = $3} $1 ~ /\(cached\)/ {rows[++n] = $0}
            END {for (i = 1; i <= n; i++) {split(rows[i], f, "\t"); if (ceiling[f[2]] > 0) printf "| %s | %s | %.2f |\n", f[1], f[2], f[3] / ceiling[f[2]]}}' \
            "$WORK/rps.tsv"
    } | tee -a "$RESULTS"
}

echo "==> throughput (closed loop)"
[ "$THROUGHPUT" = yes ] && for c in 64 256 1000; do
    wrk_row "proxy: introspection (cached)" "$PROXY/oauth/introspect" "$WORK/introspect.lua" "$c"
    wrk_row "proxy: /v1/auth/check (cached)" "$PROXY/v1/auth/check" "$WORK/get.lua" "$c"
    wrk_row "backend: introspection (uncached)" "$BACKEND/oauth/introspect" "$WORK/introspect.lua" "$c"
    wrk_row "bare hyper hello-world (ceiling)" "$HELLO/" "$WORK/get.lua" "$c"
    echo "$c connections: $(awk '/^VmHWM/ {print $2, $3}' "/proc/$(cat "$QUANTAID_STACK_DIR/proxy.pid")/status")" >>"$WORK/rss.txt"
done
[ "$THROUGHPUT" = yes ] && ratio_rows

# oha_row NAME ARGS...: fixed offered rate, latency from the scheduled send time.
oha_row() {
    local name=$1 json
    shift
    # A short unrecorded run first, so connection set-up is not measured.
    "$OHA" --no-tui --output-format json -z 3s -q "$RATE" -c 256 "$@" >/dev/null
    json=$("$OHA" --no-tui --output-format json -z "${DURATION}s" -q "$RATE" --latency-correction -c 256 "$@")
    jq -r --arg name "$name" --arg rate "$RATE" '"| \($name) | \($rate) | \(.summary.requestsPerSec | floor) | \((.latencyPercentiles.p50 * 1000000 | floor) / 1000) ms | \((.latencyPercentiles.p99 * 1000000 | floor) / 1000) ms | \((.latencyPercentiles["p99.9"] * 1000000 | floor) / 1000) ms | \(1 - .summary.successRate) |"' <<<"$json" | tee -a "$RESULTS"
}

{
    echo
    echo "Latency at a fixed offered rate (oha -q $RATE, 256 connections, latency correction, ${DURATION}s after a 3 s warm-up):"
    echo
    echo "| target | offered req/s | achieved req/s | p50 | p99 | p99.9 | error rate |"
    echo "|---|---|---|---|---|---|---|"
} >>"$RESULTS"
echo "==> latency (open model)"
oha_row "proxy: introspection (cached)" -m POST -H "Authorization: Basic $BASIC" -T application/x-www-form-urlencoded -d "token=$TOKEN" "$PROXY/oauth/introspect"
oha_row "proxy: /v1/auth/check (cached)" -H "Authorization: Bearer $TOKEN" "$PROXY/v1/auth/check"
oha_row "bare hyper hello-world" "$HELLO/"

PROXY_PID=$(cat "$QUANTAID_STACK_DIR/proxy.pid")
{
    echo
    if [ -f "$WORK/rss.txt" ]; then
        echo "Proxy peak RSS (VmHWM) after the throughput cells up to:"
        echo
        sed 's/^/- /' "$WORK/rss.txt"
        echo
    fi
    echo "Proxy memory after the runs: $(awk '/^VmHWM/ {print $2, $3}' "/proc/$PROXY_PID/status") peak RSS, $(awk '/^VmRSS/ {print $2, $3}' "/proc/$PROXY_PID/status") now."
} | tee -a "$RESULTS"

echo
cat "$RESULTS"
if [ -n "$OUT" ]; then cp "$RESULTS" "$OUT"; fi
