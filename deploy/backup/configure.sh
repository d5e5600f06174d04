#!/usr/bin/env bash
# Writes QuantaID's pgBackRest configuration from deploy/backup/pgbackrest.conf.template
# and the environment, on the PostgreSQL host (as root). Safe to run again: it rewrites
# both files with the current values.
#
#   deploy/backup/configure.sh
#
# Writes <config path>/pgbackrest.conf (mode 640, group of the data directory's owner) and,
# when PGBACKREST_REPO1_S3_KEY and PGBACKREST_REPO1_S3_KEY_SECRET are set,
# <config path>/conf.d/quantaid-s3-credentials.conf (mode 640): PostgreSQL's archive_command
# runs pgBackRest without this script's environment, so the credentials must be in a file.
#
# Settings (environment; * = required):
#   QUANTAID_BACKUP_S3_BUCKET*      bucket
#   QUANTAID_BACKUP_S3_ENDPOINT*    e.g. s3.eu-west-1.amazonaws.com
#   QUANTAID_BACKUP_S3_REGION*      e.g. eu-west-1
#   QUANTAID_BACKUP_S3_PORT         443
#   QUANTAID_BACKUP_S3_URI_STYLE    host (virtual-hosted) or path
#   QUANTAID_BACKUP_S3_CA_FILE      CA bundle for the endpoint (default: the system's)
#   QUANTAID_BACKUP_REPO_PATH       prefix inside the bucket (default /quantaid)
#   QUANTAID_BACKUP_RETENTION_DAYS  30
#   QUANTAID_BACKUP_PG_DATA*        the cluster's data directory
#   QUANTAID_BACKUP_PG_PORT         5432
#   QUANTAID_BACKUP_PG_SOCKET       /var/run/postgresql
#   QUANTAID_BACKUP_LOG_PATH        /var/log/pgbackrest
#   QUANTAID_BACKUP_LOCK_PATH       /tmp/pgbackrest
# and those of deploy/backup/lib.sh (QUANTAID_BACKUP_CONFIG_PATH, QUANTAID_BACKUP_STANZA,
# QUANTAID_BACKUP_PG_OS_USER).
BACKUP_NAME=configure
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

required() { [ -n "${!1:-}" ] || die "$1 is not set (see the head of $0)"; }
for v in QUANTAID_BACKUP_S3_BUCKET QUANTAID_BACKUP_S3_ENDPOINT QUANTAID_BACKUP_S3_REGION QUANTAID_BACKUP_PG_DATA; do
    required "$v"
done
style=${QUANTAID_BACKUP_S3_URI_STYLE:-host}
case $style in host | path) ;; *) die "QUANTAID_BACKUP_S3_URI_STYLE must be host or path, not '$style'" ;; esac
retention=${QUANTAID_BACKUP_RETENTION_DAYS:-30}
[[ $retention =~ ^[1-9][0-9]*$ ]] || die "QUANTAID_BACKUP_RETENTION_DAYS must be a whole number of days, not '$retention'"
ca_line="# repo1-storage-ca-file: the system's CA bundle"
if [ -n "${QUANTAID_BACKUP_S3_CA_FILE:-}" ]; then
    [ -r "$QUANTAID_BACKUP_S3_CA_FILE" ] || die "QUANTAID_BACKUP_S3_CA_FILE $QUANTAID_BACKUP_S3_CA_FILE is not readable"
    ca_line="repo1-storage-ca-file=$QUANTAID_BACKUP_S3_CA_FILE"
fi
id "$PG_OS_USER" >/dev/null 2>&1 || die "user $PG_OS_USER (QUANTAID_BACKUP_PG_OS_USER) does not exist"
group=$(id -gn "$PG_OS_USER")
log_path=${QUANTAID_BACKUP_LOG_PATH:-/var/log/pgbackrest}
lock_path=${QUANTAID_BACKUP_LOCK_PATH:-/tmp/pgbackrest}

# A value must not carry a newline (it would forge options) nor a character sed would
# read as part of the substitution.
for v in "$QUANTAID_BACKUP_S3_BUCKET" "$QUANTAID_BACKUP_S3_ENDPOINT" "$QUANTAID_BACKUP_S3_REGION" \
    "$QUANTAID_BACKUP_PG_DATA" "${QUANTAID_BACKUP_REPO_PATH:-}" "$log_path" "$lock_path"; do
    case $v in *$'\n'* | *@* | *'|'* | *'&'* | *\\*) die "a setting contains a newline or one of @ | & \\: '$v'" ;; esac
done

template=$(dirname "${BASH_SOURCE[0]}")/pgbackrest.conf.template
mkdir -p "$CONFIG_PATH/conf.d" "$log_path" "$lock_path"
# pgBackRest runs as the data directory's owner (archive_command, backups): its log and
# lock directories are that user's.
chown "$PG_OS_USER:$group" "$log_path" "$lock_path"
chmod 750 "$log_path" "$lock_path"

tmp=$(mktemp "$CONFIG_PATH/.pgbackrest.conf.XXXXXX")
sed -e "s|@REPO_PATH@|${QUANTAID_BACKUP_REPO_PATH:-/quantaid}|g" \
    -e "s|@S3_BUCKET@|$QUANTAID_BACKUP_S3_BUCKET|g" \
    -e "s|@S3_ENDPOINT@|$QUANTAID_BACKUP_S3_ENDPOINT|g" \
    -e "s|@S3_REGION@|$QUANTAID_BACKUP_S3_REGION|g" \
    -e "s|@S3_URI_STYLE@|$style|g" \
    -e "s|@S3_PORT@|${QUANTAID_BACKUP_S3_PORT:-443}|g" \
    -e "s|@CA_FILE_LINE@|$ca_line|g" \
    -e "s|@RETENTION_DAYS@|$retention|g" \
    -e "s|@LOG_PATH@|$log_path|g" \
    -e "s|@LOCK_PATH@|$lock_path|g" \
    -e "s|@STANZA@|$STANZA|g" \
    -e "s|@PG_DATA@|$QUANTAID_BACKUP_PG_DATA|g" \
    -e "s|@PG_PORT@|${QUANTAID_BACKUP_PG_PORT:-5432}|g" \
    -e "s|@PG_SOCKET@|${QUANTAID_BACKUP_PG_SOCKET:-/var/run/postgresql}|g" \
    -e "s|@PG_OS_USER@|$PG_OS_USER|g" \
    "$template" >"$tmp"
if grep -n '@[A-Z_]*@' "$tmp" >&2; then rm -f "$tmp"; die "unfilled placeholders in $template"; fi
chown "root:$group" "$tmp" 2>/dev/null || true
chmod 640 "$tmp"
mv -f "$tmp" "$CONFIG_PATH/pgbackrest.conf"
log "wrote $CONFIG_PATH/pgbackrest.conf (stanza $STANZA, s3://$QUANTAID_BACKUP_S3_BUCKET${QUANTAID_BACKUP_REPO_PATH:-/quantaid})"

if [ -n "${PGBACKREST_REPO1_S3_KEY:-}" ] && [ -n "${PGBACKREST_REPO1_S3_KEY_SECRET:-}" ]; then
    creds=$CONFIG_PATH/conf.d/quantaid-s3-credentials.conf
    tmp=$(umask 077 && mktemp "$CONFIG_PATH/conf.d/.creds.XXXXXX")
    printf '# Written by deploy/backup/configure.sh. Secret: never commit or copy.\n[global]\nrepo1-s3-key=%s\nrepo1-s3-key-secret=%s\n' \
        "$PGBACKREST_REPO1_S3_KEY" "$PGBACKREST_REPO1_S3_KEY_SECRET" >"$tmp"
    chown "root:$group" "$tmp" 2>/dev/null || true
    chmod 640 "$tmp"
    mv -f "$tmp" "$creds"
    log "wrote the S3 credentials to $creds (mode 640)"
else
    log "PGBACKREST_REPO1_S3_KEY / _KEY_SECRET not set: the credentials file is left as it is"
fi
