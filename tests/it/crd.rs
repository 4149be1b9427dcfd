//! The CRD: drift against artifacts/crd.yaml, practo manifest compatibility, and the schema's
//! validation rules evaluated locally with kube's CEL engine.

use kube::CustomResourceExt;
use kube::core::cel::Validator;
use serde_json::{Value, json};
use wpa::crd::{WorkerPodAutoScaler, WorkerPodAutoScalerStatus};

fn schema() -> Value {
    let crd = WorkerPodAutoScaler::crd();
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .expect("the CRD has a schema");
    serde_json::to_value(schema).expect("schema serializes")
}

fn wpa(spec: Value) -> Value {
    json!({
        "apiVersion": "k8s.practo.dev/v1",
        "kind": "WorkerPodAutoScaler",
        "metadata": {"name": "example-wpa", "namespace": "default"},
        "spec": spec,
    })
}

/// CEL rule failures for a WPA with this spec (empty = accepted).
fn cel_errors(spec: Value) -> Vec<String> {
    match Validator::new().validate(&schema(), &wpa(spec), None) {
        Ok(()) => Vec::new(),
        Err(errors) => errors.iter().map(|e| e.to_string()).collect(),
    }
}

fn base_spec() -> Value {
    json!({
        "minReplicas": 0,
        "maxReplicas": 30,
        "targetMessagesPerWorker": 150,
        "deploymentName": "example-deployment",
        "queueURI": "https://sqs.ap-south-1.amazonaws.com/82910/sms-sender",
    })
}

fn with(mut spec: Value, key: &str, value: Value) -> Value {
    spec[key] = value;
    spec
}

fn without(mut spec: Value, key: &str) -> Value {
    spec.as_object_mut().expect("object").remove(key);
    spec
}

#[test]
fn artifacts_crd_yaml_is_the_generated_crd() {
    let generated = wpa::crd::crd_yaml().expect("CRD serializes");
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/artifacts/crd.yaml");
    let committed = std::fs::read_to_string(path).expect("artifacts/crd.yaml exists");
    assert_eq!(
        committed, generated,
        "artifacts/crd.yaml is stale: run `cargo run -- crd > artifacts/crd.yaml`"
    );
}

#[test]
fn crd_names_match_practo() {
    let crd = WorkerPodAutoScaler::crd();
    assert_eq!(
        crd.metadata.name.as_deref(),
        Some("workerpodautoscalers.k8s.practo.dev")
    );
    assert_eq!(crd.spec.group, "k8s.practo.dev");
    assert_eq!(crd.spec.scope, "Namespaced");
    assert_eq!(crd.spec.names.kind, "WorkerPodAutoScaler");
    assert_eq!(crd.spec.names.plural, "workerpodautoscalers");
    assert_eq!(
        crd.spec.names.short_names,
        Some(vec!["wpa".to_string(), "wpas".to_string()])
    );
    let version = &crd.spec.versions[0];
    assert_eq!(version.name, "v1");
    assert!(version.served && version.storage);
    let subresources = version.subresources.as_ref().expect("subresources");
    assert!(subresources.status.is_some(), "status subresource");
    let columns: Vec<&str> = version
        .additional_printer_columns
        .as_ref()
        .expect("printer columns")
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    for wanted in [
        "Min", "Max", "Messages", "Current", "Desired", "Decision", "Age",
    ] {
        assert!(
            columns.contains(&wanted),
            "missing printer column {wanted}: {columns:?}"
        );
    }
}

#[test]
fn practo_readme_manifest_is_accepted_as_is() {
    let manifest = r#"
apiVersion: k8s.practo.dev/v1
kind: WorkerPodAutoScaler
metadata:
  name: example-wpa
spec:
  minReplicas: 0
  maxReplicas: 30
  targetMessagesPerWorker: 150
  deploymentName: example-deployment
  queueURI: https://sqs.ap-south-1.amazonaws.com/82910/sms-sender
"#;
    let parsed: WorkerPodAutoScaler = serde_saphyr::from_str(manifest).expect("parses");
    assert_eq!(parsed.spec.min_replicas, 0);
    assert_eq!(parsed.spec.max_replicas, 30);
    assert_eq!(parsed.spec.target_messages_per_worker, 150);
    assert_eq!(
        parsed.spec.deployment_name.as_deref(),
        Some("example-deployment")
    );
    let value = serde_json::to_value(&parsed).expect("serializes");
    assert_eq!(cel_errors(value["spec"].clone()), Vec::<String>::new());
}

#[test]
fn practo_manifest_with_every_field_and_nulls_is_accepted() {
    let manifest = r#"
apiVersion: k8s.practo.dev/v1
kind: WorkerPodAutoScaler
metadata:
  name: sender
  namespace: workers
spec:
  minReplicas: 1
  maxReplicas: 10
  maxDisruption: "10%"
  targetMessagesPerWorker: 40
  secondsToProcessOneJob: 0.03
  replicaSetName: sender-rs
  queueURI: beanstalk://beanstalkd.default:11300/emails
"#;
    let parsed: WorkerPodAutoScaler = serde_saphyr::from_str(manifest).expect("parses");
    assert_eq!(parsed.spec.seconds_to_process_one_job, Some(0.03));
    assert_eq!(parsed.spec.replica_set_name.as_deref(), Some("sender-rs"));
    let spec = serde_json::to_value(&parsed.spec).expect("serializes");
    assert_eq!(cel_errors(spec), Vec::<String>::new());

    let nulls = r#"
apiVersion: k8s.practo.dev/v1
kind: WorkerPodAutoScaler
metadata:
  name: sender
spec:
  minReplicas: 1
  maxReplicas: 10
  maxDisruption: null
  secondsToProcessOneJob: null
  targetMessagesPerWorker: 40
  deploymentName: sender
  queueURI: https://sqs.us-east-1.amazonaws.com/1/q
"#;
    let parsed: WorkerPodAutoScaler = serde_saphyr::from_str(nulls).expect("nulls parse");
    assert_eq!(parsed.spec.max_disruption, None);
    assert_eq!(parsed.spec.seconds_to_process_one_job, None);
}

#[test]
fn practo_status_field_names_are_kept() {
    let status = WorkerPodAutoScalerStatus {
        current_messages: 12,
        current_replicas: 2,
        available_replicas: 1,
        desired_replicas: 3,
        ..Default::default()
    };
    let value = serde_json::to_value(&status).expect("serializes");
    assert_eq!(value["CurrentMessages"], 12);
    assert_eq!(value["CurrentReplicas"], 2);
    assert_eq!(value["AvailableReplicas"], 1);
    assert_eq!(value["DesiredReplicas"], 3);
    // A status written by practo's controller reads back.
    let practo: WorkerPodAutoScalerStatus = serde_json::from_value(json!({
        "CurrentMessages": 5, "CurrentReplicas": 1, "AvailableReplicas": 1,
        "DesiredReplicas": 1, "LastScaleTime": "2024-05-01T10:00:00Z"
    }))
    .expect("practo status parses");
    assert_eq!(practo.current_messages, 5);
    assert!(practo.last_scale_time.is_some());
}

#[test]
fn min_greater_than_max_is_refused() {
    let errors = cel_errors(with(base_spec(), "minReplicas", json!(31)));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("minReplicas must not exceed maxReplicas"),
        "{errors:?}"
    );
    assert!(cel_errors(with(base_spec(), "minReplicas", json!(30))).is_empty());
}

#[test]
fn exactly_one_scale_target_is_required() {
    let none = without(base_spec(), "deploymentName");
    assert!(cel_errors(none.clone())[0].contains("exactly one of"));
    let two = with(base_spec(), "replicaSetName", json!("rs"));
    assert!(cel_errors(two)[0].contains("exactly one of"));
    let target_ref = with(
        none.clone(),
        "scaleTargetRef",
        json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "workers"}),
    );
    assert!(cel_errors(target_ref.clone()).is_empty());
    let ref_and_name = with(target_ref, "deploymentName", json!("d"));
    assert!(cel_errors(ref_and_name)[0].contains("exactly one of"));
    // An empty name does not count as a target (Go's zero value in practo's types).
    let empty_plus_rs = with(
        with(none, "deploymentName", json!("")),
        "replicaSetName",
        json!("rs"),
    );
    assert!(cel_errors(empty_plus_rs).is_empty());
}

#[test]
fn max_disruption_format_is_checked() {
    for good in [
        json!("10%"),
        json!("0%"),
        json!("100%"),
        json!("2"),
        json!(2),
        json!(0),
    ] {
        assert!(
            cel_errors(with(base_spec(), "maxDisruption", good.clone())).is_empty(),
            "{good} should be accepted"
        );
    }
    for bad in [
        json!("101%"),
        json!("-1"),
        json!(-1),
        json!("ten"),
        json!("10 %"),
        json!("%"),
    ] {
        let errors = cel_errors(with(base_spec(), "maxDisruption", bad.clone()));
        assert!(
            errors.iter().any(|e| e.contains("maxDisruption")),
            "{bad} should be refused, got {errors:?}"
        );
    }
}

#[test]
fn queue_uri_scheme_is_checked() {
    for good in [
        "https://sqs.ap-south-1.amazonaws.com/82910/q",
        "http://127.0.0.1:5001/000000000000/q",
        "amqp://rabbit:5672/%2F/celery",
        "amqps://rabbit/vh/q",
        "redis://redis:6379/0/celery",
        "rediss://redis/1/q",
        "beanstalk://beanstalkd:11300/tube",
        "https+json://metrics.example/queue",
        "http+json://127.0.0.1:8080/q",
    ] {
        assert!(
            cel_errors(with(base_spec(), "queueURI", json!(good))).is_empty(),
            "{good}"
        );
    }
    for bad in ["sqs-queue", "ftp://x/y", "kafka://broker/topic", ""] {
        let errors = cel_errors(with(base_spec(), "queueURI", json!(bad)));
        assert!(
            errors.iter().any(|e| e.contains("queueURI")),
            "{bad}: {errors:?}"
        );
    }
}

#[test]
fn exactly_one_of_queue_uri_and_queue_uris() {
    let lms = json!([
        "redis://redis:6379/0/edx.lms.core.default",
        "redis://redis:6379/0/edx.lms.core.high",
        "redis://redis:6379/0/edx.lms.core.high_mem",
    ]);
    let several = with(without(base_spec(), "queueURI"), "queueURIs", lms.clone());
    assert_eq!(cel_errors(several.clone()), Vec::<String>::new());
    let parsed: wpa::crd::WorkerPodAutoScalerSpec =
        serde_json::from_value(several.clone()).expect("spec parses");
    assert_eq!(parsed.queue_uris().expect("queues").len(), 3);

    let both = with(base_spec(), "queueURIs", lms);
    let neither = without(base_spec(), "queueURI");
    let empty_list = with(neither.clone(), "queueURIs", json!([]));
    for (what, spec) in [("both", both), ("neither", neither), ("empty", empty_list)] {
        let errors = cel_errors(spec.clone());
        assert!(
            errors
                .iter()
                .any(|e| e.contains("exactly one of queueURI and queueURIs")),
            "{what}: {errors:?}"
        );
        // The controller's own check agrees (an API server without CEL).
        let parsed: wpa::crd::WorkerPodAutoScalerSpec =
            serde_json::from_value(spec).expect("spec parses");
        assert!(parsed.queue_uris().is_err(), "{what}");
    }

    let bad_scheme = with(
        without(base_spec(), "queueURI"),
        "queueURIs",
        json!(["redis://redis/0/a", "kafka://broker/topic"]),
    );
    let errors = cel_errors(bad_scheme);
    assert!(
        errors.iter().any(|e| e.contains("every queueURIs entry")),
        "{errors:?}"
    );
    let schema = schema();
    let list = &schema["properties"]["spec"]["properties"]["queueURIs"];
    assert_eq!(list["maxItems"], json!(16));
    assert_eq!(list["minItems"], json!(1));
    assert_eq!(list["x-kubernetes-list-type"], "set");
    assert_eq!(list["items"]["maxLength"], json!(2048));
    // Repeats: the API server refuses them for a list of type set; the controller too.
    let twice: wpa::crd::WorkerPodAutoScalerSpec = serde_json::from_value(with(
        without(base_spec(), "queueURI"),
        "queueURIs",
        json!(["redis://r/0/a", "redis://r/0/a"]),
    ))
    .expect("spec parses");
    assert!(twice.queue_uris().unwrap_err().contains("repeats"));
}

#[test]
fn openapi_constraints_cover_the_numeric_bounds() {
    let schema = schema();
    let spec = &schema["properties"]["spec"];
    let required: Vec<&str> = spec["required"]
        .as_array()
        .expect("required list")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for field in ["minReplicas", "maxReplicas", "targetMessagesPerWorker"] {
        assert!(required.contains(&field), "{field} must be required");
    }
    // One of the two queue fields, which a CEL rule enforces.
    assert!(!required.contains(&"queueURI") && !required.contains(&"queueURIs"));
    let props = &spec["properties"];
    assert_eq!(props["minReplicas"]["minimum"], json!(0.0));
    assert_eq!(props["maxReplicas"]["minimum"], json!(1.0));
    assert_eq!(props["targetMessagesPerWorker"]["minimum"], json!(1.0));
    assert_eq!(props["secondsToProcessOneJob"]["minimum"], json!(0.0));
    assert_eq!(props["pollIntervalSeconds"]["minimum"], json!(1.0));
    let policy = &props["behavior"]["properties"]["scaleUp"]["properties"]["policies"]["items"];
    assert_eq!(policy["properties"]["value"]["minimum"], json!(1.0));
    assert_eq!(
        policy["properties"]["periodSeconds"]["maximum"],
        json!(1800.0)
    );
    assert_eq!(
        policy["properties"]["type"]["enum"],
        json!(["Pods", "Percent"])
    );
}

/// Every free-form string in the spec and its paths, found by walking the schema.
fn unbounded_strings(schema: &Value, path: &str, found: &mut Vec<String>) {
    let is_string = schema["type"] == "string" || schema["x-kubernetes-int-or-string"] == true;
    if is_string && schema.get("enum").is_none() && schema.get("maxLength").is_none() {
        found.push(path.to_string());
    }
    if let Some(props) = schema["properties"].as_object() {
        for (name, child) in props {
            unbounded_strings(child, &format!("{path}.{name}"), found);
        }
    }
    if schema.get("items").is_some() {
        unbounded_strings(&schema["items"], &format!("{path}[]"), found);
    }
}

#[test]
fn every_spec_string_has_a_length_bound() {
    // The API server estimates the cost of CEL rules such as `matches()` from maxLength;
    // an unbounded string makes the estimate as large as a whole request.
    let schema = schema();
    let spec = &schema["properties"]["spec"];
    let mut found = Vec::new();
    unbounded_strings(spec, "spec", &mut found);
    assert!(found.is_empty(), "strings without maxLength: {found:?}");
    assert_eq!(spec["properties"]["queueURI"]["maxLength"], json!(2048));
    let long_uri = format!("redis://host/0/{}", "q".repeat(2048));
    let parsed: Result<WorkerPodAutoScaler, _> =
        serde_json::from_value(wpa(with(base_spec(), "queueURI", json!(long_uri))));
    // maxLength is enforced by the API server's OpenAPI validation, not by serde.
    assert!(parsed.is_ok());
}

#[test]
fn behavior_and_extensions_round_trip() {
    let spec = with(
        with(
            with(base_spec(), "dryRun", json!(true)),
            "credentialsSecretRef",
            json!({"name": "rabbit", "passwordKey": "pw"}),
        ),
        "behavior",
        json!({
            "scaleUp": {"stabilizationWindowSeconds": 0, "selectPolicy": "Max",
                        "policies": [{"type": "Pods", "value": 4, "periodSeconds": 15}]},
            "scaleDown": {"selectPolicy": "Disabled"}
        }),
    );
    assert!(cel_errors(spec.clone()).is_empty());
    let parsed: wpa::crd::WorkerPodAutoScalerSpec =
        serde_json::from_value(spec.clone()).expect("parses");
    assert_eq!(parsed.dry_run, Some(true));
    let creds = parsed.credentials_secret_ref.as_ref().expect("secret ref");
    assert_eq!(creds.username_key(), "username");
    assert_eq!(creds.password_key(), "pw");
    assert_eq!(serde_json::to_value(&parsed).expect("serializes"), spec);
}
