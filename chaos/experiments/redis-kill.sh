# shellcheck shell=bash disable=SC2034 # sourced by chaos/run.sh, whose library (chaos/lib) and verdict read the EXPERIMENT_SUMMARY and CHAOS_* set here
# redis-kill: SIGKILL the Redis both proxies cache in (and the backend writes revocation
# markers to) in the middle of steady load, restart it empty after a while.
# Goals (docs/chaos.md): no failed request; lookups stay fast while the proxies fall back
# to the backend; cache hits resume without restarting anything; no revoked token or
# session is ever answered "active" after its revocation returned 2xx.

EXPERIMENT_SUMMARY="SIGKILL Redis under load, restart it empty: 0 failed requests, p99 < 50 ms during the fallback, hits resume by themselves, 0 'active' answers for revoked credentials."

redis_kill_timings() {
    # before, down, after (seconds) and the offered rate.
    if [ "$CHAOS_QUICK" = 1 ]; then echo "10 8 12 150"; else echo "30 20 40 200"; fi
}

experiment_run() {
    local before down after rate
    read -r before down after rate <<<"$(redis_kill_timings)"
    chaos_topology_basic 2
    local hits_before
    chaos_load_start $((before + down + after)) "$rate"
    sleep "$before"

    chaos_phase fault
    chaos_kill redis KILL
    sleep "$down"

    chaos_phase recovery
    hits_before=$(chaos_prom "${CHAOS_PROXY_METRICS%% *}" 'quantaid_cache_hits_total')
    chaos_redis_start redis "$CHAOS_REDIS_PORT"
    local i resumed=""
    for ((i = 0; i < 100; i++)); do
        if [ "$(chaos_prom "${CHAOS_PROXY_METRICS%% *}" 'quantaid_cache_hits_total')" != "$hits_before" ] \
            && [ "$(chaos_prom "${CHAOS_PROXY_METRICS%% *}" 'quantaid_redis_up')" = 1 ]; then
            resumed=$i
            break
        fi
        sleep 0.1
    done
    chaos_load_wait

    redis_goals "$resumed"
}

# redis_goals RESUMED_TENTHS: the goals; RESUMED_TENTHS is how long hits took to resume
# (tenths of a second), empty if they did not, `not-measured` on Kubernetes.
redis_goals() {
    chaos_expect "failed requests (all phases)" "$(chaos_metric failed)" '==' 0
    chaos_expect "'active' answers for revoked credentials" "$(chaos_metric stale_active)" '==' 0
    chaos_expect "revocations checked on every replica" "$(chaos_metric revocations)" '>' 0
    chaos_expect "p99 of lookups while Redis is down (ms)" "$(chaos_metric 'p99_ms:lookup@fault')" '<' 50
    case $1 in
    not-measured) ;;
    "") chaos_expect "seconds until cache hits resumed, no restart" "" '<=' 10 ;;
    *) chaos_expect "seconds until cache hits resumed, no restart" "$(awk -v t="$1" 'BEGIN{print t/10}')" '<=' 10 ;;
    esac
    chaos_note "revocations answered 503 + Retry-After while Redis was unreachable (retried until 2xx, not failures): $(chaos_metric deferred)"
}

experiment_k8s() {
    local before down after rate
    read -r before down after rate <<<"$(redis_kill_timings)"
    chaos_k8s_setup
    local pod=${CHAOS_K8S_REDIS_POD:-redis-0}
    chaos_load_start $((before + down + after)) "$rate"
    sleep "$before"
    chaos_phase fault
    chaos_k8s_kill_pod "$pod"
    sleep "$down"
    chaos_phase recovery
    chaos_k8s_wait_ready "statefulset.kubernetes.io/pod-name=$pod" 120
    chaos_load_wait
    redis_goals not-measured
}
