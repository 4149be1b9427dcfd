#!/usr/bin/env bash
# Regenerates artifacts/crd.yaml from the controller's types
# (`workerpodautoscaler crd`) and copies it into the Helm chart's crds/ folder
# and the Tutor plugin's templates, so that all stay identical
# (tests/it/artifacts_manifests.rs and tests/it/tutor_plugin.rs check it).
#
# Usage: hack/sync-crd.sh [--check]
#   --check  change nothing; exit 1 when any copy is out of date
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
artifact="${repo}/artifacts/crd.yaml"
chart_copy="${repo}/charts/worker-pod-autoscaler/crds/crd.yaml"
tutor_copy="${repo}/integrations/tutor/tutorwpa/templates/wpa/k8s/crd.yml"
check=false
[[ "${1:-}" == "--check" ]] && check=true

generated="$(mktemp)"
trap 'rm -f "${generated}"' EXIT
(cd "${repo}" && cargo run --quiet --bin workerpodautoscaler -- crd) >"${generated}"

if [[ "${check}" == true ]]; then
	status=0
	for f in "${artifact}" "${chart_copy}" "${tutor_copy}"; do
		if ! cmp -s "${generated}" "${f}"; then
			echo "sync-crd: ${f#"${repo}"/} is out of date: run hack/sync-crd.sh" >&2
			status=1
		fi
	done
	exit "${status}"
fi
cp "${generated}" "${artifact}"
cp "${generated}" "${chart_copy}"
cp "${generated}" "${tutor_copy}"
echo "sync-crd: wrote artifacts/crd.yaml, charts/worker-pod-autoscaler/crds/crd.yaml and ${tutor_copy#"${repo}"/}" >&2
