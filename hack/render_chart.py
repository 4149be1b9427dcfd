#!/usr/bin/env python3
"""Lint and render the Helm chart offline with helm-python-sdk (Helm's Go SDK
through a C library: no helm binary, no cluster).

For every value set in <chart>/ci/<scenario>-values.yaml it:
  - validates the values against values.schema.json,
  - runs Helm's linter (errors fail the run),
  - renders the templates and writes <out>/<scenario>/manifests.yaml (all
    documents, in a stable order) and <out>/<scenario>/values.json (the merged
    values the templates saw).
It also writes <out>/crds.yaml with the chart's crds/ files, and checks that
values.schema.json rejects a few invalid value sets (INVALID below).

Exit status: 0 when every scenario linted and rendered, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import helm_python as helm
import yaml

RELEASE = "wpa"
NAMESPACE = "kube-system"
ERROR = 3  # helm lint severity

# Value sets the schema must refuse, with what is wrong in each.
INVALID = {
    "log format outside text/json": {"controller": {"logFormat": "xml"}},
    "SQS long poll above 20 s": {"controller": {"sqsLongPollInterval": 21}},
    "namespace that is not a DNS label": {"controller": {"namespace": "Team_A"}},
    "negative replica count": {"replicaCount": -1},
    "unknown provider": {"controller": {"queueServices": "sqs,kafka"}},
    "misspelt controller value": {"controller": {"resyncPeriods": 5}},
    "max disruption that is not a count or percentage": {"controller": {"wpaDefaultMaxDisruption": "half"}},
    "max disruption above 100%": {"controller": {"wpaDefaultMaxDisruption": "150%"}},
}


def render_scenario(chart_dir: pathlib.Path, values_file: pathlib.Path, out: pathlib.Path) -> list[str]:
    """Lints and renders one scenario; returns problems (empty when fine)."""
    problems: list[str] = []
    values = yaml.safe_load(values_file.read_text()) or {}
    chart = helm.Chart.load(chart_dir)
    try:
        chart.validate_schema(values)
    except helm.HelmError as err:
        problems.append(f"values do not match values.schema.json: {err}")

    report = helm.lint(chart_dir, values, namespace=NAMESPACE, strict=False)
    for msg in report.get("messages", []):
        if msg.get("severity", 0) >= ERROR:
            problems.append(f"lint: {msg.get('path')}: {msg.get('error')}")
    for err in report.get("errors") or []:
        problems.append(f"lint: {err}")

    try:
        rendered = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    except helm.HelmError as err:
        problems.append(f"render failed: {err}")
        return problems

    docs: list[str] = []
    for path in sorted(rendered):
        if path.endswith("NOTES.txt"):
            (out / "NOTES.txt").write_text(rendered[path])
            continue
        for doc in yaml.safe_load_all(rendered[path]):
            if doc is None:
                continue  # a template that rendered nothing for these values
            docs.append(f"# Source: {path}\n" + yaml.safe_dump(doc, sort_keys=False))
    (out / "manifests.yaml").write_text("---\n".join(docs))
    (out / "values.json").write_text(json.dumps(chart.merge_values(values), indent=2, sort_keys=True))
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chart", required=True, type=pathlib.Path)
    parser.add_argument("--out", required=True, type=pathlib.Path)
    args = parser.parse_args()

    scenarios = sorted((args.chart / "ci").glob("*-values.yaml"))
    if not scenarios:
        print(f"render: no value sets in {args.chart / 'ci'}", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)

    crds = helm.Chart.load(args.chart).crds
    (args.out / "crds.yaml").write_text("---\n".join(c.get("data", "") for c in crds))

    failed = 0
    chart = helm.Chart.load(args.chart)
    for what, values in INVALID.items():
        try:
            chart.validate_schema(values)
        except helm.HelmError:
            print(f"ok   schema rejects {what}", file=sys.stderr)
            continue
        failed += 1
        print(f"FAIL schema accepts {what}: {values}", file=sys.stderr)

    for values_file in scenarios:
        name = values_file.name.removesuffix("-values.yaml")
        out = args.out / name
        out.mkdir(parents=True, exist_ok=True)
        problems = render_scenario(args.chart, values_file, out)
        if problems:
            failed += 1
            print(f"FAIL {name}", file=sys.stderr)
            for problem in problems:
                print(f"  {problem}", file=sys.stderr)
        else:
            print(f"ok   {name}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
