//! Shared by the manifest tests: parses multi-document YAML (serde-saphyr) into
//! typed Kubernetes objects (k8s-openapi) and checks that nothing was lost on
//! the way, so a misspelt or misplaced field fails the test instead of being
//! silently ignored. Custom resources (WorkerPodAutoScaler, ServiceMonitor,
//! VerticalPodAutoscaler) stay `serde_json::Value`.

#![allow(dead_code)] // each test binary uses a different part of this module

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, Namespace, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// One parsed document.
#[derive(Debug, Clone)]
pub enum Object {
    Deployment(Box<Deployment>),
    Service(Box<Service>),
    ServiceAccount(Box<ServiceAccount>),
    Secret(Box<Secret>),
    ConfigMap(Box<ConfigMap>),
    Namespace(Box<Namespace>),
    ClusterRole(Box<ClusterRole>),
    ClusterRoleBinding(Box<ClusterRoleBinding>),
    Role(Box<Role>),
    RoleBinding(Box<RoleBinding>),
    Crd(Box<CustomResourceDefinition>),
    /// A custom resource: kind and the whole document.
    Custom(String, Value),
}

impl Object {
    pub fn kind(&self) -> &str {
        match self {
            Object::Deployment(_) => "Deployment",
            Object::Service(_) => "Service",
            Object::ServiceAccount(_) => "ServiceAccount",
            Object::Secret(_) => "Secret",
            Object::ConfigMap(_) => "ConfigMap",
            Object::Namespace(_) => "Namespace",
            Object::ClusterRole(_) => "ClusterRole",
            Object::ClusterRoleBinding(_) => "ClusterRoleBinding",
            Object::Role(_) => "Role",
            Object::RoleBinding(_) => "RoleBinding",
            Object::Crd(_) => "CustomResourceDefinition",
            Object::Custom(kind, _) => kind,
        }
    }
}

/// The repository's root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Runs a render script of hack/ (`bash hack/<script> --out DIR`) into a temporary folder
/// and returns the folder; panics with the script's output when it fails.
pub fn render_with(script: &str) -> tempfile::TempDir {
    let out = tempfile::tempdir().expect("temp dir");
    let output = Command::new("bash")
        .arg(repo().join("hack").join(script))
        .arg("--out")
        .arg(out.path())
        .output()
        .unwrap_or_else(|e| panic!("run hack/{script}: {e}"));
    assert!(
        output.status.success(),
        "hack/{script} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    out
}

/// The controller Deployment without leader election: one replica, replaced rather than
/// rolled (two must never overlap), running the image of this crate's version.
pub fn assert_single_controller(deployment: &Deployment, origin: &str) {
    let spec = deployment.spec.as_ref().expect("spec");
    assert_eq!(spec.replicas, Some(1), "{origin}: one controller");
    assert_eq!(
        spec.strategy.as_ref().and_then(|s| s.type_.as_deref()),
        Some("Recreate"),
        "{origin}: one controller without leader election must never overlap with another"
    );
    let container = only_container(deployment);
    assert_eq!(
        container.image.as_deref(),
        Some(
            format!(
                "ghcr.io/worker-pod-autoscaler/workerpodautoscaler:{}",
                env!("CARGO_PKG_VERSION")
            )
            .as_str()
        ),
        "{origin}: image tag follows the crate version"
    );
}

/// Splits YAML text into documents and parses each one into its typed object.
/// `origin` names the source in error messages.
pub fn parse_documents(text: &str, origin: &str) -> Result<Vec<Object>, String> {
    let values: Vec<Value> =
        serde_saphyr::from_multiple(text).map_err(|e| format!("{origin}: not valid YAML: {e}"))?;
    parse_values(values, origin)
}

/// Parses already loaded documents into their typed objects (see [`parse_documents`]).
pub fn parse_values(values: Vec<Value>, origin: &str) -> Result<Vec<Object>, String> {
    let mut objects = Vec::new();
    for (i, value) in values.into_iter().enumerate() {
        if value.is_null() {
            continue;
        }
        let kind = value
            .get("kind")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("{origin}: document {i} has no kind"))?
            .to_owned();
        let at = format!("{origin}: document {i} ({kind})");
        let object = match kind.as_str() {
            "Deployment" => Object::Deployment(typed(&value, &at)?),
            "Service" => Object::Service(typed(&value, &at)?),
            "ServiceAccount" => Object::ServiceAccount(typed(&value, &at)?),
            "Secret" => Object::Secret(typed(&value, &at)?),
            "ConfigMap" => Object::ConfigMap(typed(&value, &at)?),
            "Namespace" => Object::Namespace(typed(&value, &at)?),
            "ClusterRole" => Object::ClusterRole(typed(&value, &at)?),
            "ClusterRoleBinding" => Object::ClusterRoleBinding(typed(&value, &at)?),
            "Role" => Object::Role(typed(&value, &at)?),
            "RoleBinding" => Object::RoleBinding(typed(&value, &at)?),
            "CustomResourceDefinition" => Object::Crd(typed(&value, &at)?),
            _ => Object::Custom(kind, value),
        };
        objects.push(object);
    }
    Ok(objects)
}

/// Deserializes into `T` and serializes back: the result must equal the input,
/// otherwise a field was unknown to the Kubernetes type (a typo, wrong nesting).
fn typed<T: DeserializeOwned + Serialize>(value: &Value, at: &str) -> Result<Box<T>, String> {
    let object: T = serde_json::from_value(value.clone())
        .map_err(|e| format!("{at}: not a valid object: {e}"))?;
    let back = serde_json::to_value(&object).map_err(|e| format!("{at}: {e}"))?;
    let lost = lost_paths(value, &back, String::new());
    if !lost.is_empty() {
        return Err(format!(
            "{at}: fields unknown to the Kubernetes type: {lost:?}"
        ));
    }
    Ok(Box::new(object))
}

/// Paths present in `original` but missing or different in `round_tripped`.
fn lost_paths(original: &Value, round_tripped: &Value, path: String) -> Vec<String> {
    match (original, round_tripped) {
        (Value::Object(a), Value::Object(b)) => a
            .iter()
            .flat_map(|(k, v)| match b.get(k) {
                Some(w) => lost_paths(v, w, format!("{path}.{k}")),
                // An explicit null or empty map is the same as leaving it out.
                None if v.is_null() || v.as_object().is_some_and(|m| m.is_empty()) => vec![],
                None => vec![format!("{path}.{k}")],
            })
            .collect(),
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => a
            .iter()
            .zip(b)
            .enumerate()
            .flat_map(|(i, (v, w))| lost_paths(v, w, format!("{path}[{i}]")))
            .collect(),
        (Value::Number(a), Value::Number(b)) if a.as_f64() == b.as_f64() => vec![],
        (a, b) if a == b => vec![],
        _ => vec![path],
    }
}

pub fn deployments(objects: &[Object]) -> Vec<&Deployment> {
    objects
        .iter()
        .filter_map(|o| match o {
            Object::Deployment(d) => Some(d.as_ref()),
            _ => None,
        })
        .collect()
}

pub fn customs<'a>(objects: &'a [Object], kind: &str) -> Vec<&'a Value> {
    objects
        .iter()
        .filter_map(|o| match o {
            Object::Custom(k, v) if k == kind => Some(v),
            _ => None,
        })
        .collect()
}

pub fn count_kind(objects: &[Object], kind: &str) -> usize {
    objects.iter().filter(|o| o.kind() == kind).count()
}

/// The only container of a single-container Deployment.
pub fn only_container(deployment: &Deployment) -> &Container {
    let spec = deployment.spec.as_ref().expect("Deployment has a spec");
    let pod = spec
        .template
        .spec
        .as_ref()
        .expect("pod template has a spec");
    assert_eq!(pod.containers.len(), 1, "one container expected");
    &pod.containers[0]
}

/// Asserts the hardening every controller Deployment must have.
pub fn assert_hardened_controller(deployment: &Deployment, origin: &str) {
    let pod = deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("pod spec");
    let pod_sc = pod.security_context.as_ref().expect("pod securityContext");
    assert_eq!(
        pod_sc.run_as_non_root,
        Some(true),
        "{origin}: pod runAsNonRoot"
    );
    assert_eq!(pod_sc.run_as_user, Some(65532), "{origin}: pod runAsUser");
    let c = only_container(deployment);
    let sc = c
        .security_context
        .as_ref()
        .expect("container securityContext");
    assert_eq!(sc.run_as_non_root, Some(true), "{origin}: runAsNonRoot");
    assert_eq!(sc.run_as_user, Some(65532), "{origin}: runAsUser");
    assert_eq!(
        sc.read_only_root_filesystem,
        Some(true),
        "{origin}: readOnlyRootFilesystem"
    );
    assert_eq!(
        sc.allow_privilege_escalation,
        Some(false),
        "{origin}: allowPrivilegeEscalation"
    );
    assert_eq!(
        sc.capabilities.as_ref().and_then(|c| c.drop.clone()),
        Some(vec!["ALL".to_owned()]),
        "{origin}: capabilities.drop"
    );
    assert_eq!(
        sc.seccomp_profile.as_ref().map(|p| p.type_.as_str()),
        Some("RuntimeDefault"),
        "{origin}: seccompProfile"
    );
    let probe_path = |p: Option<&k8s_openapi::api::core::v1::Probe>| {
        p.and_then(|p| p.http_get.as_ref())
            .and_then(|h| h.path.clone())
    };
    assert_eq!(
        probe_path(c.liveness_probe.as_ref()).as_deref(),
        Some("/healthz"),
        "{origin}: liveness"
    );
    assert_eq!(
        probe_path(c.readiness_probe.as_ref()).as_deref(),
        Some("/readyz"),
        "{origin}: readiness"
    );
    let resources = c.resources.as_ref().expect("resources");
    for (what, list) in [
        ("requests", &resources.requests),
        ("limits", &resources.limits),
    ] {
        let list = list
            .as_ref()
            .unwrap_or_else(|| panic!("{origin}: resources.{what} missing"));
        assert!(
            list.contains_key("cpu") && list.contains_key("memory"),
            "{origin}: resources.{what} needs cpu and memory"
        );
    }
    let port_names: BTreeSet<_> = c
        .ports
        .iter()
        .flatten()
        .filter_map(|p| p.name.as_deref())
        .collect();
    assert!(
        port_names.contains("metrics"),
        "{origin}: a port named metrics"
    );
}

/// Asserts no wildcard and no write access beyond what the controller needs.
pub fn assert_least_privilege(rules: &[PolicyRule], origin: &str) {
    for rule in rules {
        let resources = rule.resources.clone().unwrap_or_default();
        assert!(
            !rule.verbs.iter().any(|v| v == "*"),
            "{origin}: wildcard verb in {rule:?}"
        );
        assert!(
            !resources.iter().any(|r| r == "*"),
            "{origin}: wildcard resource in {rule:?}"
        );
        let writes = rule.verbs.iter().any(|v| {
            matches!(
                v.as_str(),
                "update" | "patch" | "create" | "delete" | "deletecollection"
            )
        });
        if writes {
            for r in &resources {
                assert!(
                    r.ends_with("/scale")
                        || r == "workerpodautoscalers/status"
                        || r == "events"
                        || r == "leases"
                        || (r == "pods"
                            && rule.verbs.iter().all(|v| v != "update" && v != "create")),
                    "{origin}: write access to {r} is more than the controller needs"
                );
            }
        }
        assert!(
            !rule
                .verbs
                .iter()
                .any(|v| v == "delete" || v == "deletecollection"),
            "{origin}: the controller never deletes: {rule:?}"
        );
    }
}

/// True when some rule allows `verb` on `group`/`resource`.
pub fn allows(rules: &[PolicyRule], group: &str, resource: &str, verb: &str) -> bool {
    rules.iter().any(|r| {
        r.api_groups.iter().flatten().any(|g| g == group)
            && r.resources.iter().flatten().any(|x| x == resource)
            && r.verbs.iter().any(|v| v == verb)
    })
}

/// Asserts the rules the controller needs on WPAs, workloads and events.
pub fn assert_controller_rules(rules: &[PolicyRule], origin: &str) {
    for verb in ["get", "list", "watch"] {
        assert!(
            allows(rules, "k8s.practo.dev", "workerpodautoscalers", verb),
            "{origin}: wpa {verb}"
        );
        assert!(
            allows(rules, "apps", "deployments", verb),
            "{origin}: deployments {verb}"
        );
        assert!(
            allows(rules, "apps", "replicasets", verb),
            "{origin}: replicasets {verb}"
        );
    }
    for verb in ["update", "patch"] {
        assert!(
            allows(rules, "k8s.practo.dev", "workerpodautoscalers/status", verb),
            "{origin}: status {verb}"
        );
    }
    for resource in [
        "deployments/scale",
        "replicasets/scale",
        "statefulsets/scale",
    ] {
        for verb in ["get", "patch", "update"] {
            assert!(
                allows(rules, "apps", resource, verb),
                "{origin}: {resource} {verb}"
            );
        }
    }
    // Worker-aware scale-in: exactly get/list/watch/patch on pods (the deletion cost).
    for verb in ["get", "list", "watch", "patch"] {
        assert!(allows(rules, "", "pods", verb), "{origin}: pods {verb}");
    }
    for verb in ["create", "update", "delete"] {
        assert!(
            !allows(rules, "", "pods", verb),
            "{origin}: pods {verb} is too much"
        );
    }
    for group in ["", "events.k8s.io"] {
        for verb in ["create", "patch"] {
            assert!(
                allows(rules, group, "events", verb),
                "{origin}: events ({group}) {verb}"
            );
        }
    }
}

/// Checks `value` against a CRD structural schema: types, known fields,
/// required fields, enums, numeric bounds, array and string lengths and
/// int-or-string. (CEL rules are the CRD tests' business.)
pub fn check_schema(value: &Value, schema: &JSONSchemaProps, path: &str, errors: &mut Vec<String>) {
    if value.is_null() {
        if schema.nullable != Some(true) {
            errors.push(format!("{path}: null is not allowed"));
        }
        return;
    }
    if schema.x_kubernetes_int_or_string == Some(true) {
        if !(value.is_i64() || value.is_u64() || value.is_string()) {
            errors.push(format!("{path}: expected an integer or a string"));
        }
        return;
    }
    if let Some(allowed) = &schema.enum_
        && !allowed.iter().any(|a| a.0 == *value)
    {
        errors.push(format!("{path}: {value} is not one of the allowed values"));
    }
    match schema.type_.as_deref() {
        Some("object") => {
            let Some(map) = value.as_object() else {
                errors.push(format!("{path}: expected an object"));
                return;
            };
            for required in schema.required.iter().flatten() {
                if !map.contains_key(required) {
                    errors.push(format!("{path}: missing required field {required}"));
                }
            }
            let properties = schema.properties.clone().unwrap_or_default();
            for (key, item) in map {
                match properties.get(key) {
                    Some(sub) => check_schema(item, sub, &format!("{path}.{key}"), errors),
                    None if schema.x_kubernetes_preserve_unknown_fields == Some(true)
                        || schema.additional_properties.is_some() => {}
                    None => errors.push(format!("{path}.{key}: unknown field")),
                }
            }
        }
        Some("array") => {
            let Some(items) = value.as_array() else {
                errors.push(format!("{path}: expected an array"));
                return;
            };
            let len = items.len() as i64;
            if schema.min_items.is_some_and(|m| len < m)
                || schema.max_items.is_some_and(|m| len > m)
            {
                errors.push(format!("{path}: {len} items is out of bounds"));
            }
            if let Some(JSONSchemaPropsOrArray::Schema(sub)) = &schema.items {
                for (i, item) in items.iter().enumerate() {
                    check_schema(item, sub, &format!("{path}[{i}]"), errors);
                }
            }
        }
        Some("integer") if !(value.is_i64() || value.is_u64()) => {
            errors.push(format!("{path}: expected an integer"))
        }
        Some("number") if !value.is_number() => errors.push(format!("{path}: expected a number")),
        Some("string") => match value.as_str() {
            None => errors.push(format!("{path}: expected a string")),
            Some(text) => {
                let len = text.chars().count() as i64;
                if schema.min_length.is_some_and(|m| len < m)
                    || schema.max_length.is_some_and(|m| len > m)
                {
                    errors.push(format!("{path}: length {len} is out of bounds"));
                }
            }
        },
        Some("boolean") if !value.is_boolean() => {
            errors.push(format!("{path}: expected a boolean"))
        }
        _ => {}
    }
    if let Some(n) = value.as_f64()
        && (schema.minimum.is_some_and(|m| n < m) || schema.maximum.is_some_and(|m| n > m))
    {
        errors.push(format!("{path}: {n} is out of bounds"));
    }
}
