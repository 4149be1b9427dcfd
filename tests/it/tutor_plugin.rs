//! The Tutor plugin (integrations/tutor, plugin "wpa"): hack/check-tutor.sh renders Tutor
//! 22's Kubernetes manifests offline with the plugin for several setting sets, the way
//! `tutor k8s start` would apply them, and this test checks the result: one WPA per Celery
//! worker on all the queues its rendered command consumes, Redis host/port/DB from Tutor's
//! settings, credentials only in a Secret, WPAs valid for the CRD (structural schema, CEL
//! rules, the controller's types and URI parser), the controller objects equal to
//! artifacts/ with least-privilege RBAC, and no HPA from tutor-contrib-pod-autoscaling on a
//! worker a WPA scales.
//!
//! Needs python3 and access to PyPI on the first run (the script creates a virtualenv
//! with Tutor; WPA_TUTOR_VENV picks its folder).

use crate::manifests;

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use k8s_openapi::api::rbac::v1::PolicyRule;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps,
};
use kube::core::cel::Validator;
use manifests::{
    Object, assert_controller_rules, assert_hardened_controller, assert_least_privilege,
    assert_single_controller, check_schema, deployments, only_container, parse_documents,
    parse_values, read, render_with, repo,
};
use serde_json::{Value, json};
use wpa::crd::WorkerPodAutoScaler;
use wpa::queue::QueueUri;

const CONTROLLER: &str = "workerpodautoscaler";
const SECRET: &str = "wpa-redis-credentials";
const NAME_LABEL: &str = "app.kubernetes.io/name";
const LMS_QUEUES: [&str; 3] = [
    "edx.lms.core.default",
    "edx.lms.core.high",
    "edx.lms.core.high_mem",
];
const CMS_QUEUES: [&str; 3] = [
    "edx.cms.core.default",
    "edx.cms.core.high",
    "edx.cms.core.low",
];
/// Every scenario of hack/render_tutor.py: dropping one there must fail here.
const SCENARIOS: [&str; 10] = [
    "cms-min-zero",
    "default",
    "external-redis-password",
    "no-controller",
    "pod-autoscaling",
    "pod-autoscaling-lms-worker-off",
    "queues-from-command",
    "redis-host-db",
    "refused-hpa-on-worker",
    "refused-min-above-max",
];

/// The settings of one scenario, with Tutor's and the plugin's defaults for what it does
/// not set (an independent statement of the defaults the README documents).
struct Expected {
    namespace: String,
    host: String,
    port: u16,
    db: i64,
    username: Option<String>,
    password: Option<String>,
    install_controller: bool,
    extra_args: Vec<String>,
    pod_autoscaling: bool,
}

impl Expected {
    fn new(scenario: &Value) -> Expected {
        let settings = &scenario["settings"];
        let text = |key: &str, default: &str| settings[key].as_str().unwrap_or(default).to_owned();
        let namespace = text("K8S_NAMESPACE", "openedx");
        let host = text("REDIS_HOST", "redis");
        let host = if host.contains('.') {
            host
        } else {
            format!("{host}.{namespace}.svc.cluster.local")
        };
        let secret = |key: &str| {
            settings[key]
                .as_str()
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        Expected {
            host,
            port: settings["REDIS_PORT"].as_u64().unwrap_or(6379) as u16,
            db: settings["OPENEDX_CELERY_REDIS_DB"].as_i64().unwrap_or(0),
            username: secret("REDIS_USERNAME"),
            password: secret("REDIS_PASSWORD"),
            install_controller: settings["WPA_INSTALL_CONTROLLER"].as_bool().unwrap_or(true),
            extra_args: settings["WPA_CONTROLLER_EXTRA_ARGS"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|a| a.as_str().expect("string arg").to_owned())
                .collect(),
            pod_autoscaling: scenario["plugins"]
                .as_array()
                .expect("plugins")
                .iter()
                .any(|p| p == "pod-autoscaling"),
            namespace,
        }
    }

    fn credentials(&self) -> bool {
        self.username.is_some() || self.password.is_some()
    }
}

/// Per worker: enabled, min, max, target messages per worker (plugin defaults).
fn worker_settings(settings: &Value, worker: &str) -> (bool, i64, i64, i64) {
    let prefix = format!("WPA_{}_", worker.to_uppercase().replace('-', "_"));
    let (min, max, target) = match worker {
        "lms-worker" => (1, 8, 10),
        "cms-worker" => (1, 4, 3),
        other => panic!("unknown worker {other}"),
    };
    let int = |key: &str, default: i64| {
        settings[format!("{prefix}{key}")]
            .as_i64()
            .unwrap_or(default)
    };
    (
        settings[format!("{prefix}ENABLED")]
            .as_bool()
            .unwrap_or(true),
        int("MIN_REPLICAS", min),
        int("MAX_REPLICAS", max),
        int("TARGET_MESSAGES_PER_WORKER", target),
    )
}

/// The queues of `--queues=`/`-Q` in a rendered `celery worker` command.
fn command_queues(args: &[String]) -> Vec<String> {
    let mut found = None;
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if let Some(list) = arg.strip_prefix("--queues=") {
            found = Some(list.to_owned());
        } else if arg == "--queues" || arg == "-Q" {
            found = iter.next().cloned();
        }
    }
    found
        .unwrap_or_default()
        .split(',')
        .filter(|q| !q.is_empty())
        .map(str::to_owned)
        .collect()
}

fn name_of(value: &Value) -> &str {
    value["metadata"]["name"].as_str().unwrap_or_default()
}

fn kind_of(value: &Value) -> &str {
    value["kind"].as_str().unwrap_or_default()
}

fn label(value: &Value, key: &str) -> Option<String> {
    value["metadata"]["labels"][key].as_str().map(str::to_owned)
}

/// The one typed object of `kind` named `name` among `values`.
fn typed(values: &[Value], kind: &str, name: &str, origin: &str) -> Object {
    let found: Vec<Value> = values
        .iter()
        .filter(|v| kind_of(v) == kind && name_of(v) == name)
        .cloned()
        .collect();
    assert_eq!(found.len(), 1, "{origin}: one {kind} {name}");
    parse_values(found, origin)
        .unwrap_or_else(|e| panic!("{e}"))
        .remove(0)
}

fn artifact(name: &str) -> Vec<Object> {
    let text = read(&repo().join("artifacts").join(name))
        .replace("${WPA_NAMESPACE}", "openedx")
        .replace("${NAMESPACE}", "openedx");
    parse_documents(&text, name).unwrap_or_else(|e| panic!("{e}"))
}

fn artifacts_crd() -> CustomResourceDefinition {
    match artifact("crd.yaml").as_slice() {
        [Object::Crd(crd)] => (**crd).clone(),
        _ => panic!("artifacts/crd.yaml holds one CRD"),
    }
}

fn openapi_schema(crd: &CustomResourceDefinition) -> JSONSchemaProps {
    crd.spec
        .versions
        .iter()
        .find(|v| v.name == "v1")
        .and_then(|v| v.schema.as_ref())
        .and_then(|s| s.open_api_v3_schema.clone())
        .expect("v1 openAPIV3Schema")
}

/// The rendered CRD must be artifacts/crd.yaml; kustomize only adds Tutor's labels and
/// annotations to its metadata.
fn check_crd(values: &[Value], origin: &str) -> CustomResourceDefinition {
    let Object::Crd(crd) = typed(
        values,
        "CustomResourceDefinition",
        "workerpodautoscalers.k8s.practo.dev",
        origin,
    ) else {
        panic!("{origin}: CRD")
    };
    let mut rendered = serde_json::to_value(&*crd).expect("CRD serializes");
    let mut artifact = serde_json::to_value(artifacts_crd()).expect("CRD serializes");
    assert_eq!(
        rendered["metadata"]["labels"][NAME_LABEL], CONTROLLER,
        "{origin}: CRD label (crd-labels.yml)"
    );
    for value in [&mut rendered, &mut artifact] {
        let metadata = value["metadata"].as_object_mut().expect("metadata");
        metadata.remove("labels");
        metadata.remove("annotations");
    }
    assert_eq!(
        rendered, artifact,
        "{origin}: CRD equals artifacts/crd.yaml"
    );
    *crd
}

/// The rules of artifacts/role-namespaced.yaml without its Secret rule (the plugin grants
/// Secret access only to its own Secret, and only when there is one).
fn artifact_rules_without_secrets() -> Vec<PolicyRule> {
    let Some(Object::Role(role)) = artifact("role-namespaced.yaml").into_iter().next() else {
        panic!("role-namespaced.yaml holds a Role")
    };
    role.rules
        .unwrap_or_default()
        .into_iter()
        .filter(|r| !r.resources.iter().flatten().any(|x| x == "secrets"))
        .collect()
}

fn check_controller(values: &[Value], expected: &Expected, origin: &str) {
    let ns = expected.namespace.as_str();
    let Object::Deployment(deployment) = typed(values, "Deployment", CONTROLLER, origin) else {
        panic!("{origin}: controller Deployment")
    };
    assert_hardened_controller(&deployment, origin);
    assert_eq!(
        deployment.metadata.namespace.as_deref(),
        Some(ns),
        "{origin}"
    );
    assert_single_controller(&deployment, origin);
    let spec = deployment.spec.as_ref().expect("spec");
    let container = only_container(&deployment);
    let mut want_args = vec![
        "run".to_owned(),
        "--metrics-port=:8787".to_owned(),
        format!("--namespace={ns}"),
    ];
    want_args.extend(expected.extra_args.iter().cloned());
    assert_eq!(
        container.args.clone().unwrap_or_default(),
        want_args,
        "{origin}: args (watch only Tutor's namespace)"
    );

    // The pod is artifacts/deployment-template.yaml's, apart from the arguments.
    let template = artifact("deployment-template.yaml");
    let artifact_deployment = deployments(&template)[0];
    let pod = |d: &k8s_openapi::api::apps::v1::Deployment| {
        let mut pod = serde_json::to_value(
            d.spec
                .as_ref()
                .and_then(|s| s.template.spec.as_ref())
                .expect("pod spec"),
        )
        .expect("pod serializes");
        pod["containers"][0]
            .as_object_mut()
            .expect("container")
            .remove("args");
        pod
    };
    assert_eq!(
        pod(&deployment),
        pod(artifact_deployment),
        "{origin}: pod spec equals artifacts/deployment-template.yaml (args aside)"
    );

    let Object::ServiceAccount(sa) = typed(values, "ServiceAccount", CONTROLLER, origin) else {
        panic!("{origin}: ServiceAccount")
    };
    assert_eq!(sa.metadata.namespace.as_deref(), Some(ns), "{origin}");
    assert_eq!(
        spec.template
            .spec
            .as_ref()
            .and_then(|p| p.service_account_name.as_deref()),
        Some(CONTROLLER),
        "{origin}: serviceAccountName"
    );

    let Object::Role(role) = typed(values, "Role", CONTROLLER, origin) else {
        panic!("{origin}: Role")
    };
    assert_eq!(role.metadata.namespace.as_deref(), Some(ns), "{origin}");
    let rules = role.rules.clone().unwrap_or_default();
    assert_controller_rules(&rules, origin);
    assert_least_privilege(&rules, origin);
    let mut want_rules = artifact_rules_without_secrets();
    if expected.credentials() {
        want_rules.push(PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["secrets".to_owned()]),
            resource_names: Some(vec![SECRET.to_owned()]),
            verbs: vec!["get".to_owned()],
            non_resource_urls: None,
        });
    }
    assert_eq!(
        rules, want_rules,
        "{origin}: artifacts/role-namespaced.yaml's rules, Secret access only to {SECRET} when Redis has credentials"
    );

    let Object::RoleBinding(binding) = typed(values, "RoleBinding", CONTROLLER, origin) else {
        panic!("{origin}: RoleBinding")
    };
    assert_eq!(binding.metadata.namespace.as_deref(), Some(ns), "{origin}");
    assert_eq!(
        (
            binding.role_ref.kind.as_str(),
            binding.role_ref.name.as_str()
        ),
        ("Role", CONTROLLER),
        "{origin}: roleRef"
    );
    let subjects = binding.subjects.clone().unwrap_or_default();
    assert_eq!(subjects.len(), 1, "{origin}: one subject");
    assert_eq!(
        (
            subjects[0].kind.as_str(),
            subjects[0].name.as_str(),
            subjects[0].namespace.as_deref()
        ),
        ("ServiceAccount", CONTROLLER, Some(ns)),
        "{origin}: the subject is the controller's ServiceAccount"
    );
}

/// Checks one WPA against the CRD (structure and CEL rules), the controller's types and
/// URI parser, and the scenario's settings. Returns the queue names it watches.
fn check_wpa(
    wpa: &Value,
    worker: &str,
    crd: &CustomResourceDefinition,
    expected: &Expected,
    origin: &str,
) -> Vec<String> {
    let origin = format!("{origin}/{worker}");
    assert_eq!(wpa["apiVersion"], "k8s.practo.dev/v1", "{origin}");
    assert_eq!(
        wpa["metadata"]["namespace"],
        expected.namespace.as_str(),
        "{origin}"
    );
    assert_eq!(
        label(wpa, NAME_LABEL).as_deref(),
        Some(worker),
        "{origin}: labelled like its worker (`tutor k8s start {worker}` applies both)"
    );
    let spec = &wpa["spec"];
    assert_eq!(spec["deploymentName"], worker, "{origin}: target");
    assert!(
        spec.get("queueURI").is_none(),
        "{origin}: queueURIs only, not queueURI"
    );

    let schema = openapi_schema(crd);
    let spec_schema = schema
        .properties
        .as_ref()
        .and_then(|p| p.get("spec"))
        .expect("spec schema");
    let mut errors = Vec::new();
    check_schema(spec, spec_schema, "spec", &mut errors);
    assert!(errors.is_empty(), "{origin}: structural schema: {errors:?}");
    let schema_value = serde_json::to_value(&schema).expect("schema serializes");
    if let Err(errors) = Validator::new().validate(&schema_value, wpa, None) {
        let errors: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        panic!("{origin}: CEL rules refuse the WPA: {errors:?}");
    }
    let resource: WorkerPodAutoScaler = serde_json::from_value(wpa.clone())
        .unwrap_or_else(|e| panic!("{origin}: not a WorkerPodAutoScaler: {e}"));
    assert_eq!(resource.spec.deployment_name.as_deref(), Some(worker));

    let uris = spec["queueURIs"]
        .as_array()
        .unwrap_or_else(|| panic!("{origin}: queueURIs is a list"));
    let listed: Vec<&str> = uris.iter().filter_map(Value::as_str).collect();
    assert_eq!(
        resource
            .spec
            .queue_uris()
            .unwrap_or_else(|e| panic!("{origin}: {e}")),
        listed,
        "{origin}: the controller reads the same queues"
    );
    let mut queues = Vec::new();
    for uri in uris {
        let uri = uri.as_str().expect("URI string");
        if let Some(password) = &expected.password {
            assert!(
                !uri.contains(password.as_str()),
                "{origin}: password in {uri}"
            );
        }
        let parsed = QueueUri::parse(uri).unwrap_or_else(|e| panic!("{origin}: {e}"));
        let QueueUri::Redis(redis) = parsed else {
            panic!("{origin}: {uri} is not a Redis URI")
        };
        assert!(!redis.tls, "{origin}: {uri}: Tutor's Redis has no TLS");
        assert_eq!(redis.host, expected.host, "{origin}: host of {uri}");
        assert_eq!(redis.port, expected.port, "{origin}: port of {uri}");
        assert_eq!(redis.db, expected.db, "{origin}: Celery DB of {uri}");
        assert_eq!(
            (redis.username.as_deref(), redis.password.as_deref()),
            (None, None),
            "{origin}: no credentials in {uri}"
        );
        queues.push(redis.queue.clone());
    }

    let secret_ref = &spec["credentialsSecretRef"];
    if expected.credentials() {
        assert_eq!(
            secret_ref,
            &json!({"name": SECRET}),
            "{origin}: credentials from the Secret's default keys"
        );
        let credentials = resource
            .spec
            .credentials_secret_ref
            .as_ref()
            .expect("typed credentialsSecretRef");
        assert_eq!(
            (credentials.username_key(), credentials.password_key()),
            ("username", "password")
        );
    } else {
        assert!(
            secret_ref.is_null(),
            "{origin}: no Secret without credentials"
        );
    }
    queues
}

fn check_scenario(dir: &Path, name: &str) {
    let scenario: Value =
        serde_json::from_str(&read(&dir.join("scenario.json"))).expect("scenario.json");
    if let Some(message) = scenario["expect_error"].as_str() {
        assert!(
            !dir.join("manifests.yaml").exists(),
            "{name}: Tutor must refuse this configuration"
        );
        let error = read(&dir.join("error.txt"));
        assert!(error.contains(message), "{name}: {message:?} in {error}");
        return;
    }
    let expected = Expected::new(&scenario);
    let settings = &scenario["settings"];
    let values: Vec<Value> = serde_saphyr::from_multiple(&read(&dir.join("manifests.yaml")))
        .unwrap_or_else(|e| panic!("{name}: manifests.yaml: {e}"));
    let of_kind =
        |kind: &str| -> Vec<&Value> { values.iter().filter(|v| kind_of(v) == kind).collect() };

    // The controller objects, or none of them.
    let crd = if expected.install_controller {
        let crd = check_crd(&values, name);
        check_controller(&values, &expected, name);
        crd
    } else {
        for (kind, object) in [
            (
                "CustomResourceDefinition",
                "workerpodautoscalers.k8s.practo.dev",
            ),
            ("Deployment", CONTROLLER),
            ("ServiceAccount", CONTROLLER),
            ("Role", CONTROLLER),
            ("RoleBinding", CONTROLLER),
        ] {
            assert!(
                !values
                    .iter()
                    .any(|v| kind_of(v) == kind && name_of(v) == object),
                "{name}: WPA_INSTALL_CONTROLLER=false renders no {kind} {object}"
            );
        }
        artifacts_crd()
    };
    for kind in ["ClusterRole", "ClusterRoleBinding"] {
        assert!(
            of_kind(kind).is_empty(),
            "{name}: nothing cluster-wide but the CRD"
        );
    }
    // Everything the plugin adds but the WPAs carries the controller's name label: the
    // README's uninstall selects on it, and `tutor k8s start workerpodautoscaler` applies
    // just these objects.
    let mut selected: Vec<(String, String)> = values
        .iter()
        .filter(|v| label(v, NAME_LABEL).as_deref() == Some(CONTROLLER))
        .map(|v| (kind_of(v).to_owned(), name_of(v).to_owned()))
        .collect();
    selected.sort();
    let mut want_selected: Vec<(String, String)> = Vec::new();
    if expected.install_controller {
        for kind in ["Deployment", "Role", "RoleBinding", "ServiceAccount"] {
            want_selected.push((kind.to_owned(), CONTROLLER.to_owned()));
        }
        want_selected.push((
            "CustomResourceDefinition".to_owned(),
            "workerpodautoscalers.k8s.practo.dev".to_owned(),
        ));
    }
    if expected.credentials() {
        want_selected.push(("Secret".to_owned(), SECRET.to_owned()));
    }
    want_selected.sort();
    assert_eq!(
        selected, want_selected,
        "{name}: objects labelled {CONTROLLER}"
    );

    // The credentials Secret: exactly the Redis username/password that are set.
    let secrets: Vec<&Value> = of_kind("Secret")
        .into_iter()
        .filter(|v| name_of(v) == SECRET)
        .collect();
    if expected.credentials() {
        let Object::Secret(secret) = typed(&values, "Secret", SECRET, name) else {
            panic!("{name}: Secret")
        };
        assert_eq!(
            secret.metadata.namespace.as_deref(),
            Some(expected.namespace.as_str())
        );
        let data = secret.string_data.clone().unwrap_or_default();
        assert_eq!(
            data.get("username"),
            expected.username.as_ref(),
            "{name}: username"
        );
        assert_eq!(
            data.get("password"),
            expected.password.as_ref(),
            "{name}: password"
        );
        assert_eq!(
            data.len(),
            usize::from(expected.username.is_some()) + usize::from(expected.password.is_some())
        );
    } else {
        assert!(
            secrets.is_empty(),
            "{name}: no Secret without Redis credentials"
        );
    }

    // One WPA per enabled worker, on the queues its rendered command consumes.
    let wpas = of_kind("WorkerPodAutoScaler");
    let mut scaled = BTreeSet::new();
    for worker in ["lms-worker", "cms-worker"] {
        let (enabled, min, max, target) = worker_settings(settings, worker);
        let found: Vec<&&Value> = wpas.iter().filter(|w| name_of(w) == worker).collect();
        if !enabled {
            assert!(found.is_empty(), "{name}: {worker} is not scaled");
            continue;
        }
        assert_eq!(found.len(), 1, "{name}: one WPA for {worker}");
        let wpa = *found[0];
        scaled.insert(worker);
        let deployment = values
            .iter()
            .find(|v| kind_of(v) == "Deployment" && name_of(v) == worker)
            .unwrap_or_else(|| panic!("{name}: Tutor renders {worker}"));
        assert_eq!(
            deployment["metadata"]["namespace"],
            expected.namespace.as_str(),
            "{name}: {worker} is in the WPA's namespace"
        );
        let args: Vec<String> = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
            .as_array()
            .expect("worker args")
            .iter()
            .map(|a| a.as_str().expect("arg").to_owned())
            .collect();
        let queues = check_wpa(wpa, worker, &crd, &expected, name);
        let setting = format!("WPA_{}_QUEUES", worker.to_uppercase().replace('-', "_"));
        let want: Vec<String> = match settings[&setting].as_array() {
            Some(list) => list
                .iter()
                .map(|q| q.as_str().expect("queue").to_owned())
                .collect(),
            None => command_queues(&args),
        };
        assert_eq!(queues, want, "{name}: {worker}'s queues");
        let spec = &wpa["spec"];
        assert_eq!(spec["minReplicas"], min, "{name}: {worker} min");
        assert_eq!(spec["maxReplicas"], max, "{name}: {worker} max");
        assert_eq!(
            spec["targetMessagesPerWorker"], target,
            "{name}: {worker} target"
        );
        assert_eq!(spec["maxDisruption"], "1", "{name}: {worker} maxDisruption");
    }
    assert_eq!(wpas.len(), scaled.len(), "{name}: no other WPA");

    // Never two autoscalers on one Deployment; pod-autoscaling's VPAs only recommend.
    let hpa_targets: BTreeSet<&str> = of_kind("HorizontalPodAutoscaler")
        .iter()
        .filter_map(|h| h["spec"]["scaleTargetRef"]["name"].as_str())
        .collect();
    for worker in &scaled {
        assert!(
            !hpa_targets.contains(worker),
            "{name}: an HPA and a WPA both scale {worker}"
        );
    }
    for vpa in of_kind("VerticalPodAutoscaler") {
        assert_eq!(
            vpa["spec"]["updatePolicy"]["updateMode"],
            "Off",
            "{name}: VPA {} only recommends",
            name_of(vpa)
        );
    }
    if expected.pod_autoscaling {
        // pod-autoscaling is active: the web Deployments keep their HPAs, and a worker no
        // WPA scales gets its HPA back.
        for web in ["lms", "cms"] {
            assert!(
                hpa_targets.contains(web),
                "{name}: pod-autoscaling's HPA on {web}"
            );
        }
        for worker in ["lms-worker", "cms-worker"] {
            if !scaled.contains(worker) {
                assert!(
                    hpa_targets.contains(worker),
                    "{name}: pod-autoscaling scales {worker}, which no WPA does"
                );
            }
        }
    } else {
        assert!(
            hpa_targets.is_empty(),
            "{name}: no HPA without pod-autoscaling"
        );
    }
}

#[test]
fn tutor_plugin_renders_valid_wpas_and_controller() {
    let out = render_with("check-tutor.sh");
    let mut names: Vec<String> = fs::read_dir(out.path())
        .expect("render output")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, SCENARIOS, "scenarios rendered");
    for name in &names {
        check_scenario(&out.path().join(name), name);
    }

    // The settings that matter, stated once more without the helpers above.
    let default: Vec<Value> =
        serde_saphyr::from_multiple(&read(&out.path().join("default/manifests.yaml")))
            .expect("default manifests");
    let lms = default
        .iter()
        .find(|v| kind_of(v) == "WorkerPodAutoScaler" && name_of(v) == "lms-worker")
        .expect("lms-worker WPA");
    let want: Vec<String> = LMS_QUEUES
        .iter()
        .map(|q| format!("redis://redis.openedx.svc.cluster.local:6379/0/{q}"))
        .collect();
    assert_eq!(
        lms["spec"]["queueURIs"],
        json!(want),
        "lms-worker: all three LMS queues"
    );
    let cms = default
        .iter()
        .find(|v| kind_of(v) == "WorkerPodAutoScaler" && name_of(v) == "cms-worker")
        .expect("cms-worker WPA");
    let want: Vec<String> = CMS_QUEUES
        .iter()
        .map(|q| format!("redis://redis.openedx.svc.cluster.local:6379/0/{q}"))
        .collect();
    assert_eq!(
        cms["spec"]["queueURIs"],
        json!(want),
        "cms-worker: all three CMS queues"
    );

    let changed: Vec<Value> = serde_saphyr::from_multiple(&read(
        &out.path().join("queues-from-command/manifests.yaml"),
    ))
    .expect("queues-from-command manifests");
    let lms = changed
        .iter()
        .find(|v| kind_of(v) == "WorkerPodAutoScaler" && name_of(v) == "lms-worker")
        .expect("lms-worker WPA");
    assert_eq!(
        lms["spec"]["queueURIs"].as_array().map(Vec::len),
        Some(2),
        "a plugin that changes lms-worker's --queues changes the WPA"
    );
    let worker = changed
        .iter()
        .find(|v| kind_of(v) == "Deployment" && name_of(v) == "lms-worker")
        .expect("lms-worker Deployment");
    assert!(
        worker["spec"]["template"]["spec"]["containers"][0]["args"]
            .as_array()
            .is_some_and(|args| args.iter().any(|a| a == "-Q")),
        "queues-from-command: the worker's command uses the `-Q LIST` form"
    );
}

/// The plugin's version, image tag and CRD copy follow the crate (no rendering needed).
#[test]
fn tutor_plugin_follows_the_crate() {
    let plugin = repo().join("integrations/tutor");
    let version = env!("CARGO_PKG_VERSION");
    let pyproject = read(&plugin.join("pyproject.toml"));
    assert!(
        pyproject
            .lines()
            .any(|l| l.trim() == format!("version = \"{version}\"")),
        "integrations/tutor/pyproject.toml: version = \"{version}\""
    );
    assert!(
        read(&plugin.join("tutorwpa/__about__.py"))
            .contains(&format!("__version__ = \"{version}\"")),
        "tutorwpa/__about__.py: __version__ = \"{version}\""
    );
    // Every setting in the plugin's DEFAULTS is documented in its README's table.
    let source = read(&plugin.join("tutorwpa/plugin.py"));
    let defaults = source
        .split("DEFAULTS: dict[str, t.Any] = {")
        .nth(1)
        .and_then(|rest| rest.split("\n}").next())
        .expect("plugin.py defines DEFAULTS");
    let readme = read(&plugin.join("README.md"));
    let mut documented = 0;
    for line in defaults.lines() {
        let Some(key) = line
            .trim()
            .strip_prefix('"')
            .and_then(|l| l.split('"').next())
        else {
            continue;
        };
        if key == "VERSION" {
            continue; // internal: the image tag default
        }
        assert!(
            readme.contains(&format!("| `WPA_{key}` |")),
            "integrations/tutor/README.md documents WPA_{key}"
        );
        documented += 1;
    }
    assert!(documented >= 16, "found {documented} settings in DEFAULTS");
    assert!(
        read(&plugin.join("tutorwpa/templates/wpa/k8s/crd.yml"))
            == read(&repo().join("artifacts/crd.yaml")),
        "integrations/tutor/tutorwpa/templates/wpa/k8s/crd.yml differs from artifacts/crd.yaml: run hack/sync-crd.sh"
    );
}
