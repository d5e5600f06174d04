# shellcheck shell=bash # sourced by chaos/run.sh
# db-primary-kill: PostgreSQL primary + streaming replica; SIGKILL the primary (postmaster
# and every server process, as a host crash), then promote the replica, as a failover
# manager would. The backend lists both servers (QUANTAID_DB_HOST with target_session_attrs=read-write)
# and must find the new primary by itself.
# Goals (docs/chaos.md): the backend writes to the promoted replica within 10 s of the
# promotion, without a restart or a configuration change; cached lookups are unaffected
# throughout (no failure, p99 as before); with synchronous replication (the default here,
# CHAOS_PG_SYNC=0 turns it off) no write acknowledged before the crash is lost.

# shellcheck disable=SC2034 # the variables below are read by chaos/lib and chaos/run.sh
EXPERIMENT_SUMMARY="SIGKILL the PostgreSQL primary under load, promote its streaming replica: the backend writes to the new primary by itself within 10 s, cached lookups never fail, no acknowledged write is lost (synchronous replication)."

STANDBY_NAME=quantaid_standby

db_primary_kill_timings() {
    # before, until the promotion, after (seconds), the offered rate.
    if [ "$CHAOS_QUICK" = 1 ]; then echo "10 5 15 150"; else echo "30 10 40 300"; fi
}

# pg_postmaster NAME: the postmaster's pid (first line of postmaster.pid).
pg_postmaster() { head -n 1 "$CHAOS_WORK/$1/data/postmaster.pid"; }

# pg_standby_start NAME PORT PRIMARY_NAME PRIMARY_PORT: a streaming replica of the primary,
# from pg_basebackup over the primary's Unix socket (local connections are trusted),
# connected as $STANDBY_NAME.
pg_standby_start() {
    local name=$1 port=$2 primary=$3 primary_port=$4 dir=$CHAOS_WORK/$1 sock
    local primary_sock
    primary_sock=$(cat "$CHAOS_WORK/$primary/socket")
    sock=$(mktemp -d /tmp/quantaid-chaos-pg.XXXXXX)
    mkdir -p "$dir"
    chmod 700 "$dir" "$sock"
    if is_root; then chown postgres: "$dir" "$sock"; fi
    pg_as "$PG_BIN/pg_basebackup" -h "$primary_sock" -p "$primary_port" -U postgres -D "$dir/data" \
        -X stream --checkpoint=fast --no-sync >"$CHAOS_WORK/$name.basebackup.log" 2>&1 \
        || die "pg_basebackup of $primary failed (log: $CHAOS_WORK/$name.basebackup.log)"
    # The copied postgresql.conf includes chaos-runtime.conf: this server's port and socket.
    printf "port = %s\nunix_socket_directories = '%s'\nprimary_conninfo = 'host=%s port=%s user=postgres application_name=%s'\n" \
        "$port" "$sock" "$primary_sock" "$primary_port" "$STANDBY_NAME" | pg_as tee "$dir/data/chaos-runtime.conf" >/dev/null
    pg_as touch "$dir/data/standby.signal"
    echo "$dir/data" >>"$CHAOS_WORK/pgclusters"
    pg_as "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 start >/dev/null \
        || { tail -n 20 "$dir/postgres.log" >&2; die "standby $name did not start"; }
    echo "$sock" >"$dir/socket"
}

# pg_crash NAME: SIGKILL to the postmaster and all its children at once (a host crash:
# nothing is flushed, no connection is closed politely).
pg_crash() {
    local pid children
    pid=$(pg_postmaster "$1")
    children=$(cat "/proc/$pid/task/$pid/children" 2>/dev/null || true)
    # shellcheck disable=SC2086 # a list of pids
    kill -KILL "$pid" $children 2>/dev/null || true
    local i
    for ((i = 0; i < 100; i++)); do
        pid_running "$pid" || return 0
        sleep 0.1
    done
    die "the postmaster of $1 (pid $pid) did not die"
}

# writer_start URL SECS: for SECS seconds, creates one user every 200 ms through URL (the API, so the pool and
# the failover logic are on the path); each acknowledged (201) username goes to
# $CHAOS_WORK/acked with the time, every other answer to $CHAOS_WORK/refused.
# The admin token is read from a mode-600 header file, never from a command line.
writer_start() {
    local url=$1 secs=$2
    (
        umask 077
        printf 'Authorization: Bearer %s\n' "$ADMIN_TOKEN" >"$CHAOS_WORK/admin.header"
    )
    : >"$CHAOS_WORK/acked"
    : >"$CHAOS_WORK/refused"
    cat >"$CHAOS_WORK/writer.sh" <<'EOF'
#!/usr/bin/env bash
# Bounded: stops by itself after $2 seconds.
url=$1 secs=$2 work=$3
end=$(($(date +%s) + secs)) n=0
while [ "$(date +%s)" -lt "$end" ]; do
    n=$((n + 1))
    name=chaoswriter$n
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 -X POST "$url/v1/users" \
        -H @"$work/admin.header" -H 'Content-Type: application/json' \
        --data "{\"username\":\"$name\",\"email\":\"$name@example.com\",\"password\":\"writer password $n\"}")
    now=$(date +%s%3N)
    if [ "$code" = 201 ]; then echo "$now $name" >>"$work/acked"; else echo "$now $code" >>"$work/refused"; fi
    sleep 0.2
done
EOF
    chmod 700 "$CHAOS_WORK/writer.sh"
    chaos_spawn writer "$CHAOS_WORK/writer.sh" "$url" "$secs" "$CHAOS_WORK"
}

experiment_run() {
    local before until_promote after rate sync=${CHAOS_PG_SYNC:-1}
    read -r before until_promote after rate <<<"$(db_primary_kill_timings)"
    local primary_port standby_port
    primary_port=$(chaos_port) standby_port=$(chaos_port)
    chaos_pg_start pg-primary "$primary_port" "wal_level = replica" "max_wal_senders = 5" "wal_keep_size = '64MB'"
    pg_standby_start pg-standby "$standby_port" pg-primary "$primary_port"
    if [ "$sync" = 1 ]; then
        # On the primary only (ALTER SYSTEM writes its own postgresql.auto.conf, which the
        # replica does not get): once promoted, the replica has no standby to wait for.
        chaos_pg_psql pg-primary "$primary_port" -d postgres \
            -c "ALTER SYSTEM SET synchronous_standby_names = '$STANDBY_NAME'" \
            -c "ALTER SYSTEM SET synchronous_commit = 'on'" -c "SELECT pg_reload_conf()" >/dev/null
    fi
    local i state=""
    for ((i = 0; i < 100; i++)); do
        state=$(chaos_pg_psql pg-primary "$primary_port" -d postgres -Atc \
            "SELECT sync_state FROM pg_stat_replication WHERE application_name = '$STANDBY_NAME'")
        [ "$state" = "$([ "$sync" = 1 ] && echo sync || echo async)" ] && break
        sleep 0.1
    done
    [ -n "$state" ] || die "the standby is not streaming from the primary"
    say "PostgreSQL primary :$primary_port, streaming replica :$standby_port ($state)"

    CHAOS_PG_PORT=$primary_port
    CHAOS_REDIS_PORT=$(chaos_port)
    chaos_redis_start redis "$CHAOS_REDIS_PORT"
    local api backend_metrics
    api=$(chaos_port) backend_metrics=$(chaos_port)
    # Both servers, primary first; the backend keeps the one that accepts writes.
    chaos_backend_start backend "$api" "$backend_metrics" \
        QUANTAID_DB_HOST=127.0.0.1,127.0.0.1 QUANTAID_DB_PORT="$primary_port,$standby_port"
    CHAOS_TARGETS="" CHAOS_PROXY_METRICS=""
    local port metrics
    for i in 0 1; do
        port=$(chaos_port) metrics=$(chaos_port)
        chaos_proxy_start "proxy-$i" "$port" "$metrics" "127.0.0.1:$api"
        CHAOS_TARGETS+=${CHAOS_TARGETS:+,}http://127.0.0.1:$port
        CHAOS_PROXY_METRICS+=${CHAOS_PROXY_METRICS:+ }http://127.0.0.1:$metrics/metrics
    done
    CHAOS_CONDITIONS="PostgreSQL primary + streaming replica ($state), backend QUANTAID_DB_HOST lists both"

    chaos_load_start $((before + until_promote + after)) "$rate"
    writer_start "${CHAOS_TARGETS%%,*}" $((before + until_promote + after))
    sleep "$before"

    chaos_phase fault
    local kill_ms promote_ms promoted_ms
    kill_ms=$(date +%s%3N)
    pg_crash pg-primary
    say "primary killed; promoting the replica in $until_promote s"
    sleep "$until_promote"

    chaos_phase recovery
    promote_ms=$(date +%s%3N)
    pg_as "$PG_BIN/pg_ctl" -D "$CHAOS_WORK/pg-standby/data" -w -t 60 promote >/dev/null || die "promotion failed"
    promoted_ms=$(date +%s%3N)
    say "replica promoted in $((promoted_ms - promote_ms)) ms"
    chaos_load_wait
    chaos_kill writer

    db_primary_kill_goals "$kill_ms" "$promote_ms" "$promoted_ms" "$standby_port" "$sync"
}

# db_primary_kill_goals KILL_MS PROMOTE_MS PROMOTED_MS NEW_PRIMARY_PORT SYNC
db_primary_kill_goals() {
    local kill_ms=$1 promote_ms=$2 promoted_ms=$3 new_port=$4 sync=$5
    # The first write acknowledged after the promotion began, by the writer and by the load.
    local first_ack
    first_ack=$(awk -v t="$promote_ms" '$1 >= t {print $1; exit}' "$CHAOS_WORK/acked")
    if [ -n "$first_ack" ]; then
        chaos_expect "seconds from the promotion to the first write on the new primary" \
            "$(awk -v a="$first_ack" -v p="$promote_ms" 'BEGIN{printf "%.2f", (a - p) / 1000}')" '<=' 10
        chaos_note "writes were refused for $(awk -v a="$first_ack" -v k="$kill_ms" 'BEGIN{printf "%.2f", (a - k) / 1000}') s from the crash (the promotion itself took $((promoted_ms - promote_ms)) ms)"
    else
        chaos_expect "seconds from the promotion to the first write on the new primary" "" '<=' 10
    fi
    # Every refusal must be a 503 (with Retry-After, which the API always sends with it).
    chaos_expect "writer answers other than 201 or 503" "$(awk '$2 != 503' "$CHAOS_WORK/refused" | wc -l)" '==' 0
    chaos_expect "cached lookups failed (session, check, introspect)" "$(chaos_metric 'failed:lookup')" '==' 0
    chaos_expect "p99 of cached lookups while there is no primary (ms)" "$(chaos_metric 'p99_ms:lookup@fault')" '<=' 50
    chaos_expect "'active' answers for revoked credentials" "$(chaos_metric stale_active)" '==' 0

    # Acknowledged writes on the new primary.
    local acked found
    acked=$(wc -l <"$CHAOS_WORK/acked")
    found=$(awk '{print $2}' "$CHAOS_WORK/acked" | {
        printf 'SELECT count(*) FROM users WHERE username IN ('
        sed "s/.*/'&'/" | paste -sd, -
        printf ');\n'
    } | chaos_pg_psql pg-standby "$new_port" -d quantaid -At)
    local before_kill
    before_kill=$(awk -v t="$kill_ms" '$1 < t' "$CHAOS_WORK/acked" | wc -l)
    chaos_note "writer: $acked users acknowledged ($before_kill before the crash), $(wc -l <"$CHAOS_WORK/refused") refused"
    if [ "$sync" = 1 ]; then
        chaos_expect "acknowledged writes missing on the new primary (synchronous replication)" $((acked - found)) '==' 0
    else
        chaos_note "asynchronous replication: $((acked - found)) of $acked acknowledged writes missing on the new primary (not a goal: the trade-off docs/chaos.md describes)"
    fi
    chaos_note "load: $(chaos_metric 'failed:token') token grants and $(chaos_metric 'failed:login') logins failed (503) while there was no primary"
}

experiment_k8s() {
    # On a cluster, the database's own failover (an operator such as CloudNativePG or
    # Patroni) promotes the replica; this deletes the primary's pod and checks the goals
    # that the load measures.
    local before until_promote after rate
    read -r before until_promote after rate <<<"$(db_primary_kill_timings)"
    chaos_k8s_setup
    local pod=${CHAOS_K8S_PG_PRIMARY_POD:?set CHAOS_K8S_PG_PRIMARY_POD to the PostgreSQL primary pod}
    chaos_load_start $((before + until_promote + after)) "$rate"
    sleep "$before"
    chaos_phase fault
    chaos_k8s_kill_pod "$pod"
    sleep "$until_promote"
    chaos_phase recovery
    chaos_load_wait
    chaos_expect "cached lookups failed (session, check, introspect)" "$(chaos_metric 'failed:lookup')" '==' 0
    chaos_expect "token grants failed once recovered" "$(chaos_metric 'failed:token@recovery')" '==' 0
    chaos_expect "'active' answers for revoked credentials" "$(chaos_metric stale_active)" '==' 0
}
