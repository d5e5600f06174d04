# shellcheck shell=bash
# Shared by QuantaID's backup scripts (deploy/backup/*.sh); sourced, never run.
# docs/operations/backup-restore.md describes the scripts and their settings.
#
# Settings (environment):
#   QUANTAID_BACKUP_CONFIG_PATH   directory of pgbackrest.conf and conf.d/ (default /etc/pgbackrest)
#   QUANTAID_BACKUP_STANZA        pgBackRest stanza (default quantaid)
#   QUANTAID_BACKUP_TEXTFILE_DIR  node-exporter textfile collector directory for the
#                                 last-success metrics (default /var/lib/prometheus/node-exporter;
#                                 empty: no metric files)
#   QUANTAID_BACKUP_PG_OS_USER    owner of the PostgreSQL data directory (default postgres)
#   QUANTAID_PG_BIN               PostgreSQL binaries (default: newest /usr/lib/postgresql/<ver>/bin,
#                                 else the ones on PATH)
# Repository options (bucket, endpoint, ...) are pgBackRest's own: read from the
# environment (PGBACKREST_REPO1_*) first, then from the config file, as pgBackRest does.

set -euo pipefail

BACKUP_NAME=${BACKUP_NAME:-$(basename "$0" .sh)}
CONFIG_PATH=${QUANTAID_BACKUP_CONFIG_PATH:-/etc/pgbackrest}
STANZA=${QUANTAID_BACKUP_STANZA:-quantaid}
TEXTFILE_DIR=${QUANTAID_BACKUP_TEXTFILE_DIR-/var/lib/prometheus/node-exporter}
PG_OS_USER=${QUANTAID_BACKUP_PG_OS_USER:-postgres}

if [ -n "${QUANTAID_PG_BIN:-}" ]; then
    PG_BIN=$QUANTAID_PG_BIN
elif PG_BIN=$(find -L /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1) && [ -n "$PG_BIN" ]; then
    :
else
    PG_BIN=$(dirname "$(command -v pg_dump 2>/dev/null || echo /usr/bin/pg_dump)")
fi

log() { printf '%s %s: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$BACKUP_NAME" "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

need() {
    local cmd
    for cmd in "$@"; do command -v "$cmd" >/dev/null 2>&1 || die "'$cmd' is not installed"; done
}

# as_pg_owner CMD...: runs CMD as the data directory's owner (pgBackRest and pg_ctl must
# not leave root-owned files behind), from / so it never depends on the caller's directory.
as_pg_owner() {
    if [ "$(id -u)" -eq 0 ] && [ "$PG_OS_USER" != root ]; then
        (cd / && runuser -u "$PG_OS_USER" -- "$@")
    else
        "$@"
    fi
}

# pgbr COMMAND [OPTIONS...]: pgBackRest with this deployment's config and stanza.
pgbr() {
    local cmd=$1
    shift
    as_pg_owner pgbackrest --config-path="$CONFIG_PATH" --stanza="$STANZA" "$cmd" "$@"
}

# conf_get SECTION KEY: a value from pgbackrest.conf and conf.d/*.conf (last one wins).
conf_get() {
    local files=("$CONFIG_PATH/pgbackrest.conf")
    if [ -d "$CONFIG_PATH/conf.d" ]; then files+=("$CONFIG_PATH"/conf.d/*.conf); fi
    local f
    for f in "${files[@]}"; do [ ! -r "$f" ] || cat "$f"; done | awk -v want="[$1]" -v key="$2" '
        /^[[:space:]]*\[/ { gsub(/[[:space:]]/, ""); section = $0; next }
        section == want {
            line = $0; sub(/^[[:space:]]+/, "", line)
            eq = index(line, "=")
            if (eq > 0) { k = substr(line, 1, eq - 1); sub(/[[:space:]]+$/, "", k)
                          if (k == key) { v = substr(line, eq + 1); sub(/^[[:space:]]+/, "", v); val = v } }
        }
        END { if (val != "") print val }'
}

# opt KEY: a pgBackRest option as pgBackRest resolves it: environment (PGBACKREST_KEY),
# then the stanza's section, then [global].
opt() {
    local env_name
    env_name=PGBACKREST_$(printf '%s' "$1" | tr 'a-z-' 'A-Z_')
    if [ -n "${!env_name:-}" ]; then
        printf '%s' "${!env_name}"
        return
    fi
    local v
    v=$(conf_get "$STANZA" "$1")
    [ -n "$v" ] || v=$(conf_get global "$1")
    printf '%s' "$v"
}

# write_metric NAME KIND: records "now" as the last success of KIND in a node-exporter
# textfile (one file per name and kind, replaced atomically so a scrape never sees half).
write_metric() {
    local name=$1 kind=$2 help file tmp
    [ -n "$TEXTFILE_DIR" ] || return 0
    case $name in
    quantaid_backup_last_success_timestamp_seconds) help="Unix time of the last successful backup of this kind (full, diff: pgBackRest; logical: pg_dump)." ;;
    quantaid_backup_verify_last_success_timestamp_seconds) help="Unix time of the last successful verification of the backup repository." ;;
    quantaid_backup_restore_last_success_timestamp_seconds) help="Unix time of the last successful restore (drill or real)." ;;
    *) die "unknown metric $name" ;;
    esac
    mkdir -p "$TEXTFILE_DIR" || die "cannot create the metrics directory $TEXTFILE_DIR"
    file=$TEXTFILE_DIR/${name}_${kind}.prom
    tmp=$(mktemp "$TEXTFILE_DIR/.${name}_${kind}.XXXXXX") || die "cannot write to the metrics directory $TEXTFILE_DIR"
    {
        printf '# HELP %s %s\n# TYPE %s gauge\n' "$name" "$help" "$name"
        printf '%s{kind="%s"} %s\n' "$name" "$kind" "$(date +%s)"
    } >"$tmp"
    chmod 644 "$tmp"
    mv -f "$tmp" "$file" || die "cannot write $file"
    log "metric $name{kind=\"$kind\"} updated in $file"
}

# ------------------------------------------------------------------------- PostgreSQL

pg_data() {
    local d
    d=$(opt pg1-path)
    [ -n "$d" ] || die "pg1-path is not set in $CONFIG_PATH/pgbackrest.conf"
    printf '%s' "$d"
}

pg_running() { as_pg_owner "$PG_BIN/pg_ctl" -D "$(pg_data)" status >/dev/null 2>&1; }

# pg_psql ARGS...: psql as the superuser over the local socket (pg1-socket-path, pg1-port,
# pg1-user), unaligned tuples only, stopping at the first error.
pg_psql() {
    local sock port user
    sock=$(opt pg1-socket-path)
    port=$(opt pg1-port)
    user=$(opt pg1-user)
    as_pg_owner "$PG_BIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 -h "${sock:-/var/run/postgresql}" -p "${port:-5432}" \
        -U "${user:-postgres}" -d postgres "$@"
}

# ------------------------------------------------------------------------- S3 (logical dumps)

# The logical dumps live in the same bucket as pgBackRest's repository, next to it:
# <repo1-path>/logical/<stanza>/<stamp>.dump (+ .sha256). pgBackRest never touches that
# prefix (it owns only <repo1-path>/archive and <repo1-path>/backup).

s3_url() {
    local endpoint bucket port style host
    endpoint=$(opt repo1-s3-endpoint)
    bucket=$(opt repo1-s3-bucket)
    port=$(opt repo1-storage-port)
    style=$(opt repo1-s3-uri-style)
    { [ -n "$endpoint" ] && [ -n "$bucket" ]; } || die "repo1-s3-endpoint and repo1-s3-bucket must be set (config or PGBACKREST_REPO1_S3_*)"
    host=$endpoint
    [ -z "$port" ] || host=$host:$port
    if [ "${style:-host}" = path ]; then
        printf 'https://%s/%s' "$host" "$bucket"
    else
        printf 'https://%s.%s' "$bucket" "$host"
    fi
}

logical_prefix() {
    local p
    p=$(opt repo1-path)
    p=${p#/}
    printf '%slogical/%s/' "${p:+$p/}" "$STANZA"
}

# s3 CURL_ARGS... -- URL_SUFFIX: a SigV4-signed request. The credentials reach curl
# through a config on a file descriptor, never its command line.
s3() {
    local args=() region key secret ca
    while [ "$1" != -- ]; do args+=("$1"); shift; done
    shift
    region=$(opt repo1-s3-region)
    key=$(opt repo1-s3-key)
    secret=$(opt repo1-s3-key-secret)
    ca=$(opt repo1-storage-ca-file)
    { [ -n "$key" ] && [ -n "$secret" ]; } || die "the S3 credentials (repo1-s3-key, repo1-s3-key-secret) are not set"
    local tls=()
    [ -z "$ca" ] || tls=(--cacert "$ca")
    curl -sS --fail-with-body --max-time "${QUANTAID_BACKUP_S3_TIMEOUT:-600}" --retry 2 \
        --aws-sigv4 "aws:amz:${region:-us-east-1}:s3" "${tls[@]}" \
        -K <(printf 'user = "%s:%s"\n' "$key" "$secret") \
        -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' \
        "${args[@]}" "$(s3_url)/$1"
}

s3_put() { s3 -o /dev/null -T "$1" -- "$2"; }
s3_get() { s3 -o "$2" -- "$1"; }
s3_delete() { s3 -o /dev/null -X DELETE -- "$1"; }

# s3_list PREFIX: the keys under PREFIX, one a line, sorted (pages of 1000, at most 100 pages).
s3_list() {
    local prefix=$1 token="" page body i
    for ((i = 0; i < 100; i++)); do
        page="?list-type=2&prefix=$(urlencode "$prefix")"
        [ -z "$token" ] || page="$page&continuation-token=$(urlencode "$token")"
        body=$(s3 -- "$page") || return 1
        grep -o '<Key>[^<]*</Key>' <<<"$body" | sed -e 's/<Key>//' -e 's/<\/Key>//' || true
        grep -q '<IsTruncated>true</IsTruncated>' <<<"$body" || return 0
        token=$(grep -o '<NextContinuationToken>[^<]*</NextContinuationToken>' <<<"$body" | sed -e 's/<[^>]*>//g')
        [ -n "$token" ] || die "S3 listing is truncated but gives no continuation token"
    done
    die "S3 listing of $prefix has more than 100 pages"
}

urlencode() { jq -rn --arg v "$1" '$v|@uri'; }

# fetch_logical KEY FILE: downloads the dump KEY into FILE and proves it intact: its SHA-256
# matches the one stored with it, and pg_restore reads its table of contents. Dies otherwise.
fetch_logical() {
    local key=$1 file=$2 want got
    s3_get "$key.sha256" "$file.sha256" || die "cannot download $key.sha256 (a dump without its checksum is never used)"
    s3_get "$key" "$file" || die "cannot download $key"
    want=$(awk 'NR == 1 { print $1 }' "$file.sha256")
    got=$(sha256sum "$file" | awk '{ print $1 }')
    [[ $want =~ ^[0-9a-f]{64}$ ]] || die "$key.sha256 does not hold a SHA-256"
    [ "$want" = "$got" ] || die "$key is corrupt: its SHA-256 is $got, the recorded one $want"
    "$PG_BIN/pg_restore" --list "$file" >/dev/null || die "$key passes its checksum but pg_restore cannot read it"
    log "$key: checksum matches, pg_restore reads it ($(stat -c %s "$file") bytes)"
}

# ------------------------------------------------------------------------- WAL continuity
# pgBackRest's own `verify` checks each file's checksum but not that the archive has no
# hole between backups; recovery to "latest" silently stops at the first missing segment.

# wal_files ARCHIVE_ID: the archive's WAL segment and timeline history names, sorted
# (listed through S3: pgBackRest's repo-ls is for humans).
wal_files() {
    local p
    p=$(opt repo1-path)
    p=${p#/}
    s3_list "${p:+$p/}archive/$STANZA/$1/" \
        | sed -e 's|.*/||' -e 's|-[0-9a-f]\{40\}.*$||' \
        | grep -E '^[0-9A-F]{24}$|^[0-9A-F]{8}\.history$' | sort -u
}

# seg_no NAME: the segment number in a 24-hex-digit WAL file name (log * 256 + segment:
# 16 MiB segments).
seg_no() { echo $(((16#${1:8:8}) * 256 + (16#${1:16:8}))); }

# tl_begins ARCHIVE_ID TL: "<timeline> <first segment>" for TL and each of its ancestors,
# from TL's history file (one line per ancestor: <parent> <switch LSN> <reason>; the line's
# child is the next line's parent, the last line's child TL; a child begins in the segment
# holding the switch LSN).
tl_begins() {
    local id=$1 tl=$2 hist parent lsn i
    local -a parents=() begins=()
    echo "1 0"
    [ "$tl" -gt 1 ] || return 0
    hist=$(pgbr repo-get "archive/$STANZA/$id/$(printf '%08X' "$tl").history") || return 1
    while read -r parent lsn _; do
        [[ $parent =~ ^[0-9]+$ && $lsn =~ ^[0-9A-F]+/[0-9A-F]+$ ]] || continue
        parents+=("$parent")
        begins+=($(((16#${lsn%/*}) * 256 + (16#${lsn#*/}) / 16777216)))
    done <<<"$hist"
    for ((i = 0; i < ${#parents[@]}; i++)); do
        if ((i + 1 < ${#parents[@]})); then echo "${parents[i + 1]} ${begins[i]}"; else echo "$tl ${begins[i]}"; fi
    done
}

# wal_check FROM ARCHIVE_ID: every segment from FROM (a WAL file name) to the newest one
# on the newest timeline is in the archive, each on the timeline recovery reads it from.
# Sets WAL_END_NAME and WAL_END_SEG. Logs and returns 1 on a gap.
wal_check() {
    local from=$1 id=$2 files tl begins n want name missing=0 first_missing="" t b
    local -A have=() begin=()
    files=$(wal_files "$id") || { log "error: cannot list the WAL archive $id"; return 1; }
    # Recovery to "latest" follows the newest timeline in the archive.
    tl=$((16#$(grep -oE '^[0-9A-F]{8}' <<<"$files" | sort -u | tail -n 1)))
    begins=$(tl_begins "$id" "$tl") || { log "error: cannot read the history of timeline $tl"; return 1; }
    while read -r t b; do begin[$t]=$b; done <<<"$begins"
    WAL_END_NAME=$(grep -E "^$(printf '%08X' "$tl")[0-9A-F]{16}\$" <<<"$files" | tail -n 1 || true)
    [ -n "$WAL_END_NAME" ] || { log "error: timeline $tl has no WAL segment in the archive"; return 1; }
    WAL_END_SEG=$(seg_no "$WAL_END_NAME")
    while read -r name; do [ ${#name} != 24 ] || have[$name]=1; done <<<"$files"
    for ((n = $(seg_no "$from"); n <= WAL_END_SEG; n++)); do
        want=1
        for t in "${!begin[@]}"; do if ((begin[$t] <= n && t > want)); then want=$t; fi; done
        name=$(printf '%08X%08X%08X' "$want" $((n / 256)) $((n % 256)))
        if [ -z "${have[$name]:-}" ]; then
            missing=$((missing + 1))
            [ -n "$first_missing" ] || first_missing=$name
        fi
    done
    if ((missing > 0)); then
        log "error: WAL gap: $missing segment(s) from $from to the newest archived segment $WAL_END_NAME" \
            "are missing from the archive, the first $first_missing; recovery cannot pass it"
        return 1
    fi
    log "WAL is continuous from $from to $WAL_END_NAME (timeline $tl, $((WAL_END_SEG - $(seg_no "$from") + 1)) segments)"
}
