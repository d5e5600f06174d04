#!/usr/bin/env bash
# End-to-end smoke test of the README's first command, `scripts/stack.sh up`.
#
# Brings a throwaway stack up in a temporary state directory on free ports (so a stack you
# run yourself on the default ports is left alone), runs the curl examples that `up`
# prints, exactly as printed (login, session lookup, forward-auth check, token issue,
# introspect, revoke, password grant, metrics), through the caching proxy, checks their answers with jq, checks that `up` on a running
# stack is a no-op and that `down` + `up` keeps users, clients and sessions, and stops
# the stack at the end, also on failure.
#
#   scripts/smoke.sh
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

# first_free_port BASE: the first port from BASE up on which nothing listens. The bases
# sit below Linux's ephemeral range (32768+), where tests pick their random ports.
first_free_port() {
    local p=$1
    while (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; do p=$((p + 1)); done
    echo "$p"
}

SMOKE_DIR=$(mktemp -d /tmp/quantaid-smoke.XXXXXX)
chmod 711 "$SMOKE_DIR" # the postgres system user must reach the cluster inside
STACK=$SMOKE_DIR/stack
LOGS=$SMOKE_DIR/logs
mkdir -p "$LOGS"

export QUANTAID_STACK_DIR=$STACK
QUANTAID_PG_PORT=$(first_free_port 25432)
QUANTAID_REDIS_PORT=$(first_free_port 26379)
backend_port=$(first_free_port 28081)
metrics_port=$(first_free_port 29091)
proxy_port=$(first_free_port 28080)
proxy_metrics_port=$(first_free_port 29090)
export QUANTAID_PG_PORT QUANTAID_REDIS_PORT
export QUANTAID_LISTEN_ADDR=127.0.0.1:$backend_port QUANTAID_METRICS_ADDR=127.0.0.1:$metrics_port
export QUANTAID_PROXY_LISTEN_ADDR=127.0.0.1:$proxy_port QUANTAID_PROXY_METRICS_ADDR=127.0.0.1:$proxy_metrics_port
CLIENT_URL=http://127.0.0.1:$proxy_port

pass=0
fail=0
exec 3>&1 4>&2 # the real stdout/stderr, for cleanup after a signal in a redirected command

cleanup() {
    local rc=$?
    exec 1>&3 2>&4
    if ((rc != 0 || fail != 0)); then
        echo "---- last lines of the stack's logs ----"
        for f in "$STACK"/backend.log "$STACK"/proxy.log "$STACK"/postgres.log "$STACK"/redis.log; do
            [ -f "$f" ] && { echo "== $f"; tail -n 20 "$f"; }
        done
    fi
    scripts/stack.sh down >/dev/null 2>&1 || echo "smoke: warning: 'scripts/stack.sh down' failed" >&2
    rm -rf "$SMOKE_DIR"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# check STEP DESCRIPTION COMMAND...: records a pass or a failure (showing STEP's output).
check() {
    local step=$1 desc=$2
    shift 2
    if "$@" >/dev/null 2>&1; then
        pass=$((pass + 1))
        echo "ok    $desc"
    else
        fail=$((fail + 1))
        echo "FAIL  $desc"
        if [ -n "$step" ] && [ -f "$RUN/$step.out" ]; then
            echo "      command: $(sed -n "${step}p" "$RUN/commands")"
            sed 's/^/      stdout: /' "$RUN/$step.out"
            sed 's/^/      stderr: /' "$RUN/$step.err"
        fi
    fi
}

rc_ok() { [ "$(cat "$RUN/$1.rc")" = 0 ]; }
matches() { rc_ok "$1" && grep -Eq "$2" "$RUN/$1.out"; }
jq_true() {
    local step=$1
    shift
    rc_ok "$step" && jq -e "$@" "$RUN/$step.out"
}
demo() { sed -n "s/^$1=//p" "$STACK/demo.env" | tail -n 1; }

# run_printed UPLOG NAME: runs each command line of the "copy from here" block in one
# bash, each line's stdout/stderr/exit code into $RUN/<n>.{out,err,rc}.
run_printed() {
    RUN=$LOGS/$2
    mkdir -p "$RUN"
    sed -n '/^# ---- copy from here ----$/,/^# ---- to here ----$/p' "$1" | grep -v -e '^#' -e '^[[:space:]]*$' \
        >"$RUN/commands" || true
    local n=0 line
    {
        while IFS= read -r line; do
            n=$((n + 1))
            printf '{ %s\n} >%q 2>%q </dev/null; echo $? >%q\n' "$line" "$RUN/$n.out" "$RUN/$n.err" "$RUN/$n.rc"
        done <"$RUN/commands"
    } >"$RUN/script.sh"
    (cd "$SMOKE_DIR" && bash "$RUN/script.sh")
}

# check_flows NAME: the checks on the printed examples (order as stack.sh prints them).
# shellcheck disable=SC2016 # the $names belong to jq or to the inner bash -c, which expand them
check_flows() {
    local uid cid
    uid=$(demo DEMO_USER_ID)
    cid=$(demo DEMO_CLIENT_ID)
    check "" "[$1] stack.sh printed the 10 example commands" test "$(wc -l <"$RUN/commands")" -eq 10
    check 1 "[$1] login prints a session token" matches 1 '^qst_'
    check 2 "[$1] session lookup returns the demo user" jq_true 2 --arg uid "$uid" '.user_id == $uid'
    check 3 "[$1] forward-auth check names the demo user" matches 3 "^x-quantaid-user-id: $uid"
    check 4 "[$1] client_credentials grant prints an access token" matches 4 '^qat_'
    check 5 "[$1] introspection: active, issued to the demo client" \
        jq_true 5 --arg cid "$cid" '.active == true and .client_id == $cid and .token_type == "Bearer"'
    check 6 "[$1] revoke answers HTTP 200" matches 6 '^revoke: HTTP 200$'
    check 7 "[$1] introspection after revoke: inactive" jq_true 7 '. == {"active": false}'
    check 6 "[$1] the revocation reached Redis (tombstone for the token's key)" \
        bash -c 'test "$(REDISCLI_AUTH=$1 redis-cli -h 127.0.0.1 -p "$2" GET "token:$(printf %s "$3" | sha256sum | cut -c1-64)")" = revoked' \
        _ "$(sed -n 's/^QUANTAID_REDIS_PASSWORD=//p' "$STACK/secrets.env")" "$QUANTAID_REDIS_PORT" "$(cat "$RUN/4.out")"
    check 8 "[$1] password grant returns access and refresh tokens" \
        jq_true 8 '(.access_token | startswith("qat_")) and (.refresh_token | startswith("qrt_")) and .token_type == "Bearer"'
    check 9 "[$1] the proxy answered the forward-auth check from its cache" matches 9 '^quantaid_cache_hits_total\{kind="session"\} [1-9]'
    check 10 "[$1] backend metrics count the issued tokens" matches 10 '^quantaid_oauth_tokens_issued_total\{grant_type="client_credentials"\} [1-9]'
}

echo "smoke: stack in $STACK; Postgres :$QUANTAID_PG_PORT, Redis :$QUANTAID_REDIS_PORT," \
    "backend :$backend_port, metrics :$metrics_port, proxy :$proxy_port, proxy metrics :$proxy_metrics_port"

# 1. A fresh `up`: installs, builds, initdb, starts, creates the demo data.
scripts/stack.sh up >"$LOGS/up1.log" 2>&1 || { cat "$LOGS/up1.log"; echo "smoke: 'scripts/stack.sh up' failed"; exit 1; }
check "" "stack.sh up: every service is up" scripts/stack.sh status
check "" "secrets.env and demo.env are mode 600" \
    test "$(stat -c %a "$STACK/secrets.env") $(stat -c %a "$STACK/demo.env")" = "600 600"
# secrets.env holds only generated secrets (DB, Redis, admin and internal tokens); none is printed.
# shellcheck disable=SC2016 # the $names belong to jq or to the inner bash -c, which expand them
check "" "no generated infrastructure secret is printed" \
    bash -c 'sed -n "s/^[A-Z_]*=//p" "$1" | grep -qvxF "" && ! grep -qF -f <(sed -n "s/^[A-Z_]*=//p" "$1") "$2"' _ \
    "$STACK/secrets.env" "$LOGS/up1.log"
db_password=$(sed -n 's/^QUANTAID_DB_PASSWORD=//p' "$STACK/secrets.env")
# Constants are normalised away in pg_stat_statements, so this query does not store the password.
# shellcheck disable=SC2016 # the $names belong to jq or to the inner bash -c, which expand them
check "" "pg_stat_statements works for the quantaid role and holds no password" \
    bash -c 'PGPASSWORD=$1 psql -X -At -h 127.0.0.1 -p "$2" -U quantaid -d quantaid -v ON_ERROR_STOP=1 \
        <<<"SELECT count(*) FROM pg_stat_statements WHERE strpos(query, '\''$1'\'') > 0" | grep -qx 0' \
    _ "$db_password" "$QUANTAID_PG_PORT"
run_printed "$LOGS/up1.log" first
check_flows first
first_session=$(cat "$RUN/1.out")
# shellcheck disable=SC2016 # the $names belong to jq or to the inner bash -c, which expand them
check "" "the OAuth metadata names the URL clients are told to use" \
    bash -c 'curl -fsS "$1/.well-known/oauth-authorization-server" | jq -e --arg u "$1" ".token_endpoint == (\$u + \"/oauth/token\")"' \
    _ "$CLIENT_URL"

# 2. `up` on a running stack changes nothing and prints the same information.
backend_pid=$(cat "$STACK/backend.pid")
scripts/stack.sh up >"$LOGS/up2.log" 2>&1
check "" "a second up is a no-op (same backend process)" test "$(cat "$STACK/backend.pid")" = "$backend_pid"
check "" "a second up reprints the same demo credentials" \
    diff <(sed -n '/^Demo user/,$p' "$LOGS/up1.log") <(sed -n '/^Demo user/,$p' "$LOGS/up2.log")

# 3. `down`, then `up` again: same users, clients and sessions.
scripts/stack.sh down >"$LOGS/down.log" 2>&1
check "" "stack.sh down stops every service" bash -c '! scripts/stack.sh status'
scripts/stack.sh up >"$LOGS/up3.log" 2>&1 || { cat "$LOGS/up3.log"; echo "smoke: second 'scripts/stack.sh up' failed"; exit 1; }
check "" "up after down prints the same demo credentials" \
    diff <(sed -n '/^Demo user/,$p' "$LOGS/up1.log") <(sed -n '/^Demo user/,$p' "$LOGS/up3.log")
# shellcheck disable=SC2016 # the $names belong to jq or to the inner bash -c, which expand them
check "" "a session from before the restart is still valid" \
    bash -c 'curl -fsS "$1/v1/auth/session" -H "Authorization: Bearer $2" | jq -e --arg u "$3" ".user_id == \$u"' _ \
    "$CLIENT_URL" "$first_session" "$(demo DEMO_USER_ID)"
run_printed "$LOGS/up3.log" after-restart
check_flows after-restart

scripts/stack.sh down >/dev/null
echo "smoke: $pass passed, $fail failed"
((fail == 0))
