#!/usr/bin/env bash
# Builds the backup image (deploy/backup/Dockerfile, the Helm chart's backup CronJob) with
# buildah, without a registry. debian:bookworm-slim cannot be pulled here, so an
# equivalent base is made from Debian's own mirror with mmdebstrap (bookworm, minbase
# variant, cached under $QUANTAID_CACHE/backup-image) and passed as BASE. The Dockerfile's
# RUN step then installs its packages from that mirror. With --check the image is then
# inspected:
#   - user 65532:65532, entrypoint backup.sh, default command `logical`;
#   - every script of deploy/backup it copies is there, identical to the repository's;
#   - run from the image's filesystem as uid 65532 with the image's environment (chroot):
#     pg_dump and pg_restore 15, pgBackRest, curl and jq answer; verify.sh names the
#     missing S3 credentials; backup.sh logical reaches pg_dump and reports a
#     refused connection, with nothing written outside /tmp.
#   deploy/backup/build-image.sh [--check] [--keep]
# Needs root, Debian's buildah and mmdebstrap (installed when missing) and the Debian mirror.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd); repo=$(cd "$here/../.." && pwd)
CHECK=0; KEEP=0
for a in "$@"; do case $a in --check) CHECK=1 ;; --keep) KEEP=1 ;; *) echo "usage: $0 [--check] [--keep]" >&2; exit 2 ;; esac; done
TAG=${QUANTAID_BACKUP_IMAGE:-localhost/quantaid/quantaid-backup:dev}
BASE_TAG=localhost/quantaid/debian-bookworm-minbase:build
MIRROR=${QUANTAID_DEBIAN_MIRROR:-http://deb.debian.org/debian}
CACHE=${QUANTAID_CACHE:-/var/tmp/quantaid-cache}/backup-image
# shellcheck source=deploy/docker/buildah.sh
. "$repo/deploy/docker/buildah.sh"
buildah_install
command -v mmdebstrap >/dev/null || { apt-get install -y -q mmdebstrap >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q mmdebstrap >/dev/null; }; }

fail() { echo "backup image check failed: $*" >&2; exit 1; }
ctr=""; work=$(mktemp -d /tmp/quantaid-backup-image.XXXXXX)
cleanup() {
  [[ -n $ctr ]] && { buildah umount "$ctr" >/dev/null 2>&1; buildah rm "$ctr" >/dev/null 2>&1; }
  buildah rmi -f "$BASE_TAG" >/dev/null 2>&1
  ((KEEP)) || buildah rmi -f "$TAG" >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT

# The base: Debian 12's minimal system, as debian:bookworm-slim is. Made once, then reused.
base_tar=$CACHE/bookworm-minbase.tar
if [[ ! -f $base_tar ]]; then
  mkdir -p "$CACHE"
  echo "making the Debian 12 base with mmdebstrap into $base_tar (once)"
  # mmdebstrap picks the output format from the name: the partial file must end in .tar.
  nice -n 10 mmdebstrap --quiet --variant=minbase --mode=root bookworm "$CACHE/partial.tar" "$MIRROR" </dev/null
  mv "$CACHE/partial.tar" "$base_tar"
fi
ctr=$(buildah from -q scratch)
buildah add -q "$ctr" "$base_tar" / >/dev/null
# The configuration debian:bookworm-slim has.
buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --cmd bash "$ctr"
buildah commit -q --rm "$ctr" "$BASE_TAG" >/dev/null
ctr=""

nice -n 10 buildah bud -q --layers=false --build-arg "BASE=$BASE_TAG" \
  -f "$here/Dockerfile" -t "$TAG" "$repo" >"$work/build.log" 2>&1 || { tail -n 30 "$work/build.log" >&2; fail "buildah bud failed"; }
((CHECK)) || { echo "built $TAG"; exit 0; }

user=$(image_config "$TAG" User)
entry=$(image_config "$TAG" Entrypoint)
cmd=$(image_config "$TAG" Cmd)
size=$(buildah images --format '{{.Size}}' "$TAG")
echo "image: $TAG  user=$user  entrypoint=$entry  cmd=$cmd  size=$size"
[[ $user == 65532:65532 ]] || fail "user is $user, not 65532:65532"
[[ $entry == '[/opt/quantaid-backup/backup.sh]' ]] || fail "entrypoint is $entry"
[[ $cmd == '[logical]' ]] || fail "the default command is $cmd, not [logical]"

ctr=$(buildah from -q "$TAG")
mnt=$(buildah mount "$ctr")
copied=0
for f in "$here"/*.sh "$here/pgbackrest.conf.template" "$here/archiving.sql"; do
  [[ $f == "$here/test.sh" || $f == "$here/build-image.sh" ]] && continue
  in_image=$mnt/opt/quantaid-backup/$(basename "$f")
  cmp -s "$f" "$in_image" || fail "/opt/quantaid-backup/$(basename "$f") is missing or differs from deploy/backup/$(basename "$f")"
  [[ $f != *.sh || $f == */lib.sh || -x $in_image ]] || fail "/opt/quantaid-backup/$(basename "$f") is not executable"
  copied=$((copied + 1))
done
echo "image: /opt/quantaid-backup holds the $copied scripts and files of deploy/backup"

# in_image CMD...: CMD from the image's filesystem, as its user, with only its environment.
mapfile -t envs < <(image_env "$TAG")
CHROOT=$(command -v chroot)
in_image() { env -i "${envs[@]}" "$CHROOT" --userspec=65532:65532 "$mnt" "$@"; }
pg_bin=$(printf '%s\n' "${envs[@]}" | sed -n 's/^QUANTAID_PG_BIN=//p')
[[ -n $pg_bin ]] || fail "the image does not set QUANTAID_PG_BIN"
# answers PREFIX CMD...: CMD runs from the image and its output starts with PREFIX.
answers() {
  local prefix=$1 out
  shift
  out=$(in_image "$@" 2>&1) || fail "$* failed in the image: $out"
  [[ $out == "$prefix"* ]] || fail "$* in the image says: $out"
}
answers "pg_dump (PostgreSQL) 15." "$pg_bin/pg_dump" --version
answers "pg_restore (PostgreSQL) 15." "$pg_bin/pg_restore" --version
answers "pgBackRest 2." pgbackrest version
answers "curl " curl --version
answers "jq-" jq --version
echo "image: $(in_image "$pg_bin/pg_dump" --version), $(in_image pgbackrest version), $(in_image jq --version) run as 65532"

# verify.sh checks its tools first, then needs S3: the message names the missing settings.
if in_image /opt/quantaid-backup/verify.sh logical >"$work/out" 2>&1; then fail "verify.sh logical succeeded without any S3 setting"; fi
grep -qF 'the S3 credentials (repo1-s3-key, repo1-s3-key-secret) are not set' "$work/out" || fail "verify.sh logical: $(tail -n 3 "$work/out")"
# The entrypoint's default command: pg_dump runs, in /tmp, and the refused connection is reported.
touch "$work/stamp"
if env -i "${envs[@]}" PGHOST=127.0.0.1 PGPORT=9 PGUSER=quantaid "$CHROOT" --userspec=65532:65532 "$mnt" \
  /opt/quantaid-backup/backup.sh logical >"$work/out" 2>&1; then fail "backup.sh logical succeeded without a database"; fi
if ! grep -q 'pg_dump of quantaid failed' "$work/out" || ! grep -qi 'connection' "$work/out"; then
  fail "backup.sh logical: $(tail -n 3 "$work/out")"
fi
written=$(cd "$mnt" && find . -xdev -newer "$work/stamp" -not -path './tmp' -not -path './tmp/*' -not -path './proc*' -not -path './dev*' | head -n 5)
[[ -z $written ]] || fail "backup.sh wrote outside /tmp (the chart's root filesystem is read-only): $written"
echo "image: verify.sh and backup.sh run as 65532 and report a missing setting and a refused connection by name"
