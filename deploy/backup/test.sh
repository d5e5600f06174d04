#!/usr/bin/env bash
# QuantaID backup and restore tests, with real parts on loopback (CI entry point):
# a throwaway stack (scripts/stack.sh: PostgreSQL 15, Redis, backend, proxy) seeded through
# the API, pgBackRest 2.45 archiving into an S3 store (s3s-fs) behind a TLS terminator
# (haproxy, certificate made here for DNS:localhost), and the scripts of deploy/backup.
#
#   deploy/backup/test.sh            all scenarios
#   deploy/backup/test.sh drill      only the setup and the full restore drill
#
# Scenarios (docs/operations/backup-restore.md, "Restore drill", runs the same commands):
#   drill      seed; full backup; drop the database; restore to before the drop: every
#              table's row count and checksum identical; the stack comes up on it and a
#              session from before the backup still works. Measures the recovery time.
#   logical    logical dump to S3, restore into an empty database: identical; a corrupted
#              dump is refused.
#   pitr       write set A, note T, write set B, restore to T: exactly A, none of B.
#   latest     lose the data directory while writing; restore latest: everything up to the
#              last archived segment. Measures the recovery point.
#   retention  with the clock moved 29 and 31 days on (faketime): nothing, then the old
#              full backup, its differential and its WAL expire; the same for logical dumps.
#   failures   a WAL gap, a missing backup file and a corrupted one: verify.sh and
#              restore.sh exit non-zero and PostgreSQL is not left running on a bad restore.
#
# Installs what is missing (Debian packages pgbackrest, haproxy, faketime; s3s-fs 0.14.1,
# built once into /var/tmp/quantaid-cache/s3s-fs), builds the sidecars in release mode
# ($CARGO_TARGET_DIR), leaves nothing running. Run as root. Exits non-zero on any failure.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
BK=$ROOT/deploy/backup
ONLY=${1:-all}
case $ONLY in all | drill) ;; *) echo "usage: $0 [all|drill]" >&2; exit 2 ;; esac

# The sidecars' release build, outside the clone as in CI (.ci/run), so runs reuse it.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/quantaid-target}
S3S_VERSION=0.14.1
S3S_ROOT=/var/tmp/quantaid-cache/s3s-fs
S3S_BIN=$S3S_ROOT/bin/s3s-fs

say() { printf '\n==> %s\n' "$*"; }
log() { printf '    %s\n' "$*"; }
t_start=$(date +%s)

pass=0
fail=0
ok() { pass=$((pass + 1)); printf 'ok    %s\n' "$*"; }
bad() { fail=$((fail + 1)); printf 'FAIL  %s\n' "$*"; }
# check DESCRIPTION COMMAND...: one assertion.
check() {
    local desc=$1
    shift
    if "$@"; then ok "$desc"; else bad "$desc"; fi
}
# must DESCRIPTION COMMAND...: a step the rest depends on; stops the run when it fails.
must() {
    local desc=$1
    shift
    if "$@"; then ok "$desc"; else bad "$desc"; exit 1; fi
}

[ "$(id -u)" -eq 0 ] || { echo "test.sh: run as root (it installs packages and runs PostgreSQL as postgres)" >&2; exit 1; }

# ---------------------------------------------------------------------------- tools

say "tools"
scripts/setup.sh
missing=()
for pkg in pgbackrest haproxy faketime openssl; do
    dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null | grep -qx installed || missing+=("$pkg")
done
if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # No service is started by the packages here (policy-rc.d or no init); ours run below.
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if [ ! -x "$S3S_BIN" ] || [ "$("$S3S_BIN" --version 2>/dev/null | awk '{print $2}')" != "$S3S_VERSION" ]; then
    log "building s3s-fs $S3S_VERSION into $S3S_ROOT (once; a few minutes)"
    nice -n 10 cargo install "s3s-fs@$S3S_VERSION" --features binary --locked --root "$S3S_ROOT" >/dev/null 2>&1 \
        || nice -n 10 cargo install "s3s-fs@$S3S_VERSION" --features binary --locked --root "$S3S_ROOT"
fi
log "$(pgbackrest version), $(haproxy -v | head -n 1 | awk '{print "HAProxy", $3}'), s3s-fs $("$S3S_BIN" --version | awk '{print $2}')"

# ---------------------------------------------------------------------------- throwaway places and ports

# pick VAR BASE: sets VAR to the first port from BASE up on which nothing listens and that
# this run has not handed out yet (its services start later). Bases lie below Linux's
# ephemeral range.
PICKED=" "
pick() {
    local p=$2
    while [[ $PICKED == *" $p "* ]] || (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; do p=$((p + 1)); done
    PICKED="$PICKED$p "
    printf -v "$1" '%s' "$p"
}

WORK=$(mktemp -d /tmp/quantaid-backup-test.XXXXXX)
chmod 711 "$WORK" # the postgres user must reach the cluster and the config inside
export QUANTAID_STACK_DIR=$WORK/stack
STACK=$QUANTAID_STACK_DIR
port=""
pick QUANTAID_PG_PORT 27432
pick QUANTAID_REDIS_PORT 27379
export QUANTAID_PG_PORT QUANTAID_REDIS_PORT
pick port 27081; QUANTAID_LISTEN_ADDR=127.0.0.1:$port
pick port 27091; QUANTAID_METRICS_ADDR=127.0.0.1:$port
pick port 27080; QUANTAID_PROXY_LISTEN_ADDR=127.0.0.1:$port
pick port 27090; QUANTAID_PROXY_METRICS_ADDR=127.0.0.1:$port
export QUANTAID_LISTEN_ADDR QUANTAID_METRICS_ADDR QUANTAID_PROXY_LISTEN_ADDR QUANTAID_PROXY_METRICS_ADDR
pick S3_PORT 27014
pick TLS_PORT 27443
PROXY=http://$QUANTAID_PROXY_LISTEN_ADDR

# The backup scripts' settings, as an operator exports them (docs/operations/backup-restore.md).
export QUANTAID_BACKUP_CONFIG_PATH=$WORK/pgbackrest
export QUANTAID_BACKUP_TEXTFILE_DIR=$WORK/textfile
export QUANTAID_BACKUP_STANZA=quantaid

exec 3>&1 4>&2
cleanup() {
    local rc=$?
    exec 1>&3 2>&4
    if ((rc != 0 || fail != 0)); then
        echo "---- last lines of the logs ----"
        for f in "$STACK"/backend.log "$STACK"/postgres.log "$STACK"/postgresql-restore.log "$WORK"/s3s.log "$WORK"/haproxy.log; do
            [ -f "$f" ] && { echo "== $f"; tail -n 15 "$f"; }
        done
        for f in "$WORK"/pgbackrest-log/*.log; do [ -f "$f" ] && { echo "== $f"; tail -n 15 "$f"; }; done
    fi
    scripts/stack.sh down >/dev/null 2>&1 || echo "test.sh: warning: 'scripts/stack.sh down' failed" >&2
    # A restore may have started PostgreSQL outside stack.sh's knowledge of it.
    if [ -f "$STACK/postgres/data/postmaster.pid" ]; then
        runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$STACK/postgres/data" -m immediate stop >/dev/null 2>&1 || true
    fi
    if [ -f "$WORK/haproxy.pid" ]; then kill "$(cat "$WORK/haproxy.pid")" 2>/dev/null || true; fi
    if [ -n "${S3S_PID:-}" ]; then kill "$S3S_PID" 2>/dev/null || true; fi
    wait 2>/dev/null || true
    rm -rf "$WORK"
    printf '\nbackup tests: %d passed, %d failed (%d s)\n' "$pass" "$fail" "$(($(date +%s) - t_start))"
    if ((rc == 0 && fail != 0)); then rc=1; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

PG_BIN=$(find -L /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d | sort -V | tail -n 1)

# ---------------------------------------------------------------------------- S3 behind TLS

say "S3 store (s3s-fs on 127.0.0.1:$S3_PORT) behind TLS (haproxy on localhost:$TLS_PORT)"
gen_secret() { head -c 24 /dev/urandom | base64 | tr -d '/+=\n'; }
# Throwaway credentials for this run's store; pgBackRest and the scripts get them from the
# environment (PGBACKREST_REPO1_S3_*), configure.sh writes them to a mode-640 file.
PGBACKREST_REPO1_S3_KEY=test$(gen_secret | cut -c1-12)
PGBACKREST_REPO1_S3_KEY_SECRET=$(gen_secret)
export PGBACKREST_REPO1_S3_KEY PGBACKREST_REPO1_S3_KEY_SECRET
mkdir -p "$WORK/s3/quantaid-backups" "$WORK/tls"
# s3s-fs takes its keys on the command line only; they protect nothing beyond this run.
"$S3S_BIN" --host 127.0.0.1 --port "$S3_PORT" --access-key "$PGBACKREST_REPO1_S3_KEY" \
    --secret-key "$PGBACKREST_REPO1_S3_KEY_SECRET" "$WORK/s3" >"$WORK/s3s.log" 2>&1 &
S3S_PID=$!
# pgBackRest 2.45 matches the host name against DNS names only: the SAN is DNS:localhost.
openssl req -x509 -newkey rsa:2048 -nodes -days 400 -subj /CN=localhost -addext subjectAltName=DNS:localhost \
    -keyout "$WORK/tls/key.pem" -out "$WORK/tls/ca.crt" >/dev/null 2>&1
cat "$WORK/tls/ca.crt" "$WORK/tls/key.pem" >"$WORK/tls/haproxy.pem"
chmod 600 "$WORK/tls/key.pem" "$WORK/tls/haproxy.pem"
chmod 755 "$WORK/tls"
chmod 644 "$WORK/tls/ca.crt"
cat >"$WORK/haproxy.cfg" <<EOF
global
    maxconn 256
defaults
    mode tcp
    timeout connect 5s
    timeout client 10m
    timeout server 10m
frontend s3_tls
    bind 127.0.0.1:$TLS_PORT ssl crt $WORK/tls/haproxy.pem
    default_backend s3
backend s3
    server s3s 127.0.0.1:$S3_PORT
EOF
haproxy -f "$WORK/haproxy.cfg" -D -p "$WORK/haproxy.pid" >"$WORK/haproxy.log" 2>&1
for ((i = 0; i < 100; i++)); do
    curl -s -o /dev/null --cacert "$WORK/tls/ca.crt" "https://localhost:$TLS_PORT/" && break
    sleep 0.1
done
must "S3 answers over TLS at https://localhost:$TLS_PORT (certificate checked)" \
    curl -s -o /dev/null --cacert "$WORK/tls/ca.crt" "https://localhost:$TLS_PORT/"

# ---------------------------------------------------------------------------- the stack, with archiving

say "stack (scripts/stack.sh up in $STACK)"
scripts/stack.sh up >"$WORK/stack-up.log" 2>&1 || { tail -n 30 "$WORK/stack-up.log"; exit 1; }
ok "scripts/stack.sh up: PostgreSQL, Redis, backend and proxy running"
PG_DATA=$STACK/postgres/data
PG_SOCK=$STACK/postgres
kv() { sed -n "s/^$1=//p" "$2" | tail -n 1; }
ADMIN_TOKEN=$(kv QUANTAID_BOOTSTRAP_ADMIN_TOKEN "$STACK/secrets.env")

# psql_q ARGS...: superuser on the stack's cluster, database $SNAP_DB (default quantaid;
# a later -d wins); unaligned tuples.
psql_q() { runuser -u postgres -- "$PG_BIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 -h "$PG_SOCK" -p "$QUANTAID_PG_PORT" -U postgres -d "${SNAP_DB:-quantaid}" "$@"; }

say "backup configuration (deploy/backup/configure.sh, backup.sh init)"
QUANTAID_BACKUP_S3_BUCKET=quantaid-backups QUANTAID_BACKUP_S3_ENDPOINT=localhost QUANTAID_BACKUP_S3_REGION=us-east-1 \
    QUANTAID_BACKUP_S3_PORT=$TLS_PORT QUANTAID_BACKUP_S3_URI_STYLE=path QUANTAID_BACKUP_S3_CA_FILE=$WORK/tls/ca.crt \
    QUANTAID_BACKUP_PG_DATA=$PG_DATA QUANTAID_BACKUP_PG_PORT=$QUANTAID_PG_PORT QUANTAID_BACKUP_PG_SOCKET=$PG_SOCK \
    QUANTAID_BACKUP_LOG_PATH=$WORK/pgbackrest-log QUANTAID_BACKUP_LOCK_PATH=$WORK/pgbackrest-lock \
    "$BK/configure.sh"
check "the credentials file is mode 640 and the main config holds no key" \
    bash -c "[ \"\$(stat -c %a '$QUANTAID_BACKUP_CONFIG_PATH/conf.d/quantaid-s3-credentials.conf')\" = 640 ] && ! grep -q '^repo1-s3-key' '$QUANTAID_BACKUP_CONFIG_PATH/pgbackrest.conf'"
# From here on pgBackRest and the scripts read the credentials from the file, as
# PostgreSQL's archive_command does.
unset PGBACKREST_REPO1_S3_KEY PGBACKREST_REPO1_S3_KEY_SECRET
must "backup.sh init: archiving configured, stanza created" "$BK/backup.sh" init
quiet() { "$@" >>"$WORK/quiet.log" 2>&1 || { tail -n 30 "$WORK/quiet.log"; return 1; }; }
must "PostgreSQL restarts with archive_mode on (scripts/stack.sh restart)" quiet scripts/stack.sh restart
must "backup.sh init again: WAL reaches the repository" "$BK/backup.sh" init

# ---------------------------------------------------------------------------- helpers for the scenarios

# api METHOD PATH [JSON]: admin call through the proxy; prints the body, then the status on
# a last line. The token and the body reach curl through file descriptors.
api() {
    if [ $# -ge 3 ]; then
        curl -sS -w '\n%{http_code}' -X "$1" "$PROXY$2" -H @<(printf 'Authorization: Bearer %s\n' "$ADMIN_TOKEN") \
            -H 'Content-Type: application/json' --data-binary @<(printf '%s' "$3")
    else
        curl -sS -w '\n%{http_code}' -X "$1" "$PROXY$2" -H @<(printf 'Authorization: Bearer %s\n' "$ADMIN_TOKEN")
    fi
}
status_of() { printf '%s' "${1##*$'\n'}"; }
body_of() { printf '%s' "${1%$'\n'*}"; }

# create_user NAME: prints its id.
create_user() {
    local r
    r=$(api POST /v1/users "{\"username\":\"$1\",\"email\":\"$1@example.com\",\"password\":\"pw-$1-secret\"}")
    [ "$(status_of "$r")" = 201 ] || { echo "creating user $1: $r" >&2; return 1; }
    body_of "$r" | jq -r .id
}
# login NAME: prints a session token.
login() {
    curl -sS -f "$PROXY/v1/auth/login" -H 'Content-Type: application/json' \
        --data-binary @<(printf '{"username":"%s","password":"pw-%s-secret"}' "$1" "$1") | jq -r .session_token
}
# session_user TOKEN: the user id a session belongs to (empty when it does not work).
session_user() {
    curl -sS "$PROXY/v1/auth/session" -H @<(printf 'Authorization: Bearer %s\n' "$1") | jq -r '.user_id // empty'
}
# client_token CLIENT_ID SECRET [GRANT ARGS...]: prints an access token.
client_token() {
    local id=$1 secret=$2
    shift 2
    curl -sS -f -K <(printf 'user = "%s:%s"\n' "$id" "$secret") "$PROXY/oauth/token" "${@:--dgrant_type=client_credentials}" \
        | jq -r .access_token
}
introspect_active() {
    curl -sS -K <(printf 'user = "%s:%s"\n' "$2" "$3") --data-urlencode "token=$1" "$PROXY/oauth/introspect" | jq -r .active
}

# seed PREFIX USERS: users, sessions, OAuth clients and tokens, a revocation, a failed
# login: rows in every table the API writes (and the audit log of each).
seed() {
    local prefix=$1 n=$2 i r cid csecret tok
    for ((i = 1; i <= n; i++)); do create_user "$prefix-$i" >/dev/null || return 1; done
    for ((i = 1; i <= n; i += 2)); do [ -n "$(login "$prefix-$i")" ] || return 1; done
    for i in 1 2; do
        r=$(api POST /v1/clients "{\"name\":\"$prefix client $i\",\"grant_types\":[\"client_credentials\",\"password\",\"refresh_token\"],\"scopes\":[\"read\",\"write\"],\"redirect_uris\":[]}")
        [ "$(status_of "$r")" = 201 ] || { echo "creating a client: $r" >&2; return 1; }
        cid=$(body_of "$r" | jq -r .client_id)
        csecret=$(body_of "$r" | jq -r .client_secret)
        tok=$(client_token "$cid" "$csecret") && [ -n "$tok" ] || return 1
        client_token "$cid" "$csecret" -d grant_type=password -d "username=$prefix-$i" \
            --data-urlencode "password=pw-$prefix-$i-secret" -d scope=read >/dev/null || return 1
        # A revoked token: its row and audit entry must come back as they were.
        curl -sS -f -o /dev/null -K <(printf 'user = "%s:%s"\n' "$cid" "$csecret") --data-urlencode "token=$tok" "$PROXY/oauth/revoke" || return 1
    done
    # A failed login (audit row, throttle counter).
    curl -sS -o /dev/null "$PROXY/v1/auth/login" -H 'Content-Type: application/json' \
        -d "{\"username\":\"$prefix-1\",\"password\":\"wrong-password\"}"
}

# metric_recent NAME KIND: the textfile NAME{kind="KIND"} the scripts write holds a time of
# the last ten minutes (docs/operations/backup-restore.md, "Metrics and alerts").
metric_recent() {
    # shellcheck disable=SC2016 # $2 is awk's field, not the shell's
    awk -v now="$(date +%s)" -v series="$1{kind=\"$2\"}" '$1 == series { found = 1; ok = ($2 > now - 600 && $2 <= now) } END { exit !(found && ok) }' \
        "$QUANTAID_BACKUP_TEXTFILE_DIR/${1}_$2.prom" 2>/dev/null
}
# metric_value NAME KIND: the recorded time, or "none" when no file was written.
metric_value() { awk -v series="$1{kind=\"$2\"}" '$1 == series { print $2 }' "$QUANTAID_BACKUP_TEXTFILE_DIR/${1}_$2.prom" 2>/dev/null || echo none; }

# snapshot: every table of the database, its row count and a checksum of its rows.
snapshot() { psql_q <"$BK/table-checksums.sql"; }
rows_in() { awk -F'|' -v t="$1" '$1 == t { print $2 }' "$2"; }

# ---------------------------------------------------------------------------- drill (test case 7)

say "restore drill: seed, back up, drop the database, restore, compare, serve"
must "seeded users, sessions, clients, tokens and audit rows through the API" seed drill 12
# A session and a client-credentials token from before the backup: they must work after it.
OLD_USER_ID=$(create_user drill-old)
OLD_SESSION=$(login drill-old)
r=$(api POST /v1/clients '{"name":"drill old client","grant_types":["client_credentials"],"scopes":["read"],"redirect_uris":[]}')
OLD_CLIENT=$(body_of "$r" | jq -r .client_id)
OLD_CLIENT_SECRET=$(body_of "$r" | jq -r .client_secret)
OLD_TOKEN=$(client_token "$OLD_CLIENT" "$OLD_CLIENT_SECRET")
must "the old session works before the backup" test "$(session_user "$OLD_SESSION")" = "$OLD_USER_ID"

# ---- the drill: the block of docs/operations/backup-restore.md, line by line ----
DOC=$ROOT/docs/operations/backup-restore.md
sed -n '/^<!-- drill:begin/,/^<!-- drill:end/p' "$DOC" | sed -e '1,/^```sh$/d' -e '/^```$/,$d' >"$WORK/drill.sh"
must "the doc's drill block has its 13 commands" test "$(grep -c . "$WORK/drill.sh")" = 13
# The block's inputs, PG_SOCK, QUANTAID_PG_PORT, PROXY and OLD_SESSION, are set above.
: >"$WORK/drill.times"
drill_ok=yes
while IFS= read -r line; do
    printf '%s %s\n' "$(date +%s.%N)" "$line" >>"$WORK/drill.times"
    printf '$ %s\n' "$line" >>"$WORK/drill.log"
    if ! eval "$line" >"$WORK/drill.out" 2>>"$WORK/drill.log"; then
        cat "$WORK/drill.out" >>"$WORK/drill.log"
        bad "drill step failed: $line (log: below)"
        tail -n 20 "$WORK/drill.log"
        drill_ok=no
        break
    fi
    cat "$WORK/drill.out" >>"$WORK/drill.log"
done <"$WORK/drill.sh"
t_served=$(date +%s.%N)
[ "$drill_ok" = yes ] && ok "every command of the doc's drill exits 0"
drill_user=$(tail -n 1 "$WORK/drill.out")
t_restore=$(awk '/deploy\/backup\/restore.sh/ { print $1 }' "$WORK/drill.times")
t_restored=$(awk '/table-checksums.sql >"\$DRILL\/after.txt"/ { print $1 }' "$WORK/drill.times")
cp "$DRILL/before.txt" "$WORK/before.txt" 2>/dev/null || true
cp "$DRILL/after.txt" "$WORK/after.txt" 2>/dev/null || true
rm -rf "${DRILL:-/nonexistent}"
# ---- end of the drill ----
for tbl in users sessions oauth_clients oauth_tokens audit_logs; do
    check "restored $tbl has its $(rows_in "$tbl" "$WORK/before.txt") rows" \
        test "$(rows_in "$tbl" "$WORK/after.txt")" = "$(rows_in "$tbl" "$WORK/before.txt")"
done
check "every table's row count and checksum is identical ($(wc -l <"$WORK/before.txt") tables)" \
    diff "$WORK/before.txt" "$WORK/after.txt"
check "the stack comes up on the restored database" scripts/stack.sh status
check "a session from before the backup still works (through the proxy)" test "$drill_user" = "$OLD_USER_ID"
check "a client token from before the backup is still active" \
    test "$(introspect_active "$OLD_TOKEN" "$OLD_CLIENT" "$OLD_CLIENT_SECRET")" = true
check "new logins work on the restored database" test -n "$(login drill-3)"
check "the full backup's last-success metric is a recent timestamp" \
    metric_recent quantaid_backup_last_success_timestamp_seconds full
check "the drill's verify.sh recorded its last success (physical)" \
    metric_recent quantaid_backup_verify_last_success_timestamp_seconds physical
check "the drill's restore.sh recorded its last success (physical)" \
    metric_recent quantaid_backup_restore_last_success_timestamp_seconds physical
RTO_RESTORE=$(awk -v a="$t_restore" -v b="$t_restored" 'BEGIN { printf "%.1f", b - a }')
RTO_TOTAL=$(awk -v a="$t_restore" -v b="$t_served" 'BEGIN { printf "%.1f", b - a }')
echo "measured  RTO: $RTO_TOTAL s from restore.sh to the old session answered through the proxy (restore.sh $RTO_RESTORE s)"
echo "rto_total_s=$RTO_TOTAL rto_restore_s=$RTO_RESTORE db_size=$(psql_q -c "SELECT pg_size_pretty(pg_database_size('quantaid'))")" >>"$WORK/measurements"

if [ "$ONLY" = drill ]; then exit 0; fi

# ---------------------------------------------------------------------------- logical dumps

say "logical backup: pg_dump to S3, restore into an empty database, a corrupted dump refused"
# As the CronJob runs it: the application's role over TCP, the password in the environment.
export PGHOST=127.0.0.1 PGPORT=$QUANTAID_PG_PORT PGUSER=quantaid PGDATABASE=quantaid
PGPASSWORD=$(kv QUANTAID_DB_PASSWORD "$STACK/secrets.env")
export PGPASSWORD
snapshot >"$WORK/logical-source.txt"
must "backup.sh logical uploads a checksummed dump" "$BK/backup.sh" logical
psql_q -d postgres -c 'CREATE DATABASE quantaid_logical OWNER quantaid'
must "restore-logical.sh --dump latest restores it into an empty database" \
    "$BK/restore-logical.sh" --dump latest --dbname quantaid_logical
SNAP_DB=quantaid_logical snapshot >"$WORK/logical-restored.txt"
check "the logical restore has every table's rows and checksum" diff "$WORK/logical-source.txt" "$WORK/logical-restored.txt"
check "restore-logical.sh recorded its last success (logical)" \
    metric_recent quantaid_backup_restore_last_success_timestamp_seconds logical
restored_logical_at=$(metric_value quantaid_backup_restore_last_success_timestamp_seconds logical)
check "a second restore into the now non-empty database is refused" \
    bash -c "! '$BK/restore-logical.sh' --dump latest --dbname quantaid_logical 2>'$WORK/err' && grep -q 'already holds' '$WORK/err'"
dump_file=$(find "$WORK/s3" -name 'quantaid-*.dump' | sort | tail -n 1)
printf 'corrupt' | dd of="$dump_file" bs=1 seek=2000 conv=notrunc 2>/dev/null
psql_q -d postgres -c 'CREATE DATABASE quantaid_corrupt OWNER quantaid'
check "verify.sh logical detects the corrupted dump" bash -c "! '$BK/verify.sh' logical 2>'$WORK/err' && grep -q 'is corrupt' '$WORK/err'"
check "restore-logical.sh refuses the corrupted dump (non-zero, 'is corrupt')" \
    bash -c "! '$BK/restore-logical.sh' --dump latest --dbname quantaid_corrupt 2>'$WORK/err' && grep -q 'is corrupt' '$WORK/err'"
check "... and wrote nothing into the target database" test "$(SNAP_DB=quantaid_corrupt psql_q -c "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")" = 0
check "the refused verify and restore left their last-success metrics alone" \
    test "$(metric_value quantaid_backup_verify_last_success_timestamp_seconds logical) $(metric_value quantaid_backup_restore_last_success_timestamp_seconds logical)" \
    = "none $restored_logical_at"
psql_q -d postgres -c 'DROP DATABASE quantaid_logical' -c 'DROP DATABASE quantaid_corrupt'
sleep 1 # a new stamp (one-second resolution)
must "a new logical backup" "$BK/backup.sh" logical
check "verify.sh logical passes on the new dump" "$BK/verify.sh" logical
check "verify.sh logical recorded its last success" \
    metric_recent quantaid_backup_verify_last_success_timestamp_seconds logical
check "the logical backup's last-success metric is a recent timestamp" \
    metric_recent quantaid_backup_last_success_timestamp_seconds logical
unset PGHOST PGPORT PGUSER PGDATABASE PGPASSWORD

# ---------------------------------------------------------------------------- PITR (test case 8)

say "point-in-time recovery: set A, time T, set B, restore to T"
for i in 1 2 3 4 5; do create_user "pitr-a-$i" >/dev/null; done
login pitr-a-1 >/dev/null
sleep 1
T_PITR=$(date -u '+%Y-%m-%d %H:%M:%S.%N')
sleep 1
for i in 1 2 3 4 5; do create_user "pitr-b-$i" >/dev/null; done
login pitr-b-1 >/dev/null
check "before the restore: A and B are there" test "$(psql_q -c "SELECT count(*) FROM users WHERE username LIKE 'pitr-%'")" = 10
"$BK/verify.sh" >/dev/null 2>&1 # pushes the WAL holding set B, as before any restore
scripts/stack.sh down >/dev/null
must "restore.sh --to T" "$BK/restore.sh" --to "$T_PITR"
check "exactly set A is present, none of set B" \
    test "$(psql_q -c "SELECT string_agg(username, ',' ORDER BY username) FROM users WHERE username LIKE 'pitr-%'")" \
    = "pitr-a-1,pitr-a-2,pitr-a-3,pitr-a-4,pitr-a-5"
check "no audit row written after T survives" \
    test "$(psql_q -c "SELECT count(*) FROM audit_logs WHERE created_at > '$T_PITR+00'")" = 0
scripts/stack.sh up >/dev/null 2>&1
check "after the restore, a user of set A logs in" test -n "$(login pitr-a-2)"
check "... and a user of set B does not exist" \
    test "$(curl -sS -o /dev/null -w '%{http_code}' "$PROXY/v1/auth/login" -H 'Content-Type: application/json' -d '{"username":"pitr-b-2","password":"pw-pitr-b-2-secret"}')" = 401

# ---------------------------------------------------------------------------- latest: recovery point

say "losing the server while it writes: restore latest, measure the recovery point"
must "a differential backup" "$BK/backup.sh" diff
# Writes through the API for longer than archive_timeout (60 s), each acknowledged one logged
# with the time its 201 came back; then the data directory is lost at once.
WRITE_SECONDS=${QUANTAID_BACKUP_TEST_WRITE_SECONDS:-75}
: >"$WORK/acks"
deadline=$(($(date +%s) + WRITE_SECONDS))
n=0
while [ "$(date +%s)" -lt "$deadline" ]; do
    n=$((n + 1))
    if create_user "rpo-$n" >/dev/null 2>&1; then echo "$n $(date +%s.%N)" >>"$WORK/acks"; fi
    sleep 0.5
done
runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PG_DATA" -m immediate -w stop >/dev/null
t_loss=$(date +%s.%N)
rm -rf "$PG_DATA"
scripts/stack.sh down >/dev/null
acked=$(wc -l <"$WORK/acks")
t0=$(date +%s.%N)
must "restore.sh --to latest on an empty data directory" "$BK/restore.sh" --to latest
t1=$(date +%s.%N)
recovered=$(psql_q -c "SELECT coalesce(max(split_part(username, '-', 2)::int), 0) FROM users WHERE username LIKE 'rpo-%'")
check "the recovered writes are a prefix of the acknowledged ones (no hole)" \
    test "$(psql_q -c "SELECT count(*) FROM users WHERE username LIKE 'rpo-%'")" = "$(awk -v m="$recovered" '$1 <= m' "$WORK/acks" | wc -l)"
check "writes made after the differential backup were replayed from the WAL archive ($recovered of $acked)" test "$recovered" -gt 0
last_ack=$(awk -v m="$recovered" '$1 == m { print $2 }' "$WORK/acks")
RPO=$(awk -v a="${last_ack:-0}" -v b="$t_loss" 'BEGIN { printf "%.1f", b - a }')
check "recovery point within archive_timeout (60 s) + 15 s: lost the last $RPO s" awk -v r="$RPO" 'BEGIN { exit !(r <= 75) }'
RTO_LATEST=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
echo "measured  RPO: $RPO s of acknowledged writes lost ($((acked - recovered)) of $acked users, one every ~0.5 s for $WRITE_SECONDS s); restore.sh --to latest $RTO_LATEST s"
echo "rpo_s=$RPO lost=$((acked - recovered)) acked=$acked rto_latest_restore_s=$RTO_LATEST" >>"$WORK/measurements"
scripts/stack.sh up >/dev/null 2>&1
check "after the loss, the drill's old session still works" test "$(session_user "$OLD_SESSION")" = "$OLD_USER_ID"

# ---------------------------------------------------------------------------- failures

say "failures: a WAL gap, a corrupted and a missing backup file are detected, never restored"
must "a full backup to break" "$BK/backup.sh" full
# Two more segments after the backup's own: the gap below falls between the backup and the newest.
create_user after-failure-base >/dev/null
psql_q -c 'SELECT pg_switch_wal()' >/dev/null
create_user after-failure-base-2 >/dev/null
T_AFTER_GAP=$(date -u '+%Y-%m-%d %H:%M:%S.%N') # a time inside the segment removed below
must "verify.sh passes before the damage" "$BK/verify.sh"
FULL=$(runuser -u postgres -- pgbackrest --config-path="$QUANTAID_BACKUP_CONFIG_PATH" --stanza=quantaid info --output=json | jq -r '.[0].backup[-1].label')
REPO=$WORK/s3/quantaid-backups/quantaid
scripts/stack.sh down >/dev/null
control_sum() { sha256sum "$PG_DATA/global/pg_control" | cut -d' ' -f1; }
control_before=$(control_sum)

# A WAL gap: the segment before the newest goes missing.
seg=$(find "$REPO/archive" -name '0000000*-*' | sort | tail -n 2 | head -n 1)
mv "$seg" "$WORK/held-segment"
check "verify.sh detects the WAL gap (non-zero)" bash -c "! '$BK/verify.sh' 2>'$WORK/err' && grep -q 'WAL gap' '$WORK/err'"
check "restore.sh --to latest refuses the gap (non-zero)" bash -c "! '$BK/restore.sh' --to latest 2>'$WORK/err' && grep -q 'WAL gap' '$WORK/err'"
check "... and left the data directory as it was" test "$(control_sum)" = "$control_before" -a ! -e "$PG_DATA/recovery.signal"
mv "$WORK/held-segment" "$seg"

# A corrupted backup file, then a missing one, with the data directory lost.
bundle=$(find "$REPO/backup/quantaid/$FULL/bundle" -type f | sort | head -n 1)
cp "$bundle" "$WORK/held-bundle"
printf 'corrupted' | dd of="$bundle" bs=1 seek=4096 conv=notrunc 2>/dev/null
check "verify.sh detects the corrupted backup file (non-zero)" bash -c "! '$BK/verify.sh' 2>'$WORK/err' && grep -q 'status: invalid' '$WORK/err'"
mv "$PG_DATA" "$WORK/held-data"
check "restore.sh from the corrupted backup fails (non-zero)" bash -c "! '$BK/restore.sh' --to latest --set '$FULL' 2>'$WORK/err' && grep -q 'restore failed' '$WORK/err'"
check "... and PostgreSQL cannot start on what it left" \
    bash -c "! runuser -u postgres -- '$PG_BIN/pg_ctl' -D '$PG_DATA' -l '$WORK/pg-bad.log' -w -t 15 start >/dev/null 2>&1"
rm -f "$bundle"
rm -rf "$PG_DATA"
check "verify.sh detects the missing backup file (non-zero)" bash -c "! '$BK/verify.sh' 2>'$WORK/err' && grep -q 'status: invalid' '$WORK/err'"
check "restore.sh from the backup with a missing file fails (non-zero)" bash -c "! '$BK/restore.sh' --to latest --set '$FULL' 2>'$WORK/err' && grep -q 'restore failed' '$WORK/err'"
check "... and PostgreSQL cannot start on what it left" \
    bash -c "! runuser -u postgres -- '$PG_BIN/pg_ctl' -D '$PG_DATA' -l '$WORK/pg-bad.log' -w -t 15 start >/dev/null 2>&1"
mv "$WORK/held-bundle" "$bundle"
rm -rf "$PG_DATA"
mv "$WORK/held-data" "$PG_DATA"
must "with the repository repaired, verify.sh passes again" "$BK/verify.sh"
scripts/stack.sh up >/dev/null 2>&1
check "the untouched cluster still serves the user written before the damage" test -n "$(login after-failure-base)"

# The gap again, now with a time target behind it: PostgreSQL must refuse to open.
scripts/stack.sh down >/dev/null
mv "$seg" "$WORK/held-segment"
check "restore.sh --to a time behind a WAL gap fails (non-zero, recovery did not reach it)" \
    bash -c "! '$BK/restore.sh' --to '$T_AFTER_GAP' 2>'$WORK/err' && grep -q 'recovery ended before configured recovery target was reached' '$WORK/err'"
check "... and PostgreSQL is not left running" bash -c "! runuser -u postgres -- '$PG_BIN/pg_ctl' -D '$PG_DATA' status >/dev/null 2>&1"
mv "$WORK/held-segment" "$seg"
must "with the segment back, restore.sh --to latest recovers the cluster" "$BK/restore.sh" --to latest
check "... with the writes on both sides of the former gap" \
    test "$(psql_q -c "SELECT count(*) FROM users WHERE username IN ('after-failure-base', 'after-failure-base-2')")" = 2
quiet scripts/stack.sh up

# ---------------------------------------------------------------------------- retention

say "retention: 30 days, with the clock moved on (libfaketime) for pgBackRest, the scripts and the S3 store"
info_json() { runuser -u postgres -- pgbackrest --config-path="$QUANTAID_BACKUP_CONFIG_PATH" --stanza=quantaid info --output=json; }
backups_before=$(info_json | jq -r '[.[0].backup[].label] | join(" ")')
dumps_before=$(find "$WORK/s3" -name 'quantaid-*.dump' | wc -l)
# PostgreSQL keeps the real clock: stopped, so its archive_command does not meet a store
# that lives in the future.
scripts/stack.sh down >/dev/null
FAKETIME_LIB=$(dpkg -L libfaketime | grep '/libfaketime.so.1$' | head -n 1)
# s3_at OFFSET: restarts the S3 store with its clock OFFSET on (empty: the real clock);
# S3 refuses requests signed at a time too far from its own.
s3_at() {
    kill "$S3S_PID" 2>/dev/null || true
    wait "$S3S_PID" 2>/dev/null || true
    if [ -n "$1" ]; then
        LD_PRELOAD=$FAKETIME_LIB FAKETIME=$1 "$S3S_BIN" --host 127.0.0.1 --port "$S3_PORT" --access-key "$(kv repo1-s3-key "$QUANTAID_BACKUP_CONFIG_PATH/conf.d/quantaid-s3-credentials.conf")" \
            --secret-key "$(kv repo1-s3-key-secret "$QUANTAID_BACKUP_CONFIG_PATH/conf.d/quantaid-s3-credentials.conf")" "$WORK/s3" >>"$WORK/s3s.log" 2>&1 &
    else
        "$S3S_BIN" --host 127.0.0.1 --port "$S3_PORT" --access-key "$(kv repo1-s3-key "$QUANTAID_BACKUP_CONFIG_PATH/conf.d/quantaid-s3-credentials.conf")" \
            --secret-key "$(kv repo1-s3-key-secret "$QUANTAID_BACKUP_CONFIG_PATH/conf.d/quantaid-s3-credentials.conf")" "$WORK/s3" >>"$WORK/s3s.log" 2>&1 &
    fi
    S3S_PID=$!
    for ((i = 0; i < 50; i++)); do (exec 3<>"/dev/tcp/127.0.0.1/$S3_PORT") 2>/dev/null && return 0; sleep 0.1; done
    return 1
}
in_days() { LD_PRELOAD=$FAKETIME_LIB FAKETIME=+${1}d "${@:2}"; }

must "S3 store on a clock 29 days on" s3_at +29d
must "backup.sh expire 29 days later" in_days 29 "$BK/backup.sh" expire
check "29 days later nothing has expired (backups: $backups_before)" \
    test "$(in_days 29 runuser -u postgres -- pgbackrest --config-path="$QUANTAID_BACKUP_CONFIG_PATH" --stanza=quantaid info --output=json | jq -r '[.[0].backup[].label] | join(" ")')" = "$backups_before"
check "29 days later every logical dump is kept ($dumps_before)" test "$(find "$WORK/s3" -name 'quantaid-*.dump' | wc -l)" = "$dumps_before"

must "S3 store on a clock 31 days on" s3_at +31d
must "backup.sh expire 31 days later" in_days 31 "$BK/backup.sh" expire
after=$(in_days 31 runuser -u postgres -- pgbackrest --config-path="$QUANTAID_BACKUP_CONFIG_PATH" --stanza=quantaid info --output=json)
check "31 days later only the newest full backup is left ($FULL)" test "$(jq -r '[.[0].backup[].label] | join(" ")' <<<"$after")" = "$FULL"
check "... and the WAL before it is gone" \
    test "$(jq -r '.[0].archive[0].min' <<<"$after")" = "$(jq -r '.[0].backup[0].archive.start' <<<"$after")"
check "31 days later only the newest logical dump is left" test "$(find "$WORK/s3" -name 'quantaid-*.dump' | wc -l)" = 1
check "31 days later the repository still verifies" in_days 31 "$BK/verify.sh"

must "S3 store back on the real clock" s3_at ""
scripts/stack.sh up >/dev/null 2>&1
check "after expiry, archiving and checks still pass" "$BK/verify.sh"
check "after everything, the drill's old session still works" test "$(session_user "$OLD_SESSION")" = "$OLD_USER_ID"

say "measurements"
cat "$WORK/measurements"
if [ -n "${QUANTAID_BACKUP_TEST_RESULTS:-}" ]; then cp "$WORK/measurements" "$QUANTAID_BACKUP_TEST_RESULTS"; fi
