"""Tutor plugin "wpa": scale the Open edX Celery workers with worker-pod-autoscaler.

On `tutor config save` it writes, under env/plugins/wpa/k8s/:

- crd.yml: the WorkerPodAutoScaler CRD (a verbatim copy of artifacts/crd.yaml), and
  crd-labels.yml, a kustomize patch that labels it like the controller;
- controller.yml: the controller's ServiceAccount, Role, RoleBinding and Deployment, watching
  only Tutor's namespace (listed in the kustomization only with WPA_INSTALL_CONTROLLER);
- workerpodautoscalers.yml: one WorkerPodAutoScaler per Celery worker Deployment, on all the
  queues the worker consumes, and a Secret with Tutor's Redis credentials when it has any.
"""

from __future__ import annotations

import importlib.resources
import os
import typing as t
from glob import glob
from urllib.parse import quote

import jinja2
import yaml
from tutor import exceptions
from tutor import hooks

from .__about__ import __version__

# The Celery worker Deployments Tutor renders, with the filter holding each one's command.
WORKERS: dict[str, t.Any] = {
    "lms-worker": hooks.Filters.LMS_WORKER_COMMAND,
    "cms-worker": hooks.Filters.CMS_WORKER_COMMAND,
}
# The setting prefix of each worker: WPA_LMS_WORKER_MIN_REPLICAS, ...
PREFIXES = {name: "WPA_" + name.upper().replace("-", "_") + "_" for name in WORKERS}
CREDENTIALS_SECRET = "wpa-redis-credentials"
# The CRD's limit on spec.queueURIs.
MAX_QUEUES = 16

DEFAULTS: dict[str, t.Any] = {
    "VERSION": __version__,
    "DOCKER_IMAGE": f"ghcr.io/worker-pod-autoscaler/workerpodautoscaler:{__version__}",
    # False: the controller comes from elsewhere (Helm chart, hack/install.sh); only the
    # WPAs (and the credentials Secret) are rendered.
    "INSTALL_CONTROLLER": True,
    "CONTROLLER_EXTRA_ARGS": [],
    # Redis host names without a dot are Services in Tutor's namespace; the WPA names them
    # fully (<host>.<namespace>.svc.<domain>) so that a controller in another namespace
    # reaches them too.
    "CLUSTER_DOMAIN": "cluster.local",
    # lms-worker: grading, certificates, bulk email, reports. Keep one warm worker.
    "LMS_WORKER_ENABLED": True,
    "LMS_WORKER_MIN_REPLICAS": 1,
    "LMS_WORKER_MAX_REPLICAS": 8,
    "LMS_WORKER_TARGET_MESSAGES_PER_WORKER": 10,
    "LMS_WORKER_MAX_DISRUPTION": "1",
    "LMS_WORKER_QUEUES": [],
    # cms-worker: publishing, imports/exports, indexing. Long tasks: few per worker.
    "CMS_WORKER_ENABLED": True,
    "CMS_WORKER_MIN_REPLICAS": 1,
    "CMS_WORKER_MAX_REPLICAS": 4,
    "CMS_WORKER_TARGET_MESSAGES_PER_WORKER": 3,
    "CMS_WORKER_MAX_DISRUPTION": "1",
    "CMS_WORKER_QUEUES": [],
}

hooks.Filters.CONFIG_DEFAULTS.add_items([(f"WPA_{key}", value) for key, value in DEFAULTS.items()])


def queues_from_command(command: list[str]) -> list[str]:
    """The queues a `celery worker` command line consumes (`--queues`/`-Q`, last one wins)."""
    found: t.Optional[str] = None
    args = iter(command)
    for arg in args:
        if arg.startswith("--queues="):
            found = arg[len("--queues=") :]
        elif arg in ("--queues", "-Q"):
            found = next(args, "")
        elif arg.startswith("-Q"):
            found = arg[2:]
    if found is None:
        return []
    return [q.strip() for q in found.split(",") if q.strip()]


def worker_queues(worker: str, config: t.Mapping[str, t.Any]) -> list[str]:
    """The worker's queues: the setting when given, else the worker's Celery command."""
    setting = PREFIXES[worker] + "QUEUES"
    configured = config.get(setting) or []
    if isinstance(configured, str):
        configured = [q.strip() for q in configured.split(",") if q.strip()]
    queues = list(configured) or queues_from_command(list(WORKERS[worker].iterate()))
    if not queues:
        raise exceptions.TutorError(
            f"wpa: cannot tell which queues {worker} consumes (its Celery command has no "
            f"--queues): set {setting}"
        )
    if len(queues) > MAX_QUEUES:
        raise exceptions.TutorError(
            f"wpa: {worker} consumes {len(queues)} queues; a WorkerPodAutoScaler watches at "
            f"most {MAX_QUEUES}: split the worker"
        )
    return queues


def redis_host(config: t.Mapping[str, t.Any]) -> str:
    """REDIS_HOST as the controller must write it in a URI, from any namespace."""
    host = str(config["REDIS_HOST"])
    if ":" in host and not host.startswith("["):
        return f"[{host}]"  # IPv6 literal
    if "." not in host:
        return f"{host}.{config['K8S_NAMESPACE']}.svc.{config['WPA_CLUSTER_DOMAIN']}"
    return host


def queue_uris(worker: str, config: t.Mapping[str, t.Any]) -> list[str]:
    """One redis:// URI per queue; never with credentials (they go in the Secret)."""
    base = f"redis://{redis_host(config)}:{int(config['REDIS_PORT'])}/{int(config['OPENEDX_CELERY_REDIS_DB'])}"
    return [f"{base}/{quote(queue, safe='')}" for queue in worker_queues(worker, config)]


def has_credentials(config: t.Mapping[str, t.Any]) -> bool:
    # edx-platform builds the broker URL from CELERY_BROKER_USER and CELERY_BROKER_PASSWORD,
    # which Tutor sets to REDIS_USERNAME and REDIS_PASSWORD, each on its own.
    return bool(config.get("REDIS_USERNAME") or config.get("REDIS_PASSWORD"))


def scaled_workers(config: t.Mapping[str, t.Any]) -> list[str]:
    return [w for w in WORKERS if config.get(PREFIXES[w] + "ENABLED")]


def _labels(name: str, component: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/component": component}


def _int(config: t.Mapping[str, t.Any], key: str) -> int:
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise exceptions.TutorError(f"wpa: {key} must be an integer, not {value!r}")
    return value


def worker_manifests(config: t.Mapping[str, t.Any]) -> list[dict[str, t.Any]]:
    """The Secret (when Redis has credentials) and one WPA per scaled worker."""
    check_no_hpa_on_workers(config)
    documents: list[dict[str, t.Any]] = []
    namespace = config["K8S_NAMESPACE"]
    if has_credentials(config):
        data = {}
        if config.get("REDIS_USERNAME"):
            data["username"] = str(config["REDIS_USERNAME"])
        if config.get("REDIS_PASSWORD"):
            data["password"] = str(config["REDIS_PASSWORD"])
        documents.append(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {
                    "name": CREDENTIALS_SECRET,
                    "namespace": namespace,
                    "labels": _labels("workerpodautoscaler", "credentials"),
                },
                "type": "Opaque",
                "stringData": data,
            }
        )
    for worker in scaled_workers(config):
        prefix = PREFIXES[worker]
        minimum = _int(config, prefix + "MIN_REPLICAS")
        maximum = _int(config, prefix + "MAX_REPLICAS")
        if not 0 <= minimum <= maximum or maximum < 1:
            raise exceptions.TutorError(
                f"wpa: {worker}: need 0 <= {prefix}MIN_REPLICAS ({minimum}) <= "
                f"{prefix}MAX_REPLICAS ({maximum}) and a maximum of at least 1"
            )
        spec: dict[str, t.Any] = {
            "deploymentName": worker,
            "queueURIs": queue_uris(worker, config),
            "minReplicas": minimum,
            "maxReplicas": maximum,
            "targetMessagesPerWorker": _int(config, prefix + "TARGET_MESSAGES_PER_WORKER"),
        }
        disruption = config.get(prefix + "MAX_DISRUPTION")
        if disruption not in (None, ""):
            spec["maxDisruption"] = str(disruption)
        if has_credentials(config):
            spec["credentialsSecretRef"] = {"name": CREDENTIALS_SECRET}
        documents.append(
            {
                "apiVersion": "k8s.practo.dev/v1",
                "kind": "WorkerPodAutoScaler",
                "metadata": {
                    "name": worker,
                    "namespace": namespace,
                    "labels": _labels(worker, "autoscaler"),
                },
                "spec": spec,
            }
        )
    return documents


@jinja2.pass_context
def wpa_worker_manifests(context: jinja2.runtime.Context) -> str:
    """Template function: the WPAs and the Secret as YAML documents."""
    documents = worker_manifests(context.get_all())
    return "".join("---\n" + yaml.safe_dump(d, sort_keys=False) for d in documents)


@jinja2.pass_context
def wpa_secret_names(context: jinja2.runtime.Context) -> list[str]:
    """Template function: the Secrets the controller must read (for its Role)."""
    return [CREDENTIALS_SECRET] if has_credentials(context.get_all()) else []


hooks.Filters.ENV_TEMPLATE_VARIABLES.add_items(
    [
        ("wpa_worker_manifests", wpa_worker_manifests),
        ("wpa_secret_names", wpa_secret_names),
    ]
)

######## Coexistence with tutor-contrib-pod-autoscaling
# Two autoscalers on one Deployment fight over its replica count: turn its HPA off for the
# workers this plugin scales. Its VPAs stay as they are: they are always created in "Off"
# mode (recommendations only), which never evicts or resizes a worker.

try:
    from tutorpod_autoscaling.hooks import AUTOSCALING_CONFIG
except ImportError:  # pod-autoscaling is not installed
    AUTOSCALING_CONFIG = None


# Tutor runs CONFIG_LOADED before it renders; the filter below needs the WPA_*_ENABLED values.
_CONFIG: dict[str, t.Any] = {}


@hooks.Actions.CONFIG_LOADED.add()
def _remember_config(config: dict[str, t.Any]) -> None:
    _CONFIG.clear()
    _CONFIG.update(config)


if AUTOSCALING_CONFIG is not None:

    @AUTOSCALING_CONFIG.add()
    def _no_hpa_on_scaled_workers(autoscaling: dict[str, t.Any]) -> dict[str, t.Any]:
        # Before any configuration is loaded, assume every worker is scaled.
        workers = scaled_workers(_CONFIG) if _CONFIG else list(WORKERS)
        for worker in workers:
            if worker in autoscaling:
                autoscaling[worker] = dict(autoscaling[worker], enable_hpa=False)
        return autoscaling


def check_no_hpa_on_workers(config: t.Mapping[str, t.Any]) -> None:
    """Refuse to render when pod-autoscaling would still put an HPA on a worker we scale
    (its POD_AUTOSCALING_EXTRA_SERVICES setting bypasses the filter)."""
    if AUTOSCALING_CONFIG is None or "pod-autoscaling" not in (config.get("PLUGINS") or []):
        return
    effective = dict(AUTOSCALING_CONFIG.apply({}))
    effective.update(config.get("POD_AUTOSCALING_EXTRA_SERVICES") or {})
    for worker in scaled_workers(config):
        if (effective.get(worker) or {}).get("enable_hpa"):
            raise exceptions.TutorError(
                f"wpa: pod-autoscaling would put an HPA on {worker}, which the "
                f"WorkerPodAutoScaler scales: remove {worker} from "
                f"POD_AUTOSCALING_EXTRA_SERVICES or set {PREFIXES[worker]}ENABLED to false"
            )


######## Templates and patches

hooks.Filters.ENV_TEMPLATE_ROOTS.add_item(str(importlib.resources.files("tutorwpa") / "templates"))
hooks.Filters.ENV_TEMPLATE_TARGETS.add_item(("wpa/k8s", "plugins"))


@hooks.Filters.IS_FILE_RENDERED.add()
def _copy_crd_verbatim(rendered: bool, path: str) -> bool:
    # The CRD is artifacts/crd.yaml byte for byte: copied, never run through Jinja.
    return False if path == "wpa/k8s/crd.yml" else rendered


for _path in glob(str(importlib.resources.files("tutorwpa") / "patches" / "*")):
    with open(_path, encoding="utf-8") as _patch:
        hooks.Filters.ENV_PATCHES.add_item((os.path.basename(_path), _patch.read()))
