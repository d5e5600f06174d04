#!/usr/bin/env bash
# Restores a logical dump made by `backup.sh logical` into an EMPTY database, on any
# PostgreSQL 15 or newer (docs/operations/backup-restore.md).
#
#   deploy/backup/restore-logical.sh --dump latest --dbname <database>
#   deploy/backup/restore-logical.sh --dump <key, e.g. quantaid/logical/quantaid/quantaid-20261203T030000Z.dump> --dbname <database>
#   deploy/backup/restore-logical.sh --list        the dumps in the repository, oldest first
#
# The connection is libpq's (PGHOST, PGPORT, PGUSER, PGPASSWORD or PGPASSFILE); the objects
# belong to PGUSER afterwards (no owners or grants are restored). Before anything is written
# the dump's SHA-256 is checked against the stored one and the target must hold no table:
# a corrupt dump or a database in use is refused. The restore is one transaction: it lands
# whole or not at all. The source database is named by PGDATABASE (default quantaid).
BACKUP_NAME=restore-logical
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    sed -n '2,/^BACKUP_NAME=/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
    exit 2
}

DUMP="" TARGET_DB="" LIST=no
while [ $# -gt 0 ]; do
    case $1 in
    --dump) DUMP=${2:-}; shift 2 || usage ;;
    --dbname) TARGET_DB=${2:-}; shift 2 || usage ;;
    --list) LIST=yes; shift ;;
    -h | --help) usage ;;
    *) die "unknown argument '$1'" ;;
    esac
done
need "$PG_BIN/pg_restore" "$PG_BIN/psql" curl jq sha256sum
SOURCE_DB=${PGDATABASE:-quantaid}
pattern="/$SOURCE_DB-[0-9]{8}T[0-9]{6}Z\.dump\.sha256\$"

if [ "$LIST" = yes ]; then
    s3_list "$(logical_prefix)" | grep -E "$pattern" | sed 's/\.sha256$//' || die "no logical dump of $SOURCE_DB"
    exit 0
fi
{ [ -n "$DUMP" ] && [ -n "$TARGET_DB" ]; } || die "--dump <key|latest> and --dbname <database> are required"

if [ "$DUMP" = latest ]; then
    DUMP=$(s3_list "$(logical_prefix)" | grep -E "$pattern" | tail -n 1 || true)
    [ -n "$DUMP" ] || die "no complete logical dump of $SOURCE_DB in the repository"
    DUMP=${DUMP%.sha256}
fi

started=$(date +%s)
work=$(mktemp -d "${QUANTAID_BACKUP_WORK_DIR:-${TMPDIR:-/tmp}}/quantaid-restore.XXXXXX")
# shellcheck disable=SC2064 # expand now: the trap must remove this run's directory
trap "rm -rf '$work'" EXIT
fetch_logical "$DUMP" "$work/dump"

tables=$(PGDATABASE=$TARGET_DB "$PG_BIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 \
    -c "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'") \
    || die "cannot connect to database $TARGET_DB (create it first: CREATE DATABASE $TARGET_DB OWNER <PGUSER>)"
[ "$tables" = 0 ] || die "database $TARGET_DB already holds $tables table(s): restore into an empty database (nothing was changed)"

log "restoring $DUMP into database $TARGET_DB"
# Every entry but the schema "public" itself (and its comment), which every database has.
"$PG_BIN/pg_restore" --list "$work/dump" | grep -v ' SCHEMA - public ' >"$work/list"
PGDATABASE=$TARGET_DB "$PG_BIN/pg_restore" --dbname="$TARGET_DB" --no-owner --no-privileges \
    --single-transaction --exit-on-error --use-list="$work/list" "$work/dump" \
    || die "pg_restore failed (see above); the restore was one transaction, so $TARGET_DB is unchanged"
write_metric quantaid_backup_restore_last_success_timestamp_seconds logical
log "restored $DUMP into $TARGET_DB in $(($(date +%s) - started)) s"
