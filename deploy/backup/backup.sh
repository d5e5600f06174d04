#!/usr/bin/env bash
# QuantaID backups (docs/operations/backup-restore.md).
#
#   deploy/backup/backup.sh init      turn on WAL archiving (ALTER SYSTEM), create the stanza and, once
#                                     archive_mode is on (after a restart), check that WAL reaches S3
#   deploy/backup/backup.sh full      pgBackRest full backup, then expiry of what is past retention
#   deploy/backup/backup.sh diff      pgBackRest differential backup (against the last full), then expiry
#   deploy/backup/backup.sh logical   pg_dump (custom format) + SHA-256 to the same bucket, then
#                                     expiry of the dumps past retention
#   deploy/backup/backup.sh expire    expiry only (both kinds)
#
# init, full, diff and expire run on the PostgreSQL host (they read the data directory).
# logical needs only a libpq connection (PGHOST, PGPORT, PGUSER, PGPASSWORD or PGPASSFILE,
# PGDATABASE, default quantaid) and the S3 settings, so it also runs from a Kubernetes CronJob.
#
# Settings besides those of lib.sh:
#   QUANTAID_BACKUP_LOGICAL_RETENTION_DAYS  days a logical dump is kept (default 30; the newest is always kept)
#   QUANTAID_BACKUP_WORK_DIR                where a dump is written before upload (default $TMPDIR or /tmp)
#
# On success each kind records its time in quantaid_backup_last_success_timestamp_seconds{kind}
# (a full backup also refreshes kind="diff": it serves every purpose a differential does).
# Any failure exits non-zero with the reason on stderr, and leaves that metric alone.
BACKUP_NAME=backup
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

usage() {
    sed -n '2,/^BACKUP_NAME=/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
    exit 2
}

require_config() {
    [ -r "$CONFIG_PATH/pgbackrest.conf" ] || die "$CONFIG_PATH/pgbackrest.conf is missing: run deploy/backup/configure.sh first"
    need pgbackrest jq
}

cmd_init() {
    require_config
    pg_running || die "PostgreSQL is not running on $(pg_data)"
    local archive_command
    archive_command="pgbackrest --config-path=$(printf '%q' "$CONFIG_PATH") --stanza=$(printf '%q' "$STANZA") archive-push %p"
    # The SQL reaches psql on stdin: the data directory's owner may not be able to read this checkout.
    pg_psql -v archive_command="$archive_command" <"$HERE/archiving.sql" >/dev/null \
        || die "could not turn on WAL archiving (ALTER SYSTEM needs a superuser)"
    log "WAL archiving configured: archive_command = $archive_command"
    pgbr stanza-create || die "pgbackrest stanza-create failed (see above)"
    if [ "$(pg_psql -c 'SHOW archive_mode')" != on ]; then
        log "archive_mode takes effect at the next restart: restart PostgreSQL now, then run backup.sh init again"
        return 0
    fi
    pgbr check || die "pgbackrest check failed: WAL does not reach the repository (see above)"
    log "stanza $STANZA ready; WAL reaches the repository"
}

# newest_backup_type: the type (full, diff, incr) of the newest backup in the repository.
newest_backup_type() {
    pgbr info --output=json | jq -r '.[0].backup[-1].type // empty'
}

cmd_backup() {
    local kind=$1 made
    require_config
    pg_running || die "PostgreSQL is not running on $(pg_data)"
    log "starting a $kind backup of stanza $STANZA"
    # pgBackRest expires what is past retention after a successful backup.
    pgbr backup --type="$kind" || die "pgbackrest backup --type=$kind failed (see above)"
    # A diff without any full backup before it is taken as a full one: record what was made.
    made=$(newest_backup_type) || die "pgbackrest info failed after the backup"
    [ -n "$made" ] || die "the repository lists no backup after a successful backup"
    write_metric quantaid_backup_last_success_timestamp_seconds "$made"
    # A full backup is also the newest base a differential restore can use: it refreshes
    # kind="diff" too, so the daily-backup alert stays quiet on full-backup days.
    if [ "$made" = full ]; then write_metric quantaid_backup_last_success_timestamp_seconds diff; fi
    log "$made backup done: $(pgbr info --output=json | jq -r '.[0].backup[-1].label')"
}

# ------------------------------------------------------------------------- logical dumps

DB_NAME=${PGDATABASE:-quantaid}

cmd_logical() {
    need "$PG_BIN/pg_dump" "$PG_BIN/pg_restore" curl jq sha256sum
    local work stamp key
    work=$(mktemp -d "${QUANTAID_BACKUP_WORK_DIR:-${TMPDIR:-/tmp}}/quantaid-dump.XXXXXX")
    # shellcheck disable=SC2064 # expand now: the trap must remove this run's directory
    trap "rm -rf '$work'" EXIT
    stamp=$(date -u +%Y%m%dT%H%M%SZ)
    key=$(logical_prefix)$DB_NAME-$stamp.dump
    log "dumping database $DB_NAME (pg_dump, custom format)"
    # Only the application's schema: extensions (pg_stat_statements) need a superuser to
    # create, and the target of a restore brings its own.
    PGDATABASE=$DB_NAME "$PG_BIN/pg_dump" --format=custom --schema=public --file="$work/dump" \
        || die "pg_dump of $DB_NAME failed (see above)"
    "$PG_BIN/pg_restore" --list "$work/dump" >/dev/null || die "the dump just written is unreadable by pg_restore"
    (cd "$work" && sha256sum dump | sed "s|  dump\$|  ${key##*/}|") >"$work/dump.sha256"
    log "uploading $key ($(stat -c %s "$work/dump") bytes)"
    s3_put "$work/dump" "$key" || die "upload of $key failed"
    # The checksum goes last: a dump without one is an incomplete upload and is never restored.
    s3_put "$work/dump.sha256" "$key.sha256" || die "upload of $key.sha256 failed"
    s3_list "$(logical_prefix)" | grep -qxF "$key.sha256" || die "$key.sha256 is not listed after its upload"
    write_metric quantaid_backup_last_success_timestamp_seconds logical
    logical_expire
    log "logical backup done: $key"
}

# logical_expire: deletes the dumps older than the retention window, except the newest
# complete one. The age comes from the UTC stamp in the name.
logical_expire() {
    local days=${QUANTAID_BACKUP_LOGICAL_RETENTION_DAYS:-30} cutoff keys newest k n=0
    [[ $days =~ ^[1-9][0-9]*$ ]] || die "QUANTAID_BACKUP_LOGICAL_RETENTION_DAYS must be a whole number of days, not '$days'"
    cutoff=$(date -u -d "@$(($(date +%s) - days * 86400))" +%Y%m%dT%H%M%SZ)
    keys=$(s3_list "$(logical_prefix)") || die "cannot list the logical dumps"
    newest=$(grep -E "/$DB_NAME-[0-9]{8}T[0-9]{6}Z\.dump\.sha256\$" <<<"$keys" | sort | tail -n 1 || true)
    newest=${newest%.sha256}
    for k in $(grep -E "/$DB_NAME-[0-9]{8}T[0-9]{6}Z\.dump(\.sha256)?\$" <<<"$keys" || true); do
        local base=${k%.sha256} stamp
        stamp=${base##*-}
        stamp=${stamp%.dump}
        if [[ $stamp < $cutoff ]] && [ "$base" != "$newest" ]; then
            s3_delete "$k" || die "cannot delete expired $k"
            log "expired $k (older than $days days)"
            n=$((n + 1))
        fi
    done
    log "logical retention: $days days (cut-off $cutoff), $n object(s) expired"
}

cmd_expire() {
    require_config
    pgbr expire || die "pgbackrest expire failed (see above)"
    logical_expire
}

case ${1:-} in
init) cmd_init ;;
full | diff) cmd_backup "$1" ;;
logical) cmd_logical ;;
expire) cmd_expire ;;
-h | --help | help) usage ;;
*) usage ;;
esac
