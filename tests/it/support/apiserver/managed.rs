//! A loose model of server-side apply field ownership, enough for apply conflicts.
//!
//! Each leaf field (JSON pointer) of an object may have one owner, the field manager that
//! last set it. An apply without `force` that would change a field owned by another manager
//! fails with 409 Conflict, as on the real API server; kube-lease-manager relies on that to
//! keep two candidates from taking the same lease. Unlike the real server: arrays are
//! atomic leaves, ownership is not shared, `metadata.managedFields` is not written, and
//! fields an applier stops sending are not removed.

use std::collections::BTreeMap;

use serde_json::Value;

use super::status::ApiError;
use super::store::Owners;

/// Leaf fields of an object as JSON pointer -> value. `apiVersion`, `kind` and metadata other
/// than labels and annotations are not owned by anyone.
pub fn leaves(object: &Value) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    if let Some(map) = object.as_object() {
        for (key, value) in map {
            match key.as_str() {
                "apiVersion" | "kind" => {}
                "metadata" => {
                    for owned in ["labels", "annotations"] {
                        if let Some(inner) = value.get(owned) {
                            collect(inner, &format!("/metadata/{owned}"), &mut out);
                        }
                    }
                }
                _ => collect(value, &format!("/{}", escape(key)), &mut out),
            }
        }
    }
    out
}

fn collect(value: &Value, pointer: &str, out: &mut BTreeMap<String, Value>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, inner) in map {
                collect(inner, &format!("{pointer}/{}", escape(key)), out);
            }
        }
        Value::Null => {}
        _ => {
            out.insert(pointer.to_string(), value.clone());
        }
    }
}

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// Fails when applying `applied` as `manager` would change fields other managers own.
pub fn check_apply(
    owners: &Owners,
    current: &Value,
    applied: &Value,
    manager: &str,
) -> Result<(), ApiError> {
    let conflicts: Vec<String> = leaves(applied)
        .into_iter()
        .filter_map(|(pointer, value)| {
            let owner = owners.get(&pointer)?;
            let changes = current.pointer(&pointer) != Some(&value);
            (owner != manager && changes)
                .then(|| format!("conflict with \"{owner}\": {}", pointer.replace('/', ".")))
        })
        .collect();
    if conflicts.is_empty() {
        return Ok(());
    }
    Err(ApiError::new(
        409,
        "Conflict",
        format!(
            "Apply failed with {} conflict(s): {}",
            conflicts.len(),
            conflicts.join("; ")
        ),
    ))
}

/// After an apply: `manager` owns every field it sent.
pub fn record_apply(owners: &mut Owners, applied: &Value, manager: &str) {
    for pointer in leaves(applied).into_keys() {
        owners.insert(pointer, manager.to_string());
    }
}

/// After any other write: `manager` owns the fields it changed or added; removed fields lose
/// their owner.
pub fn record_update(owners: &mut Owners, old: Option<&Value>, new: &Value, manager: &str) {
    let before = old.map(leaves).unwrap_or_default();
    let after = leaves(new);
    for (pointer, value) in &after {
        if before.get(pointer) != Some(value) {
            owners.insert(pointer.clone(), manager.to_string());
        }
    }
    owners.retain(|pointer, _| after.contains_key(pointer));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn apply_conflicts_only_on_changes_to_foreign_fields() {
        let mut owners = Owners::new();
        let current = json!({"spec": {"holder": "a", "duration": 10}});
        record_apply(&mut owners, &current, "mgr-a");

        let same = json!({"spec": {"holder": "a"}});
        assert!(check_apply(&owners, &current, &same, "mgr-b").is_ok());
        let steal = json!({"spec": {"holder": "b"}});
        let err = check_apply(&owners, &current, &steal, "mgr-b").expect_err("conflict");
        assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
        assert!(check_apply(&owners, &current, &steal, "mgr-a").is_ok());

        // Clearing the field through a normal update frees it.
        let cleared = json!({"spec": {"duration": 10}});
        record_update(&mut owners, Some(&current), &cleared, "mgr-a");
        assert!(check_apply(&owners, &cleared, &steal, "mgr-b").is_ok());
    }
}
