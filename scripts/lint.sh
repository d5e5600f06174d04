#!/usr/bin/env bash
# The style checks CI runs: rustfmt (settings in rustfmt.toml), clippy with every warning
# an error (the crates' own lint settings are in their lib.rs/main.rs), and shellcheck
# (settings in .shellcheckrc) on every shell script of the repository: each `*.sh` file
# and each file whose first line starts sh or bash, so a new script is checked without
# being listed here.
#
#   scripts/lint.sh
#
# Installs what is missing: the build's system packages (scripts/setup.sh), shellcheck
# (apt), and the rustfmt and clippy components (rustup). Runs every check even when an
# earlier one fails, and exits non-zero if any failed. Build artifacts go to
# $CARGO_TARGET_DIR, by default /var/tmp/quantaid-target as for scripts/test.sh: clippy
# then reuses the test build's dependencies.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

say() { printf 'lint: %s\n' "$*"; }
die() { printf 'lint: error: %s\n' "$*" >&2; exit 1; }

# rustup's cargo may be installed but missing from a non-login shell's PATH.
if ! command -v cargo >/dev/null && [ -x "$HOME/.cargo/bin/cargo" ]; then PATH=$HOME/.cargo/bin:$PATH; fi
scripts/setup.sh

if ! command -v shellcheck >/dev/null; then
    sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || die "shellcheck is missing and this is not root; run as root: apt-get install shellcheck"
        sudo=(sudo)
    fi
    say "installing shellcheck"
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends shellcheck >/dev/null
fi
for component in rustfmt clippy; do
    # `cargo fmt` and `cargo clippy` are the components' cargo subcommands.
    subcommand=${component/rustfmt/fmt}
    if ! cargo "$subcommand" --version >/dev/null 2>&1; then
        command -v rustup >/dev/null || die "cargo $subcommand is missing and rustup is not installed to add $component"
        say "installing the $component component"
        rustup component add "$component"
    fi
done

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/quantaid-target}

# Every shell script git knows about (a fresh clone has exactly these).
scripts=()
while IFS= read -r -d '' file; do
    [ -f "$file" ] || continue
    case $file in
        *.sh | *.bash) scripts+=("$file") ;;
        *) if head -n 1 "$file" | grep -qE '^#![[:space:]]*/[^[:space:]]*/(env[[:space:]]+)?(ba|da|k)?sh([[:space:]]|$)'; then
            scripts+=("$file")
        fi ;;
    esac
done < <(git ls-files -z)
((${#scripts[@]})) || die "no shell script found: is $ROOT a git checkout?"

failed=()
# check NAME COMMAND...: runs one check, says how long it took, and remembers a failure.
check() {
    local name=$1 started=$SECONDS
    shift
    say "$name: ${*:1:8}$( (($# > 8)) && echo " ... ($(($# - 8)) more)")"
    if "$@"; then
        say "$name: ok ($((SECONDS - started)) s)"
    else
        say "$name: FAILED ($((SECONDS - started)) s)"
        failed+=("$name")
    fi
}
check rustfmt cargo fmt --all --check
check clippy cargo clippy --workspace --all-targets --locked -- -D warnings
# From the repository root: the scripts' `# shellcheck source=` paths are relative to it.
check shellcheck shellcheck --external-sources "${scripts[@]}"

if ((${#failed[@]})); then
    say "failed: ${failed[*]}"
    exit 1
fi
say "all checks passed (${#scripts[@]} shell scripts)"
