#!/usr/bin/env bash
# Regenerates what is derived from the controller's types and its provider table:
# artifacts/crd.yaml (`workerpodautoscaler crd`), copied into the Helm chart's
# crds/ folder and the Tutor plugin's templates, so that all stay identical
# (tests/it/artifacts_manifests.rs and tests/it/tutor_plugin.rs check it), and the
# provider names the chart's values.schema.json accepts in controller.queueServices
# (`workerpodautoscaler providers`; tests/it/chart_render.rs checks it).
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

schema="${repo}/charts/worker-pod-autoscaler/values.schema.json"
generated="$(mktemp)"
providers="$(mktemp)"
schema_generated="$(mktemp)"
trap 'rm -f "${generated}" "${providers}" "${schema_generated}"' EXIT
(cd "${repo}" && cargo run --quiet --bin workerpodautoscaler -- crd) >"${generated}"
(cd "${repo}" && cargo run --quiet --bin workerpodautoscaler -- providers) >"${providers}"
# The schema with controller.queueServices' pattern naming every provider.
python3 - "${schema}" "${providers}" >"${schema_generated}" <<'PY'
import json
import sys

schema_path, providers_path = sys.argv[1], sys.argv[2]
with open(schema_path) as f:
    schema = json.load(f)
with open(providers_path) as f:
    names = "|".join(json.loads(line)["name"] for line in f if line.strip())
services = schema["properties"]["controller"]["properties"]["queueServices"]
services["pattern"] = f"^(({names})(,({names}))*)?$"
print(json.dumps(schema, indent=2))
PY

if [[ "${check}" == true ]]; then
	status=0
	for f in "${artifact}" "${chart_copy}" "${tutor_copy}"; do
		if ! cmp -s "${generated}" "${f}"; then
			echo "sync-crd: ${f#"${repo}"/} is out of date: run hack/sync-crd.sh" >&2
			status=1
		fi
	done
	if ! cmp -s "${schema_generated}" "${schema}"; then
		echo "sync-crd: ${schema#"${repo}"/} is out of date: run hack/sync-crd.sh" >&2
		status=1
	fi
	exit "${status}"
fi
cp "${generated}" "${artifact}"
cp "${generated}" "${chart_copy}"
cp "${generated}" "${tutor_copy}"
cp "${schema_generated}" "${schema}"
echo "sync-crd: wrote artifacts/crd.yaml, charts/worker-pod-autoscaler/crds/crd.yaml, ${tutor_copy#"${repo}"/} and ${schema#"${repo}"/}" >&2
