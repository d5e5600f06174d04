#!/usr/bin/env bash
# Installs what QuantaID needs to build, test and run locally on Debian 12, and only
# what is missing. Safe to run again: when everything is there it changes nothing and
# returns in about a second (no `apt-get update`, no network).
#
#   scripts/setup.sh
#
# Debian packages: PostgreSQL server + contrib (pg_stat_statements), redis-server,
# cmake, pkg-config, curl, jq, wrk, build-essential, and fonts-dejavu-core (the text of
# the load-test report's charts). The Rust toolchain (cargo) is
# expected to be installed already (rustup); this script only checks for it.
set -euo pipefail

PACKAGES=(postgresql postgresql-contrib redis-server cmake pkg-config curl jq wrk build-essential fonts-dejavu-core)

say() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

command -v dpkg-query >/dev/null 2>&1 || die "this script supports Debian (12) only: dpkg-query was not found"

# One dpkg-query call for all packages: fast when everything is installed.
installed=$(dpkg-query -W -f='${Package} ${db:Status-Status}\n' "${PACKAGES[@]}" 2>/dev/null || true)
missing=()
for pkg in "${PACKAGES[@]}"; do
    grep -qx "$pkg installed" <<<"$installed" || missing+=("$pkg")
done

if ((${#missing[@]})); then
    say "installing: ${missing[*]}"
    sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 \
            || die "missing packages (${missing[*]}) and not root; run as root: apt-get install ${missing[*]}"
        sudo=(sudo)
    fi
    export DEBIAN_FRONTEND=noninteractive
    # `apt-get update` only now, and only once.
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    say "installed: ${missing[*]}"
else
    say "system packages: all present"
fi

# PostgreSQL's server binaries live outside PATH; check that a server with the
# pg_stat_statements module is really there.
pg_bin=""
for dir in /usr/lib/postgresql/*/bin; do
    [ -x "$dir/postgres" ] && pg_bin=$dir
done
{ [ -n "$pg_bin" ] && [ -x "$pg_bin/initdb" ] && [ -x "$pg_bin/pg_ctl" ]; } \
    || die "no PostgreSQL server binaries under /usr/lib/postgresql/<version>/bin (package postgresql)"
pg_lib="${pg_bin%/bin}/lib"
[ -e "$pg_lib/pg_stat_statements.so" ] || die "pg_stat_statements is missing from $pg_lib (package postgresql-contrib)"
if [ "$(id -u)" -eq 0 ] && ! id postgres >/dev/null 2>&1; then
    die "running as root needs the 'postgres' system user (created by the postgresql package)"
fi
command -v redis-server >/dev/null 2>&1 || die "redis-server is not on PATH"

# Rust: rustup's toolchain is preinstalled; it may just be missing from PATH.
if ! command -v cargo >/dev/null 2>&1; then
    if [ -x "$HOME/.cargo/bin/cargo" ]; then
        die "cargo is installed in $HOME/.cargo/bin but not on PATH: run '. \"$HOME/.cargo/env\"' (or add it to PATH) and retry"
    fi
    die "cargo was not found: install the Rust toolchain with rustup (https://rustup.rs), then retry"
fi
say "ok: $(cargo --version), PostgreSQL $(basename "${pg_bin%/bin}"), Redis $(redis-server --version | awk '{print $3}' | tr -d 'v=')"
