#!/usr/bin/env bash
# Restores QuantaID's PostgreSQL cluster from the pgBackRest repository, on the PostgreSQL
# host, as root (docs/operations/backup-restore.md).
#
#   deploy/backup/restore.sh --to latest            everything the archive holds
#   deploy/backup/restore.sh --to '<time>'          point in time, e.g. '2026-12-03 09:41:07+00'
#                                                   (any form `date -d` reads; no zone = UTC)
#   deploy/backup/restore.sh --to lsn:<X/Y>        everything written before that WAL position
#                                                   (exclusive), e.g. the first record of a DROP DATABASE
#   options:  --set <backup label>                  restore from this backup (default: the newest
#                                                   that finished before the target)
#
# PostgreSQL must be stopped; its data directory (pg1-path) is overwritten (pgBackRest
# --delta: unchanged files are kept, everything else is replaced or removed). Then the
# script starts PostgreSQL, waits for recovery to end and checks what it recovered:
#   - latest: before touching anything, that the WAL from the backup to the newest archived
#     segment has no gap; after recovery, that replay reached that segment;
#   - a time: PostgreSQL itself refuses to open if the WAL stops before that time.
# Finally `pgbackrest check` proves the new timeline's WAL reaches the repository. On any
# failure up to there the script stops PostgreSQL and exits non-zero: a cluster that did
# not recover exactly what was asked is never left running.
#
# Settings besides those of lib.sh:
#   QUANTAID_BACKUP_PG_LOG             server log during and after the restore
#                                      (default <data directory>/../postgresql-restore.log)
#   QUANTAID_BACKUP_PG_CONFIG_FILE     postgresql.conf when it is not in the data directory
#                                      (Debian clusters: /etc/postgresql/<ver>/<name>/postgresql.conf)
#   QUANTAID_BACKUP_RECOVERY_TIMEOUT   seconds to wait for recovery (default 3600)
BACKUP_NAME=restore
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    sed -n '2,/^BACKUP_NAME=/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
    exit 2
}

TO="" SET=""
while [ $# -gt 0 ]; do
    case $1 in
    --to) TO=${2:-}; shift 2 || usage ;;
    --set) SET=${2:-}; shift 2 || usage ;;
    -h | --help) usage ;;
    *) die "unknown argument '$1' (use --to <time|latest> [--set <label>])" ;;
    esac
done
[ -n "$TO" ] || die "--to <time|latest> is required"

[ -r "$CONFIG_PATH/pgbackrest.conf" ] || die "$CONFIG_PATH/pgbackrest.conf is missing: run deploy/backup/configure.sh first"
need pgbackrest jq
[ -x "$PG_BIN/pg_ctl" ] || die "pg_ctl not found in $PG_BIN (set QUANTAID_PG_BIN)"

DATA=$(pg_data)
PG_LOG=${QUANTAID_BACKUP_PG_LOG:-$(dirname "$DATA")/postgresql-restore.log}
TIMEOUT=${QUANTAID_BACKUP_RECOVERY_TIMEOUT:-3600}
started=$(date +%s)

if [ -f "$DATA/PG_VERSION" ] && pg_running; then
    die "PostgreSQL is running on $DATA: stop it first (nothing was changed)"
fi

INFO=$(pgbr info --output=json) || die "pgbackrest info failed: is the repository reachable? (nothing was changed)"
status=$(jq -r '.[0].status.code' <<<"$INFO")
[ "$status" = 0 ] || [ "$status" = 4 ] \
    || die "the repository is not usable: $(jq -r '.[0].status.message' <<<"$INFO") (nothing was changed)"
[ "$(jq '.[0].backup | length' <<<"$INFO")" -gt 0 ] || die "the repository holds no backup (nothing was changed)"

# ------------------------------------------------------------------------- which backup, which target

if [ "$TO" = latest ]; then
    TYPE=default
    TARGET_DESC="the end of the archived WAL"
    [ -n "$SET" ] || SET=$(jq -r '.[0].backup[-1].label' <<<"$INFO")
elif [[ $TO =~ ^lsn:([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$ ]]; then
    # Recovery stops just before the first record at or after this position.
    TYPE=lsn
    TARGET=${TO#lsn:}
    TARGET_DESC="WAL position $TARGET (exclusive)"
    lsn=$(((16#${BASH_REMATCH[1]} << 32) + 16#${BASH_REMATCH[2]}))
    if [ -z "$SET" ]; then
        while read -r label stop; do
            if (((16#${stop%/*} << 32) + 16#${stop#*/} <= lsn)); then SET=$label; fi
        done < <(jq -r '.[0].backup[] | "\(.label) \(.lsn.stop)"' <<<"$INFO")
        [ -n "$SET" ] || die "no backup ends before WAL position $TARGET (nothing was changed)"
    fi
else
    # A bare time is UTC. pgBackRest and PostgreSQL get an explicit +00.
    epoch=$(TZ=UTC date -d "$TO" +%s.%N 2>/dev/null) || die "--to '$TO' is neither 'latest' nor a time date(1) can read"
    TARGET=$(TZ=UTC date -d "@$epoch" '+%Y-%m-%d %H:%M:%S.%6N+00')
    now=$(date +%s)
    [ "${epoch%.*}" -le "$now" ] || die "--to $TARGET is in the future"
    TYPE="time"
    TARGET_DESC=$TARGET
    if [ -z "$SET" ]; then
        # The newest backup that was complete (consistent) at the target time.
        SET=$(jq -r --argjson t "${epoch%.*}" '[.[0].backup[] | select(.timestamp.stop <= $t)] | last | .label // empty' <<<"$INFO")
        [ -n "$SET" ] || die "no backup finished before $TARGET; the oldest finished at" \
            "$(date -u -d "@$(jq -r '.[0].backup[0].timestamp.stop' <<<"$INFO")" '+%Y-%m-%d %H:%M:%S+00') (nothing was changed)"
    fi
fi
BACKUP=$(jq -c --arg s "$SET" '.[0].backup[] | select(.label == $s)' <<<"$INFO")
[ -n "$BACKUP" ] || die "no backup labelled '$SET' in the repository (nothing was changed)"
[ "$(jq -r '.error // false' <<<"$BACKUP")" != true ] \
    || die "backup $SET is marked as having errors by pgBackRest (nothing was changed)"
log "restoring backup $SET ($(jq -r .type <<<"$BACKUP"), finished $(date -u -d "@$(jq -r .timestamp.stop <<<"$BACKUP")" '+%Y-%m-%d %H:%M:%S+00'))" \
    "to $TARGET_DESC into $DATA"

# ------------------------------------------------------------------------- WAL continuity

ARCHIVE_ID=$(jq -r --argjson db "$(jq .database.id <<<"$BACKUP")" \
    '.[0].archive[] | select(.database.id == $db) | .id' <<<"$INFO")
[ -n "$ARCHIVE_ID" ] || die "no WAL archive for backup $SET's database (nothing was changed)"

if [ "$TYPE" = default ]; then
    # Recovery to "latest" stops silently at the first missing segment: refuse a gap first.
    wal_check "$(jq -r .archive.start <<<"$BACKUP")" "$ARCHIVE_ID" \
        || die "'--to latest' would silently stop at the gap: nothing was changed. Restore to a time" \
            "before the gap instead (docs/operations/backup-restore.md, 'WAL gap')"
fi

# ------------------------------------------------------------------------- restore

# fail MESSAGE: stops PostgreSQL if this script started it, then exits non-zero.
STARTED_PG=no
fail() {
    if [ "$STARTED_PG" = yes ] && pg_running; then
        as_pg_owner "$PG_BIN/pg_ctl" -D "$DATA" -m immediate -w stop >/dev/null 2>&1 || true
        log "PostgreSQL stopped: the restored cluster must not be used"
    fi
    die "$@"
}

# show_log_errors: the server's own reason, when recovery failed.
show_log_errors() {
    if [ -r "$PG_LOG" ]; then
        grep -E 'FATAL|PANIC|ERROR' "$PG_LOG" | tail -n 5 | sed 's/^/  postgres: /' >&2 || true
    fi
}

if [ ! -d "$DATA" ]; then
    mkdir -p "$DATA"
    chown "$PG_OS_USER:$(id -gn "$PG_OS_USER")" "$DATA"
    chmod 700 "$DATA"
fi
args=(--delta --set="$SET" --type="$TYPE")
case $TYPE in
time) args+=(--target="$TARGET" --target-action=promote) ;;
lsn) args+=(--target="$TARGET" --target-exclusive --target-action=promote) ;;
esac
# pgBackRest checks every file against the backup's manifest and writes global/pg_control
# last, so a restore that fails part-way leaves a directory PostgreSQL will not start.
pgbr restore "${args[@]}" || fail "pgbackrest restore failed (see above): nothing usable was restored"
restored_at=$(date +%s)
log "files restored in $((restored_at - started)) s; starting PostgreSQL for recovery (log: $PG_LOG)"

touch "$PG_LOG"
chown "$PG_OS_USER" "$PG_LOG" 2>/dev/null || true
ctl_opts=()
[ -z "${QUANTAID_BACKUP_PG_CONFIG_FILE:-}" ] || ctl_opts=(-o "-c config_file=$QUANTAID_BACKUP_PG_CONFIG_FILE")
STARTED_PG=yes
if ! as_pg_owner "$PG_BIN/pg_ctl" -D "$DATA" -l "$PG_LOG" "${ctl_opts[@]}" -w -t "$TIMEOUT" start >/dev/null; then
    show_log_errors
    fail "PostgreSQL did not open after the restore: recovery to $TARGET_DESC failed (the server's reason is above;" \
        "'recovery ended before configured recovery target was reached' means the archived WAL stops before the target)"
fi

# With hot_standby, PostgreSQL accepts connections while it still replays: wait for the end.
deadline=$(($(date +%s) + TIMEOUT))
while :; do
    in_recovery=$(pg_psql -c 'SELECT pg_is_in_recovery()' 2>/dev/null || echo gone)
    [ "$in_recovery" != f ] || break
    if [ "$in_recovery" = gone ] && ! pg_running; then
        show_log_errors
        fail "PostgreSQL stopped during recovery (the server's reason is above)"
    fi
    [ "$(date +%s)" -lt "$deadline" ] || fail "recovery did not end within $TIMEOUT s (QUANTAID_BACKUP_RECOVERY_TIMEOUT)"
    sleep 0.5
done
recovered_at=$(date +%s)

last_commit=$(pg_psql -c "SELECT coalesce(to_char(pg_last_xact_replay_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US+00'), 'none replayed')")
if [ "$TYPE" = default ]; then
    replayed=$(pg_psql -c 'SELECT pg_walfile_name(pg_last_wal_replay_lsn())')
    if (($(seg_no "$replayed") < WAL_END_SEG)); then
        fail "recovery stopped in segment ${replayed:8} but the archive holds WAL up to $WAL_END_NAME:" \
            "a segment in between could not be read"
    fi
    log "recovery replayed the archive to its end (segment ${replayed:8})"
fi
log "recovered; last transaction replayed committed at $last_commit"

STARTED_PG=no # from here on the data is right: a failure below leaves the server running
# The new timeline's WAL must reach the repository, or the next point-in-time recovery
# has nothing to replay.
pgbr check >/dev/null || die "the cluster is restored and running, but its WAL does not reach the repository" \
    "(pgbackrest check failed): fix archiving before relying on point-in-time recovery"
done_at=$(date +%s)
write_metric quantaid_backup_restore_last_success_timestamp_seconds physical
log "restore done in $((done_at - started)) s (files $((restored_at - started)) s, recovery $((recovered_at - restored_at)) s):" \
    "backup $SET, target $TARGET_DESC, last transaction $last_commit; PostgreSQL is running"
