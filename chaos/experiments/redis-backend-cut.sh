# shellcheck shell=bash disable=SC2034 # sourced by chaos/run.sh, whose library (chaos/lib) and verdict read the EXPERIMENT_SUMMARY and CHAOS_* set here
# redis-backend-cut: only the backend loses Redis (a Toxiproxy link between the backend
# and Redis is cut, live connections dropped); the proxies keep theirs and keep serving
# their entries. The revocation invariant must hold: a revocation the backend cannot
# publish answers 503 + Retry-After instead of 2xx, and its retry 2xx only once the
# markers are in (docs/caching.md, "When the markers cannot be written").

EXPERIMENT_SUMMARY="Cut the backend's link to Redis (Toxiproxy) under load while the proxies keep theirs: 0 'active' answers for credentials revoked with a 2xx, no failed request, the outbox empty after the link returns."

cut_timings() {
    if [ "$CHAOS_QUICK" = 1 ]; then echo "10 10 12 150"; else echo "30 30 40 200"; fi
}

experiment_run() {
    local before down after rate
    read -r before down after rate <<<"$(cut_timings)"
    chaos_toxiproxy_start
    CHAOS_PG_PORT=$(chaos_port)
    CHAOS_REDIS_PORT=$(chaos_port)
    chaos_pg_start postgres "$CHAOS_PG_PORT"
    chaos_redis_start redis "$CHAOS_REDIS_PORT"
    local link api metrics i port pmetrics
    link=$(chaos_port)
    chaos_toxi_create backend-redis "$link" "127.0.0.1:$CHAOS_REDIS_PORT"
    api=$(chaos_port) metrics=$(chaos_port)
    chaos_backend_start backend "$api" "$metrics" QUANTAID_REDIS_HOST="127.0.0.1:$link"
    CHAOS_BACKEND=127.0.0.1:$api
    CHAOS_TARGETS=""
    for i in 0 1; do
        port=$(chaos_port) pmetrics=$(chaos_port)
        chaos_proxy_start "proxy-$i" "$port" "$pmetrics" "$CHAOS_BACKEND"
        CHAOS_TARGETS+=${CHAOS_TARGETS:+,}http://127.0.0.1:$port
    done

    chaos_load_start $((before + down + after)) "$rate"
    sleep "$before"
    chaos_phase fault
    chaos_toxi_cut backend-redis
    sleep "$down"
    chaos_phase recovery
    chaos_toxi_restore backend-redis
    chaos_load_wait

    cut_goals
    chaos_expect "markers left in the outbox at the end" \
        "$(chaos_pg_psql postgres "$CHAOS_PG_PORT" -d quantaid -tAc 'SELECT count(*) FROM cache_invalidations')" '==' 0
}

# cut_goals: the goals the load measures, the same locally and on a cluster.
cut_goals() {
    chaos_expect "'active' answers for revoked credentials" "$(chaos_metric stale_active)" '==' 0
    chaos_expect "revocations checked on every replica" "$(chaos_metric revocations)" '>' 0
    chaos_expect "revocations answered 503 + Retry-After while cut off" "$(chaos_metric deferred)" '>' 0
    chaos_expect "failed requests (all phases)" "$(chaos_metric failed)" '==' 0
    chaos_note "p99 of lookups: $(chaos_metric 'p99_ms:lookup@before') ms before, $(chaos_metric 'p99_ms:lookup@fault') ms cut off, $(chaos_metric 'p99_ms:lookup@recovery') ms after"
    chaos_note "logouts never acknowledged (503, then the retry found the session ended): $(chaos_metric unacknowledged)"
}

experiment_k8s() {
    # The backend of one pod reaches Redis through the Toxiproxy sidecar of chaos/k8s/
    # (proxy `redis`); its proxy, and every other pod, keep their direct link. The cut is
    # made through the sidecar's API, as the local one.
    local before down after rate
    read -r before down after rate <<<"$(cut_timings)"
    chaos_k8s_setup
    chaos_k8s_toxiproxy "${CHAOS_K8S_BACKEND_POD:?set CHAOS_K8S_BACKEND_POD to a pod with the Toxiproxy sidecar (chaos/k8s/)}"
    chaos_load_start $((before + down + after)) "$rate"
    sleep "$before"
    chaos_phase fault
    chaos_toxi_cut redis
    sleep "$down"
    chaos_phase recovery
    chaos_toxi_restore redis
    chaos_load_wait
    cut_goals
}
