#!/usr/bin/env bash
# Builds the QuantaID image without a registry or a container runtime: release binaries from
# this checkout, the shared libraries they load, a passwd entry for uid 65532, assembled with
# buildah (Containerfile.local, FROM scratch, no RUN step). With --check it then inspects the
# image (user, entrypoint, size, no shell) and runs both binaries from the image's own
# filesystem as uid 65532 (chroot): the proxy must answer /health.
#   deploy/docker/build-local.sh [--check] [--keep]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd); repo=$(cd "$here/../.." && pwd)
CHECK=0; KEEP=0
for a in "$@"; do case $a in --check) CHECK=1 ;; --keep) KEEP=1 ;; esac; done
TAG=${QUANTAID_IMAGE:-localhost/quantaid/quantaid:dev}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/quantaid-target}
# shellcheck source=deploy/docker/buildah.sh
. "$here/buildah.sh"
buildah_install
command -v cargo >/dev/null || { echo "cargo is needed to build the binaries (rustup)" >&2; exit 1; }

( cd "$repo" && nice -n 10 cargo build --release --locked -q -p quantaid-backend -p quantaid-proxy )
ctx=$(mktemp -d /tmp/quantaid-image.XXXXXX)
trap 'rm -rf "$ctx"' EXIT
root=$ctx/rootfs
install -D -m 0755 "$CARGO_TARGET_DIR/release/quantaid-backend" "$root/usr/local/bin/quantaid-backend"
install -D -m 0755 "$CARGO_TARGET_DIR/release/quantaid-proxy" "$root/usr/local/bin/quantaid-proxy"
strip "$root"/usr/local/bin/* 2>/dev/null || true
# The dynamic loader and every library the binaries load, at the same paths.
for lib in $(for b in "$root"/usr/local/bin/*; do ldd "$b"; done | grep -o '/[^ ]*' | sort -u); do
  install -D -m 0755 "$(readlink -f "$lib")" "$root$lib"
done
mkdir -p "$root/etc" "$root/tmp" "$root/etc/ssl/certs"
chmod 1777 "$root/tmp"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$root/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$root/etc/group"
[[ -f /etc/ssl/certs/ca-certificates.crt ]] && cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
cp "$here/Containerfile.local" "$ctx/Containerfile"
ctr=""
cleanup() {
  [[ -n $ctr ]] && { buildah umount "$ctr" >/dev/null 2>&1; buildah rm "$ctr" >/dev/null 2>&1; }
  ((KEEP)) || buildah rmi -f "$TAG" >/dev/null 2>&1
  rm -rf "$ctx"
}
((CHECK)) && trap cleanup EXIT   # a checked image is removed afterwards unless --keep
buildah bud -q --layers=false -f "$ctx/Containerfile" -t "$TAG" "$ctx" >/dev/null
((CHECK)) || { echo "built $TAG"; exit 0; }

fail() { echo "image check failed: $*" >&2; exit 1; }
user=$(image_config "$TAG" User)
entry=$(image_config "$TAG" Entrypoint)
size=$(buildah images --format '{{.Size}}' "$TAG")
echo "image: $TAG  user=$user  entrypoint=$entry  size=$size"
[[ $user == 65532:65532 ]] || fail "user is $user, not 65532:65532"
[[ $entry == '[/usr/local/bin/quantaid-proxy]' ]] || fail "entrypoint is $entry"
CHROOT=$(command -v chroot)  # env -i below clears PATH
ctr=$(buildah from -q "$TAG")
mnt=$(buildah mount "$ctr")
for sh in bin/sh bin/bash usr/bin/sh bin/busybox; do [[ ! -e "$mnt/$sh" ]] || fail "the image has /$sh"; done
echo "image: files $(cd "$mnt" && find . -type f | wc -l), no shell"
# The binaries start from the image's filesystem alone, as the image's user.
out=$(env -i QUANTAID_DB_POOL_MAX=0 "$CHROOT" --userspec=65532:65532 "$mnt" /usr/local/bin/quantaid-backend serve 2>&1 || true)
grep -q QUANTAID_DB_POOL_MAX <<<"$out" || fail "backend did not start from the image: $out"
echo "image: quantaid-backend runs as 65532 and reports a bad setting by name"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
env -i QUANTAID_REDIS_HOST=none QUANTAID_INTERNAL_TOKEN=image-check "QUANTAID_PROXY_LISTEN_ADDR=127.0.0.1:$port" \
  "QUANTAID_PROXY_METRICS_ADDR=127.0.0.1:$mport" QUANTAID_BACKEND_ADDR=127.0.0.1:9 \
  "$CHROOT" --userspec=65532:65532 "$mnt" /usr/local/bin/quantaid-proxy >"$ctx/proxy.log" 2>&1 &
proxy=$!
healthy=0
for _ in $(seq 100); do
  if curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1; then healthy=1; break; fi
  sleep 0.1
done
kill -TERM "$proxy" 2>/dev/null; wait "$proxy" 2>/dev/null || true
((healthy)) || fail "the proxy from the image did not answer /health: $(tail -n 5 "$ctx/proxy.log")"
echo "image: quantaid-proxy runs as 65532 from the image and answers /health"
