# shellcheck shell=bash # sourced by chaos/lib/common.sh
# The verdict: goals checked against the numbers the load measured (chaos.json) or the
# experiment observed. The same code serves local and --k8s runs. Sourced by
# chaos/lib/common.sh.

# chaos_metric KEY: a number from $CHAOS_REPORT/chaos.json, or nothing if absent.
# Keys: requests failed deferred p50_ms p95_ms p99_ms max_ms, each also as KEY@PHASE,
# KEY:NAME and KEY:NAME@PHASE; stale_active revocations probes; see chaos/run.sh.
chaos_metric() {
    jq -r --arg k "$1" '.[$k] // empty' "$CHAOS_REPORT/chaos.json" 2>/dev/null
}

# chaos_expect LABEL VALUE OP LIMIT: records whether VALUE OP LIMIT holds (OP: < <= ==
# >= >). A missing VALUE fails.
chaos_expect() {
    local label=$1 value=$2 op=$3 limit=$4 ok
    case $op in '<' | '<=' | '==' | '>=' | '>') ;; *) die "chaos_expect: bad operator $op" ;; esac
    if [ -z "$value" ]; then
        ok=FAIL value="(not measured)"
    elif awk -v v="$value" -v l="$limit" "BEGIN { exit !((v + 0) $op (l + 0)) }"; then
        ok=PASS
    else
        ok=FAIL
    fi
    [ "$ok" = PASS ] || : >"$CHAOS_WORK/failed"
    printf '| %s | %s | %s %s %s |\n' "$ok" "$label" "$value" "$op" "$limit" >>"$CHAOS_WORK/verdict.rows"
    printf '    %s  %s: %s (goal %s %s)\n' "$ok" "$label" "$value" "$op" "$limit"
}

# chaos_note TEXT: a line under the verdict.
chaos_note() {
    printf -- '- %s\n' "$*" >>"$CHAOS_WORK/verdict.notes"
    say "$*"
}

# chaos_verdict_write RC: verdict.md from the rows and notes; returns 0 if passed.
chaos_verdict_write() {
    local rc=$1 verdict=PASSED
    if [ "$rc" -ne 0 ] || [ -f "$CHAOS_WORK/failed" ] || [ ! -s "$CHAOS_WORK/verdict.rows" ]; then verdict=FAILED; fi
    {
        # shellcheck disable=SC2016 # the backticks are Markdown, printed as they are
        printf '# Chaos experiment `%s`%s: %s\n\n' "$CHAOS_NAME" "$([ "$CHAOS_QUICK" = 1 ] && echo ' (quick)')" "$verdict"
        printf '%s\n\n' "${EXPERIMENT_SUMMARY:-}"
        printf 'Run %s on %s.\n\n' "$(date -u '+%Y-%m-%d %H:%M UTC')" "$(nproc) cores shared by every process of the experiment and the load generator"
        if [ -s "$CHAOS_WORK/verdict.rows" ]; then
            printf '| result | goal | measured |\n|---|---|---|\n'
            cat "$CHAOS_WORK/verdict.rows"
        fi
        [ "$rc" -eq 0 ] || printf '\nThe experiment stopped with an error (exit code %s) before its goals were all checked.\n' "$rc"
        if [ -s "$CHAOS_WORK/verdict.notes" ]; then printf '\n'; cat "$CHAOS_WORK/verdict.notes"; fi
        [ -f "$CHAOS_REPORT/summary.md" ] && printf '\nThe load during the experiment: [summary.md](summary.md) (latency and throughput charts, per phase).\n'
    } >"$CHAOS_REPORT/verdict.md"
    [ "$verdict" = PASSED ]
}
