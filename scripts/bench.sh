#!/usr/bin/env bash
# Builds the release backend and the load tool, then runs the load tool's backend
# benchmark (`quantaid-loadtest bench`).
# Flags pass through, e.g.:  scripts/bench.sh --duration-secs 30 --concurrency 16
# It needs PostgreSQL's server binaries (scripts/setup.sh installs them) unless you pass
# --database-url. See docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/quantaid-target}"
cargo build --release -p quantaid-backend -p quantaid-loadtest
# The load tool finds quantaid-backend beside itself in the same target directory.
exec "$CARGO_TARGET_DIR/release/quantaid-loadtest" bench "$@"
