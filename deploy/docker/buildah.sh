# shellcheck shell=bash
# Shared by the scripts that build images with buildah (deploy/docker/build-local.sh,
# deploy/backup/build-image.sh); sourced, never run.

# No daemon, no overlay mounts: the vfs driver and chroot isolation work anywhere root does.
export STORAGE_DRIVER=vfs BUILDAH_ISOLATION=chroot

# buildah_install: Debian's buildah, when it is missing.
buildah_install() {
  command -v buildah >/dev/null && return
  apt-get install -y -q buildah >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q buildah >/dev/null; }
}

# image_config IMAGE FIELD: one field of the image's OCI configuration (User, Entrypoint, Cmd).
image_config() { buildah inspect --type image --format "{{.OCIv1.Config.$2}}" "$1"; }

# image_env IMAGE: the image's environment, one NAME=value per line (for `env -i`, so a
# program run from the image's filesystem sees what it would see in a container).
image_env() { buildah inspect --type image --format '{{range .OCIv1.Config.Env}}{{println .}}{{end}}' "$1" | sed '/^$/d'; }
