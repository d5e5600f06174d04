# shellcheck shell=bash # sourced by chaos/run.sh
# The chaos experiments' shared library: processes, ports, the QuantaID topology, the
# load, and the verdict. chaos/run.sh sources this file (which sources the rest of
# chaos/lib/) in each experiment's own shell; the contract at the top of chaos/run.sh
# lists what an experiment may call. Processes are real and on loopback only.

# shellcheck disable=SC2034 # variables here are used by the experiments that source us

CHAOS_LIB=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

say() { printf '==> [%s] %s\n' "${CHAOS_NAME:-chaos}" "$*"; }
warn() { printf 'chaos: [%s] warning: %s\n' "${CHAOS_NAME:-chaos}" "$*" >&2; }
die() {
    printf 'chaos: [%s] error: %s\n' "${CHAOS_NAME:-chaos}" "$*" >&2
    exit 2
}

is_root() { [ "$(id -u)" -eq 0 ]; }

# A random secret: letters and digits only (safe in URLs, JSON and config files).
gen_secret() { head -c 24 /dev/urandom | base64 | tr -d '/+=\n'; }

# ---------------------------------------------------------------------------- processes

# chaos_port: a loopback TCP port nobody listens on, below the ephemeral range (so an
# outgoing connection cannot hold it), and not handed out before in this run.
chaos_port() {
    local port i
    for ((i = 0; i < 200; i++)); do
        port=$((20000 + RANDOM % 12000))
        grep -qx "$port" "$CHAOS_WORK/ports" 2>/dev/null && continue
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && continue
        echo "$port" >>"$CHAOS_WORK/ports"
        echo "$port"
        return 0
    done
    die "no free port found"
}

pid_of() { cat "$CHAOS_WORK/pids/$1" 2>/dev/null; }

# pid_running PID: alive and not a zombie.
pid_running() {
    local state
    [ -n "$1" ] && state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) && [ "$state" != Z ]
}

# chaos_spawn NAME CMD...: starts CMD detached (its own session and process group, so
# that cleanup can kill it with its children), output appended to $CHAOS_WORK/NAME.log,
# pid in $CHAOS_WORK/pids/NAME. It inherits the caller's exported environment.
chaos_spawn() {
    local name=$1
    shift
    # The outer subshell exits at once: the process is reparented and reaped by init,
    # whichever shell started it.
    (setsid "$@" >>"$CHAOS_WORK/$name.log" 2>&1 </dev/null & echo $! >"$CHAOS_WORK/pids/$name")
}

chaos_alive() { pid_running "$(pid_of "$1")"; }

# chaos_kill NAME [SIGNAL]: signals the process group (default KILL), waits until gone.
chaos_kill() {
    local pid i
    pid=$(pid_of "$1") || return 0
    kill "-${2:-KILL}" -- "-$pid" 2>/dev/null || kill "-${2:-KILL}" "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        pid_running "$pid" || return 0
        sleep 0.1
    done
    die "$1 (pid $pid) did not exit after SIG${2:-KILL}"
}

# chaos_wait_http URL [SECS]: until URL answers 2xx.
chaos_wait_http() {
    local i
    for ((i = 0; i < ${2:-60} * 10; i++)); do
        curl -fsS -o /dev/null --max-time 1 "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    die "$1 did not answer within ${2:-60} s"
}

# chaos_prom URL METRIC_REGEX: the sum of the matching samples of a /metrics page.
chaos_prom() {
    curl -fsS --max-time 2 "$1" 2>/dev/null | awk -v re="^($2)" '$0 ~ re && $0 !~ /^#/ {s += $NF} END {printf "%g\n", s + 0}'
}

# chaos_cleanup: kills everything this experiment started. Runs on every exit.
chaos_cleanup() {
    local f pid data sock
    for f in "$CHAOS_WORK"/pids/*; do
        [ -f "$f" ] || continue
        pid=$(cat "$f")
        kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    done
    if [ -f "$CHAOS_WORK/pgclusters" ]; then
        while read -r data sock; do
            pg_as "$PG_BIN/pg_ctl" -D "$data" -m immediate -w -t 20 stop >/dev/null 2>&1 || true
            rm -rf "$sock" 2>/dev/null || true
        done <"$CHAOS_WORK/pgclusters"
    fi
}

# ---------------------------------------------------------------------------- secrets

# chaos_secrets: one set per experiment, in a mode-600 file and in (unexported) shell
# variables; the spawn functions pass them to processes through their environment.
chaos_secrets() {
    (
        umask 077
        {
            echo "QUANTAID_DB_PASSWORD=$(gen_secret)"
            echo "QUANTAID_REDIS_PASSWORD=$(gen_secret)"
            echo "ADMIN_TOKEN=$(gen_secret)"
            echo "INTERNAL_TOKEN=$(gen_secret)"
        } >"$CHAOS_WORK/secrets.env"
    )
    # shellcheck disable=SC1091
    . "$CHAOS_WORK/secrets.env"
}

# ---------------------------------------------------------------------------- postgres

PG_BIN=${QUANTAID_PG_BIN:-$(find -L /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1)}

# PostgreSQL refuses to run as root: its tools run as the `postgres` system user then.
pg_as() { if is_root; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi; }

# chaos_pg_start NAME PORT [CONF_LINE...]: a cluster in $CHAOS_WORK/NAME/data (created
# on first use), listening on 127.0.0.1:PORT, with the role and database `quantaid`
# (password $QUANTAID_DB_PASSWORD). Extra lines go into postgresql.conf.
chaos_pg_start() {
    local name=$1 port=$2 dir=$CHAOS_WORK/$1
    shift 2
    local data=$dir/data sock
    sock=$(mktemp -d /tmp/quantaid-chaos-pg.XXXXXX) # short: socket paths are limited
    mkdir -p "$dir"
    chmod 700 "$dir" "$sock"
    if is_root; then chown postgres: "$dir" "$sock"; fi
    if [ ! -f "$data/PG_VERSION" ]; then
        pg_as "$PG_BIN/initdb" -D "$data" -U postgres -E UTF8 --no-locale --auth-local=trust \
            --auth-host=scram-sha-256 >"$CHAOS_WORK/$name.initdb.log" 2>&1 || die "initdb for $name failed"
        local line
        {
            echo "listen_addresses = '127.0.0.1'"
            echo "max_connections = 300"
            for line in "$@"; do echo "$line"; done
        } | pg_as tee -a "$data/postgresql.conf" >/dev/null
    fi
    printf "port = %s\nunix_socket_directories = '%s'\n" "$port" "$sock" | pg_as tee "$data/chaos-runtime.conf" >/dev/null
    pg_as grep -q chaos-runtime.conf "$data/postgresql.conf" \
        || echo "include_if_exists = 'chaos-runtime.conf'" | pg_as tee -a "$data/postgresql.conf" >/dev/null
    echo "$data $sock" >>"$CHAOS_WORK/pgclusters"
    pg_as "$PG_BIN/pg_ctl" -D "$data" -l "$dir/postgres.log" -w -t 60 start >/dev/null \
        || { tail -n 20 "$dir/postgres.log" >&2; die "PostgreSQL $name did not start"; }
    echo "$sock" >"$dir/socket"
    # Role and database (idempotent); the password travels on stdin, not a command line.
    pg_as "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$sock" -p "$port" -U postgres -d postgres >/dev/null <<EOF || die "cannot create the quantaid role in $name"
SET client_min_messages = warning;
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'quantaid') THEN CREATE ROLE quantaid LOGIN; END IF;
END \$\$;
ALTER ROLE quantaid WITH LOGIN PASSWORD '$QUANTAID_DB_PASSWORD';
SELECT 'CREATE DATABASE quantaid OWNER quantaid'
  WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'quantaid') \gexec
EOF
}

# chaos_pg_stop NAME [MODE]: pg_ctl stop (MODE fast by default; immediate is a crash).
chaos_pg_stop() {
    pg_as "$PG_BIN/pg_ctl" -D "$CHAOS_WORK/$1/data" -m "${2:-fast}" -w -t 60 stop >/dev/null
}

# chaos_pg_psql NAME PORT ARGS...: psql as the superuser over the cluster's socket.
chaos_pg_psql() {
    local name=$1 port=$2
    shift 2
    pg_as "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$(cat "$CHAOS_WORK/$name/socket")" -p "$port" -U postgres "$@"
}

# ---------------------------------------------------------------------------- redis

# chaos_redis_start NAME PORT [CONF_LINE...]: redis-server with the experiment's password
# (also used to authenticate to a primary, for replicas), no persistence, no eviction
# (docs/caching.md says why). Extra lines go into its config file (mode 600).
chaos_redis_start() {
    local name=$1 port=$2 dir=$CHAOS_WORK/$1
    shift 2
    mkdir -p "$dir"
    local line
    (
        umask 077
        {
            echo "port $port"
            echo "bind 127.0.0.1"
            echo "dir $dir"
            echo "requirepass $QUANTAID_REDIS_PASSWORD"
            echo "masterauth $QUANTAID_REDIS_PASSWORD"
            echo 'save ""'
            echo "appendonly no"
            echo "maxmemory-policy noeviction"
            # A replica gets its first copy at once (the default waits 5 s for others).
            echo "repl-diskless-sync-delay 0"
            for line in "$@"; do echo "$line"; done
        } >"$dir/redis.conf"
    )
    chaos_spawn "$name" redis-server "$dir/redis.conf"
    chaos_redis_wait "$port" || die "Redis $name did not start on $port (log: $CHAOS_WORK/$name.log)"
}

# chaos_redis_cli PORT ARGS...: redis-cli with the password in its environment.
chaos_redis_cli() {
    local port=$1
    shift
    REDISCLI_AUTH=$QUANTAID_REDIS_PASSWORD redis-cli --no-auth-warning -h 127.0.0.1 -p "$port" "$@"
}

chaos_redis_wait() {
    local i
    for ((i = 0; i < 100; i++)); do
        [ "$(chaos_redis_cli "$1" ping 2>/dev/null)" = PONG ] && return 0
        sleep 0.1
    done
    return 1
}

# ---------------------------------------------------------------------------- sidecars

# chaos_backend_start NAME API_PORT METRICS_PORT [VAR=VALUE...]: quantaid-backend with
# PostgreSQL at $CHAOS_PG_PORT and Redis at $CHAOS_REDIS_PORT unless overridden;
# waits until /ready.
chaos_backend_start() {
    local name=$1 api=$2 metrics=$3
    shift 3
    # shellcheck disable=SC2030,SC2031 # the subshell keeps these settings to the one process it starts
    (
        export QUANTAID_DB_HOST=127.0.0.1 QUANTAID_DB_PORT=${CHAOS_PG_PORT:-} QUANTAID_DB_USER=quantaid QUANTAID_DB_NAME=quantaid
        export QUANTAID_DB_PASSWORD QUANTAID_REDIS_PASSWORD QUANTAID_REDIS_HOST=127.0.0.1:${CHAOS_REDIS_PORT:-}
        export QUANTAID_BOOTSTRAP_ADMIN_TOKEN=$ADMIN_TOKEN QUANTAID_INTERNAL_TOKEN=$INTERNAL_TOKEN
        export QUANTAID_LISTEN_ADDR=127.0.0.1:$api QUANTAID_METRICS_ADDR=127.0.0.1:$metrics
        export QUANTAID_LOG_LEVEL=${QUANTAID_LOG_LEVEL:-info}
        local setting
        for setting in "$@"; do export "${setting?}"; done
        chaos_spawn "$name" "$BIN_DIR/quantaid-backend" serve
    )
    chaos_wait_http "http://127.0.0.1:$api/ready" 120
}

# chaos_proxy_start NAME PORT METRICS_PORT BACKEND_HOSTPORT [VAR=VALUE...]: quantaid-proxy
# in front of that backend, Redis at $CHAOS_REDIS_PORT unless overridden; waits until /ready.
chaos_proxy_start() {
    local name=$1 port=$2 metrics=$3 backend=$4
    shift 4
    # shellcheck disable=SC2030,SC2031 # the subshell keeps these settings to the one process it starts
    (
        export QUANTAID_PROXY_LISTEN_ADDR=127.0.0.1:$port QUANTAID_PROXY_METRICS_ADDR=127.0.0.1:$metrics
        export QUANTAID_BACKEND_ADDR=$backend QUANTAID_REDIS_HOST=127.0.0.1:${CHAOS_REDIS_PORT:-} QUANTAID_REDIS_PASSWORD
        export QUANTAID_INTERNAL_TOKEN=$INTERNAL_TOKEN QUANTAID_BOOTSTRAP_ADMIN_TOKEN=$ADMIN_TOKEN
        export QUANTAID_LOG_LEVEL=${QUANTAID_LOG_LEVEL:-info}
        local setting
        for setting in "$@"; do export "${setting?}"; done
        chaos_spawn "$name" "$BIN_DIR/quantaid-proxy"
    )
    chaos_wait_http "http://127.0.0.1:$port/ready" 60
}

# chaos_topology_basic [PROXIES]: PostgreSQL, one Redis, one backend and PROXIES (2)
# proxy replicas in front of it; the sidecar settings given as extra arguments go to
# both the backend and the proxies. Sets CHAOS_PG_PORT CHAOS_REDIS_PORT CHAOS_BACKEND
# CHAOS_TARGETS CHAOS_PROXY_METRICS.
chaos_topology_basic() {
    local proxies=${1:-2} i port metrics
    shift || true
    CHAOS_PG_PORT=$(chaos_port)
    CHAOS_REDIS_PORT=$(chaos_port)
    chaos_pg_start postgres "$CHAOS_PG_PORT"
    chaos_redis_start redis "$CHAOS_REDIS_PORT"
    local api backend_metrics
    api=$(chaos_port) backend_metrics=$(chaos_port)
    chaos_backend_start backend "$api" "$backend_metrics" "$@"
    CHAOS_BACKEND=127.0.0.1:$api
    CHAOS_BACKEND_METRICS=http://127.0.0.1:$backend_metrics/metrics
    CHAOS_TARGETS="" CHAOS_PROXY_METRICS=""
    for ((i = 0; i < proxies; i++)); do
        port=$(chaos_port) metrics=$(chaos_port)
        chaos_proxy_start "proxy-$i" "$port" "$metrics" "$CHAOS_BACKEND" "$@"
        CHAOS_TARGETS+=${CHAOS_TARGETS:+,}http://127.0.0.1:$port
        CHAOS_PROXY_METRICS+=${CHAOS_PROXY_METRICS:+ }http://127.0.0.1:$metrics/metrics
    done
    say "topology: PostgreSQL :$CHAOS_PG_PORT, Redis :$CHAOS_REDIS_PORT, backend $CHAOS_BACKEND, proxies $CHAOS_TARGETS"
}

# shellcheck source=chaos/lib/load.sh
. "$CHAOS_LIB/load.sh"
# shellcheck source=chaos/lib/verdict.sh
. "$CHAOS_LIB/verdict.sh"
# shellcheck source=chaos/lib/toxiproxy.sh
. "$CHAOS_LIB/toxiproxy.sh"
# shellcheck source=chaos/lib/k8s.sh
. "$CHAOS_LIB/k8s.sh"
