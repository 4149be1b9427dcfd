//! Checks the shipped manifests without a cluster: the install manifests in
//! artifacts/ and every example parse as typed Kubernetes objects, keep the
//! hardening and least-privilege RBAC, agree with each other (names, labels,
//! ports, versions), the examples match the CRD's structural schema, the chart's
//! copy of the CRD equals artifacts/crd.yaml, the IAM policy is minimal and the
//! Grafana dashboard is well formed.

use crate::manifests;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::PathBuf;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use manifests::{
    Object, allows, assert_controller_rules, assert_hardened_controller, assert_least_privilege,
    assert_single_controller, check_schema, customs, deployments, only_container, parse_documents,
    read, repo,
};
use serde_json::Value;

fn artifact(name: &str) -> Vec<Object> {
    let path = repo().join("artifacts").join(name);
    // The namespaced RBAC files carry placeholders that install.sh fills in.
    let text = read(&path)
        .replace("${WPA_NAMESPACE}", "workers")
        .replace("${NAMESPACE}", "kube-system");
    parse_documents(&text, name).unwrap_or_else(|e| panic!("{e}"))
}

fn labels_match(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

#[test]
fn install_manifests_are_typed_hardened_and_consistent() {
    let deployment_objects = artifact("deployment-template.yaml");
    let deps = deployments(&deployment_objects);
    assert_eq!(deps.len(), 1);
    let deployment = deps[0];
    assert_hardened_controller(deployment, "deployment-template.yaml");
    assert_eq!(
        deployment.metadata.namespace.as_deref(),
        Some("kube-system")
    );
    assert_single_controller(deployment, "deployment-template.yaml");
    let spec = deployment.spec.as_ref().expect("spec");
    let container = only_container(deployment);
    assert_eq!(
        container
            .args
            .as_deref()
            .and_then(|a| a.first())
            .map(String::as_str),
        Some("run")
    );
    assert!(
        container
            .env
            .iter()
            .flatten()
            .any(|e| e.name == "POD_NAMESPACE"
                && e.value_from
                    .as_ref()
                    .and_then(|v| v.field_ref.as_ref())
                    .map(|f| f.field_path.as_str())
                    == Some("metadata.namespace")),
        "POD_NAMESPACE from the downward API (leader election namespace)"
    );
    let env_from: Vec<_> = container.env_from.iter().flatten().collect();
    let secret = env_from
        .iter()
        .find_map(|e| e.secret_ref.as_ref())
        .expect("AWS settings from a Secret");
    assert_eq!(secret.name, "workerpodautoscaler-aws");
    assert_eq!(
        secret.optional,
        Some(true),
        "the AWS Secret is optional (IRSA, non-SQS installs)"
    );
    let config = env_from
        .iter()
        .find_map(|e| e.config_map_ref.as_ref())
        .expect("settings ConfigMap");
    assert_eq!(config.optional, Some(true));
    let pod = spec.template.spec.as_ref().expect("pod spec");
    let pod_labels = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();

    // Service account and bindings name the same account.
    let sa_objects = artifact("serviceaccount.yaml");
    let Some(Object::ServiceAccount(sa)) = sa_objects.first() else {
        panic!("serviceaccount.yaml holds a ServiceAccount")
    };
    assert_eq!(sa.metadata.name, pod.service_account_name);
    assert_eq!(sa.metadata.namespace.as_deref(), Some("kube-system"));

    // Cluster-wide RBAC: needed rules, nothing more, no Secrets.
    let cluster_roles = artifact("clusterrole.yaml");
    let mut saw_main = false;
    let mut saw_secret_reader = false;
    for object in &cluster_roles {
        let Object::ClusterRole(role) = object else {
            panic!("clusterrole.yaml: only ClusterRoles")
        };
        let rules = role.rules.clone().unwrap_or_default();
        match role.metadata.name.as_deref() {
            Some("workerpodautoscaler") => {
                saw_main = true;
                assert_controller_rules(&rules, "clusterrole.yaml");
                assert_least_privilege(&rules, "clusterrole.yaml");
                assert!(
                    !allows(&rules, "", "secrets", "get"),
                    "no cluster-wide Secret access"
                );
            }
            Some("workerpodautoscaler-secret-reader") => {
                saw_secret_reader = true;
                assert_eq!(rules.len(), 1);
                assert_eq!(rules[0].verbs, vec!["get".to_owned()]);
                assert_eq!(
                    rules[0].resources.as_deref(),
                    Some(&["secrets".to_owned()][..])
                );
            }
            other => panic!("unexpected ClusterRole {other:?}"),
        }
    }
    assert!(saw_main && saw_secret_reader);

    let check_subject = |objects: &[Object], file: &str| {
        for object in objects {
            let (subjects, role_ref) = match object {
                Object::ClusterRoleBinding(b) => (b.subjects.clone(), &b.role_ref),
                Object::RoleBinding(b) => (b.subjects.clone(), &b.role_ref),
                _ => continue,
            };
            let subjects = subjects.unwrap_or_default();
            assert_eq!(subjects.len(), 1, "{file}: one subject");
            assert_eq!(subjects[0].kind, "ServiceAccount");
            assert_eq!(
                Some(&subjects[0].name),
                sa.metadata.name.as_ref(),
                "{file}: subject"
            );
            assert_eq!(
                subjects[0].namespace.as_deref(),
                Some("kube-system"),
                "{file}: subject namespace"
            );
            assert!(
                role_ref.name.starts_with("workerpodautoscaler"),
                "{file}: roleRef"
            );
        }
    };
    check_subject(
        &artifact("clusterrolebinding.yaml"),
        "clusterrolebinding.yaml",
    );
    check_subject(
        &artifact("rolebinding-namespaced.yaml"),
        "rolebinding-namespaced.yaml",
    );
    check_subject(
        &artifact("role-leader-election.yaml"),
        "role-leader-election.yaml",
    );

    // Namespaced RBAC: same rules as the ClusterRole, in the watched namespace.
    let namespaced = artifact("role-namespaced.yaml");
    let Some(Object::Role(role)) = namespaced.first() else {
        panic!("role-namespaced.yaml holds a Role")
    };
    assert_eq!(role.metadata.namespace.as_deref(), Some("workers"));
    let rules = role.rules.clone().unwrap_or_default();
    assert_controller_rules(&rules, "role-namespaced.yaml");
    assert_least_privilege(&rules, "role-namespaced.yaml");
    let Some(Object::RoleBinding(binding)) =
        artifact("rolebinding-namespaced.yaml").first().cloned()
    else {
        panic!("rolebinding-namespaced.yaml holds a RoleBinding")
    };
    assert_eq!(binding.metadata.namespace.as_deref(), Some("workers"));
    assert_eq!(
        (
            binding.role_ref.kind.as_str(),
            binding.role_ref.name.as_str()
        ),
        ("Role", "workerpodautoscaler")
    );

    // Leader election: Lease access in the controller's namespace only.
    let leader = artifact("role-leader-election.yaml");
    let Some(Object::Role(lease_role)) = leader.first() else {
        panic!("leader election Role")
    };
    assert_eq!(
        lease_role.metadata.namespace.as_deref(),
        Some("kube-system")
    );
    let lease_rules = lease_role.rules.clone().unwrap_or_default();
    for verb in ["get", "create", "update", "patch"] {
        assert!(allows(&lease_rules, "coordination.k8s.io", "leases", verb));
    }
    assert_least_privilege(&lease_rules, "role-leader-election.yaml");

    // Service and ServiceMonitor reach the metrics port of these pods.
    let services = artifact("service.yaml");
    let Some(Object::Service(service)) = services.first() else {
        panic!("service.yaml holds a Service")
    };
    let service_spec = service.spec.as_ref().expect("service spec");
    assert!(labels_match(
        service_spec.selector.as_ref().expect("selector"),
        &pod_labels
    ));
    let port = &service_spec.ports.as_ref().expect("ports")[0];
    assert_eq!((port.name.as_deref(), port.port), (Some("metrics"), 8787));
    assert_eq!(
        container
            .ports
            .iter()
            .flatten()
            .map(|p| (p.name.clone(), p.container_port))
            .collect::<Vec<_>>(),
        vec![(Some("metrics".to_owned()), 8787)]
    );
    let monitors = artifact("servicemonitor.yaml");
    let monitor = customs(&monitors, "ServiceMonitor")[0];
    let service_labels = service.metadata.labels.clone().unwrap_or_default();
    for (k, v) in monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("matchLabels")
    {
        assert_eq!(
            service_labels.get(k).map(String::as_str),
            v.as_str(),
            "ServiceMonitor selects the Service"
        );
    }
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "metrics");
    assert_eq!(monitor["spec"]["endpoints"][0]["path"], "/metrics");
}

#[test]
fn chart_app_version_follows_the_crate() {
    let chart: Value = serde_saphyr::from_str(&read(
        &repo().join("charts/worker-pod-autoscaler/Chart.yaml"),
    ))
    .expect("Chart.yaml");
    assert_eq!(chart["appVersion"], env!("CARGO_PKG_VERSION"));
}

fn generated_crd() -> CustomResourceDefinition {
    let path = repo().join("artifacts/crd.yaml");
    assert!(
        path.exists(),
        "artifacts/crd.yaml is missing: generate it with `workerpodautoscaler crd > artifacts/crd.yaml` \
         (hack/sync-crd.sh also copies it into the chart)"
    );
    match parse_documents(&read(&path), "artifacts/crd.yaml")
        .unwrap_or_else(|e| panic!("{e}"))
        .as_slice()
    {
        [Object::Crd(crd)] => (**crd).clone(),
        _ => panic!("artifacts/crd.yaml must hold exactly one CustomResourceDefinition"),
    }
}

/// Every example folder: typed objects, WPAs that point at something real.
#[test]
fn examples_are_typed_and_self_consistent() {
    let examples = repo().join("artifacts/examples");
    let expected_scheme = BTreeMap::from([
        ("sqs", "https://sqs."),
        ("rabbitmq", "amqp"),
        ("redis-celery", "redis"),
        ("beanstalkd", "beanstalk://"),
        ("http", "http"),
        ("openedx", "redis://"),
        ("rq", "redis+rq://"),
        ("dramatiq", "redis+dramatiq://"),
        ("bullmq", "redis+bullmq://"),
        ("sidekiq", "redis+sidekiq://"),
    ]);
    for (folder, scheme) in &expected_scheme {
        let dir = examples.join(folder);
        let mut files: Vec<PathBuf> = fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
            .collect();
        files.sort();
        let mut objects = Vec::new();
        for file in &files {
            let origin = format!(
                "{folder}/{}",
                file.file_name().unwrap_or_default().to_string_lossy()
            );
            objects.extend(parse_documents(&read(file), &origin).unwrap_or_else(|e| panic!("{e}")));
        }
        let workers: BTreeSet<String> = deployments(&objects)
            .iter()
            .filter_map(|d| d.metadata.name.clone())
            .collect();
        for deployment in deployments(&objects) {
            assert_eq!(
                deployment.spec.as_ref().and_then(|s| s.replicas),
                None,
                "{folder}: worker Deployments leave replicas to the autoscaler"
            );
        }
        let secrets: BTreeMap<String, BTreeSet<String>> = objects
            .iter()
            .filter_map(|o| match o {
                Object::Secret(s) => Some((
                    s.metadata.name.clone().unwrap_or_default(),
                    s.string_data
                        .clone()
                        .unwrap_or_default()
                        .into_keys()
                        .collect(),
                )),
                _ => None,
            })
            .collect();
        for object in &objects {
            if let Object::Secret(s) = object {
                for value in s.string_data.clone().unwrap_or_default().values() {
                    if value != "wpa-monitor" {
                        assert!(
                            value.contains("REPLACE-ME"),
                            "{folder}: Secrets hold placeholders only"
                        );
                    }
                }
            }
        }
        let wpas = customs(&objects, "WorkerPodAutoScaler");
        assert!(!wpas.is_empty(), "{folder}: a WorkerPodAutoScaler");
        for wpa in wpas {
            let name = wpa["metadata"]["name"].as_str().unwrap_or_default();
            assert_eq!(wpa["apiVersion"], "k8s.practo.dev/v1", "{folder}/{name}");
            let spec = &wpa["spec"];
            let uris = queue_uris(wpa);
            assert!(!uris.is_empty(), "{folder}/{name}: a queue");
            for uri in &uris {
                assert!(
                    uri.starts_with(scheme),
                    "{folder}/{name}: queue URI {uri} should start with {scheme}"
                );
            }
            let (min, max) = (spec["minReplicas"].as_i64(), spec["maxReplicas"].as_i64());
            assert!(
                matches!((min, max), (Some(a), Some(b)) if a <= b && b > 0),
                "{folder}/{name}: min <= max"
            );
            assert!(
                spec["targetMessagesPerWorker"]
                    .as_i64()
                    .is_some_and(|t| t > 0)
            );
            let target = spec["deploymentName"].as_str().unwrap_or_default();
            // Tutor creates lms-worker and cms-worker itself.
            let tutor = *folder == "openedx" && (target == "lms-worker" || target == "cms-worker");
            assert!(
                workers.contains(target) || tutor,
                "{folder}/{name}: Deployment {target} is in the example"
            );
            if let Some(secret) = spec["credentialsSecretRef"]["name"].as_str() {
                let keys = secrets
                    .get(secret)
                    .unwrap_or_else(|| panic!("{folder}/{name}: Secret {secret}"));
                assert!(
                    keys.iter()
                        .any(|k| ["username", "password", "authorization"].contains(&k.as_str())),
                    "{folder}/{name}: the Secret has the default keys"
                );
            }
            for uri in uris.iter().filter(|u| u.contains("svc")) {
                assert!(
                    uri.contains(".svc.cluster.local"),
                    "{folder}/{name}: fully qualified service name"
                );
            }
        }
        if *folder == "openedx" {
            let vpas = customs(&objects, "VerticalPodAutoscaler");
            let targets: BTreeSet<&str> = vpas
                .iter()
                .filter_map(|v| v["spec"]["targetRef"]["name"].as_str())
                .collect();
            assert_eq!(targets, BTreeSet::from(["lms-worker", "cms-worker"]));
            for vpa in vpas {
                assert_eq!(
                    vpa["spec"]["updatePolicy"]["updateMode"], "Off",
                    "VPA only recommends"
                );
            }
            let queues: BTreeSet<String> = customs(&objects, "WorkerPodAutoScaler")
                .iter()
                .flat_map(|w| queue_uris(w))
                .filter_map(|u| u.rsplit('/').next().map(str::to_string))
                .collect();
            assert_eq!(
                queues.len(),
                6,
                "openedx: every queue lms-worker and cms-worker consume: {queues:?}"
            );
            for queue in &queues {
                assert!(
                    [
                        "edx.lms.core.default",
                        "edx.lms.core.high",
                        "edx.lms.core.high_mem",
                        "edx.cms.core.default",
                        "edx.cms.core.high",
                        "edx.cms.core.low"
                    ]
                    .contains(&queue.as_str()),
                    "openedx: {queue} is not an Open edX Celery queue"
                );
            }
        }
    }
}

/// A WPA's queue URIs: `queueURIs`, or the one `queueURI`.
fn queue_uris(wpa: &Value) -> Vec<String> {
    match wpa["spec"]["queueURIs"].as_array() {
        Some(list) => list
            .iter()
            .filter_map(|u| u.as_str().map(str::to_string))
            .collect(),
        None => wpa["spec"]["queueURI"]
            .as_str()
            .map(|u| vec![u.to_string()])
            .unwrap_or_default(),
    }
}

#[test]
fn example_wpas_match_the_crd_schema() {
    let crd = generated_crd();
    let version = crd
        .spec
        .versions
        .iter()
        .find(|v| v.name == "v1")
        .expect("v1");
    let schema = version
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .expect("openAPIV3Schema");
    let spec_schema = schema
        .properties
        .as_ref()
        .and_then(|p| p.get("spec"))
        .expect("spec schema");
    let mut checked = 0;
    for folder in [
        "sqs",
        "rabbitmq",
        "redis-celery",
        "beanstalkd",
        "http",
        "openedx",
        "rq",
        "dramatiq",
        "bullmq",
        "sidekiq",
    ] {
        let dir = repo().join("artifacts/examples").join(folder);
        for entry in fs::read_dir(&dir)
            .expect("examples folder")
            .filter_map(|e| e.ok())
        {
            let path = entry.path();
            if path.extension().is_none_or(|x| x != "yaml") {
                continue;
            }
            let objects = parse_documents(&read(&path), &path.display().to_string())
                .unwrap_or_else(|e| panic!("{e}"));
            for wpa in customs(&objects, "WorkerPodAutoScaler") {
                let mut errors = Vec::new();
                check_schema(&wpa["spec"], spec_schema, "spec", &mut errors);
                assert!(errors.is_empty(), "{}: {errors:?}", path.display());
                checked += 1;
            }
        }
    }
    assert!(checked >= 8, "checked {checked} WPAs");

    // The checker itself must catch a wrong field and a wrong type.
    let mut errors = Vec::new();
    let bad = serde_json::json!({"minReplicas": "one", "maxReplicas": 3, "queueURI": "redis://r/0/q",
        "targetMessagesPerWorker": 1, "deploymentName": "w", "maxReplica": 4});
    check_schema(&bad, spec_schema, "spec", &mut errors);
    assert!(
        errors.iter().any(|e| e.contains("spec.minReplicas")),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains("spec.maxReplica: unknown field")),
        "{errors:?}"
    );
}

#[test]
fn chart_crd_equals_generated_crd() {
    let crd = generated_crd();
    assert_eq!(
        crd.metadata.name.as_deref(),
        Some("workerpodautoscalers.k8s.practo.dev")
    );
    let chart_copy = repo().join("charts/worker-pod-autoscaler/crds/crd.yaml");
    assert!(
        chart_copy.exists(),
        "charts/worker-pod-autoscaler/crds/crd.yaml is missing: run hack/sync-crd.sh"
    );
    assert!(
        read(&chart_copy) == read(&repo().join("artifacts/crd.yaml")),
        "charts/worker-pod-autoscaler/crds/crd.yaml differs from artifacts/crd.yaml: run hack/sync-crd.sh"
    );
}

#[test]
fn iam_policy_grants_exactly_the_documented_actions() {
    let policy: Value =
        serde_json::from_str(&read(&repo().join("artifacts/iam-policy.json"))).expect("JSON");
    assert_eq!(policy["Version"], "2012-10-17");
    let mut actions = BTreeSet::new();
    for statement in policy["Statement"].as_array().expect("statements") {
        assert_eq!(statement["Effect"], "Allow");
        for action in statement["Action"].as_array().expect("actions") {
            let action = action.as_str().expect("action string");
            assert!(!action.contains('*'), "no wildcard actions: {action}");
            actions.insert(action.to_owned());
        }
        let resource = statement["Resource"].as_str().expect("resource");
        if statement["Action"][0]
            .as_str()
            .is_some_and(|a| a.starts_with("sqs:"))
        {
            assert!(
                resource.starts_with("arn:aws:sqs:"),
                "SQS actions are limited to SQS queues"
            );
        }
    }
    assert_eq!(
        actions,
        BTreeSet::from(
            [
                "cloudwatch:GetMetricData",
                "sqs:GetQueueAttributes",
                "sqs:ReceiveMessage"
            ]
            .map(str::to_owned)
        )
    );
    // docs/install.md explains each action and names each statement.
    let docs = read(&repo().join("docs/install.md"));
    for action in &actions {
        assert!(
            docs.contains(action.as_str()),
            "docs/install.md explains {action}"
        );
    }
    for statement in policy["Statement"].as_array().expect("statements") {
        let sid = statement["Sid"]
            .as_str()
            .expect("every statement has a Sid");
        assert!(
            docs.contains(&format!("`{sid}`")),
            "docs/install.md names the statement {sid}"
        );
        // The long poll at zero workers is on by default (as practo): its
        // permission is not an opt-in.
        if statement["Action"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|a| a == "sqs:ReceiveMessage")
        {
            assert!(
                !sid.starts_with("OptIn"),
                "sqs:ReceiveMessage is needed by default, not opt-in: {sid}"
            );
        }
    }
}

#[test]
fn grafana_dashboard_is_well_formed() {
    let dashboard: Value =
        serde_json::from_str(&read(&repo().join("artifacts/grafana-dashboard.json")))
            .expect("valid JSON");
    assert!(
        dashboard["uid"]
            .as_str()
            .is_some_and(|u| !u.is_empty() && u.len() <= 40)
    );
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("templating");
    assert!(
        variables.iter().any(|v| v["type"] == "datasource"
            && v["query"] == "prometheus"
            && v["name"] == "datasource"),
        "a Prometheus data source variable"
    );
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    let mut exprs = String::new();
    for panel in panels {
        assert!(
            ids.insert(panel["id"].as_i64().expect("panel id")),
            "panel ids are unique"
        );
        let grid = &panel["gridPos"];
        let (x, w) = (
            grid["x"].as_i64().unwrap_or(-1),
            grid["w"].as_i64().unwrap_or(0),
        );
        assert!(
            x >= 0 && w > 0 && x + w <= 24,
            "panel {} fits the 24-column grid",
            panel["title"]
        );
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(
            panel["datasource"]["uid"], "${datasource}",
            "panel {} uses the variable",
            panel["title"]
        );
        for target in panel["targets"].as_array().expect("targets") {
            assert_eq!(target["datasource"]["uid"], "${datasource}");
            let expr = target["expr"].as_str().expect("expr");
            assert_eq!(
                expr.matches('(').count(),
                expr.matches(')').count(),
                "balanced: {expr}"
            );
            assert_eq!(
                expr.matches('{').count(),
                expr.matches('}').count(),
                "balanced: {expr}"
            );
            exprs.push_str(expr);
            exprs.push('\n');
        }
    }
    for metric in [
        "wpa_queue_messages{",
        "wpa_queue_messages_in_flight",
        "wpa_worker_current",
        "wpa_worker_desired",
        "wpa_worker_available",
        "wpa_scale_operations_total",
        "wpa_queue_poll_errors_total",
        "wpa_reconcile_duration_seconds_bucket",
        "wpa_queue_poll_duration_seconds_bucket",
    ] {
        assert!(exprs.contains(metric), "the dashboard shows {metric}");
    }
}

/// Runs `hack/install.sh --dry-run` with `vars` against a copy of artifacts/
/// (with a stand-in CRD when the generated one is not there) and parses what
/// it would apply.
fn install_dry_run(vars: &[(&str, &str)]) -> Vec<Object> {
    let dir = tempfile::tempdir().expect("temp dir");
    let artifacts = dir.path().join("artifacts");
    fs::create_dir(&artifacts).expect("mkdir");
    for entry in fs::read_dir(repo().join("artifacts"))
        .expect("artifacts")
        .filter_map(|e| e.ok())
    {
        if entry.path().is_file() {
            fs::copy(entry.path(), artifacts.join(entry.file_name())).expect("copy");
        }
    }
    if !artifacts.join("crd.yaml").exists() {
        let stand_in = "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\n\
            metadata:\n  name: workerpodautoscalers.k8s.practo.dev\nspec:\n  group: k8s.practo.dev\n  \
            names:\n    kind: WorkerPodAutoScaler\n    plural: workerpodautoscalers\n  scope: Namespaced\n  \
            versions:\n    - name: v1\n      served: true\n      storage: true\n";
        fs::write(artifacts.join("crd.yaml"), stand_in).expect("write stand-in CRD");
    }
    let output = std::process::Command::new("bash")
        .arg(repo().join("hack/install.sh"))
        .arg("--dry-run")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("ARTIFACTS_DIR", &artifacts)
        .envs(vars.iter().copied())
        .output()
        .expect("run hack/install.sh");
    assert!(
        output.status.success(),
        "install.sh --dry-run failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).expect("UTF-8 output");
    parse_documents(&text, "install.sh --dry-run").unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn install_script_renders_typed_objects() {
    // Defaults: cluster-wide RBAC, empty settings ConfigMap, kube-system.
    let objects = install_dry_run(&[]);
    let kinds: Vec<&str> = objects.iter().map(Object::kind).collect();
    for kind in [
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "ConfigMap",
        "Deployment",
        "Service",
    ] {
        assert!(
            kinds.contains(&kind),
            "default install applies a {kind}: {kinds:?}"
        );
    }
    assert!(!kinds.contains(&"Namespace"), "kube-system is not created");
    for object in &objects {
        if let Object::ConfigMap(cm) = object {
            assert_eq!(
                cm.data.clone().unwrap_or_default().len(),
                0,
                "no settings by default"
            );
        }
    }

    // Everything set: own namespace, one watched namespace, IRSA, regions, image.
    let objects = install_dry_run(&[
        ("NAMESPACE", "wpa-system"),
        ("WPA_NAMESPACE", "workers"),
        ("AWS_REGIONS", "us-east-1,eu-west-1"),
        ("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/wpa"),
        (
            "IMAGE",
            "registry.example.com/wpa@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ),
    ]);
    assert_eq!(
        objects
            .iter()
            .filter(|o| matches!(o, Object::ClusterRole(_) | Object::ClusterRoleBinding(_)))
            .count(),
        0,
        "namespaced mode grants nothing cluster-wide"
    );
    let mut saw = BTreeSet::new();
    for object in &objects {
        match object {
            Object::Namespace(ns) => {
                assert_eq!(ns.metadata.name.as_deref(), Some("wpa-system"));
                saw.insert("Namespace");
            }
            Object::ServiceAccount(sa) => {
                assert_eq!(sa.metadata.namespace.as_deref(), Some("wpa-system"));
                assert_eq!(
                    sa.metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get("eks.amazonaws.com/role-arn"))
                        .map(String::as_str),
                    Some("arn:aws:iam::123456789012:role/wpa")
                );
                saw.insert("ServiceAccount");
            }
            Object::Role(role) if role.metadata.name.as_deref() == Some("workerpodautoscaler") => {
                assert_eq!(role.metadata.namespace.as_deref(), Some("workers"));
                assert_controller_rules(&role.rules.clone().unwrap_or_default(), "namespaced Role");
                saw.insert("Role");
            }
            Object::ConfigMap(cm) => {
                let data = cm.data.clone().unwrap_or_default();
                assert_eq!(
                    data.get("WPA_NAMESPACE").map(String::as_str),
                    Some("workers")
                );
                assert_eq!(
                    data.get("AWS_REGIONS").map(String::as_str),
                    Some("us-east-1,eu-west-1")
                );
                saw.insert("ConfigMap");
            }
            Object::Deployment(d) => {
                assert_eq!(d.metadata.namespace.as_deref(), Some("wpa-system"));
                assert_hardened_controller(d, "install.sh Deployment");
                assert_eq!(
                    only_container(d).image.as_deref(),
                    Some(
                        "registry.example.com/wpa@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
                    )
                );
                saw.insert("Deployment");
            }
            Object::Secret(_) => panic!("IRSA installs store no AWS keys"),
            _ => {}
        }
    }
    assert_eq!(saw.len(), 5, "saw {saw:?}");
}
