#!/usr/bin/env bash
# Runs every test of the workspace: installs what is missing (scripts/setup.sh), then
# `cargo test --workspace`. The integration tests start their own PostgreSQL (initdb into
# a temporary directory) and redis-server on free ports; nothing else needs to run.
#
#   scripts/test.sh [extra cargo test arguments, e.g. -- --nocapture]
#
# Build artifacts go to $CARGO_TARGET_DIR, by default /var/tmp/quantaid-target: outside
# the clone, so that fresh clones (CI) reuse earlier builds. The exit code is cargo's.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

# rustup's cargo may be installed but missing from a non-login shell's PATH.
if ! command -v cargo >/dev/null && [ -x "$HOME/.cargo/bin/cargo" ]; then PATH=$HOME/.cargo/bin:$PATH; fi
scripts/setup.sh

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/quantaid-target}
echo "==> cargo test --workspace $* (target dir $CARGO_TARGET_DIR)"
exec cargo test --workspace "$@"
