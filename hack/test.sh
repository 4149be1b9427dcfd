#!/usr/bin/env bash
# The one test command (README, CI): make sure what the tests need is installed and running,
# then check formatting, lint with clippy -D warnings, and run every test.
#
# On a fresh Debian machine, run as root (it uses apt-get and pip). Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '==> %s\n' "$*"; }

apt_install() {
    # apt-get update once, only when something is actually missing.
    if [ -z "${APT_UPDATED:-}" ]; then
        apt-get update -qq
        APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# mold links the many test binaries several times faster than the default linker.
if ! command -v mold >/dev/null 2>&1; then
    log "installing mold"
    apt_install mold || log "mold unavailable; using the default linker"
fi
if command -v mold >/dev/null 2>&1; then
    export CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C link-arg=-fuse-ld=mold"
fi

if ! cargo nextest --version >/dev/null 2>&1; then
    log "installing cargo-nextest"
    cargo install cargo-nextest --locked
fi

log "brokers and tools for the tests"
bash hack/services.sh

log "shellcheck"
bash hack/lint-shell.sh

log "install.sh against a stub kubectl"
bash tests/install/test_install.sh

log "Helm chart: lint and render offline"
bash hack/check-chart.sh

log "Dockerfile"
bash hack/check-dockerfile.sh

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy -D warnings"
cargo clippy --all-targets --locked -- -D warnings

log "cargo nextest"
cargo nextest run --locked --no-fail-fast "$@"

log "fuzz the input parsers (${FUZZ_SECONDS:-20}s per target; FUZZ_SECONDS=0 skips)"
if [ "${FUZZ_SECONDS:-20}" != 0 ]; then
    bash hack/fuzz.sh "${FUZZ_SECONDS:-20}"
fi
