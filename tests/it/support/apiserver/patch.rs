//! Patch formats, chosen by the request's Content-Type as the API server does:
//! JSON patch (RFC 6902), JSON merge patch (RFC 7386), strategic merge patch (treated as a
//! merge patch: lists are replaced, not merged by key) and server-side apply (merged like a
//! merge patch, plus the field-ownership checks in `managed.rs`).

use serde_json::Value;

use super::status::ApiError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatchKind {
    Json,
    Merge,
    Strategic,
    Apply { force: bool },
}

impl PatchKind {
    /// The patch kind for a Content-Type header value; `force` is the apply `force` parameter.
    pub fn from_content_type(content_type: &str, force: bool) -> Result<Self, ApiError> {
        let mime = content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        match mime.as_str() {
            "application/json-patch+json" => Ok(PatchKind::Json),
            "application/merge-patch+json" => Ok(PatchKind::Merge),
            "application/strategic-merge-patch+json" => Ok(PatchKind::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+cbor" => {
                Ok(PatchKind::Apply { force })
            }
            other => Err(ApiError::new(
                415,
                "UnsupportedMediaType",
                format!(
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (got {other:?})"
                ),
            )),
        }
    }
}

/// Applies `patch` to a copy of `current` and returns the result.
pub fn apply_patch(kind: &PatchKind, current: &Value, patch: &Value) -> Result<Value, ApiError> {
    let mut document = current.clone();
    match kind {
        PatchKind::Json => {
            let operations: json_patch::Patch = serde_json::from_value(patch.clone())
                .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
            // Operation by operation, on a copy: a failure discards the whole patch.
            for operation in &operations.0 {
                if tests_absent_as_null(&document, operation) {
                    continue;
                }
                json_patch::patch(&mut document, std::slice::from_ref(operation))
                    .map_err(|e| ApiError::invalid(format!("JSON patch failed: {e}")))?;
            }
        }
        PatchKind::Merge | PatchKind::Strategic | PatchKind::Apply { .. } => {
            if !patch.is_object() {
                return Err(ApiError::bad_request("a merge patch must be a JSON object"));
            }
            json_patch::merge(&mut document, patch);
        }
    }
    Ok(document)
}

/// The API server's JSON patch library lets `test` with value `null` pass for a missing
/// path (kube's finalizer helper relies on that); the json-patch crate does not.
fn tests_absent_as_null(document: &Value, operation: &json_patch::PatchOperation) -> bool {
    match operation {
        json_patch::PatchOperation::Test(test) => {
            test.value.is_null() && document.pointer(test.path.as_str()).is_none()
        }
        _ => false,
    }
}

/// Fails for body encodings the double does not speak (protobuf, CBOR), as kubectl sends
/// protobuf for typed creates.
pub fn check_body_encoding(content_type: Option<&str>) -> Result<(), ApiError> {
    match content_type {
        Some(ct) if ct.contains("protobuf") || ct.contains("cbor") => Err(ApiError::new(
            415,
            "UnsupportedMediaType",
            format!("the API server double only accepts JSON bodies, not {ct}"),
        )),
        _ => Ok(()),
    }
}

/// Parses a request body: JSON, or YAML for server-side apply bodies written by hand
/// (kube-rs sends apply bodies as JSON, which is also valid YAML).
pub fn parse_body(bytes: &[u8], kind: Option<&PatchKind>) -> Result<Value, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    match serde_json::from_slice(bytes) {
        Ok(value) => Ok(value),
        Err(json_error) if matches!(kind, Some(PatchKind::Apply { .. })) => {
            let text = std::str::from_utf8(bytes)
                .map_err(|_| ApiError::bad_request("request body is not UTF-8"))?;
            serde_saphyr::from_str(text).map_err(|yaml_error| {
                ApiError::bad_request(format!(
                    "body is neither JSON ({json_error}) nor YAML ({yaml_error})"
                ))
            })
        }
        Err(e) => Err(ApiError::bad_request(format!("invalid JSON body: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_and_json_patches() {
        let doc = json!({"spec": {"replicas": 1, "paused": true}});
        let merged = apply_patch(&PatchKind::Merge, &doc, &json!({"spec": {"paused": null}}));
        assert_eq!(merged, Ok(json!({"spec": {"replicas": 1}})));

        let ops = json!([{"op": "test", "path": "/spec/replicas", "value": 1},
                         {"op": "replace", "path": "/spec/replicas", "value": 2}]);
        let patched = apply_patch(&PatchKind::Json, &doc, &ops);
        assert_eq!(patched.map(|d| d["spec"]["replicas"].clone()), Ok(json!(2)));

        let absent = json!([{"op": "test", "path": "/metadata/finalizers", "value": null},
                            {"op": "add", "path": "/metadata/finalizers", "value": ["f"]}]);
        let with_meta = json!({"metadata": {"name": "x"}});
        let added = apply_patch(&PatchKind::Json, &with_meta, &absent);
        assert_eq!(
            added.map(|d| d["metadata"]["finalizers"].clone()),
            Ok(json!(["f"]))
        );

        let failing = json!([{"op": "test", "path": "/spec/replicas", "value": 5}]);
        let err = apply_patch(&PatchKind::Json, &doc, &failing).expect_err("test op fails");
        assert_eq!(err.code, 422);
    }

    #[test]
    fn content_types() {
        assert_eq!(
            PatchKind::from_content_type("application/apply-patch+yaml", true),
            Ok(PatchKind::Apply { force: true })
        );
        assert!(PatchKind::from_content_type("application/json", false).is_err());
        let yaml = parse_body(
            b"spec:\n  replicas: 3\n",
            Some(&PatchKind::Apply { force: false }),
        );
        assert_eq!(yaml, Ok(json!({"spec": {"replicas": 3}})));
    }
}
