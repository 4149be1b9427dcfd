//! Small helpers on JSON objects: metadata access, JSON-pointer writes, generated values
//! (uid, timestamps) and ready-made objects for tests.

use serde_json::{Map, Value, json};

/// `metadata.name` or "".
pub fn name_of(object: &Value) -> &str {
    object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// `metadata.namespace`, if set and not empty.
pub fn namespace_of(object: &Value) -> Option<&str> {
    object
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .filter(|ns| !ns.is_empty())
}

/// `metadata.resourceVersion`, if set and not empty.
pub fn resource_version_of(object: &Value) -> Option<&str> {
    object
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .filter(|rv| !rv.is_empty())
}

/// Writes `value` at a JSON pointer such as `/spec/replicas`, creating missing objects on
/// the way (and replacing non-object values that are in the way).
pub fn set_pointer(object: &mut Value, pointer: &str, value: Value) {
    let mut current = object;
    for part in pointer.split('/').skip(1) {
        let key = part.replace("~1", "/").replace("~0", "~");
        current = child_mut(current, &key);
    }
    *current = value;
}

/// Removes the value at a JSON pointer, if present.
pub fn remove_pointer(object: &mut Value, pointer: &str) -> Option<Value> {
    let (parent, key) = pointer.rsplit_once('/')?;
    let key = key.replace("~1", "/").replace("~0", "~");
    object.pointer_mut(parent)?.as_object_mut()?.remove(&key)
}

/// The member `key` of `object`, inserted as `null` when missing.
fn child_mut<'a>(object: &'a mut Value, key: &str) -> &'a mut Value {
    if !object.is_object() {
        *object = Value::Object(Map::new());
    }
    // Indexing an object by key inserts `null` for a missing member; never panics here
    // because `object` is an object.
    &mut object[key]
}

/// The meta.k8s.io/v1 `PartialObjectMetadata` form of an object, or the
/// `PartialObjectMetadataList` form of a list (a value with `items`).
pub fn partial_metadata(value: &Value) -> Value {
    match value.get("items").and_then(Value::as_array) {
        Some(items) => json!({
            "apiVersion": "meta.k8s.io/v1",
            "kind": "PartialObjectMetadataList",
            "metadata": value.get("metadata").cloned().unwrap_or(json!({})),
            "items": items.iter().map(partial_metadata).collect::<Vec<_>>(),
        }),
        None => json!({
            "apiVersion": "meta.k8s.io/v1",
            "kind": "PartialObjectMetadata",
            "metadata": value.get("metadata").cloned().unwrap_or(json!({})),
        }),
    }
}

/// A JSON timestamp with second precision, as in `creationTimestamp`.
pub fn now_timestamp() -> String {
    let now = jiff::Timestamp::now();
    jiff::Timestamp::from_second(now.as_second())
        .unwrap_or(now)
        .to_string()
}

/// A random RFC 4122 version-4 UUID string.
pub fn new_uid() -> String {
    let bytes: [u8; 16] = rand::random();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    // Set the version (4) and variant (10xx) nibbles.
    let variant = ["8", "9", "a", "b"][usize::from(bytes[8] & 0x03)];
    format!(
        "{}-{}-4{}-{}{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        variant,
        &hex[17..20],
        &hex[20..32]
    )
}

/// A minimal valid apps/v1 Deployment with `app: <name>` labels and selector.
pub fn deployment(namespace: &str, name: &str, replicas: i32) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "worker", "image": "worker:latest"}]}
            }
        }
    })
}

/// A StatefulSet `<name>` with pods labelled `app: <name>` (serviceName = name).
pub fn statefulset(namespace: &str, name: &str, replicas: i32) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "serviceName": name,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "worker", "image": "worker:latest"}]}
            }
        }
    })
}

/// A Deployment as [`deployment`] whose status reports `available` ready and available
/// replicas out of `replicas`.
pub fn deployment_with_status(namespace: &str, name: &str, replicas: i32, available: i32) -> Value {
    let mut object = deployment(namespace, name, replicas);
    set_pointer(
        &mut object,
        "/status",
        json!({
            "observedGeneration": 1,
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": available,
            "availableReplicas": available,
        }),
    );
    object
}
