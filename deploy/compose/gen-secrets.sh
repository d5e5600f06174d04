#!/usr/bin/env bash
# Writes the compose stack's secrets once (mode 600) into deploy/compose/secrets/; an existing
# file is kept, so running it again changes nothing.
set -euo pipefail
dir="$(cd "$(dirname "$0")" && pwd)/secrets"
umask 077
mkdir -p "$dir"
gen() { [[ -s "$dir/$1" ]] || head -c 32 /dev/urandom | base64 | tr -d '/+=\n' >"$dir/$1"; }
gen db_password; gen redis_password; gen internal_token; gen admin_token
[[ -s "$dir/quantaid.env" ]] || cat >"$dir/quantaid.env" <<ENV
QUANTAID_DB_PASSWORD=$(cat "$dir/db_password")
QUANTAID_REDIS_PASSWORD=$(cat "$dir/redis_password")
QUANTAID_INTERNAL_TOKEN=$(cat "$dir/internal_token")
QUANTAID_BOOTSTRAP_ADMIN_TOKEN=$(cat "$dir/admin_token")
ENV
echo "secrets in $dir (the admin token is in $dir/admin_token)"
