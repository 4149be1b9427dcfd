#!/usr/bin/env bash
# Regenerates artifacts/crd.yaml from the controller's types
# (`workerpodautoscaler crd`) and copies it into the Helm chart's crds/ folder,
# so that both stay identical (tests/it/artifacts_manifests.rs checks it).
#
# Usage: hack/sync-crd.sh [--check]
#   --check  change nothing; exit 1 when either file is out of date
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
artifact="${repo}/artifacts/crd.yaml"
chart_copy="${repo}/charts/worker-pod-autoscaler/crds/crd.yaml"
check=false
[[ "${1:-}" == "--check" ]] && check=true

generated="$(mktemp)"
trap 'rm -f "${generated}"' EXIT
(cd "${repo}" && cargo run --quiet --bin workerpodautoscaler -- crd) >"${generated}"

if [[ "${check}" == true ]]; then
	status=0
	for f in "${artifact}" "${chart_copy}"; do
		if ! cmp -s "${generated}" "${f}"; then
			echo "sync-crd: ${f#"${repo}"/} is out of date: run hack/sync-crd.sh" >&2
			status=1
		fi
	done
	exit "${status}"
fi
cp "${generated}" "${artifact}"
cp "${generated}" "${chart_copy}"
echo "sync-crd: wrote artifacts/crd.yaml and charts/worker-pod-autoscaler/crds/crd.yaml" >&2
