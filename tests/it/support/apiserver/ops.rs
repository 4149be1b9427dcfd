//! The API operations with the real API server's semantics: create, get, list (selectors,
//! pagination), update with optimistic concurrency, patch, delete (finalizers), the `/status`
//! and `/scale` subresources. Both the HTTP routes and the test-facing handle call these.

use std::sync::Arc;

use serde_json::{Value, json};

use super::managed;
use super::objects::{name_of, namespace_of, remove_pointer, resource_version_of, set_pointer};
use super::patch::{PatchKind, apply_patch};
use super::resources::{ResourceDef, ScalePaths};
use super::selectors::{FieldSelector, LabelSelector, render_label_selector};
use super::shared::Shared;
use super::status::ApiError;
use super::store::{ObjectKey, Owners};

/// Which part of an object a write may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The main resource: with a status subresource, `.status` is kept as it was.
    Main,
    /// The `/status` subresource: only `.status` changes.
    Status,
    /// Everything, for the test-facing handle and internal writes.
    Whole,
}

/// Options of a list (or delete-collection) request.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub limit: Option<usize>,
    pub continue_token: Option<String>,
}

impl ListQuery {
    pub fn matches(&self, object: &Value) -> bool {
        self.labels.matches(object) && self.fields.matches(object)
    }
}

/// One object of one resource: what the single-object operations act on.
#[derive(Debug, Clone, Copy)]
pub struct ObjectRef<'a> {
    pub def: &'a ResourceDef,
    pub namespace: Option<&'a str>,
    pub name: &'a str,
}

impl<'a> ObjectRef<'a> {
    pub fn new(def: &'a ResourceDef, namespace: Option<&'a str>, name: &'a str) -> Self {
        ObjectRef {
            def,
            namespace,
            name,
        }
    }
}

impl Shared {
    pub fn get_object(&self, obj: ObjectRef<'_>) -> Result<Value, ApiError> {
        let ObjectRef {
            def,
            namespace,
            name,
        } = obj;
        self.store()
            .get(&ObjectKey::new(def, namespace, name))
            .cloned()
            .ok_or_else(|| ApiError::not_found(&def.gvr, name))
    }

    /// A `<Kind>List` with `metadata.resourceVersion`, paginated by `limit`/`continue`.
    /// A continued list is served from the current objects after the last returned key
    /// (not from a snapshot) but reports the first page's resourceVersion, so a watch
    /// started from it replays anything that changed in between.
    pub fn list_objects(
        &self,
        def: &ResourceDef,
        namespace: Option<&str>,
        query: &ListQuery,
    ) -> Result<Value, ApiError> {
        let store = self.store();
        let (list_rv, after) = match &query.continue_token {
            Some(token) => {
                let (rv, key) = parse_continue(token)?;
                if store.events_since(rv).is_none() {
                    return Err(ApiError::gone(
                        "The provided continue parameter is too old to display a consistent \
                         list result. You can start a new list without the continue parameter.",
                    ));
                }
                (rv, Some(key))
            }
            None => (store.resource_version(), None),
        };
        let store_id = def.store_id();
        let matching: Vec<(&ObjectKey, &Value)> = store
            .list(&store_id, namespace)
            .filter(|(key, _)| {
                after
                    .as_ref()
                    .is_none_or(|(ns, name)| (&key.namespace, &key.name) > (ns, name))
            })
            .filter(|(_, object)| query.matches(object))
            .collect();
        let limit = query.limit.filter(|l| *l > 0).unwrap_or(usize::MAX);
        let page: Vec<Value> = matching
            .iter()
            .take(limit)
            .map(|(_, o)| (*o).clone())
            .collect();
        let mut metadata = json!({"resourceVersion": list_rv.to_string()});
        if matching.len() > limit
            && let Some((last_key, _)) = matching.get(limit - 1)
        {
            metadata["continue"] = Value::from(format!(
                "{list_rv}/{}/{}",
                last_key.namespace, last_key.name
            ));
            metadata["remainingItemCount"] = Value::from(matching.len() - limit);
        }
        Ok(json!({
            "kind": format!("{}List", def.kind),
            "apiVersion": def.gvr.api_version(),
            "metadata": metadata,
            "items": page,
        }))
    }

    /// POST: stores a new object. Fills the namespace from the URL, a name from
    /// `generateName`, and drops `.status` when the resource has a status subresource.
    pub fn create_object(
        self: &Arc<Self>,
        def: &ResourceDef,
        namespace: Option<&str>,
        mut body: Value,
        manager: &str,
    ) -> Result<Value, ApiError> {
        if !body.is_object() {
            return Err(ApiError::bad_request(
                "the request body must be a JSON object",
            ));
        }
        if def.namespaced {
            let namespace = namespace.ok_or_else(|| {
                ApiError::bad_request("a namespaced resource is created under /namespaces/{ns}/")
            })?;
            if namespace_of(&body).is_some_and(|ns| ns != namespace) {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on \
                     the request",
                ));
            }
            set_pointer(&mut body, "/metadata/namespace", Value::from(namespace));
        }
        if resource_version_of(&body).is_some() {
            return Err(ApiError::bad_request(
                "resourceVersion should not be set on objects to be created",
            ));
        }
        if name_of(&body).is_empty()
            && let Some(prefix) = body
                .pointer("/metadata/generateName")
                .and_then(Value::as_str)
                .filter(|p| !p.is_empty())
        {
            let name = format!("{prefix}{}", random_suffix());
            set_pointer(&mut body, "/metadata/name", Value::from(name));
        }
        if def.status_subresource {
            remove_pointer(&mut body, "/status");
        }
        self.insert_object(def, body, manager, None)
    }

    /// Stores a new object as given (status included); used by `create_object` and by tests.
    pub fn insert_object(
        self: &Arc<Self>,
        def: &ResourceDef,
        object: Value,
        manager: &str,
        applied: Option<&Value>,
    ) -> Result<Value, ApiError> {
        let created = {
            let mut store = self.store();
            let created = store.create(def, object)?;
            let key = super::store::key_of(def, &created)?;
            record_ownership(store.owners_mut(&key), None, &created, manager, applied);
            created
        };
        self.after_write(def, None, Some(&created));
        Ok(created)
    }

    /// Read-modify-write of one object under the store lock. `change` computes the candidate
    /// from the current object; a `metadata.resourceVersion` left in the candidate must match
    /// the current one (optimistic concurrency, 409 Conflict otherwise).
    pub fn modify_object(
        self: &Arc<Self>,
        obj: ObjectRef<'_>,
        target: Target,
        manager: &str,
        applied: Option<&Value>,
        change: impl FnOnce(&Value, &Owners) -> Result<Value, ApiError>,
    ) -> Result<Value, ApiError> {
        let ObjectRef {
            def,
            namespace,
            name,
        } = obj;
        let key = ObjectKey::new(def, namespace, name);
        let (old, new) = {
            let mut store = self.store();
            let old = store
                .get(&key)
                .cloned()
                .ok_or_else(|| ApiError::not_found(&def.gvr, name))?;
            let candidate = change(&old, store.owners_mut(&key))?;
            if !candidate.is_object() {
                return Err(ApiError::bad_request("the object must be a JSON object"));
            }
            if let Some(rv) = resource_version_of(&candidate)
                && Some(rv) != resource_version_of(&old)
            {
                return Err(ApiError::conflict(&def.gvr, name));
            }
            let candidate_name = name_of(&candidate);
            if !candidate_name.is_empty() && candidate_name != name {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({candidate_name}) does not match the name on the URL ({name})"
                )));
            }
            let mut next = restrict(def, target, &old, candidate);
            set_pointer(&mut next, "/metadata/name", Value::from(name));
            if def.namespaced {
                set_pointer(
                    &mut next,
                    "/metadata/namespace",
                    Value::from(key.namespace.clone()),
                );
            }
            let new = store.update(def, next)?;
            if store.get(&key).is_some() {
                record_ownership(store.owners_mut(&key), Some(&old), &new, manager, applied);
            }
            (old, new)
        };
        self.after_write(def, Some(&old), Some(&new));
        Ok(new)
    }

    /// PUT of the main resource or `/status`.
    pub fn replace_object(
        self: &Arc<Self>,
        obj: ObjectRef<'_>,
        body: Value,
        target: Target,
        manager: &str,
    ) -> Result<Value, ApiError> {
        self.modify_object(obj, target, manager, None, |_, _| Ok(body))
    }

    /// PATCH of the main resource or `/status`. Server-side apply creates a missing object
    /// and fails with 409 when, without `force`, it would change fields another manager owns.
    pub fn patch_object(
        self: &Arc<Self>,
        obj: ObjectRef<'_>,
        kind: &PatchKind,
        body: &Value,
        target: Target,
        manager: &str,
    ) -> Result<Value, ApiError> {
        let ObjectRef {
            def,
            namespace,
            name,
        } = obj;
        let applied = matches!(kind, PatchKind::Apply { .. }).then_some(body);
        if applied.is_some() && target == Target::Main {
            let exists = self
                .store()
                .get(&ObjectKey::new(def, namespace, name))
                .is_some();
            if !exists {
                let mut object = body.clone();
                set_pointer(&mut object, "/metadata/name", Value::from(name));
                if let Some(ns) = namespace.filter(|_| def.namespaced) {
                    set_pointer(&mut object, "/metadata/namespace", Value::from(ns));
                }
                match self.insert_object(def, object, manager, applied) {
                    Err(e) if e.reason == "AlreadyExists" => {} // lost a race: patch it below
                    other => return other,
                }
            }
        }
        self.modify_object(obj, target, manager, applied, |old, owners| {
            if let PatchKind::Apply { force: false } = kind {
                managed::check_apply(owners, old, body, manager)?;
            }
            apply_patch(kind, old, body)
        })
    }

    /// DELETE of one object, honouring `preconditions` in the DeleteOptions body. With
    /// finalizers the object only gets a deletionTimestamp.
    pub fn delete_object(
        self: &Arc<Self>,
        obj: ObjectRef<'_>,
        options: &Value,
    ) -> Result<Value, ApiError> {
        let ObjectRef {
            def,
            namespace,
            name,
        } = obj;
        let key = ObjectKey::new(def, namespace, name);
        let (old, deleted) = {
            let mut store = self.store();
            let old = store
                .get(&key)
                .cloned()
                .ok_or_else(|| ApiError::not_found(&def.gvr, name))?;
            for (option, field) in [("resourceVersion", "resourceVersion"), ("uid", "uid")] {
                let wanted = options
                    .pointer(&format!("/preconditions/{option}"))
                    .and_then(Value::as_str);
                let actual = old
                    .pointer(&format!("/metadata/{field}"))
                    .and_then(Value::as_str);
                if wanted.is_some_and(|w| Some(w) != actual) {
                    return Err(ApiError::conflict(&def.gvr, name));
                }
            }
            let deleted = store.delete(def, &key)?;
            (old, deleted)
        };
        let still_there = self.store().get(&key).cloned();
        self.after_write(def, Some(&old), still_there.as_ref());
        Ok(deleted)
    }

    /// DELETE of a collection: deletes every matching object, returns them as a list.
    pub fn delete_collection(
        self: &Arc<Self>,
        def: &ResourceDef,
        namespace: Option<&str>,
        query: &ListQuery,
    ) -> Result<Value, ApiError> {
        let targets: Vec<ObjectKey> = self
            .store()
            .list(&def.store_id(), namespace)
            .filter(|(_, object)| query.matches(object))
            .map(|(key, _)| key.clone())
            .collect();
        let mut deleted = Vec::new();
        for key in targets {
            let ns = def.namespaced.then_some(key.namespace.as_str());
            match self.delete_object(ObjectRef::new(def, ns, &key.name), &Value::Null) {
                Ok(object) => deleted.push(object),
                Err(e) if e.code == 404 => {} // deleted concurrently
                Err(e) => return Err(e),
            }
        }
        Ok(json!({
            "kind": format!("{}List", def.kind),
            "apiVersion": def.gvr.api_version(),
            "metadata": {"resourceVersion": self.store().resource_version().to_string()},
            "items": deleted,
        }))
    }

    /// GET `/scale`: an autoscaling/v1 Scale view of the object.
    pub fn get_scale(&self, obj: ObjectRef<'_>) -> Result<Value, ApiError> {
        let paths = scale_paths(obj.def)?;
        let object = self.get_object(obj)?;
        Ok(scale_view(paths, &object))
    }

    /// PUT or PATCH of `/scale`: writes the replica count into the object's spec (which bumps
    /// its generation) and returns the new Scale view.
    pub fn write_scale(
        self: &Arc<Self>,
        obj: ObjectRef<'_>,
        patch: Option<&PatchKind>,
        body: &Value,
        manager: &str,
    ) -> Result<Value, ApiError> {
        let paths = scale_paths(obj.def)?.clone();
        let updated = self.modify_object(obj, Target::Whole, manager, None, |old, _| {
            let scale = match patch {
                // Apply on /scale is treated as a merge of the Scale object.
                Some(PatchKind::Apply { .. }) => {
                    apply_patch(&PatchKind::Merge, &scale_view(&paths, old), body)?
                }
                Some(kind) => apply_patch(kind, &scale_view(&paths, old), body)?,
                None => body.clone(),
            };
            let replicas = scale
                .pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .filter(|r| (0..=i64::from(i32::MAX)).contains(r))
                .ok_or_else(|| {
                    ApiError::invalid(
                        "spec.replicas: Invalid value: must be a non-negative integer",
                    )
                })?;
            let mut next = old.clone();
            set_pointer(&mut next, &paths.spec_replicas, Value::from(replicas));
            match resource_version_of(&scale) {
                Some(rv) => set_pointer(&mut next, "/metadata/resourceVersion", Value::from(rv)),
                None => {
                    remove_pointer(&mut next, "/metadata/resourceVersion");
                }
            }
            Ok(next)
        })?;
        Ok(scale_view(&paths, &updated))
    }
}

fn record_ownership(
    owners: &mut Owners,
    old: Option<&Value>,
    new: &Value,
    manager: &str,
    applied: Option<&Value>,
) {
    match applied {
        Some(applied) => managed::record_apply(owners, applied, manager),
        None => managed::record_update(owners, old, new, manager),
    }
}

/// Keeps the parts of `candidate` a write to `target` may change.
fn restrict(def: &ResourceDef, target: Target, old: &Value, candidate: Value) -> Value {
    let (mut base, status_from) = match target {
        Target::Status => (old.clone(), &candidate),
        Target::Main if def.status_subresource => (candidate.clone(), old),
        Target::Main | Target::Whole => return candidate,
    };
    match status_from.get("status") {
        Some(status) => set_pointer(&mut base, "/status", status.clone()),
        None => {
            remove_pointer(&mut base, "/status");
        }
    }
    base
}

fn scale_paths(def: &ResourceDef) -> Result<&ScalePaths, ApiError> {
    def.scale.as_ref().ok_or_else(ApiError::unknown_resource)
}

/// The autoscaling/v1 Scale for an object.
pub fn scale_view(paths: &ScalePaths, object: &Value) -> Value {
    let metadata = &object["metadata"];
    let int_at = |pointer: &str| object.pointer(pointer).and_then(Value::as_i64).unwrap_or(0);
    let mut status = json!({"replicas": int_at(&paths.status_replicas)});
    if let Some(selector) = paths.selector.as_deref().and_then(|p| object.pointer(p)) {
        let rendered = match selector {
            Value::String(s) => s.clone(),
            other => render_label_selector(other),
        };
        status["selector"] = Value::from(rendered);
    }
    let mut scale_meta = json!({});
    for field in [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
    ] {
        if let Some(value) = metadata.get(field) {
            scale_meta[field] = value.clone();
        }
    }
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": scale_meta,
        "spec": {"replicas": int_at(&paths.spec_replicas)},
        "status": status,
    })
}

/// `<rv>/<namespace>/<name>` -> (rv, (namespace, name)).
fn parse_continue(token: &str) -> Result<(u64, (String, String)), ApiError> {
    let bad = || ApiError::bad_request(format!("invalid continue token {token:?}"));
    let mut parts = token.splitn(3, '/');
    let rv = parts
        .next()
        .and_then(|rv| rv.parse().ok())
        .ok_or_else(bad)?;
    let namespace = parts.next().ok_or_else(bad)?.to_string();
    let name = parts.next().ok_or_else(bad)?.to_string();
    Ok((rv, (namespace, name)))
}

/// Five lowercase alphanumerics, like the API server's generateName suffix.
fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5)
        .map(|_| {
            let index = usize::from(rand::random::<u8>()) % ALPHABET.len();
            char::from(ALPHABET[index])
        })
        .collect()
}
