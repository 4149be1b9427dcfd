#!/usr/bin/env bash
# Runs shellcheck on every shell script in hack/ and tests/ (by extension or by
# a bash/sh shebang). Installs shellcheck with apt-get when it is missing and
# we are root. Prints one line per script and "N passed, N failed".
set -uo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if ! command -v shellcheck >/dev/null 2>&1; then
	if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
		apt-get install -y -qq shellcheck >/dev/null || { apt-get update -qq && apt-get install -y -qq shellcheck >/dev/null; }
	fi
	command -v shellcheck >/dev/null 2>&1 || {
		echo "lint-shell: shellcheck is not installed" >&2
		exit 1
	}
fi

passed=0
failed=0
while IFS= read -r -d '' file; do
	case "${file}" in
	*.sh) ;;
	*)
		# Extensionless scripts (e.g. the kubectl stub) count by their shebang.
		head -n 1 "${file}" | grep -qE '^#!.*\b(ba)?sh\b' || continue
		;;
	esac
	rel="${file#"${repo}"/}"
	if (cd "${repo}" && shellcheck -x "${rel}"); then
		printf 'ok   %s\n' "${rel}"
		passed=$((passed + 1))
	else
		printf 'FAIL %s\n' "${rel}"
		failed=$((failed + 1))
	fi
done < <(find "${repo}/hack" "${repo}/tests" -type f -not -path '*/target/*' -not -name '*.py' -not -name '*.rs' -print0 | sort -z)

printf '%d passed, %d failed\n' "${passed}" "${failed}"
[[ "${failed}" -eq 0 ]]
