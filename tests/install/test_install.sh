#!/usr/bin/env bash
# Tests hack/install.sh against a recording kubectl stub (tests/install/stub):
# there is no cluster here, so we check what the script asks kubectl to do.
# Prints one line per test and a closing "N passed, N failed" line.
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "${here}/../.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "${work}"' EXIT

passed=0
failed=0
current=""
current_ok=true

fail() {
	printf '  assertion failed: %s\n' "$*"
	current_ok=false
}

begin() {
	current="$1"
	current_ok=true
	case_dir="${work}/${current}"
	mkdir -p "${case_dir}/stub" "${case_dir}/tmp"
	# A copy of the manifests; a stand-in CRD if the generated one is not there yet.
	cp -r "${repo}/artifacts" "${case_dir}/artifacts"
	if [[ ! -f "${case_dir}/artifacts/crd.yaml" ]]; then
		printf 'apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: workerpodautoscalers.k8s.practo.dev\n' \
			>"${case_dir}/artifacts/crd.yaml"
	fi
}

end() {
	if [[ "${current_ok}" == true ]]; then
		printf 'ok   %s\n' "${current}"
		passed=$((passed + 1))
	else
		printf 'FAIL %s\n' "${current}"
		failed=$((failed + 1))
	fi
}

# run_install [VAR=value ...] [-- script args]: runs the installer in a clean
# environment with the stub kubectl first on PATH; sets $rc, $out, $err.
run_install() {
	local vars=() script_args=()
	while [[ $# -gt 0 ]]; do
		if [[ "$1" == "--" ]]; then
			shift
			script_args=("$@")
			break
		fi
		vars+=("$1")
		shift
	done
	env -i PATH="${here}/stub:${PATH}" HOME="${case_dir}" TMPDIR="${case_dir}/tmp" \
		STUB_DIR="${case_dir}/stub" ARTIFACTS_DIR="${case_dir}/artifacts" ROLLOUT_TIMEOUT=5s \
		"${vars[@]}" bash "${repo}/hack/install.sh" "${script_args[@]}" \
		>"${case_dir}/out" 2>"${case_dir}/err"
	rc=$?
	out="$(cat "${case_dir}/out")"
	err="$(cat "${case_dir}/err")"
}

calls() { cat "${case_dir}/stub/calls" 2>/dev/null; }
applied() { cat "${case_dir}/stub/stdin/"*.yaml 2>/dev/null; }
expect_rc() { [[ "${rc}" == "$1" ]] || fail "exit code ${rc}, want $1 (stderr: ${err})"; }
expect_contains() { [[ "$2" == *"$3"* ]] || fail "$1 does not contain '$3'"; }
expect_lacks() { [[ "$2" != *"$3"* ]] || fail "$1 contains '$3'"; }

readonly KEY_ID="AKIATESTKEYID0000001"
readonly KEY_SECRET="wJalrXUtnFEMI/K7MDENG/bPxRfiCYTESTSECRET"

begin static_keys_go_to_secret_not_argv
run_install AWS_REGIONS=us-east-1 AWS_ACCESS_KEY_ID="${KEY_ID}" AWS_SECRET_ACCESS_KEY="${KEY_SECRET}"
expect_rc 0
expect_lacks "kubectl argv" "$(calls)" "${KEY_ID}"
expect_lacks "kubectl argv" "$(calls)" "${KEY_SECRET}"
expect_lacks "stderr" "${err}" "${KEY_SECRET}"
expect_contains "kubectl argv" "$(calls)" "create secret generic workerpodautoscaler-aws"
expect_contains "applied manifests" "$(applied)" "kind: Secret"
expect_contains "applied manifests" "$(applied)" "$(printf '%s' "${KEY_SECRET}" | base64 -w0)"
expect_contains "applied manifests" "$(applied)" 'AWS_REGIONS: "us-east-1"'
[[ "$(cat "${case_dir}/stub/envfile-modes")" == 600 ]] || fail "env file mode is not 600"
[[ -z "$(ls -A "${case_dir}/tmp")" ]] || fail "temporary files left behind: $(ls -A "${case_dir}/tmp")"
while read -r f; do [[ ! -e "${f}" ]] || fail "env file ${f} still exists"; done <"${case_dir}/stub/envfile-paths"
expect_contains "applied manifests" "$(applied)" "kind: ClusterRole"
expect_contains "applied manifests" "$(applied)" "image: ghcr.io/worker-pod-autoscaler/workerpodautoscaler:0.1.0"
expect_contains "kubectl argv" "$(calls)" "wait --for=condition=Established"
end

begin irsa_annotates_service_account_and_stores_no_keys
run_install AWS_ROLE_ARN=arn:aws:iam::123456789012:role/wpa-controller
expect_rc 0
expect_contains "applied manifests" "$(applied)" 'eks.amazonaws.com/role-arn: "arn:aws:iam::123456789012:role/wpa-controller"'
expect_lacks "applied manifests" "$(applied)" "kind: Secret"
expect_lacks "kubectl argv" "$(calls)" "create secret"
expect_contains "kubectl argv" "$(calls)" "delete secret workerpodautoscaler-aws --ignore-not-found"
[[ ! -e "${case_dir}/stub/envfile-modes" ]] || fail "an env file with keys was written"
end

begin irsa_and_keys_together_are_refused
run_install AWS_ROLE_ARN=arn:aws:iam::123456789012:role/wpa AWS_ACCESS_KEY_ID="${KEY_ID}" AWS_SECRET_ACCESS_KEY="${KEY_SECRET}"
expect_rc 1
expect_contains "stderr" "${err}" "not both"
[[ -z "$(calls)" ]] || fail "kubectl was called: $(calls)"
end

begin second_run_is_identical_and_only_applies
run_install AWS_ACCESS_KEY_ID="${KEY_ID}" AWS_SECRET_ACCESS_KEY="${KEY_SECRET}"
expect_rc 0
first_calls="$(calls)"
first_applied="$(applied)"
rm -rf "${case_dir}/stub"
mkdir -p "${case_dir}/stub"
run_install AWS_ACCESS_KEY_ID="${KEY_ID}" AWS_SECRET_ACCESS_KEY="${KEY_SECRET}"
expect_rc 0
# The two kubectl processes of the Secret pipeline log in either order: compare
# the sorted calls, with the random temporary file name masked.
normalise() { sed -e 's/wpa-aws\.[A-Za-z0-9]*/wpa-aws.X/' | sort; }
first_sorted="$(printf '%s\n' "${first_calls}" | normalise)"
second_sorted="$(calls | normalise)"
[[ "${first_sorted}" == "${second_sorted}" ]] ||
	fail "second run made different kubectl calls: $(diff <(printf '%s\n' "${first_sorted}") <(printf '%s\n' "${second_sorted}"))"
[[ "${first_applied}" == "$(applied)" ]] || fail "second run applied different manifests"
# Nothing is created imperatively: every write is an apply (create only renders
# the Secret client-side with --dry-run=client).
if calls | grep -E '(^| )(create|replace)( |$)' | grep -qv -- '--dry-run=client'; then
	fail "non-idempotent kubectl call: $(calls | grep -E ' (create|replace) ')"
fi
end

begin missing_kubectl_is_a_clear_error
run_install KUBECTL=wpa-test-no-such-kubectl
expect_rc 1
expect_contains "stderr" "${err}" "'wpa-test-no-such-kubectl' not found on PATH"
end

begin unreachable_cluster_is_a_clear_error
run_install STUB_UNREACHABLE=1
expect_rc 1
expect_contains "stderr" "${err}" "cannot reach the Kubernetes API server"
expect_contains "stderr" "${err}" "was refused"
expect_lacks "kubectl argv" "$(calls)" "apply"
end

begin namespaced_mode_uses_role_not_clusterrole
run_install WPA_NAMESPACE=workers
expect_rc 0
manifests="$(applied)"
expect_lacks "applied manifests" "${manifests}" "kind: ClusterRole"
expect_contains "applied manifests" "${manifests}" $'kind: Role\nmetadata:\n  name: workerpodautoscaler\n  namespace: workers'
expect_contains "applied manifests" "${manifests}" $'kind: RoleBinding\nmetadata:\n  name: workerpodautoscaler\n  namespace: workers'
expect_contains "applied manifests" "${manifests}" $'- kind: ServiceAccount\n    name: workerpodautoscaler\n    namespace: kube-system'
expect_contains "applied manifests" "${manifests}" 'WPA_NAMESPACE: "workers"'
# The placeholders of role-namespaced.yaml must all be replaced.
expect_lacks "applied manifests" "${manifests}" "\${WPA_NAMESPACE}"
expect_lacks "applied manifests" "${manifests}" "\${NAMESPACE}"
end

begin custom_namespace_and_image
run_install NAMESPACE=wpa-system IMAGE=registry.example.com/wpa IMAGE_TAG=0.2.0
expect_rc 0
manifests="$(applied)"
expect_contains "applied manifests" "${manifests}" $'kind: Namespace\nmetadata:\n  name: wpa-system'
expect_contains "applied manifests" "${manifests}" "image: registry.example.com/wpa:0.2.0"
expect_lacks "applied manifests" "${manifests}" "namespace: kube-system"
expect_contains "kubectl argv" "$(calls)" "-n wpa-system rollout status deployment/workerpodautoscaler"
end

begin dry_run_prints_and_touches_nothing
run_install AWS_ACCESS_KEY_ID="${KEY_ID}" AWS_SECRET_ACCESS_KEY="${KEY_SECRET}" -- --dry-run
expect_rc 0
[[ -z "$(calls)" ]] || fail "kubectl was called in dry-run: $(calls)"
expect_contains "stdout" "${out}" "kind: Deployment"
expect_contains "stdout" "${out}" "would apply Secret kube-system/workerpodautoscaler-aws"
expect_lacks "stdout" "${out}" "${KEY_SECRET}"
expect_lacks "stdout" "${out}" "${KEY_ID}"
end

begin missing_crd_names_the_generator
rm -f "${case_dir}/artifacts/crd.yaml"
run_install
expect_rc 1
expect_contains "stderr" "${err}" "workerpodautoscaler crd >"
[[ -z "$(calls)" ]] || fail "kubectl was called: $(calls)"
end

begin unsafe_namespace_is_refused
run_install 'NAMESPACE=kube-system/evil'
expect_rc 1
expect_contains "stderr" "${err}" "not a valid namespace name"
end

printf '%d passed, %d failed\n' "${passed}" "${failed}"
[[ "${failed}" -eq 0 ]]
