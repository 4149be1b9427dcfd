#!/usr/bin/env python3
"""Render Tutor's Kubernetes manifests offline with the "wpa" plugin enabled, for several
setting sets (SCENARIOS below), and write what `tutor k8s start` would apply.

For each scenario it creates a temporary TUTOR_ROOT, enables the plugins, runs
`tutor config save --set ...` (Tutor 22's own renderer, no cluster), then builds the
kustomization Tutor wrote (env/kustomization.yml) with build_kustomization() below and writes
<out>/<scenario>/manifests.yaml (every object, in kustomization order) and
<out>/<scenario>/scenario.json (plugins and settings). A scenario that must be refused writes
<out>/<scenario>/error.txt with Tutor's message instead.

Why a kustomize subset in Python: `tutor k8s start` runs `kubectl apply --kustomize env`,
and no kubectl/kustomize binary is assumed here. build_kustomization() implements the part of
kustomize that Tutor's kustomization.yml uses: file resources, `namespace`, `labels`
(with includeSelectors/includeTemplates), `commonAnnotations` and strategic-merge `patches`
from files. Anything else in the kustomization fails the run rather than being skipped, so
the checks never look at something kubectl would not apply. One part is left out on
purpose: configMapGenerator (Tutor's settings ConfigMaps) is not generated, because nothing
checked here reads those ConfigMaps.

Exit status: 0 when every scenario rendered (or was refused, for those that must be), 1
otherwise.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import typing as t

import yaml

# A Tutor plugin (a single module in TUTOR_PLUGINS_ROOT) that changes lms-worker's Celery
# queues, as a site plugin would, and writes them in Celery's other form (`-Q LIST`): the
# WPA must follow the worker's command.
QUEUES_PLUGIN = '''
from tutor import hooks

@hooks.Filters.LMS_WORKER_COMMAND.add()
def _two_queues(command):
    changed = []
    for arg in command:
        if arg.startswith("--queues="):
            changed += ["-Q", "edx.lms.core.default,edx.lms.core.high"]
        else:
            changed.append(arg)
    return changed
'''

POD_AUTOSCALING_HPA_ON_CMS_WORKER = {
    "cms-worker": {
        "enable_hpa": True,
        "memory_request": "1Gi",
        "cpu_request": 0.5,
        "memory_limit": "2Gi",
        "cpu_limit": 1,
        "min_replicas": 1,
        "max_replicas": 3,
        "avg_cpu": 80,
        "avg_memory": "",
        "enable_vpa": True,
        "behavior": {},
    }
}

# name -> plugins to enable, settings for `tutor config save --set`, optional module plugins
# and, for scenarios Tutor must refuse, a piece of the expected error.
SCENARIOS: dict[str, dict[str, t.Any]] = {
    "default": {"plugins": ["wpa"], "settings": {}},
    "redis-host-db": {
        "plugins": ["wpa"],
        "settings": {
            "K8S_NAMESPACE": "courses",
            "REDIS_HOST": "celery-redis",
            "REDIS_PORT": 6380,
            "OPENEDX_CELERY_REDIS_DB": 5,
        },
    },
    "external-redis-password": {
        "plugins": ["wpa"],
        "settings": {
            "RUN_REDIS": False,
            "REDIS_HOST": "redis.example.internal",
            "REDIS_USERNAME": "openedx",
            "REDIS_PASSWORD": "p@ss:w/rd#1 ?&",
        },
    },
    "cms-min-zero": {
        "plugins": ["wpa"],
        "settings": {
            "WPA_CMS_WORKER_MIN_REPLICAS": 0,
            "WPA_LMS_WORKER_MAX_REPLICAS": 12,
            "WPA_LMS_WORKER_TARGET_MESSAGES_PER_WORKER": 25,
        },
    },
    "no-controller": {
        "plugins": ["wpa"],
        "settings": {"WPA_INSTALL_CONTROLLER": False, "REDIS_PASSWORD": "secret"},
    },
    "pod-autoscaling": {"plugins": ["pod-autoscaling", "wpa"], "settings": {}},
    "pod-autoscaling-lms-worker-off": {
        "plugins": ["pod-autoscaling", "wpa"],
        "settings": {"WPA_LMS_WORKER_ENABLED": False},
    },
    "queues-from-command": {
        "plugins": ["wpa", "wpatestqueues"],
        "modules": {"wpatestqueues.py": QUEUES_PLUGIN},
        "settings": {
            "WPA_CMS_WORKER_QUEUES": ["edx.cms.core.default"],
            "WPA_CONTROLLER_EXTRA_ARGS": ["--log-format=json", "--idle-window=120"],
        },
    },
    "refused-hpa-on-worker": {
        "plugins": ["pod-autoscaling", "wpa"],
        "settings": {"POD_AUTOSCALING_EXTRA_SERVICES": POD_AUTOSCALING_HPA_ON_CMS_WORKER},
        "expect_error": "pod-autoscaling would put an HPA on cms-worker",
    },
    "refused-min-above-max": {
        "plugins": ["wpa"],
        "settings": {"WPA_LMS_WORKER_MIN_REPLICAS": 9, "WPA_LMS_WORKER_MAX_REPLICAS": 8},
        "expect_error": "WPA_LMS_WORKER_MIN_REPLICAS (9)",
    },
}

CLUSTER_SCOPED = {
    "Namespace",
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleBinding",
    "PersistentVolume",
    "StorageClass",
    "PriorityClass",
    "IngressClass",
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
    "APIService",
}
# Kinds whose pod template (and, with includeSelectors, selector) kustomize labels.
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}
# Strategic merge keys of the list fields Tutor's patches touch.
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "env": "name",
    "ports": "containerPort",
}
SUPPORTED_KEYS = {
    "apiVersion",
    "kind",
    "resources",
    "namespace",
    "commonAnnotations",
    "labels",
    "patches",
    "configMapGenerator",
}


class RenderError(Exception):
    pass


def load_documents(path: pathlib.Path) -> list[dict[str, t.Any]]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    for d in docs:
        if not isinstance(d, dict) or "kind" not in d:
            raise RenderError(f"{path}: a document without kind")
    return docs


def merge(base: t.Any, patch: t.Any, key: str = "") -> t.Any:
    """Strategic merge of `patch` into `base` (maps recursively, keyed lists by merge key)."""
    if isinstance(patch, dict) and isinstance(base, dict):
        if "$patch" in patch:
            raise RenderError(f"unsupported $patch directive at {key}")
        out = dict(base)
        for k, v in patch.items():
            if v is None:
                out.pop(k, None)
            elif k in out:
                out[k] = merge(out[k], v, k)
            else:
                out[k] = copy.deepcopy(v)
        return out
    if isinstance(patch, list) and isinstance(base, list) and key in MERGE_KEYS:
        field = MERGE_KEYS[key]
        items = [copy.deepcopy(item) for item in base]
        for item in patch:
            match = next((i for i, b in enumerate(items) if b.get(field) == item.get(field)), None)
            if match is None:
                items.append(copy.deepcopy(item))
            else:
                items[match] = merge(items[match], item, "")
        return items
    return copy.deepcopy(patch)


def apply_patch(resources: list[dict[str, t.Any]], patch: dict[str, t.Any], origin: str) -> None:
    meta = patch.get("metadata") or {}
    targets = [
        i
        for i, r in enumerate(resources)
        if r.get("kind") == patch.get("kind")
        and r.get("metadata", {}).get("name") == meta.get("name")
        and ("namespace" not in meta or r.get("metadata", {}).get("namespace") == meta["namespace"])
    ]
    if len(targets) != 1:
        raise RenderError(
            f"{origin}: patch for {patch.get('kind')}/{meta.get('name')} matches "
            f"{len(targets)} resources (kustomize needs exactly one)"
        )
    resources[targets[0]] = merge(resources[targets[0]], patch)


def set_path(obj: dict[str, t.Any], path: list[str], values: dict[str, str], create: bool) -> None:
    node = obj
    for part in path:
        if part not in node or node[part] is None:
            if not create:
                return
            node[part] = {}
        node = node[part]
    node.update(values)


def build_kustomization(env: pathlib.Path) -> list[dict[str, t.Any]]:
    kustomization = yaml.safe_load((env / "kustomization.yml").read_text())
    unknown = set(kustomization) - SUPPORTED_KEYS
    if unknown:
        raise RenderError(f"kustomization.yml: unsupported keys {sorted(unknown)}")

    resources: list[dict[str, t.Any]] = []
    for entry in kustomization.get("resources") or []:
        path = env / entry
        if not path.is_file():
            raise RenderError(f"kustomization.yml: resource {entry} is not a file")
        resources.extend(load_documents(path))

    for entry in kustomization.get("patches") or []:
        if set(entry) != {"path"}:
            raise RenderError(f"kustomization.yml: only file patches are supported: {entry}")
        for patch in load_documents(env / entry["path"]):
            apply_patch(resources, patch, entry["path"])

    namespace = kustomization.get("namespace")
    if namespace:
        for r in resources:
            if r["kind"] not in CLUSTER_SCOPED:
                r.setdefault("metadata", {})["namespace"] = namespace
            if r["kind"] in ("RoleBinding", "ClusterRoleBinding"):
                # kustomize's default: only ServiceAccount subjects named "default" move.
                for s in r.get("subjects") or []:
                    if s.get("kind") == "ServiceAccount" and s.get("name") == "default":
                        s["namespace"] = namespace

    for group in kustomization.get("labels") or []:
        pairs = {k: str(v) for k, v in (group.get("pairs") or {}).items()}
        selectors = bool(group.get("includeSelectors"))
        templates = bool(group.get("includeTemplates")) or selectors
        for r in resources:
            set_path(r, ["metadata", "labels"], pairs, True)
            if r["kind"] in WORKLOADS and templates:
                set_path(r, ["spec", "template", "metadata", "labels"], pairs, True)
            if r["kind"] in WORKLOADS and selectors and r["kind"] != "Job":
                set_path(r, ["spec", "selector", "matchLabels"], pairs, True)
            if r["kind"] == "Service" and selectors:
                set_path(r, ["spec", "selector"], pairs, True)

    annotations = {k: str(v) for k, v in (kustomization.get("commonAnnotations") or {}).items()}
    if annotations:
        for r in resources:
            set_path(r, ["metadata", "annotations"], annotations, True)
            if r["kind"] in WORKLOADS:
                set_path(r, ["spec", "template", "metadata", "annotations"], annotations, True)
    return resources


def tutor(venv_bin: pathlib.Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(venv_bin / "tutor"), *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def render_scenario(name: str, scenario: dict[str, t.Any], out: pathlib.Path) -> list[str]:
    venv_bin = pathlib.Path(sys.executable).parent
    target = out / name
    target.mkdir(parents=True, exist_ok=True)
    (target / "scenario.json").write_text(json.dumps(scenario, indent=2, sort_keys=True))
    with tempfile.TemporaryDirectory(prefix=f"tutor-{name}-") as tmp:
        root = pathlib.Path(tmp) / "root"
        plugins_root = pathlib.Path(tmp) / "plugins"
        plugins_root.mkdir()
        for filename, text in (scenario.get("modules") or {}).items():
            (plugins_root / filename).write_text(text)
        env = dict(os.environ, TUTOR_ROOT=str(root), TUTOR_PLUGINS_ROOT=str(plugins_root))
        result = tutor(venv_bin, env, "plugins", "enable", *scenario["plugins"])
        if result.returncode != 0:
            return [f"tutor plugins enable failed:\n{result.stdout}\n{result.stderr}"]
        sets: list[str] = []
        for key, value in scenario["settings"].items():
            sets += ["--set", f"{key}={json.dumps(value)}"]
        result = tutor(venv_bin, env, "config", "save", *sets)
        expected = scenario.get("expect_error")
        if expected is not None:
            output = result.stdout + result.stderr
            (target / "error.txt").write_text(output)
            if result.returncode == 0:
                return ["tutor config save succeeded; it must refuse this configuration"]
            if expected not in output:
                return [f"tutor config save failed without {expected!r}:\n{output}"]
            return []
        if result.returncode != 0:
            return [f"tutor config save failed:\n{result.stdout}\n{result.stderr}"]
        try:
            resources = build_kustomization(root / "env")
        except (RenderError, OSError, yaml.YAMLError) as err:
            return [f"kustomization: {err}"]
    (target / "manifests.yaml").write_text(
        yaml.safe_dump_all(resources, sort_keys=False, explicit_start=True)
    )
    return []


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=pathlib.Path)
    args = parser.parse_args()
    failed = False
    for name, scenario in SCENARIOS.items():
        problems = render_scenario(name, scenario, args.out)
        for problem in problems:
            print(f"{name}: {problem}", file=sys.stderr)
        failed = failed or bool(problems)
        print(f"{name}: {'FAILED' if problems else 'ok'}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
