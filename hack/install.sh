#!/usr/bin/env bash
# Installs (or upgrades: every step is `kubectl apply`) the WorkerPodAutoScaler
# controller: CRD, service account, RBAC, settings, AWS credentials, Deployment
# and Service.
#
# Usage: hack/install.sh [--dry-run] [--help]
#
# Environment:
#   NAMESPACE              controller namespace (default kube-system)
#   IMAGE, IMAGE_TAG       controller image (default
#                          ghcr.io/worker-pod-autoscaler/workerpodautoscaler, tag 0.1.0);
#                          an IMAGE that already has a tag or digest is used as is
#   WPA_NAMESPACE          watch only this namespace (namespaced Role instead of
#                          a ClusterRole)
#   AWS_REGIONS            comma separated SQS regions (controller default when unset)
#   AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY [, AWS_SESSION_TOKEN]
#                          static AWS keys, stored in the Secret workerpodautoscaler-aws
#   AWS_ROLE_ARN           IRSA: annotate the service account with this role
#                          instead of storing keys (removes an old key Secret)
#   KUBECTL                kubectl command (default kubectl)
#   ARTIFACTS_DIR          manifests folder (default <repo>/artifacts)
#   ROLLOUT_TIMEOUT        wait this long for the controller to be ready (default
#                          120s; 0 skips the wait)
set -euo pipefail

readonly DEFAULT_IMAGE="ghcr.io/worker-pod-autoscaler/workerpodautoscaler"
readonly DEFAULT_TAG="0.1.0"
readonly APP="workerpodautoscaler"
readonly AWS_SECRET_NAME="workerpodautoscaler-aws"
readonly CONFIG_NAME="workerpodautoscaler-config"
readonly CRD_NAME="workerpodautoscalers.k8s.practo.dev"

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ARTIFACTS_DIR="${ARTIFACTS_DIR:-${repo_root}/artifacts}"
NAMESPACE="${NAMESPACE:-kube-system}"
IMAGE="${IMAGE:-${DEFAULT_IMAGE}}"
IMAGE_TAG="${IMAGE_TAG:-${DEFAULT_TAG}}"
WPA_NAMESPACE="${WPA_NAMESPACE:-}"
AWS_REGIONS="${AWS_REGIONS:-}"
AWS_ROLE_ARN="${AWS_ROLE_ARN:-}"
KUBECTL="${KUBECTL:-kubectl}"
ROLLOUT_TIMEOUT="${ROLLOUT_TIMEOUT:-120s}"
DRY_RUN=false

log() { printf '%s\n' "install: $*" >&2; }
die() {
	printf '%s\n' "install: error: $*" >&2
	exit 1
}

usage() {
	sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
}

parse_args() {
	while [[ $# -gt 0 ]]; do
		case "$1" in
		--dry-run) DRY_RUN=true ;;
		-h | --help)
			usage
			exit 0
			;;
		*) die "unknown argument '$1' (see --help)" ;;
		esac
		shift
	done
}

# Values end up inside YAML and sed expressions: accept only safe shapes.
validate_inputs() {
	local dns_label='^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$'
	[[ "${NAMESPACE}" =~ ${dns_label} ]] || die "NAMESPACE '${NAMESPACE}' is not a valid namespace name"
	if [[ -n "${WPA_NAMESPACE}" && ! "${WPA_NAMESPACE}" =~ ${dns_label} ]]; then
		die "WPA_NAMESPACE '${WPA_NAMESPACE}' is not a valid namespace name"
	fi
	[[ "${IMAGE}" =~ ^[A-Za-z0-9._/:@-]+$ ]] || die "IMAGE '${IMAGE}' is not a valid image reference"
	[[ "${IMAGE_TAG}" =~ ^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$ ]] || die "IMAGE_TAG '${IMAGE_TAG}' is not a valid tag"
	if [[ -n "${AWS_REGIONS}" && ! "${AWS_REGIONS}" =~ ^[a-z0-9-]+(,[a-z0-9-]+)*$ ]]; then
		die "AWS_REGIONS '${AWS_REGIONS}' must look like 'ap-south-1,us-east-1'"
	fi
	if [[ -n "${AWS_ROLE_ARN}" ]]; then
		[[ "${AWS_ROLE_ARN}" =~ ^arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]+$ ]] ||
			die "AWS_ROLE_ARN '${AWS_ROLE_ARN}' is not an IAM role ARN (arn:aws:iam::<account>:role/<name>)"
		if [[ -n "${AWS_ACCESS_KEY_ID:-}" || -n "${AWS_SECRET_ACCESS_KEY:-}" ]]; then
			die "set either AWS_ROLE_ARN (IRSA) or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, not both"
		fi
	fi
	if [[ -n "${AWS_ACCESS_KEY_ID:-}" && -z "${AWS_SECRET_ACCESS_KEY:-}" ]] ||
		[[ -z "${AWS_ACCESS_KEY_ID:-}" && -n "${AWS_SECRET_ACCESS_KEY:-}" ]]; then
		die "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set together"
	fi
	local v
	for v in "${AWS_ACCESS_KEY_ID:-}" "${AWS_SECRET_ACCESS_KEY:-}" "${AWS_SESSION_TOKEN:-}"; do
		[[ "${v}" != *$'\n'* ]] || die "AWS credentials must not contain line breaks"
	done
}

image_ref() {
	local last="${IMAGE##*/}"
	if [[ "${last}" == *:* || "${last}" == *@* ]]; then
		printf '%s' "${IMAGE}"
	else
		printf '%s:%s' "${IMAGE}" "${IMAGE_TAG}"
	fi
}

check_files() {
	local f missing=()
	for f in crd.yaml serviceaccount.yaml clusterrole.yaml clusterrolebinding.yaml \
		role-namespaced.yaml rolebinding-namespaced.yaml role-leader-election.yaml \
		deployment-template.yaml service.yaml; do
		[[ -f "${ARTIFACTS_DIR}/${f}" ]] || missing+=("${f}")
	done
	if [[ ${#missing[@]} -gt 0 ]]; then
		local hint=""
		if [[ " ${missing[*]} " == *" crd.yaml "* ]]; then
			hint=" (generate the CRD with: workerpodautoscaler crd > ${ARTIFACTS_DIR}/crd.yaml)"
		fi
		die "missing manifests in ${ARTIFACTS_DIR}: ${missing[*]}${hint}"
	fi
}

check_cluster() {
	command -v "${KUBECTL}" >/dev/null 2>&1 ||
		die "'${KUBECTL}' not found on PATH: install kubectl (https://kubernetes.io/docs/tasks/tools/) or set KUBECTL"
	local out
	if ! out="$("${KUBECTL}" version --request-timeout=15s 2>&1)"; then
		log "kubectl says: $(printf '%s' "${out}" | tail -n 3)"
		die "cannot reach the Kubernetes API server: check your kubeconfig context ('kubectl config current-context') and network"
	fi
}

# Sends one or more YAML documents on stdin to the cluster, or prints them.
apply_manifest() {
	local what="$1"
	if [[ "${DRY_RUN}" == true ]]; then
		printf -- '---\n# %s\n' "${what}"
		cat
	else
		log "applying ${what}"
		"${KUBECTL}" apply -f -
	fi
}

# Replaces the controller namespace in a shipped manifest.
with_namespace() {
	sed -e "s/namespace: kube-system\$/namespace: ${NAMESPACE}/" "$1"
}

apply_namespace() {
	[[ "${NAMESPACE}" != "kube-system" ]] || return 0
	apply_manifest "Namespace ${NAMESPACE}" <<EOF
apiVersion: v1
kind: Namespace
metadata:
  name: ${NAMESPACE}
EOF
}

apply_crd() {
	apply_manifest "CustomResourceDefinition ${CRD_NAME}" <"${ARTIFACTS_DIR}/crd.yaml"
	if [[ "${DRY_RUN}" != true ]]; then
		"${KUBECTL}" wait --for=condition=Established --timeout=60s "crd/${CRD_NAME}" >/dev/null ||
			die "the CRD ${CRD_NAME} did not become Established within 60s"
	fi
}

apply_service_account() {
	if [[ -n "${AWS_ROLE_ARN}" ]]; then
		with_namespace "${ARTIFACTS_DIR}/serviceaccount.yaml" |
			awk -v arn="${AWS_ROLE_ARN}" '
				{ print }
				/^metadata:/ && !done { print "  annotations:"; print "    eks.amazonaws.com/role-arn: \"" arn "\""; done = 1 }
			' | apply_manifest "ServiceAccount ${NAMESPACE}/${APP} (IRSA role ${AWS_ROLE_ARN})"
	else
		with_namespace "${ARTIFACTS_DIR}/serviceaccount.yaml" |
			apply_manifest "ServiceAccount ${NAMESPACE}/${APP}"
	fi
}

apply_rbac() {
	if [[ -n "${WPA_NAMESPACE}" ]]; then
		local f
		for f in role-namespaced.yaml rolebinding-namespaced.yaml; do
			sed -e '/^#/d' -e "s/\${WPA_NAMESPACE}/${WPA_NAMESPACE}/g" -e "s/\${NAMESPACE}/${NAMESPACE}/g" \
				"${ARTIFACTS_DIR}/${f}" |
				apply_manifest "${f%.yaml} in namespace ${WPA_NAMESPACE}"
		done
	else
		apply_manifest "ClusterRoles ${APP}, ${APP}-secret-reader" <"${ARTIFACTS_DIR}/clusterrole.yaml"
		with_namespace "${ARTIFACTS_DIR}/clusterrolebinding.yaml" |
			apply_manifest "ClusterRoleBinding ${APP}"
	fi
	with_namespace "${ARTIFACTS_DIR}/role-leader-election.yaml" |
		apply_manifest "leader election Role and RoleBinding in ${NAMESPACE}"
}

apply_config() {
	local data=""
	[[ -z "${WPA_NAMESPACE}" ]] || data+=$'\n'"  WPA_NAMESPACE: \"${WPA_NAMESPACE}\""
	[[ -z "${AWS_REGIONS}" ]] || data+=$'\n'"  AWS_REGIONS: \"${AWS_REGIONS}\""
	[[ -n "${data}" ]] || data=" {}"
	apply_manifest "ConfigMap ${NAMESPACE}/${CONFIG_NAME}" <<EOF
apiVersion: v1
kind: ConfigMap
metadata:
  name: ${CONFIG_NAME}
  namespace: ${NAMESPACE}
  labels:
    app.kubernetes.io/name: ${APP}
    app.kubernetes.io/component: controller
data:${data}
EOF
}

apply_aws_credentials() {
	if [[ -n "${AWS_ROLE_ARN}" ]]; then
		# Static keys in the environment win over IRSA in the AWS SDK credential
		# chain, so a Secret left from an earlier key-based install must go.
		if [[ "${DRY_RUN}" == true ]]; then
			printf -- '---\n# would delete Secret %s/%s if present (IRSA replaces static keys)\n' \
				"${NAMESPACE}" "${AWS_SECRET_NAME}"
		else
			log "IRSA: removing Secret ${NAMESPACE}/${AWS_SECRET_NAME} if an earlier install created it"
			"${KUBECTL}" -n "${NAMESPACE}" delete secret "${AWS_SECRET_NAME}" --ignore-not-found >/dev/null
		fi
		return 0
	fi
	if [[ -z "${AWS_ACCESS_KEY_ID:-}" ]]; then
		log "no AWS credentials given: SQS queues need AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_ROLE_ARN or a node role"
		return 0
	fi
	local keys="AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY"
	[[ -z "${AWS_SESSION_TOKEN:-}" ]] || keys+=", AWS_SESSION_TOKEN"
	if [[ "${DRY_RUN}" == true ]]; then
		printf -- '---\n# would apply Secret %s/%s with keys %s (values not shown)\n' \
			"${NAMESPACE}" "${AWS_SECRET_NAME}" "${keys}"
		return 0
	fi
	# The keys go through a private temporary file, never through kubectl's
	# arguments (visible to every user in `ps`) and never into a kept file.
	local env_file
	env_file="$(mktemp "${TMPDIR:-/tmp}/wpa-aws.XXXXXX")"
	# shellcheck disable=SC2064 # expand now: the trap must remove this file
	trap "rm -f '${env_file}'" EXIT
	chmod 600 "${env_file}"
	{
		printf 'AWS_ACCESS_KEY_ID=%s\n' "${AWS_ACCESS_KEY_ID}"
		printf 'AWS_SECRET_ACCESS_KEY=%s\n' "${AWS_SECRET_ACCESS_KEY}"
		if [[ -n "${AWS_SESSION_TOKEN:-}" ]]; then
			printf 'AWS_SESSION_TOKEN=%s\n' "${AWS_SESSION_TOKEN}"
		fi
	} >"${env_file}"
	log "applying Secret ${NAMESPACE}/${AWS_SECRET_NAME} (keys: ${keys})"
	"${KUBECTL}" -n "${NAMESPACE}" create secret generic "${AWS_SECRET_NAME}" \
		--from-env-file="${env_file}" --dry-run=client -o yaml |
		"${KUBECTL}" apply -f -
	rm -f "${env_file}"
	trap - EXIT
}

apply_controller() {
	local image
	image="$(image_ref)"
	with_namespace "${ARTIFACTS_DIR}/deployment-template.yaml" |
		sed -e "s|^\( *image: \)${DEFAULT_IMAGE}:${DEFAULT_TAG}\$|\1${image}|" |
		apply_manifest "Deployment ${NAMESPACE}/${APP} (image ${image})"
	with_namespace "${ARTIFACTS_DIR}/service.yaml" | apply_manifest "Service ${NAMESPACE}/${APP}"
}

wait_for_rollout() {
	[[ "${DRY_RUN}" != true && "${ROLLOUT_TIMEOUT}" != "0" ]] || return 0
	log "waiting up to ${ROLLOUT_TIMEOUT} for the controller to become ready"
	if ! "${KUBECTL}" -n "${NAMESPACE}" rollout status "deployment/${APP}" --timeout="${ROLLOUT_TIMEOUT}" >&2; then
		log "warning: the controller is not ready yet; see 'kubectl -n ${NAMESPACE} describe deployment ${APP}' and docs/troubleshooting.md"
		return 0
	fi
	log "done: try 'kubectl get wpa --all-namespaces'"
}

main() {
	parse_args "$@"
	validate_inputs
	check_files
	if [[ "${DRY_RUN}" == true ]]; then
		log "dry run: printing the manifests instead of applying them"
	else
		check_cluster
	fi
	apply_crd
	apply_namespace
	apply_service_account
	apply_rbac
	apply_config
	apply_aws_credentials
	apply_controller
	wait_for_rollout
}

main "$@"
