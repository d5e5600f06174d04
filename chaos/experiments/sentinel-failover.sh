# shellcheck shell=bash disable=SC2034 # sourced by chaos/run.sh, whose library (chaos/lib) and verdict read the EXPERIMENT_SUMMARY and CHAOS_* set here
# sentinel-failover: a Redis primary, one replica and three redis-sentinel processes;
# both sidecars find the master through Sentinel (QUANTAID_REDIS_SENTINELS). The primary
# is SIGKILLed under load, Sentinel promotes the replica, the old primary comes back
# (and Sentinel makes it a replica). Goals: both sidecars follow the new primary within
# 5 s, no failed request, no lost session, and no revoked credential answered "active":
# the backend WAITs for a replica before a revocation answers 2xx, so its markers
# survive the failover (docs/caching.md, "Redis Sentinel").

EXPERIMENT_SUMMARY="SIGKILL the Redis primary under Sentinel: both sidecars follow the promoted replica within 5 s, 0 failed requests, 0 lost sessions, 0 'active' answers for revoked credentials."

MASTER_NAME=quantaid

failover_timings() {
    # before, until the old primary returns, after, rate.
    if [ "$CHAOS_QUICK" = 1 ]; then echo "10 10 15 150"; else echo "30 20 40 200"; fi
}

install_sentinel() {
    command -v redis-sentinel >/dev/null && return 0
    say "installing redis-sentinel (Debian package)"
    local sudo=()
    is_root || sudo=(sudo)
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends redis-sentinel >/dev/null
    command -v redis-sentinel >/dev/null || die "redis-sentinel is not installed"
}

# start_sentinel NAME PORT PRIMARY_PORT: quorum 2 of 3, the primary declared down after 1 s.
start_sentinel() {
    local name=$1 port=$2 primary=$3 dir=$CHAOS_WORK/$1
    mkdir -p "$dir"
    (
        umask 077
        # Sentinel rewrites this file as it learns the group; it stays in the scratch dir.
        cat >"$dir/sentinel.conf" <<CONF
port $port
bind 127.0.0.1
dir $dir
sentinel resolve-hostnames no
sentinel monitor $MASTER_NAME 127.0.0.1 $primary 2
sentinel auth-pass $MASTER_NAME $QUANTAID_REDIS_PASSWORD
sentinel down-after-milliseconds $MASTER_NAME 1000
sentinel failover-timeout $MASTER_NAME 10000
sentinel parallel-syncs $MASTER_NAME 1
CONF
    )
    chaos_spawn "$name" redis-sentinel "$dir/sentinel.conf"
    chaos_redis_wait "$port" || die "sentinel $name did not start"
}

# master_port SENTINEL_PORT: the port the sentinel names as master.
master_port() {
    redis-cli -h 127.0.0.1 -p "$1" sentinel get-master-addr-by-name "$MASTER_NAME" 2>/dev/null | sed -n 2p
}

# log_names_port LOG PORT SINCE_LINE: whether LOG, after line SINCE_LINE, says it connected to PORT.
connected_since() {
    tail -n +"$(($3 + 1))" "$1" 2>/dev/null | grep 'connected to Redis' | grep -q "127.0.0.1:$2"
}

experiment_run() {
    local before down after rate
    read -r before down after rate <<<"$(failover_timings)"
    install_sentinel
    local primary replica s1 s2 s3
    primary=$(chaos_port) replica=$(chaos_port) s1=$(chaos_port) s2=$(chaos_port) s3=$(chaos_port)
    CHAOS_PG_PORT=$(chaos_port)
    chaos_pg_start postgres "$CHAOS_PG_PORT"
    chaos_redis_start redis-a "$primary"
    chaos_redis_start redis-b "$replica" "replicaof 127.0.0.1 $primary"
    start_sentinel sentinel-1 "$s1" "$primary"
    start_sentinel sentinel-2 "$s2" "$primary"
    start_sentinel sentinel-3 "$s3" "$primary"
    local sentinels="127.0.0.1:$s1,127.0.0.1:$s2,127.0.0.1:$s3"
    local -a via_sentinel=(QUANTAID_REDIS_SENTINELS="$sentinels" QUANTAID_REDIS_MASTER_NAME="$MASTER_NAME")
    CHAOS_REDIS_PORT=$primary # unused by the sidecars: Sentinel wins over QUANTAID_REDIS_HOST
    local api metrics i port pmetrics
    api=$(chaos_port) metrics=$(chaos_port)
    chaos_backend_start backend "$api" "$metrics" "${via_sentinel[@]}"
    CHAOS_BACKEND=127.0.0.1:$api
    CHAOS_TARGETS=""
    for i in 0 1; do
        port=$(chaos_port) pmetrics=$(chaos_port)
        chaos_proxy_start "proxy-$i" "$port" "$pmetrics" "$CHAOS_BACKEND" "${via_sentinel[@]}"
        CHAOS_TARGETS+=${CHAOS_TARGETS:+,}http://127.0.0.1:$port
    done
    CHAOS_CONDITIONS="Redis primary + 1 replica + 3 redis-sentinel (quorum 2, down-after 1 s)"

    chaos_load_start $((before + down + after)) "$rate"
    sleep "$before"
    local -A seen=()
    local logs=(backend proxy-0 proxy-1) name lines=()
    for name in "${logs[@]}"; do lines+=("$(wc -l <"$CHAOS_WORK/$name.log")"); done

    chaos_phase fault
    local killed_ms promoted_ms=""
    killed_ms=$(date +%s%3N)
    chaos_kill redis-a KILL
    # Until the old primary returns: when Sentinel promoted the replica, and when each
    # sidecar connected to it.
    local deadline=$((killed_ms + down * 1000)) now
    while now=$(date +%s%3N) && ((now < deadline)); do
        if [ -z "$promoted_ms" ] && [ "$(master_port "$s1")" = "$replica" ]; then promoted_ms=$now; fi
        if [ -n "$promoted_ms" ]; then
            for i in "${!logs[@]}"; do
                name=${logs[i]}
                if [ -z "${seen[$name]:-}" ] && connected_since "$CHAOS_WORK/$name.log" "$replica" "${lines[i]}"; then
                    seen[$name]=$now
                fi
            done
        fi
        sleep 0.1
    done
    chaos_phase recovery
    # The old primary returns empty and, as an init script would, asks Sentinel whom to
    # replicate (Sentinel would also demote it by itself, after up to 10 s).
    local master
    master=$(master_port "$s1")
    chaos_redis_start redis-a "$primary" "replicaof 127.0.0.1 ${master:-$replica}"
    chaos_load_wait

    local role
    role=$(chaos_redis_cli "$primary" role 2>/dev/null | head -n 1)
    failover_load_goals
    if [ -n "$promoted_ms" ]; then
        chaos_note "Sentinel promoted the replica $((promoted_ms - killed_ms))ms after the kill"
    else
        chaos_note "Sentinel did not promote the replica within $down s"
    fi
    for name in "${logs[@]}"; do
        local took=""
        [ -n "${seen[$name]:-}" ] && took=$(awk -v ms=$((seen[$name] - killed_ms)) 'BEGIN{printf "%.1f", ms/1000}')
        chaos_expect "$name connected to the new primary (s after the kill)" "$took" '<=' 5
    done
    chaos_note "the old primary came back as: $role"
    chaos_note "revocations answered 503 + Retry-After (no replica to acknowledge the markers, or no master): $(chaos_metric deferred)"
    chaos_note "p99 of lookups: $(chaos_metric 'p99_ms:lookup@before') ms before, $(chaos_metric 'p99_ms:lookup@fault') ms during the failover, $(chaos_metric 'p99_ms:lookup@recovery') ms after"
}

# failover_load_goals: the goals the load measures, the same locally and on a cluster.
failover_load_goals() {
    chaos_expect "failed requests (all phases)" "$(chaos_metric failed)" '==' 0
    chaos_expect "lost sessions (session lookups or checks that failed)" \
        "$(($(chaos_metric failed:session) + $(chaos_metric failed:check)))" '==' 0
    chaos_expect "'active' answers for revoked credentials" "$(chaos_metric stale_active)" '==' 0
    chaos_expect "revocations checked on every replica" "$(chaos_metric revocations)" '>' 0
}

experiment_k8s() {
    # Sentinel-managed Redis in the cluster: ask a Sentinel which pod holds the master,
    # delete that pod, and ask again until a Sentinel names a master in another pod.
    local before down after rate
    read -r before down after rate <<<"$(failover_timings)"
    chaos_k8s_setup
    local addr victim
    addr=$(chaos_k8s_sentinel_master) || die "no Sentinel of CHAOS_K8S_SENTINEL_PODS named the master ${CHAOS_K8S_MASTER_NAME:-mymaster}"
    victim=$(chaos_k8s_pod_of "${addr% *}") || die "no pod in namespace $K8S_NS has the master's address ${addr% *}"
    say "Sentinel names $addr (pod $victim) as the master"
    chaos_load_start $((before + down + after)) "$rate"
    sleep "$before"

    chaos_phase fault
    local killed_ms promoted_ms="" now new="" pod=""
    killed_ms=$(date +%s%3N)
    chaos_k8s_kill_pod "$victim"
    local deadline=$((killed_ms + down * 1000))
    while now=$(date +%s%3N) && ((now < deadline)); do
        if new=$(chaos_k8s_sentinel_master "$victim") && [ "$new" != "$addr" ] \
            && pod=$(chaos_k8s_pod_of "${new% *}") && [ "$pod" != "$victim" ]; then
            promoted_ms=$now
            break
        fi
        sleep 0.2
    done
    local rest=$(((deadline - $(date +%s%3N)) / 1000))
    if ((rest > 0)); then sleep "$rest"; fi

    chaos_phase recovery
    chaos_load_wait
    failover_load_goals
    local took=""
    [ -n "$promoted_ms" ] && took=$(awk -v ms=$((promoted_ms - killed_ms)) 'BEGIN{printf "%.1f", ms/1000}')
    # The sidecars' own reconnection is not visible from here (their logs are the pods');
    # a Sentinel naming the new master bounds when they can follow it.
    chaos_expect "a Sentinel named a master in another pod (s after deleting $victim)" "$took" '<=' 5
    if [ -n "$promoted_ms" ]; then
        chaos_note "Sentinel named $new (pod $pod) after $victim, the master, was deleted"
        chaos_note "$victim came back as: $(chaos_k8s_redis_cli "$victim" role 2>/dev/null | head -n 1 || echo 'not answering')"
    else
        chaos_note "no Sentinel named a master other than $victim within $down s"
    fi
}
