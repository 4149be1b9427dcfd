//! Renders the Helm chart offline (hack/check-chart.sh: Helm's linter and
//! template engine through helm-python-sdk) for every value set in
//! charts/worker-pod-autoscaler/ci/, then parses each rendered document into
//! its k8s-openapi type and checks what the controller relies on: hardened pod,
//! probes, flags that match the values, leader election with several replicas,
//! RBAC scope, credentials wiring and the ServiceMonitor.
//!
//! Needs python3 and access to PyPI on the first run (the script creates a
//! virtualenv with helm-python-sdk; WPA_PY_VENV picks its folder).

use crate::manifests;

use std::fs;
use std::path::Path;
use std::process::Command;

use manifests::{
    Object, allows, assert_controller_rules, assert_hardened_controller, assert_least_privilege,
    count_kind, customs, deployments, only_container, parse_documents, render_with, repo,
};
use serde_json::Value;

const RELEASE_NAMESPACE: &str = "kube-system";
const FULLNAME: &str = "wpa-worker-pod-autoscaler";

fn scenarios(out: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(out)
        .expect("read render output")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// `sqsShortPollInterval` -> `sqs-short-poll-interval`.
fn kebab(key: &str) -> String {
    key.chars()
        .flat_map(|c| {
            if c.is_ascii_uppercase() {
                vec!['-', c.to_ascii_lowercase()]
            } else {
                vec![c]
            }
        })
        .collect()
}

/// The flags the chart must pass for `values` (an independent statement of the
/// mapping in templates/deployment.yaml).
fn expected_args(values: &Value) -> Vec<String> {
    let c = &values["controller"];
    let s = |k: &str| match &c[k] {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let b = |k: &str| c[k].as_bool().unwrap_or(false);
    let replicas = values["replicaCount"].as_i64().unwrap_or(1);
    let leader = b("leaderElect") || replicas > 1;

    let mut args = vec!["run".to_owned()];
    if !s("kubeConfig").is_empty() {
        args.push(format!("--kube-config={}", s("kubeConfig")));
    }
    for (flag, key) in [
        ("resync-period", "resyncPeriod"),
        ("wpa-threads", "wpaThreads"),
        ("wpa-default-max-disruption", "wpaDefaultMaxDisruption"),
        (
            "scale-down-delay-after-last-scale-activity",
            "scaleDownDelayAfterLastScaleActivity",
        ),
        ("aws-regions", "awsRegions"),
    ] {
        args.push(format!("--{flag}={}", s(key)));
    }
    // Every *PollInterval value, in key order, as its kebab-case flag.
    let mut intervals: Vec<&String> = c
        .as_object()
        .expect("controller values")
        .keys()
        .filter(|k| k.ends_with("PollInterval"))
        .collect();
    intervals.sort();
    for key in intervals {
        args.push(format!("--{}={}", kebab(key), s(key)));
    }
    // Empty: the binary's default (every provider).
    if !s("queueServices").is_empty() {
        args.push(format!("--queue-services={}", s("queueServices")));
    }
    args.push(format!("--metrics-port=:{}", s("metricsPort")));
    args.push(format!("--k8s-api-qps={}", s("k8sApiQps")));
    args.push(format!("--k8s-api-burst={}", s("k8sApiBurst")));
    args.push(format!("--k8s-api-scale-qps={}", s("k8sApiScaleQps")));
    args.push(format!("--k8s-api-scale-burst={}", s("k8sApiScaleBurst")));
    if !s("namespace").is_empty() {
        args.push(format!("--namespace={}", s("namespace")));
    }
    args.push(format!("--idle-window={}", s("idleWindow")));
    // On by default in the binary: the chart passes the flag only to turn it off.
    if !c["sqsReceiveLongPoll"].as_bool().unwrap_or(true) {
        args.push("--sqs-receive-long-poll=false".to_owned());
    }
    if b("sqsCloudwatch") {
        args.push("--sqs-cloudwatch".to_owned());
    }
    // On by default in the binary, as the long poll.
    if !c["drainBeforeScaleIn"].as_bool().unwrap_or(true) {
        args.push("--drain-before-scale-in=false".to_owned());
    }
    if let Some(seconds) = c["drainTimeout"].as_u64() {
        args.push(format!("--drain-timeout={seconds}"));
    }
    if b("dryRun") {
        args.push("--dry-run".to_owned());
    }
    if leader {
        args.push("--leader-elect".to_owned());
        if !s("leaderElectionNamespace").is_empty() {
            args.push(format!(
                "--leader-election-namespace={}",
                s("leaderElectionNamespace")
            ));
        }
        args.push(format!(
            "--leader-election-lease-name={}",
            s("leaderElectionLeaseName")
        ));
        args.push(format!(
            "--leader-election-lease-duration={}",
            s("leaderElectionLeaseDuration")
        ));
    }
    args.push(format!("--log-format={}", s("logFormat")));
    args.push(format!("--log-level={}", s("logLevel")));
    for extra in c["extraArgs"].as_array().into_iter().flatten() {
        args.push(extra.as_str().unwrap_or_default().to_owned());
    }
    args
}

fn check_scenario(name: &str, objects: &[Object], values: &Value) {
    let deps = deployments(objects);
    assert_eq!(deps.len(), 1, "{name}: one Deployment");
    let deployment = deps[0];
    assert_hardened_controller(deployment, name);
    let container = only_container(deployment);
    let spec = deployment.spec.as_ref().expect("spec");
    let pod = spec.template.spec.as_ref().expect("pod spec");

    // Flags follow the values exactly.
    let args = container.args.clone().unwrap_or_default();
    assert_eq!(args, expected_args(values), "{name}: args");

    // The SQS long poll at zero workers is on unless the value turns it off, and
    // the chart then says so explicitly (the bare flag would mean true).
    let long_poll = values["controller"]["sqsReceiveLongPoll"]
        .as_bool()
        .unwrap_or_else(|| panic!("{name}: sqsReceiveLongPoll is a boolean"));
    let long_poll_args: Vec<&String> = args
        .iter()
        .filter(|a| a.starts_with("--sqs-receive-long-poll"))
        .collect();
    if long_poll {
        assert!(
            long_poll_args.is_empty(),
            "{name}: the long poll is the binary's default: {long_poll_args:?}"
        );
    } else {
        assert_eq!(
            long_poll_args,
            vec!["--sqs-receive-long-poll=false"],
            "{name}: sqsReceiveLongPoll=false"
        );
    }

    // Image defaults to the appVersion.
    let tag = values["image"]["tag"]
        .as_str()
        .filter(|t| !t.is_empty())
        .unwrap_or("0.1.0");
    assert_eq!(
        container.image.as_deref(),
        Some(
            format!(
                "{}:{tag}",
                values["image"]["repository"].as_str().unwrap_or_default()
            )
            .as_str()
        ),
        "{name}: image"
    );

    // Several replicas: leader election on, rolling updates, a Lease Role.
    let replicas = values["replicaCount"].as_i64().unwrap_or(1);
    let leader = values["controller"]["leaderElect"]
        .as_bool()
        .unwrap_or(false)
        || replicas > 1;
    assert_eq!(spec.replicas, Some(replicas as i32), "{name}: replicas");
    let strategy = spec.strategy.as_ref().and_then(|s| s.type_.as_deref());
    let lease_namespace = values["controller"]["leaderElectionNamespace"]
        .as_str()
        .filter(|n| !n.is_empty())
        .unwrap_or(RELEASE_NAMESPACE);
    let lease_role = objects.iter().find_map(|o| match o {
        Object::Role(r)
            if r.metadata.name.as_deref() == Some(&format!("{FULLNAME}-leader-election")) =>
        {
            Some(r)
        }
        _ => None,
    });
    if leader {
        assert!(
            container
                .args
                .iter()
                .flatten()
                .any(|a| a == "--leader-elect"),
            "{name}: --leader-elect"
        );
        assert_eq!(strategy, Some("RollingUpdate"), "{name}: strategy");
        let role = lease_role.unwrap_or_else(|| panic!("{name}: leader election Role"));
        assert_eq!(
            role.metadata.namespace.as_deref(),
            Some(lease_namespace),
            "{name}: lease Role namespace"
        );
        let rules = role.rules.clone().unwrap_or_default();
        for verb in ["get", "create", "update", "patch"] {
            assert!(
                allows(&rules, "coordination.k8s.io", "leases", verb),
                "{name}: leases {verb}"
            );
        }
        assert_least_privilege(&rules, name);
    } else {
        assert!(
            !container
                .args
                .iter()
                .flatten()
                .any(|a| a == "--leader-elect"),
            "{name}: no --leader-elect"
        );
        assert_eq!(
            strategy,
            Some("Recreate"),
            "{name}: one controller at a time"
        );
        assert!(
            lease_role.is_none(),
            "{name}: no lease Role without leader election"
        );
    }

    // RBAC scope: one namespace (Role) or the cluster (ClusterRole).
    let watch_namespace = values["controller"]["namespace"]
        .as_str()
        .unwrap_or_default();
    if watch_namespace.is_empty() {
        let role = objects
            .iter()
            .find_map(|o| match o {
                Object::ClusterRole(r) if r.metadata.name.as_deref() == Some(FULLNAME) => Some(r),
                _ => None,
            })
            .unwrap_or_else(|| panic!("{name}: ClusterRole"));
        let rules = role.rules.clone().unwrap_or_default();
        assert_controller_rules(&rules, name);
        assert_least_privilege(&rules, name);
        assert!(
            !rules
                .iter()
                .any(|r| r.resources.iter().flatten().any(|x| x == "secrets")),
            "{name}: no cluster-wide Secret access"
        );
        assert_eq!(
            count_kind(objects, "ClusterRoleBinding"),
            1,
            "{name}: ClusterRoleBinding"
        );
    } else {
        assert_eq!(
            count_kind(objects, "ClusterRole"),
            0,
            "{name}: no ClusterRole"
        );
        assert_eq!(
            count_kind(objects, "ClusterRoleBinding"),
            0,
            "{name}: no ClusterRoleBinding"
        );
        let role = objects
            .iter()
            .find_map(|o| match o {
                Object::Role(r) if r.metadata.name.as_deref() == Some(FULLNAME) => Some(r),
                _ => None,
            })
            .unwrap_or_else(|| panic!("{name}: namespaced Role"));
        assert_eq!(
            role.metadata.namespace.as_deref(),
            Some(watch_namespace),
            "{name}: Role namespace"
        );
        let rules = role.rules.clone().unwrap_or_default();
        assert_controller_rules(&rules, name);
        assert_least_privilege(&rules, name);
    }

    // Every binding names the controller's service account in the release namespace.
    let sa_name = pod.service_account_name.clone().unwrap_or_default();
    for object in objects {
        let subjects = match object {
            Object::ClusterRoleBinding(b) => b.subjects.clone(),
            Object::RoleBinding(b) => b.subjects.clone(),
            _ => continue,
        };
        for subject in subjects.unwrap_or_default() {
            assert_eq!(subject.kind, "ServiceAccount", "{name}: subject kind");
            assert_eq!(subject.name, sa_name, "{name}: subject name");
            assert_eq!(
                subject.namespace.as_deref(),
                Some(RELEASE_NAMESPACE),
                "{name}: subject namespace"
            );
        }
    }

    // Secret access only in the namespaces listed in rbac.secretNamespaces.
    let secret_namespaces: Vec<&str> = values["rbac"]["secretNamespaces"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if watch_namespace.is_empty() {
        let mut bound: Vec<&str> = objects
            .iter()
            .filter_map(|o| match o {
                Object::RoleBinding(b)
                    if b.role_ref.name == format!("{FULLNAME}-secret-reader") =>
                {
                    b.metadata.namespace.as_deref()
                }
                _ => None,
            })
            .collect();
        bound.sort();
        let mut want = secret_namespaces.clone();
        want.sort();
        assert_eq!(bound, want, "{name}: secret reader bindings");
    }

    // The service account, with the IRSA annotation when given.
    let sa = objects
        .iter()
        .find_map(|o| match o {
            Object::ServiceAccount(sa) => Some(sa),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{name}: ServiceAccount"));
    assert_eq!(
        sa.metadata.name.as_deref(),
        Some(sa_name.as_str()),
        "{name}: ServiceAccount name"
    );
    let want_annotations = values["serviceAccount"]["annotations"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    for (k, v) in &want_annotations {
        assert_eq!(
            sa.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(k))
                .map(String::as_str),
            v.as_str(),
            "{name}: ServiceAccount annotation {k}"
        );
    }

    // AWS keys: an existing Secret, a chart-made Secret, or none (IRSA/node role).
    let secret_from = container
        .env_from
        .iter()
        .flatten()
        .filter_map(|e| e.secret_ref.as_ref().map(|s| s.name.clone()))
        .collect::<Vec<_>>();
    let existing = values["aws"]["existingSecret"].as_str().unwrap_or_default();
    let key_id = values["aws"]["accessKeyId"].as_str().unwrap_or_default();
    let secrets: Vec<_> = objects
        .iter()
        .filter_map(|o| match o {
            Object::Secret(s) => Some(s),
            _ => None,
        })
        .collect();
    if !existing.is_empty() {
        assert_eq!(
            secret_from,
            vec![existing.to_owned()],
            "{name}: envFrom existing Secret"
        );
        assert!(
            secrets.is_empty(),
            "{name}: no chart Secret with existingSecret"
        );
    } else if !key_id.is_empty() {
        assert_eq!(secrets.len(), 1, "{name}: one AWS Secret");
        let secret = secrets[0];
        assert_eq!(
            secret_from,
            vec![secret.metadata.name.clone().unwrap_or_default()],
            "{name}: envFrom"
        );
        let data = secret.data.clone().unwrap_or_default();
        assert_eq!(
            data.get("AWS_ACCESS_KEY_ID").map(|b| b.0.as_slice()),
            Some(key_id.as_bytes())
        );
        assert!(
            data.contains_key("AWS_SECRET_ACCESS_KEY"),
            "{name}: secret key"
        );
        // The keys never show up in the pod spec itself.
        let pod_json = serde_json::to_string(pod).expect("pod json");
        assert!(
            !pod_json.contains(key_id),
            "{name}: key id leaked into the pod spec"
        );
    } else {
        assert!(secret_from.is_empty(), "{name}: no envFrom Secret");
        assert!(secrets.is_empty(), "{name}: no Secret");
    }

    // Service selects the pods and exposes the metrics port.
    let metrics_port = values["controller"]["metricsPort"].as_i64().unwrap_or(8787) as i32;
    let service = objects
        .iter()
        .find_map(|o| match o {
            Object::Service(s) => Some(s),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{name}: Service"));
    let service_spec = service.spec.as_ref().expect("service spec");
    let pod_labels = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    for (k, v) in service_spec.selector.iter().flatten() {
        assert_eq!(pod_labels.get(k), Some(v), "{name}: Service selector {k}");
    }
    assert_eq!(
        service_spec
            .ports
            .iter()
            .flatten()
            .map(|p| p.port)
            .collect::<Vec<_>>(),
        vec![metrics_port],
        "{name}: Service port"
    );
    assert_eq!(
        container
            .ports
            .iter()
            .flatten()
            .map(|p| p.container_port)
            .collect::<Vec<_>>(),
        vec![metrics_port],
        "{name}: container port"
    );

    // ServiceMonitor only when enabled; it scrapes /metrics on the named port.
    let monitors = customs(objects, "ServiceMonitor");
    if values["serviceMonitor"]["enabled"]
        .as_bool()
        .unwrap_or(false)
    {
        assert_eq!(monitors.len(), 1, "{name}: ServiceMonitor");
        let m = monitors[0];
        assert_eq!(m["apiVersion"], "monitoring.coreos.com/v1");
        assert_eq!(m["spec"]["endpoints"][0]["port"], "metrics");
        assert_eq!(m["spec"]["endpoints"][0]["path"], "/metrics");
        for (k, v) in m["spec"]["selector"]["matchLabels"]
            .as_object()
            .into_iter()
            .flatten()
        {
            assert_eq!(
                pod_labels.get(k).map(String::as_str),
                v.as_str(),
                "{name}: monitor selector {k}"
            );
        }
        for (k, v) in values["serviceMonitor"]["labels"]
            .as_object()
            .into_iter()
            .flatten()
        {
            assert_eq!(&m["metadata"]["labels"][k], v, "{name}: monitor label {k}");
        }
    } else {
        assert!(
            monitors.is_empty(),
            "{name}: no ServiceMonitor unless enabled"
        );
    }
}

#[test]
fn chart_renders_typed_hardened_objects_for_every_value_set() {
    let out = render_with("check-chart.sh");
    let names = scenarios(out.path());
    for required in [
        "default",
        "namespaced",
        "replicas3",
        "servicemonitor",
        "irsa",
        "aws-keys",
        "all-flags",
    ] {
        assert!(
            names.iter().any(|n| n == required),
            "value set {required} was not rendered: {names:?}"
        );
    }
    for name in &names {
        let dir = out.path().join(name);
        let text = fs::read_to_string(dir.join("manifests.yaml")).expect("manifests.yaml");
        let values: Value = serde_json::from_str(
            &fs::read_to_string(dir.join("values.json")).expect("values.json"),
        )
        .expect("values");
        let objects = parse_documents(&text, name).unwrap_or_else(|e| panic!("{e}"));
        check_scenario(name, &objects, &values);
        let notes = fs::read_to_string(dir.join("NOTES.txt")).expect("NOTES.txt");
        assert!(
            notes.contains("kubectl get wpa"),
            "{name}: NOTES.txt tells how to check"
        );
    }
}

#[test]
fn chart_value_sets_cover_every_flag_with_a_non_default() {
    // all-flags-values.yaml must change every controller flag, so that a
    // template that ignores a value cannot pass the args comparison above.
    let chart = repo().join("charts/worker-pod-autoscaler");
    let defaults: Value = serde_saphyr::from_str(
        &fs::read_to_string(chart.join("values.yaml")).expect("values.yaml"),
    )
    .expect("values.yaml parses");
    let all: Value = serde_saphyr::from_str(
        &fs::read_to_string(chart.join("ci/all-flags-values.yaml")).expect("all-flags-values.yaml"),
    )
    .expect("all-flags parses");
    let defaults = defaults["controller"]
        .as_object()
        .expect("controller defaults");
    // Watching one namespace changes RBAC: covered by namespaced-values.yaml.
    let covered_elsewhere = ["namespace", "extraArgs"];
    for (key, default) in defaults {
        if covered_elsewhere.contains(&key.as_str()) {
            continue;
        }
        let set = &all["controller"][key];
        assert!(
            !set.is_null(),
            "all-flags-values.yaml does not set controller.{key}"
        );
        assert_ne!(
            set, default,
            "all-flags-values.yaml keeps the default of controller.{key}"
        );
    }
}

/// The chart's `controller.*` defaults are the binary's own (`run --help`), so that
/// installing with Helm or with the bare image behaves the same.
#[test]
fn chart_defaults_are_the_binarys_defaults() {
    let help = Command::new(env!("CARGO_BIN_EXE_workerpodautoscaler"))
        .args(["run", "--help"])
        .env_clear()
        .output()
        .expect("run --help");
    assert!(help.status.success(), "run --help failed");
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    // "--flag <VALUE>" or "--flag [<VALUE>]" or "--flag", then its description
    // with an optional "[default: X]".
    let mut binary = std::collections::BTreeMap::new();
    let mut flag: Option<String> = None;
    for line in help.lines() {
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed.strip_prefix("--") {
            let name = rest.split_whitespace().next().unwrap_or_default();
            flag = Some(name.to_owned());
            binary.insert(name.to_owned(), None);
        } else if let Some(name) = &flag
            && let Some(start) = trimmed.find("[default: ")
        {
            let value = &trimmed[start + "[default: ".len()..];
            let value = value.split(']').next().unwrap_or_default();
            binary.insert(name.clone(), Some(value.trim_matches('"').to_owned()));
        }
    }
    let chart = repo().join("charts/worker-pod-autoscaler");
    let values: Value = serde_saphyr::from_str(
        &fs::read_to_string(chart.join("values.yaml")).expect("values.yaml"),
    )
    .expect("values.yaml parses");
    for (key, value) in values["controller"].as_object().expect("controller") {
        if key == "extraArgs" {
            continue;
        }
        let flag = kebab(key);
        let default = binary
            .get(&flag)
            .unwrap_or_else(|| panic!("controller.{key}: no flag --{flag} in run --help"));
        let chart_default = match value {
            Value::String(s) => s.clone(),
            Value::Number(n) if key == "metricsPort" => format!(":{n}"),
            other => other.to_string(),
        };
        // Flags without a shown default: switches (off) and empty strings.
        let binary_default = default.clone().unwrap_or_else(|| match value {
            Value::Bool(_) => "false".to_owned(),
            _ => String::new(),
        });
        // The chart leaves --queue-services out when empty: the binary's default applies.
        if key == "queueServices" {
            assert_eq!(
                chart_default, "",
                "controller.queueServices: empty means every provider"
            );
            continue;
        }
        assert_eq!(
            chart_default, binary_default,
            "controller.{key} differs from the default of --{flag}"
        );
    }
}

/// Starts the real binary with the args the chart renders (kubeconfig pointing
/// nowhere, admin server on an ephemeral loopback port) and checks the command
/// line is accepted: a usage error exits with 2 and names the argument, while
/// accepted args get as far as loading the kube config.
#[test]
fn rendered_args_are_accepted_by_the_binary() {
    let out = render_with("check-chart.sh");
    for name in scenarios(out.path()) {
        let dir = out.path().join(&name);
        let objects = parse_documents(
            &fs::read_to_string(dir.join("manifests.yaml")).expect("manifests.yaml"),
            &name,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let deployment = deployments(&objects)[0];
        let args: Vec<String> = only_container(deployment)
            .args
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|a| {
                if a.starts_with("--kube-config=") {
                    "--kube-config=/nonexistent/wpa-test-kubeconfig".to_owned()
                } else if a.starts_with("--metrics-port=") {
                    "--metrics-port=127.0.0.1:0".to_owned()
                } else {
                    a
                }
            })
            .collect();
        let mut child = Command::new(env!("CARGO_BIN_EXE_workerpodautoscaler"))
            .args(&args)
            .env_clear()
            .env("KUBECONFIG", "/nonexistent/wpa-test-kubeconfig")
            .env("POD_NAMESPACE", RELEASE_NAMESPACE)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start workerpodautoscaler");
        // Accepted args lead to a kube config error quickly; still running
        // after the deadline also means the command line was accepted.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break Some(status);
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        let mut stderr = String::new();
        if let Some(mut pipe) = child.stderr.take() {
            use std::io::Read;
            let _ = pipe.read_to_string(&mut stderr);
        }
        if let Some(status) = status {
            assert_ne!(
                status.code(),
                Some(2),
                "{name}: usage error for {args:?}:\n{stderr}"
            );
        }
        for bad in [
            "unexpected argument",
            "invalid value",
            "error: a value is required",
        ] {
            assert!(
                !stderr.contains(bad),
                "{name}: {bad} for {args:?}:\n{stderr}"
            );
        }
    }
}

/// The chart follows the provider table: `controller.queueServices` accepts exactly the
/// table's names (the pattern is written by `hack/sync-crd.sh` from `workerpodautoscaler
/// providers`), and every provider's interval flag has a value key the schema accepts
/// (`<provider>PollInterval`, or an explicit property for practo's flag names), which the
/// template turns back into that flag.
#[test]
fn the_chart_follows_the_provider_table() {
    use wpa::queue::ProviderKind;
    let schema: Value = serde_json::from_str(
        &fs::read_to_string(repo().join("charts/worker-pod-autoscaler/values.schema.json"))
            .expect("values.schema.json"),
    )
    .expect("schema is JSON");
    let controller = &schema["properties"]["controller"];
    let names: Vec<&str> = ProviderKind::all().map(|k| k.spec().name).collect();
    let names = names.join("|");
    assert_eq!(
        controller["properties"]["queueServices"]["pattern"],
        format!("^(({names})(,({names}))*)?$"),
        "run hack/sync-crd.sh"
    );
    let patterns: Vec<&String> = controller["patternProperties"]
        .as_object()
        .expect("patternProperties")
        .keys()
        .collect();
    assert_eq!(patterns, ["^[a-z]+PollInterval$"]);
    let one_word_provider = |key: &str| {
        key.strip_suffix("PollInterval")
            .is_some_and(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase()))
    };
    for kind in ProviderKind::all() {
        let flag = kind.spec().interval_flag.trim_start_matches("--");
        let mut key = String::new();
        let mut upper = false;
        for c in flag.chars() {
            match (c, upper) {
                ('-', _) => upper = true,
                (c, true) => {
                    key.push(c.to_ascii_uppercase());
                    upper = false;
                }
                (c, false) => key.push(c),
            }
        }
        assert_eq!(
            kebab(&key),
            flag,
            "the template's kebabcase gives the flag back"
        );
        let explicit = !controller["properties"][&key].is_null();
        let by_pattern = one_word_provider(&key);
        assert!(
            explicit || by_pattern,
            "controller.{key} ({}) is neither a property nor matched by patternProperties",
            kind.spec().interval_flag
        );
    }
}
