#!/usr/bin/env bash
# Checks that QuantaID's backups can be restored, without restoring them
# (docs/operations/backup-restore.md).
#
#   deploy/backup/verify.sh             everything below that is configured here
#   deploy/backup/verify.sh logical     only the newest logical dump (no pgBackRest needed)
#
# Physical (when pgbackrest.conf is present):
#   - if PostgreSQL runs here: `pgbackrest check` switches to a new WAL segment and waits
#     until it is in the repository, so the last writes are archived (run it on a damaged
#     but running server before stopping it for a restore);
#   - `pgbackrest verify`: every backup file and WAL segment in the repository is read and
#     checked against its recorded checksum; a missing or corrupt file fails;
#   - the WAL archive has no hole from the oldest backup's start to the newest segment
#     (pgBackRest's verify does not look for one);
#   - the newest backup exists and pgBackRest does not mark it as having errors.
# Logical (when a dump exists): the newest dump is downloaded, its SHA-256 compared with
# the one stored next to it, and pg_restore reads its table of contents.
# Exits non-zero naming what failed; on success records
# quantaid_backup_verify_last_success_timestamp_seconds{kind="physical"|"logical"}.
BACKUP_NAME=verify
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DB_NAME=${PGDATABASE:-quantaid}

verify_physical() {
    need pgbackrest jq
    local info status n out
    if [ -f "$(pg_data)/PG_VERSION" ] && pg_running; then
        pgbr check || die "pgbackrest check failed: the running server's WAL does not reach the repository"
        log "check: the running server's WAL reaches the repository"
    else
        log "check skipped: PostgreSQL is not running here"
    fi
    # verify reads every file and prints only problems ("status: error", "status: invalid"),
    # but exits 0 even then (2.45): judge by its text.
    out=$(pgbr verify --output=text --log-level-console=warn 2>&1) \
        || { printf '%s\n' "$out" >&2; die "pgbackrest verify failed (above)"; }
    if grep -qE 'status: (error|invalid)|ERROR|WARN' <<<"$out"; then
        printf '%s\n' "$out" >&2
        die "pgbackrest verify found missing or corrupt files in the repository (above)"
    fi
    log "verify: every backup file and WAL segment matches its checksum"
    info=$(pgbr info --output=json) || die "pgbackrest info failed"
    status=$(jq -r '.[0].status.code' <<<"$info")
    [ "$status" != 2 ] || die "the repository holds no backup yet: run deploy/backup/backup.sh full"
    [ "$status" = 0 ] || die "stanza status: $(jq -r '.[0].status.message' <<<"$info")"
    n=$(jq '.[0].backup | length' <<<"$info")
    [ "$n" -gt 0 ] || die "the repository holds no backup"
    [ "$(jq -r '.[0].backup[-1].error // false' <<<"$info")" != true ] \
        || die "the newest backup ($(jq -r '.[0].backup[-1].label' <<<"$info")) has errors"
    # The point-in-time window: WAL without a hole from the oldest backup to the newest segment.
    wal_check "$(jq -r '.[0].backup[0].archive.start' <<<"$info")" \
        "$(jq -r --argjson db "$(jq '.[0].backup[0].database.id' <<<"$info")" '.[0].archive[] | select(.database.id == $db) | .id' <<<"$info")" \
        || die "the WAL archive has a gap: point-in-time recovery across it, and '--to latest' from a backup before it, is impossible"
    log "$n backup(s), newest $(jq -r '.[0].backup[-1] | "\(.label) (\(.type))"' <<<"$info")," \
        "WAL $(jq -r '.[0].archive[-1] | "\(.min) .. \(.max)"' <<<"$info")"
    write_metric quantaid_backup_verify_last_success_timestamp_seconds physical
}

verify_logical() {
    need "$PG_BIN/pg_restore" curl jq sha256sum
    local keys newest work
    keys=$(s3_list "$(logical_prefix)") || die "cannot list the logical dumps"
    newest=$(grep -E "/$DB_NAME-[0-9]{8}T[0-9]{6}Z\.dump\.sha256\$" <<<"$keys" | sort | tail -n 1 || true)
    if [ -z "$newest" ]; then
        [ "${1:-}" = required ] && die "no logical dump of $DB_NAME in the repository"
        log "no logical dump of $DB_NAME in the repository: nothing to check"
        return 0
    fi
    work=$(mktemp -d "${QUANTAID_BACKUP_WORK_DIR:-${TMPDIR:-/tmp}}/quantaid-verify.XXXXXX")
    # shellcheck disable=SC2064 # expand now: the trap must remove this run's directory
    trap "rm -rf '$work'" EXIT
    fetch_logical "${newest%.sha256}" "$work/dump"
    write_metric quantaid_backup_verify_last_success_timestamp_seconds logical
}

case ${1:-all} in
all)
    if [ -r "$CONFIG_PATH/pgbackrest.conf" ]; then verify_physical; else log "no $CONFIG_PATH/pgbackrest.conf: physical checks skipped"; fi
    verify_logical
    ;;
logical) verify_logical required ;;
*) die "unknown argument '$1' (use: verify.sh [logical])" ;;
esac
log "all checks passed"
