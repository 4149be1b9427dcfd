#!/usr/bin/env bash
# Renders Tutor's Kubernetes manifests offline with the Tutor plugin in integrations/tutor
# ("wpa") for several setting sets (hack/render_tutor.py: default, another Redis host and
# DB, Redis credentials, a worker at min 0, no controller, with tutor-contrib-pod-autoscaling,
# queues from a changed worker command, and two configurations Tutor must refuse), and writes
# what `tutor k8s start` would apply. The typed checks of the output are the Rust test
# tests/it/tutor_plugin.rs, which calls this script.
#
# Usage: hack/check-tutor.sh [--out DIR]   (default: a temporary folder, removed)
# Environment: WPA_TUTOR_VENV  virtualenv to use/create (default ~/.cache/wpa/tutor-venv)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out=""
while [[ $# -gt 0 ]]; do
	case "$1" in
	--out)
		out="${2:?--out needs a folder}"
		shift 2
		;;
	-h | --help)
		sed -n '2,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
		exit 0
		;;
	*)
		echo "check-tutor: unknown argument '$1'" >&2
		exit 2
		;;
	esac
done

venv="${WPA_TUTOR_VENV:-${HOME}/.cache/wpa/tutor-venv}"
# shellcheck source=hack/py-venv.sh
source "${repo}/hack/py-venv.sh"
ensure_py_venv "${venv}" "tutor==22.0.3" "tutor-contrib-pod-autoscaling==22.1.0"

# (Re)install the plugin when its source differs from what the venv holds. pip builds it
# from a copy, so that no build files land in the work tree.
plugin="${repo}/integrations/tutor"
digest="$(cd "${plugin}" && find . -type f ! -path './build/*' ! -path '*.egg-info/*' \
	! -path '*/__pycache__/*' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum)"
exec {lock_fd}>"${venv}.plugin.lock"
flock "${lock_fd}"
if [[ "$(cat "${venv}/.tutor-contrib-wpa.sha256" 2>/dev/null)" != "${digest}" ]]; then
	copy="$(mktemp -d)"
	cp -r "${plugin}/." "${copy}"
	echo "installing integrations/tutor into ${venv}" >&2
	"${venv}/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps \
		--force-reinstall "${copy}" >&2
	rm -rf "${copy}"
	echo "${digest}" >"${venv}/.tutor-contrib-wpa.sha256"
fi
exec {lock_fd}>&-

if [[ -z "${out}" ]]; then
	out="$(mktemp -d)"
	trap 'rm -rf "${out}"' EXIT
fi
"${venv}/bin/python" "${repo}/hack/render_tutor.py" --out "${out}"
