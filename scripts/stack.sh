#!/usr/bin/env bash
# Runs the whole QuantaID stack on this machine, without Docker: PostgreSQL (with
# pg_stat_statements) + Redis + the identity backend + the caching proxy, plus demo data.
#
#   scripts/stack.sh [up]     install what is missing, build, start everything, print how to use it
#   scripts/stack.sh down     stop everything (all data is kept for the next `up`)
#   scripts/stack.sh status   show what is running (exit 0 only when everything is)
#   scripts/stack.sh restart  down, then up (e.g. to run a freshly built backend)
#
# State lives in .stack/ (gitignored): the Postgres cluster, Redis data, logs, pid
# files, generated secrets (secrets.env) and the demo credentials (demo.env).
#
# Settings (environment; the values of the last `up` are remembered in .stack/stack.env):
#   QUANTAID_PG_PORT       PostgreSQL port           (default 55432; 5432 is left to a system Postgres)
#   QUANTAID_REDIS_PORT    Redis port                (default 56379)
#   QUANTAID_LISTEN_ADDR   backend API address       (default 127.0.0.1:8081)
#   QUANTAID_METRICS_ADDR  backend metrics address   (default 127.0.0.1:9091)
#   QUANTAID_PROXY_LISTEN_ADDR   proxy address, where clients go (default 127.0.0.1:8080)
#   QUANTAID_PROXY_METRICS_ADDR  proxy metrics address            (default 127.0.0.1:9090)
#   QUANTAID_STACK_DIR     state directory           (default <repo>/.stack)
#   CARGO_TARGET_DIR       cargo build directory     (default <repo>/target)
#   QUANTAID_PG_BIN        PostgreSQL server binaries (default: newest /usr/lib/postgresql/<ver>/bin)
# Any other QUANTAID_* setting in the environment (e.g. QUANTAID_LOG_LEVEL) is passed
# through to the backend and the proxy, and so are the OTEL_* ones; a set
# OTEL_RESOURCE_ATTRIBUTES gets each sidecar's container name added, as in the Helm chart's pods.
#
# Services are started in the order of SERVICES and stopped in reverse; each service
# has start_/stop_/running_/describe_ functions.
set -euo pipefail

ORIG_PWD=$PWD
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

SERVICES=(postgres redis backend proxy)

# ---------------------------------------------------------------------------- helpers

say() { printf '==> %s\n' "$*"; }
warn() { printf 'stack: warning: %s\n' "$*" >&2; }
die() { printf 'stack: error: %s\n' "$*" >&2; exit 1; }

# A random secret from /dev/urandom: letters and digits only (safe in URLs, JSON, shell).
gen_secret() { head -c 24 /dev/urandom | base64 | tr -d '/+=\n'; }

# kv_get KEY FILE: the value of KEY=value in FILE (last one wins), or nothing.
kv_get() { if [ -f "$2" ]; then sed -n "s/^$1=//p" "$2" | tail -n 1; fi; }

is_root() { [ "$(id -u)" -eq 0 ]; }

# PostgreSQL refuses to run as root: run its tools as the `postgres` system user then.
as_pg() {
    if is_root; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi
}

# otel_container NAME: adds k8s.container.name=NAME to a set OTEL_RESOURCE_ATTRIBUTES (in
# the caller's subshell, for the one sidecar it starts), as deploy/k8s/quantaid does for the
# pod's containers, so the sidecars' OTLP logs say which container wrote them.
otel_container() {
    if [ -n "${OTEL_RESOURCE_ATTRIBUTES:-}" ] && [[ $OTEL_RESOURCE_ATTRIBUTES != *k8s.container.name=* ]]; then
        export OTEL_RESOURCE_ATTRIBUTES=$OTEL_RESOURCE_ATTRIBUTES,k8s.container.name=$1
    fi
}

# port_open HOST PORT: something accepts connections there.
port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# pid_alive PIDFILE NAME: the pid in PIDFILE is a live process whose command mentions NAME.
pid_alive() {
    local pid cmdline
    pid=$(cat "$1" 2>/dev/null) || return 1
    [[ $pid =~ ^[0-9]+$ ]] && [ -r "/proc/$pid/cmdline" ] || return 1
    cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
    [[ $cmdline == *"$2"* ]]
}

# stop_pid PIDFILE NAME SECONDS: SIGTERM, wait, then SIGKILL.
stop_pid() {
    local pid i
    if ! pid_alive "$1" "$2"; then rm -f "$1"; return 1; fi
    pid=$(cat "$1")
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < $3 * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        warn "$2 (pid $pid) did not stop in $3 s; killing it"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$1"
}

# client_hostport ADDR: where a client on this machine connects for a listen address.
client_hostport() {
    local host=${1%:*} port=${1##*:}
    case $host in 0.0.0.0 | "[::]" | "") host=127.0.0.1 ;; esac
    printf '%s:%s' "$host" "$port"
}

# ---------------------------------------------------------------------------- settings

STACK_DIR=$(realpath -m "${QUANTAID_STACK_DIR:-$ROOT/.stack}")
STATE=$STACK_DIR/stack.env     # the ports of the last `up` (not secret)
SECRETS=$STACK_DIR/secrets.env # generated once, mode 600
DEMO=$STACK_DIR/demo.env       # demo user and client, created once, mode 600

PG_DIR=$STACK_DIR/postgres # owned by the postgres user, mode 700
PG_DATA=$PG_DIR/data
PG_LOG=$STACK_DIR/postgres.log
REDIS_DIR=$STACK_DIR/redis
REDIS_CONF=$STACK_DIR/redis.conf
REDIS_PID=$STACK_DIR/redis.pid
REDIS_LOG=$STACK_DIR/redis.log
BACKEND_PID=$STACK_DIR/backend.pid
BACKEND_LOG=$STACK_DIR/backend.log
PROXY_PID=$STACK_DIR/proxy.pid
PROXY_LOG=$STACK_DIR/proxy.log

TARGET_DIR=$(cd "$ORIG_PWD" && realpath -m "${CARGO_TARGET_DIR:-$ROOT/target}")
BACKEND_BIN=$TARGET_DIR/release/quantaid-backend
PROXY_BIN=$TARGET_DIR/release/quantaid-proxy

if [ -n "${QUANTAID_PG_BIN:-}" ]; then
    PG_BIN=$QUANTAID_PG_BIN
else
    PG_BIN=$(find -L /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1 || true)
fi

# setting NAME DEFAULT: the environment wins, then the last `up`, then the default. While
# the stack is (partly) running, the values it runs with win; a different override is ignored.
setting() {
    local env=${!1:-} saved
    saved=$(kv_get "$1" "$STATE")
    if [ -n "$saved" ] && [ "$STACK_RUNNING" = yes ]; then
        if [ -n "$env" ] && [ "$env" != "$saved" ]; then
            warn "$1=$env ignored: the stack runs with $saved; run 'scripts/stack.sh down' first"
        fi
        printf '%s' "$saved"
    else
        printf '%s' "${env:-${saved:-$2}}"
    fi
}

# Called once the service functions are defined (they tell whether anything runs).
resolve_settings() {
    STACK_RUNNING=no
    local svc
    for svc in "${SERVICES[@]}"; do if "running_$svc"; then STACK_RUNNING=yes; fi; done
    PG_PORT=$(setting QUANTAID_PG_PORT 55432)
    REDIS_PORT=$(setting QUANTAID_REDIS_PORT 56379)
    LISTEN_ADDR=$(setting QUANTAID_LISTEN_ADDR 127.0.0.1:8081)
    METRICS_ADDR=$(setting QUANTAID_METRICS_ADDR 127.0.0.1:9091)
    BACKEND_URL=http://$(client_hostport "$LISTEN_ADDR")
    METRICS_URL=http://$(client_hostport "$METRICS_ADDR")
    PROXY_LISTEN_ADDR=$(setting QUANTAID_PROXY_LISTEN_ADDR 127.0.0.1:8080)
    PROXY_METRICS_ADDR=$(setting QUANTAID_PROXY_METRICS_ADDR 127.0.0.1:9090)
    PROXY_URL=http://$(client_hostport "$PROXY_LISTEN_ADDR")
    PROXY_METRICS_URL=http://$(client_hostport "$PROXY_METRICS_ADDR")
    # Where clients should point: the caching proxy, which passes the rest to the backend.
    CLIENT_URL=$PROXY_URL
}

# Postgres' Unix socket (superuser access, trust, only for the cluster owner and root).
# Socket paths are limited to ~107 bytes; a deep checkout falls back to /tmp.
PG_SOCK=$PG_DIR
if [ $((${#PG_SOCK} + 20)) -gt 100 ]; then
    PG_SOCK=/tmp/quantaid-pg-$(printf '%s' "$STACK_DIR" | sha256sum | cut -c1-12)
fi

save_state() {
    cat >"$STATE" <<EOF
# Written by scripts/stack.sh up: where the local stack listens (not secret).
QUANTAID_PG_PORT=$PG_PORT
QUANTAID_REDIS_PORT=$REDIS_PORT
QUANTAID_LISTEN_ADDR=$LISTEN_ADDR
QUANTAID_METRICS_ADDR=$METRICS_ADDR
QUANTAID_PROXY_LISTEN_ADDR=$PROXY_LISTEN_ADDR
QUANTAID_PROXY_METRICS_ADDR=$PROXY_METRICS_ADDR
EOF
}

prepare_stack_dir() {
    mkdir -p "$STACK_DIR"
    # Others (the postgres user) may pass through, not list; secrets are mode 600.
    chmod 711 "$STACK_DIR"
    if is_root && ! runuser -u postgres -- test -x "$STACK_DIR"; then
        die "the postgres system user cannot reach $STACK_DIR (a parent directory is not searchable by others);" \
            "set QUANTAID_STACK_DIR to a directory it can reach (e.g. /var/tmp/quantaid-stack)"
    fi
}

# Generated once each, kept in secrets.env (mode 600) under the names the services read.
SECRET_NAMES=(QUANTAID_DB_PASSWORD QUANTAID_REDIS_PASSWORD QUANTAID_BOOTSTRAP_ADMIN_TOKEN QUANTAID_INTERNAL_TOKEN)

ensure_secrets() {
    local name
    (
        umask 077
        if [ ! -s "$SECRETS" ]; then
            echo "# QuantaID local stack secrets, generated by scripts/stack.sh. Never commit or share." >"$SECRETS"
        fi
        # A stack made before the QUANTAID_ names keeps its passwords under the new names.
        sed -i 's/^DB_PASSWORD=/QUANTAID_DB_PASSWORD=/; s/^REDIS_PASSWORD=/QUANTAID_REDIS_PASSWORD=/' "$SECRETS"
        for name in "${SECRET_NAMES[@]}"; do
            if [ -z "$(kv_get "$name" "$SECRETS")" ]; then
                echo "$name=$(gen_secret)" >>"$SECRETS"
                say "generated $name in $SECRETS"
            fi
        done
    )
    chmod 600 "$SECRETS"
    QUANTAID_DB_PASSWORD=$(kv_get QUANTAID_DB_PASSWORD "$SECRETS")
    QUANTAID_REDIS_PASSWORD=$(kv_get QUANTAID_REDIS_PASSWORD "$SECRETS")
    ADMIN_TOKEN=$(kv_get QUANTAID_BOOTSTRAP_ADMIN_TOKEN "$SECRETS")
    INTERNAL_TOKEN=$(kv_get QUANTAID_INTERNAL_TOKEN "$SECRETS")
}

# ---------------------------------------------------------------------------- postgres

running_postgres() {
    [ -f "$PG_DATA/PG_VERSION" ] && [ -x "$PG_BIN/pg_ctl" ] \
        && as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1
}

describe_postgres() { printf 'PostgreSQL  127.0.0.1:%s  (data %s, log %s)' "$PG_PORT" "$PG_DATA" "$PG_LOG"; }

pg_super() {
    as_pg "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$PG_SOCK" -p "$PG_PORT" -U postgres "$@"
}

start_postgres() {
    if running_postgres; then
        say "postgres: already running on 127.0.0.1:$PG_PORT"
    else
        { [ -n "$PG_BIN" ] && [ -x "$PG_BIN/initdb" ]; } \
            || die "PostgreSQL server binaries not found (set QUANTAID_PG_BIN or run scripts/setup.sh)"
        if port_open 127.0.0.1 "$PG_PORT"; then
            die "port $PG_PORT is already in use; pick another with QUANTAID_PG_PORT=<port>"
        fi
        mkdir -p "$PG_DIR"
        chmod 700 "$PG_DIR"
        if is_root; then chown postgres:postgres "$PG_DIR"; fi
        if [ ! -f "$PG_DATA/PG_VERSION" ]; then
            say "postgres: creating a cluster in $PG_DATA"
            as_pg "$PG_BIN/initdb" -D "$PG_DATA" -U postgres -E UTF8 --no-locale \
                --auth-local=trust --auth-host=scram-sha-256 >"$STACK_DIR/initdb.log" 2>&1 \
                || { cat "$STACK_DIR/initdb.log" >&2; die "initdb failed"; }
            # Appending keeps the file's owner (postgres).
            cat >>"$PG_DATA/postgresql.conf" <<'EOF'

# ---- QuantaID local stack (scripts/stack.sh) ----
listen_addresses = '127.0.0.1'
max_connections = 200
shared_preload_libraries = 'pg_stat_statements'
pg_stat_statements.track = all
pg_stat_statements.max = 10000
track_io_timing = on
unix_socket_permissions = 0700
# Port and socket directory are rewritten on every start:
include_if_exists = 'quantaid-runtime.conf'
EOF
        fi
        if [ "$PG_SOCK" != "$PG_DIR" ]; then
            mkdir -p "$PG_SOCK"
            chmod 700 "$PG_SOCK"
            if is_root; then chown postgres:postgres "$PG_SOCK"; fi
        fi
        printf "port = %s\nunix_socket_directories = '%s'\n" "$PG_PORT" "$PG_SOCK" >"$PG_DATA/quantaid-runtime.conf"
        touch "$PG_LOG"
        if is_root; then chown postgres:postgres "$PG_DATA/quantaid-runtime.conf" "$PG_LOG"; fi
        as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t 60 start >/dev/null \
            || { tail -n 20 "$PG_LOG" >&2; die "PostgreSQL did not start (log: $PG_LOG)"; }
        say "postgres: started on 127.0.0.1:$PG_PORT"
    fi
    # Idempotent: role (its password follows secrets.env), database, extension. Utility
    # statements are not tracked here, so the password never reaches pg_stat_statements.
    pg_super -d postgres <<EOF
SET client_min_messages = warning;
SET pg_stat_statements.track_utility = off;
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'quantaid') THEN CREATE ROLE quantaid LOGIN; END IF;
END \$\$;
ALTER ROLE quantaid WITH LOGIN PASSWORD '$QUANTAID_DB_PASSWORD';
GRANT pg_read_all_stats TO quantaid;
SELECT 'CREATE DATABASE quantaid OWNER quantaid'
  WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'quantaid') \gexec
EOF
    pg_super -d quantaid -c 'SET client_min_messages = warning' \
        -c 'CREATE EXTENSION IF NOT EXISTS pg_stat_statements' >/dev/null
}

stop_postgres() {
    if running_postgres; then
        as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w -t 60 stop >/dev/null
        say "postgres: stopped"
    else
        say "postgres: not running"
    fi
}

# ---------------------------------------------------------------------------- redis

running_redis() { pid_alive "$REDIS_PID" redis-server; }

describe_redis() { printf 'Redis       127.0.0.1:%s  (revocation markers; password QUANTAID_REDIS_PASSWORD in secrets.env, log %s)' "$REDIS_PORT" "$REDIS_LOG"; }

start_redis() {
    if running_redis; then
        say "redis: already running on 127.0.0.1:$REDIS_PORT"
        return
    fi
    command -v redis-server >/dev/null || die "redis-server is not installed (run scripts/setup.sh)"
    if port_open 127.0.0.1 "$REDIS_PORT"; then
        die "port $REDIS_PORT is already in use; pick another with QUANTAID_REDIS_PORT=<port>"
    fi
    mkdir -p "$REDIS_DIR"
    # The password goes in a mode-600 config file, never on a command line.
    (
        umask 077
        cat >"$REDIS_CONF" <<EOF
# Written by scripts/stack.sh on every start.
port $REDIS_PORT
bind 127.0.0.1
protected-mode yes
daemonize yes
pidfile "$REDIS_PID"
logfile "$REDIS_LOG"
dir "$REDIS_DIR"
requirepass $QUANTAID_REDIS_PASSWORD
# A cache: it restarts empty (a restored snapshot could hold entries revoked while it was
# down), and it never evicts, since an evicted revocation marker would let a stale fill in
# (docs/caching.md).
save ""
appendonly no
maxmemory-policy noeviction
EOF
    )
    rm -f "$REDIS_PID"
    redis-server "$REDIS_CONF" || die "redis-server failed to start (log: $REDIS_LOG)"
    local i
    for ((i = 0; i < 100; i++)); do
        [ "$(REDISCLI_AUTH=$QUANTAID_REDIS_PASSWORD redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ] && break
        sleep 0.1
    done
    running_redis || { tail -n 20 "$REDIS_LOG" >&2; die "Redis did not start (log: $REDIS_LOG)"; }
    say "redis: started on 127.0.0.1:$REDIS_PORT"
}

stop_redis() {
    if stop_pid "$REDIS_PID" redis-server 20; then say "redis: stopped"; else say "redis: not running"; fi
}

# ---------------------------------------------------------------------------- backend

running_backend() { pid_alive "$BACKEND_PID" quantaid-backend; }

describe_backend() { printf 'Backend     %s  (metrics %s/metrics, log %s)' "$BACKEND_URL" "$METRICS_URL" "$BACKEND_LOG"; }

build_binaries() {
    say "building quantaid-backend and quantaid-proxy (release) into $TARGET_DIR"
    CARGO_TARGET_DIR=$TARGET_DIR cargo build --release -p quantaid-backend -p quantaid-proxy
    [ -x "$BACKEND_BIN" ] || die "the build did not produce $BACKEND_BIN"
    [ -x "$PROXY_BIN" ] || die "the build did not produce $PROXY_BIN"
}

# backend_exec ARGS...: runs the backend binary with the stack's configuration. Secrets go
# through the environment of this subshell only, never through a command line.
backend_exec() {
    # shellcheck disable=SC2030 # the subshell keeps these settings to the one process it starts
    (
        export QUANTAID_DB_HOST=127.0.0.1 QUANTAID_DB_PORT=$PG_PORT QUANTAID_DB_USER=quantaid QUANTAID_DB_NAME=quantaid
        export QUANTAID_DB_PASSWORD QUANTAID_BOOTSTRAP_ADMIN_TOKEN=$ADMIN_TOKEN QUANTAID_INTERNAL_TOKEN=$INTERNAL_TOKEN
        # The backend publishes revocation markers to the cache the proxy reads.
        export QUANTAID_REDIS_HOST=127.0.0.1:$REDIS_PORT QUANTAID_REDIS_PASSWORD
        export QUANTAID_LISTEN_ADDR=$LISTEN_ADDR QUANTAID_METRICS_ADDR=$METRICS_ADDR
        # The OAuth metadata names the URL clients are told to use.
        export QUANTAID_ISSUER=${QUANTAID_ISSUER:-$CLIENT_URL}
        otel_container backend
        exec "$@"
    )
}

ready() { curl -fsS -o /dev/null --max-time 2 "$BACKEND_URL/ready" 2>/dev/null; }

# ports_free HINT ADDR...: dies naming HINT (the variables to change) if one is taken.
ports_free() {
    local hint=$1 addr hp
    shift
    for addr in "$@"; do
        hp=$(client_hostport "$addr")
        if port_open "${hp%:*}" "${hp##*:}"; then die "$addr is already in use; pick another with $hint"; fi
    done
}

# await_ready NAME PIDFILE PROCESS LOG URL READY_FN TENTHS: waits for READY_FN; on
# failure shows the log, stops the process and dies.
await_ready() {
    local name=$1 pidfile=$2 process=$3 log=$4 url=$5 ready_fn=$6 tenths=$7 i
    for ((i = 0; i < tenths; i++)); do
        if "$ready_fn"; then
            say "$name: ready on $url (pid $(cat "$pidfile"))"
            return
        fi
        if ((i > 10)) && ! pid_alive "$pidfile" "$process"; then break; fi
        sleep 0.1
    done
    tail -n 30 "$log" >&2
    if pid_alive "$pidfile" "$process"; then stop_pid "$pidfile" "$process" 15 || true; fi
    die "the $name did not become ready at $url/ready (log: $log)"
}

start_backend() {
    if running_backend; then
        say "backend: already running on $BACKEND_URL"
        return
    fi
    [ -x "$BACKEND_BIN" ] || die "$BACKEND_BIN is missing (the build step should have made it)"
    ports_free "QUANTAID_LISTEN_ADDR / QUANTAID_METRICS_ADDR" "$LISTEN_ADDR" "$METRICS_ADDR"
    say "backend: running migrations"
    backend_exec "$BACKEND_BIN" migrate >>"$BACKEND_LOG" 2>&1 \
        || { tail -n 20 "$BACKEND_LOG" >&2; die "quantaid-backend migrate failed (log: $BACKEND_LOG)"; }
    rm -f "$BACKEND_PID"
    # A session of its own (setsid) and nohup: it outlives this script and the terminal.
    # The inner shell records its pid, which `exec` hands on to the backend.
    # shellcheck disable=SC2016 # $$, $0 and $@ are the inner sh's
    backend_exec setsid sh -c 'echo $$ >"$0"; exec nohup "$@" serve' "$BACKEND_PID" "$BACKEND_BIN" \
        >>"$BACKEND_LOG" 2>&1 </dev/null &
    await_ready backend "$BACKEND_PID" quantaid-backend "$BACKEND_LOG" "$BACKEND_URL" ready 600
}

stop_backend() {
    if stop_pid "$BACKEND_PID" quantaid-backend 20; then say "backend: stopped"; else say "backend: not running"; fi
}

# ---------------------------------------------------------------------------- proxy

running_proxy() { pid_alive "$PROXY_PID" quantaid-proxy; }

describe_proxy() { printf 'Proxy       %s  (metrics %s/metrics, log %s)' "$PROXY_URL" "$PROXY_METRICS_URL" "$PROXY_LOG"; }

proxy_ready() { curl -fsS -o /dev/null --max-time 2 "$PROXY_URL/ready" 2>/dev/null; }

start_proxy() {
    if running_proxy; then
        say "proxy: already running on $PROXY_URL"
        return
    fi
    [ -x "$PROXY_BIN" ] || die "$PROXY_BIN is missing (the build step should have made it)"
    ports_free "QUANTAID_PROXY_LISTEN_ADDR / QUANTAID_PROXY_METRICS_ADDR" "$PROXY_LISTEN_ADDR" "$PROXY_METRICS_ADDR"
    rm -f "$PROXY_PID"
    # shellcheck disable=SC2030,SC2031 # the subshell keeps these settings to the one process it starts
    (
        QUANTAID_BACKEND_ADDR=$(client_hostport "$LISTEN_ADDR")
        export QUANTAID_BACKEND_ADDR
        export QUANTAID_PROXY_LISTEN_ADDR=$PROXY_LISTEN_ADDR QUANTAID_PROXY_METRICS_ADDR=$PROXY_METRICS_ADDR
        export QUANTAID_REDIS_HOST=127.0.0.1:$REDIS_PORT QUANTAID_REDIS_PASSWORD
        export QUANTAID_INTERNAL_TOKEN=$INTERNAL_TOKEN QUANTAID_BOOTSTRAP_ADMIN_TOKEN=$ADMIN_TOKEN
        otel_container proxy
        # shellcheck disable=SC2016 # $$, $0 and $1 are the inner sh's
        exec setsid sh -c 'echo $$ >"$0"; exec nohup "$1"' "$PROXY_PID" "$PROXY_BIN" >>"$PROXY_LOG" 2>&1 </dev/null
    ) &
    await_ready proxy "$PROXY_PID" quantaid-proxy "$PROXY_LOG" "$PROXY_URL" proxy_ready 300
}

stop_proxy() {
    if stop_pid "$PROXY_PID" quantaid-proxy 20; then say "proxy: stopped"; else say "proxy: not running"; fi
}

# ---------------------------------------------------------------------------- demo data

# api_admin METHOD PATH JSON: prints the response body, then the status code on a last line.
# The admin token and the body reach curl through file descriptors, not its arguments.
api_admin() {
    curl -sS -w '\n%{http_code}' -X "$1" "$BACKEND_URL$2" \
        -H @<(printf 'Authorization: Bearer %s\n' "$ADMIN_TOKEN") \
        -H 'Content-Type: application/json' --data-binary @<(printf '%s' "$3")
}

append_demo() { (umask 077 && printf '%s\n' "$@" >>"$DEMO"); }

ensure_demo() {
    local user_id password client_id resp status body
    user_id=$(kv_get DEMO_USER_ID "$DEMO")
    if [ -z "$user_id" ]; then
        password=$(kv_get DEMO_PASSWORD "$DEMO")
        if [ -z "$password" ]; then
            password=$(gen_secret)
            [ -f "$DEMO" ] || append_demo "# Demo data created by scripts/stack.sh (local use only)."
            append_demo "DEMO_USERNAME=demo" "DEMO_PASSWORD=$password"
        fi
        resp=$(api_admin POST /v1/users "{\"username\":\"demo\",\"email\":\"demo@example.com\",\"password\":\"$password\"}")
        status=${resp##*$'\n'} body=${resp%$'\n'*}
        case $status in
        201) user_id=$(jq -r .id <<<"$body") ;;
        409) # Created by an earlier run that stopped before recording its id: log in for it.
            user_id=$(curl -sS "$BACKEND_URL/v1/auth/login" -H 'Content-Type: application/json' \
                --data-binary @<(printf '{"username":"demo","password":"%s"}' "$password") | jq -r '.user_id // empty')
            [ -n "$user_id" ] || die "user 'demo' exists but its password is not the one in $DEMO; start from an empty .stack/" ;;
        *) die "creating the demo user failed: HTTP $status $body" ;;
        esac
        append_demo "DEMO_USER_ID=$user_id"
        say "demo: created user 'demo' ($user_id)"
    fi
    client_id=$(kv_get DEMO_CLIENT_ID "$DEMO")
    if [ -z "$client_id" ]; then
        resp=$(api_admin POST /v1/clients \
            '{"name":"QuantaID demo client","grant_types":["client_credentials","password","refresh_token"],"scopes":["read","write","users:read"],"redirect_uris":[]}')
        status=${resp##*$'\n'} body=${resp%$'\n'*}
        [ "$status" = 201 ] || die "creating the demo OAuth client failed: HTTP $status $body"
        append_demo "DEMO_CLIENT_ID=$(jq -r .client_id <<<"$body")" "DEMO_CLIENT_SECRET=$(jq -r .client_secret <<<"$body")"
        say "demo: created OAuth client $(kv_get DEMO_CLIENT_ID "$DEMO")"
    fi
}

demo_complete() {
    [ -n "$(kv_get DEMO_USER_ID "$DEMO")" ] && [ -n "$(kv_get DEMO_CLIENT_SECRET "$DEMO")" ]
}

# ---------------------------------------------------------------------------- output

print_info() {
    local user pw uid cid secret u
    user=$(kv_get DEMO_USERNAME "$DEMO") pw=$(kv_get DEMO_PASSWORD "$DEMO") uid=$(kv_get DEMO_USER_ID "$DEMO")
    cid=$(kv_get DEMO_CLIENT_ID "$DEMO") secret=$(kv_get DEMO_CLIENT_SECRET "$DEMO")
    u=$CLIENT_URL
    local svc
    printf '\nQuantaID is running. Point clients at %s\n' "$CLIENT_URL"
    printf '(the caching proxy; it answers session, token and user lookups from Redis and passes the rest to the backend)\n\n'
    for svc in "${SERVICES[@]}"; do printf '  %s\n' "$("describe_$svc")"; done
    cat <<EOF

  Secrets:  $SECRETS (mode 600: QUANTAID_DB_PASSWORD, QUANTAID_REDIS_PASSWORD, QUANTAID_INTERNAL_TOKEN,
            QUANTAID_BOOTSTRAP_ADMIN_TOKEN for admin calls: Authorization: Bearer <token>)
  Stop:     scripts/stack.sh down   (data is kept; 'scripts/stack.sh up' brings it back)

Demo user:         $user / $pw   (id $uid)
Demo OAuth client: $cid / $secret
                   grants client_credentials, password, refresh_token; scopes read write users:read

Try it (bash, curl and jq; copy and paste the lines):
# ---- copy from here ----
# Log in as the demo user and keep the session token:
SESSION=\$(curl -sS -X POST $u/v1/auth/login -H 'Content-Type: application/json' -d '{"username":"$user","password":"$pw"}' | jq -r .session_token); echo "\$SESSION"
# Look the session up (answered from the cache after the first time):
curl -sS $u/v1/auth/session -H "Authorization: Bearer \$SESSION" | jq .
# Forward-auth check, as NGINX auth_request / Traefik ForwardAuth / Envoy ext_authz call it:
curl -sS -o /dev/null -D - $u/v1/auth/check -H "Authorization: Bearer \$SESSION" | grep -i '^x-quantaid'
# Issue an access token for the client (client_credentials grant):
TOKEN=\$(curl -sS -u '$cid:$secret' -d grant_type=client_credentials --data-urlencode 'scope=read users:read' $u/oauth/token | jq -r .access_token); echo "\$TOKEN"
# Introspect it:
curl -sS -u '$cid:$secret' --data-urlencode "token=\$TOKEN" $u/oauth/introspect | jq .
# Revoke it:
curl -sS -o /dev/null -w 'revoke: HTTP %{http_code}\n' -u '$cid:$secret' --data-urlencode "token=\$TOKEN" $u/oauth/revoke
# Introspect again: now {"active": false}
curl -sS -u '$cid:$secret' --data-urlencode "token=\$TOKEN" $u/oauth/introspect | jq .
# Password grant for the demo user (access + refresh token):
curl -sS -u '$cid:$secret' -d grant_type=password -d username=$user --data-urlencode 'password=$pw' --data-urlencode 'scope=read users:read' $u/oauth/token | jq .
# Metrics (proxy, then backend):
curl -sS $PROXY_METRICS_URL/metrics | grep -E '^quantaid_cache_(hits|misses)_total'
curl -sS $METRICS_URL/metrics | grep -E '^quantaid_(logins|oauth_tokens_issued)_total'
# ---- to here ----
EOF
}

# ---------------------------------------------------------------------------- commands

all_running() {
    local svc
    for svc in "${SERVICES[@]}"; do "running_$svc" || return 1; done
}

cmd_up() {
    if all_running && demo_complete; then
        say "the stack is already running; nothing to do"
        print_info
        return
    fi
    # rustup's cargo may be installed but missing from a non-login shell's PATH.
    if ! command -v cargo >/dev/null && [ -x "$HOME/.cargo/bin/cargo" ]; then PATH=$HOME/.cargo/bin:$PATH; fi
    "$ROOT/scripts/setup.sh"
    build_binaries
    prepare_stack_dir
    ensure_secrets
    save_state
    local svc
    for svc in "${SERVICES[@]}"; do "start_$svc"; done
    ensure_demo
    print_info
}

cmd_down() {
    local i
    for ((i = ${#SERVICES[@]} - 1; i >= 0; i--)); do "stop_${SERVICES[i]}"; done
}

cmd_status() {
    local svc ok=0
    for svc in "${SERVICES[@]}"; do
        if "running_$svc"; then
            printf 'up    %s\n' "$("describe_$svc")"
        else
            printf 'down  %s\n' "$("describe_$svc")"
            ok=1
        fi
    done
    if running_backend; then
        if ready; then echo "backend /ready: ok"; else echo "backend /ready: NOT ready"; ok=1; fi
    fi
    if running_proxy; then
        if proxy_ready; then echo "proxy /ready: ok"; else echo "proxy /ready: NOT ready"; ok=1; fi
    fi
    return $ok
}

resolve_settings

case ${1:-up} in
up) cmd_up ;;
down) cmd_down ;;
status) cmd_status ;;
restart) cmd_down && cmd_up ;;
-h | --help | help) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' ;;
*) die "unknown command '$1' (use: up, down, status, restart)" ;;
esac
