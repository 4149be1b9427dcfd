#!/usr/bin/env bash
# Lints and renders charts/worker-pod-autoscaler offline for every value set in
# its ci/ folder, with helm-python-sdk (Helm's Go SDK as a Python package; no
# helm binary, no cluster). The typed checks of the rendered manifests are the
# Rust test tests/it/chart_render.rs, which calls this script.
#
# Usage: hack/check-chart.sh [--out DIR]   (default: a temporary folder, removed)
# Environment: WPA_PY_VENV  virtualenv to use/create (default ~/.cache/wpa/py-venv)
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
		sed -n '2,8p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
		exit 0
		;;
	*)
		echo "check-chart: unknown argument '$1'" >&2
		exit 2
		;;
	esac
done

venv="${WPA_PY_VENV:-${HOME}/.cache/wpa/py-venv}"
# shellcheck source=hack/py-venv.sh
source "${repo}/hack/py-venv.sh"
ensure_py_venv "${venv}" "helm-python-sdk==0.2.2" "PyYAML==6.0.3"

if [[ -z "${out}" ]]; then
	out="$(mktemp -d)"
	trap 'rm -rf "${out}"' EXIT
fi
"${venv}/bin/python" "${repo}/hack/render_chart.py" --chart "${repo}/charts/worker-pod-autoscaler" --out "${out}"
