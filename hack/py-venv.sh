# shellcheck shell=bash
# Sourced by the hack/ scripts: ensure_py_venv DIR REQUIREMENT... creates a
# Python virtualenv in DIR (once) and installs the pinned requirements into it
# when `pip` does not already report them satisfied.
ensure_py_venv() {
	local venv="$1"
	shift
	mkdir -p "$(dirname "${venv}")"
	# Tests run in parallel processes: one creates/installs, the others wait.
	local lock_fd
	exec {lock_fd}>"${venv}.lock"
	flock "${lock_fd}"
	_ensure_py_venv_locked "${venv}" "$@"
	local status=$?
	exec {lock_fd}>&-
	return "${status}"
}

_ensure_py_venv_locked() {
	local venv="$1"
	shift
	if [[ ! -x "${venv}/bin/python" ]]; then
		command -v python3 >/dev/null 2>&1 || {
			echo "python3 is required" >&2
			return 1
		}
		python3 -m venv "${venv}" || return 1
	fi
	local req frozen missing=()
	frozen="$("${venv}/bin/python" -m pip freeze --disable-pip-version-check 2>/dev/null)"
	for req in "$@"; do
		grep -qixF -- "${req}" <<<"${frozen}" || missing+=("${req}")
	done
	if [[ ${#missing[@]} -gt 0 ]]; then
		echo "installing ${missing[*]} into ${venv}" >&2
		"${venv}/bin/python" -m pip install --quiet --disable-pip-version-check "${missing[@]}" >&2 || return 1
	fi
}
