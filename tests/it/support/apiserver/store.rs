//! The object store: current objects, the global resourceVersion counter and the bounded
//! history of change events that watches replay from and subscribe to.
//!
//! Every write takes the next value of one global counter as its resourceVersion, like etcd's
//! revision behind the real API server. Writes happen under one mutex, and each write appends
//! its event to the history and broadcasts it while the mutex is held, so a watch that reads
//! the history and subscribes under the same lock sees every event exactly once.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::broadcast;

use super::objects::{new_uid, now_timestamp, remove_pointer, resource_version_of, set_pointer};
use super::resources::ResourceDef;
use super::status::ApiError;

/// Identifies a stored object: resource store id (`group/plural`), namespace ("" when
/// cluster-scoped) and name. Ordered so that lists come out sorted by namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    pub store_id: String,
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(def: &ResourceDef, namespace: Option<&str>, name: &str) -> Self {
        ObjectKey {
            store_id: def.store_id(),
            namespace: if def.namespaced {
                namespace.unwrap_or_default().to_string()
            } else {
                String::new()
            },
            name: name.to_string(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change, as kept in the history and sent to watches. `previous` is the object before a
/// modification, so selector-filtered watches can turn a modification into ADDED/DELETED
/// when the object starts or stops matching.
#[derive(Debug)]
pub struct StoredEvent {
    pub resource_version: u64,
    pub key: ObjectKey,
    pub event_type: EventType,
    pub object: Value,
    pub previous: Option<Value>,
}

/// Field owner per object: JSON pointer of a leaf field -> field manager name.
pub type Owners = BTreeMap<String, String>;

pub struct Store {
    objects: BTreeMap<ObjectKey, Value>,
    owners: HashMap<ObjectKey, Owners>,
    resource_version: u64,
    history: VecDeque<Arc<StoredEvent>>,
    history_limit: usize,
    /// Events with a resourceVersion up to this one are no longer in the history.
    compacted_through: u64,
    events: broadcast::Sender<Arc<StoredEvent>>,
}

/// How many events the history keeps by default before old ones are compacted away.
pub const DEFAULT_HISTORY_LIMIT: usize = 10_000;

impl Store {
    pub fn new(history_limit: usize) -> Self {
        let (events, _) = broadcast::channel(4096);
        Store {
            objects: BTreeMap::new(),
            owners: HashMap::new(),
            resource_version: 1,
            history: VecDeque::new(),
            history_limit,
            compacted_through: 1,
            events,
        }
    }

    pub fn resource_version(&self) -> u64 {
        self.resource_version
    }

    pub fn get(&self, key: &ObjectKey) -> Option<&Value> {
        self.objects.get(key)
    }

    /// Objects of one resource, in one namespace or all, sorted by namespace and name.
    pub fn list<'a>(
        &'a self,
        store_id: &'a str,
        namespace: Option<&'a str>,
    ) -> impl Iterator<Item = (&'a ObjectKey, &'a Value)> + 'a {
        self.objects.iter().filter(move |(key, _)| {
            key.store_id == store_id && namespace.is_none_or(|ns| key.namespace == ns)
        })
    }

    pub fn owners_mut(&mut self, key: &ObjectKey) -> &mut Owners {
        self.owners.entry(key.clone()).or_default()
    }

    /// Stores a new object, filling uid, creationTimestamp, generation and resourceVersion.
    pub fn create(&mut self, def: &ResourceDef, mut object: Value) -> Result<Value, ApiError> {
        let key = key_of(def, &object)?;
        if self.objects.contains_key(&key) {
            return Err(ApiError::already_exists(&def.gvr, &key.name));
        }
        let rv = self.next_resource_version();
        set_pointer(
            &mut object,
            "/apiVersion",
            Value::from(def.gvr.api_version()),
        );
        set_pointer(&mut object, "/kind", Value::from(def.kind.clone()));
        set_pointer(&mut object, "/metadata/uid", Value::from(new_uid()));
        set_pointer(
            &mut object,
            "/metadata/creationTimestamp",
            Value::from(now_timestamp()),
        );
        set_pointer(&mut object, "/metadata/generation", Value::from(1));
        set_pointer(
            &mut object,
            "/metadata/resourceVersion",
            Value::from(rv.to_string()),
        );
        remove_pointer(&mut object, "/metadata/deletionTimestamp");
        self.objects.insert(key.clone(), object.clone());
        self.push_event(rv, key, EventType::Added, object.clone(), None);
        Ok(object)
    }

    /// Replaces a stored object. Identity fields are kept from the old object, the generation
    /// goes up when anything outside metadata and status changed, and an update that changes
    /// nothing is a no-op (no new resourceVersion, no event), as on the real API server.
    /// An object being deleted whose last finalizer is removed is deleted for good.
    pub fn update(&mut self, def: &ResourceDef, mut object: Value) -> Result<Value, ApiError> {
        let key = key_of(def, &object)?;
        let Some(old) = self.objects.get(&key).cloned() else {
            return Err(ApiError::not_found(&def.gvr, &key.name));
        };
        set_pointer(
            &mut object,
            "/apiVersion",
            Value::from(def.gvr.api_version()),
        );
        set_pointer(&mut object, "/kind", Value::from(def.kind.clone()));
        for field in ["uid", "creationTimestamp", "deletionTimestamp"] {
            let pointer = format!("/metadata/{field}");
            match old.pointer(&pointer) {
                Some(value) => set_pointer(&mut object, &pointer, value.clone()),
                None => {
                    remove_pointer(&mut object, &pointer);
                }
            }
        }
        let old_generation = old
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        let generation =
            if without_metadata_and_status(&old) == without_metadata_and_status(&object) {
                old_generation
            } else {
                old_generation + 1
            };
        set_pointer(&mut object, "/metadata/generation", Value::from(generation));
        let old_rv = resource_version_of(&old).unwrap_or_default().to_string();
        set_pointer(
            &mut object,
            "/metadata/resourceVersion",
            Value::from(old_rv),
        );
        if object == old {
            return Ok(old);
        }

        let rv = self.next_resource_version();
        set_pointer(
            &mut object,
            "/metadata/resourceVersion",
            Value::from(rv.to_string()),
        );
        let finalized = object.pointer("/metadata/deletionTimestamp").is_some()
            && object
                .pointer("/metadata/finalizers")
                .and_then(Value::as_array)
                .is_none_or(Vec::is_empty);
        if finalized {
            self.objects.remove(&key);
            self.owners.remove(&key);
            self.push_event(rv, key, EventType::Deleted, object.clone(), Some(old));
        } else {
            self.objects.insert(key.clone(), object.clone());
            self.push_event(rv, key, EventType::Modified, object.clone(), Some(old));
        }
        Ok(object)
    }

    /// Deletes an object, or only marks it with a deletionTimestamp while it has finalizers.
    /// Returns the object as last seen (the DELETED event carries the deletion's version).
    pub fn delete(&mut self, def: &ResourceDef, key: &ObjectKey) -> Result<Value, ApiError> {
        let Some(old) = self.objects.get(key).cloned() else {
            return Err(ApiError::not_found(&def.gvr, &key.name));
        };
        let has_finalizers = old
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
        if has_finalizers {
            if old.pointer("/metadata/deletionTimestamp").is_some() {
                return Ok(old);
            }
            let rv = self.next_resource_version();
            let mut object = old.clone();
            set_pointer(
                &mut object,
                "/metadata/deletionTimestamp",
                Value::from(now_timestamp()),
            );
            set_pointer(
                &mut object,
                "/metadata/resourceVersion",
                Value::from(rv.to_string()),
            );
            self.objects.insert(key.clone(), object.clone());
            self.push_event(
                rv,
                key.clone(),
                EventType::Modified,
                object.clone(),
                Some(old),
            );
            return Ok(object);
        }
        let rv = self.next_resource_version();
        let mut object = old.clone();
        set_pointer(
            &mut object,
            "/metadata/resourceVersion",
            Value::from(rv.to_string()),
        );
        self.objects.remove(key);
        self.owners.remove(key);
        self.push_event(
            rv,
            key.clone(),
            EventType::Deleted,
            object.clone(),
            Some(old),
        );
        Ok(object)
    }

    /// Marks an object as being deleted (deletionTimestamp, deletionGracePeriodSeconds)
    /// without removing it, as the real API server does for a graceful Pod deletion; a later
    /// [`Store::delete`] removes it. Returns the object before and after.
    pub fn mark_terminating(
        &mut self,
        def: &ResourceDef,
        key: &ObjectKey,
        grace_seconds: u64,
    ) -> Result<(Value, Value), ApiError> {
        let Some(old) = self.objects.get(key).cloned() else {
            return Err(ApiError::not_found(&def.gvr, &key.name));
        };
        if old.pointer("/metadata/deletionTimestamp").is_some() {
            return Ok((old.clone(), old));
        }
        let rv = self.next_resource_version();
        let mut object = old.clone();
        set_pointer(
            &mut object,
            "/metadata/deletionTimestamp",
            Value::from(now_timestamp()),
        );
        set_pointer(
            &mut object,
            "/metadata/deletionGracePeriodSeconds",
            Value::from(grace_seconds),
        );
        set_pointer(
            &mut object,
            "/metadata/resourceVersion",
            Value::from(rv.to_string()),
        );
        self.objects.insert(key.clone(), object.clone());
        self.push_event(
            rv,
            key.clone(),
            EventType::Modified,
            object.clone(),
            Some(old.clone()),
        );
        Ok((old, object))
    }

    /// History events after `resource_version`, or `None` when some of them were compacted.
    pub fn events_since(&self, resource_version: u64) -> Option<Vec<Arc<StoredEvent>>> {
        if resource_version < self.compacted_through {
            return None;
        }
        Some(
            self.history
                .iter()
                .filter(|event| event.resource_version > resource_version)
                .cloned()
                .collect(),
        )
    }

    /// All events still in the history, oldest first.
    pub fn retained_events(&self) -> Vec<Arc<StoredEvent>> {
        self.history.iter().cloned().collect()
    }

    /// A receiver of all future events. Subscribe while holding the store lock together with
    /// reading the history or current objects, so that no event falls between the two.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<StoredEvent>> {
        self.events.subscribe()
    }

    /// Drops all history: a watch resuming from any earlier resourceVersion gets 410 Gone.
    pub fn compact(&mut self) {
        self.history.clear();
        self.compacted_through = self.resource_version;
    }

    pub fn set_history_limit(&mut self, limit: usize) {
        self.history_limit = limit;
        self.trim_history();
    }

    fn next_resource_version(&mut self) -> u64 {
        self.resource_version += 1;
        self.resource_version
    }

    fn push_event(
        &mut self,
        resource_version: u64,
        key: ObjectKey,
        event_type: EventType,
        object: Value,
        previous: Option<Value>,
    ) {
        let event = Arc::new(StoredEvent {
            resource_version,
            key,
            event_type,
            object,
            previous,
        });
        self.history.push_back(Arc::clone(&event));
        self.trim_history();
        // No receivers just means no open watch.
        let _ = self.events.send(event);
    }

    fn trim_history(&mut self) {
        while self.history.len() > self.history_limit {
            if let Some(dropped) = self.history.pop_front() {
                self.compacted_through = dropped.resource_version;
            }
        }
    }
}

/// The key of `object` under `def`: name from metadata; namespace required when namespaced.
pub fn key_of(def: &ResourceDef, object: &Value) -> Result<ObjectKey, ApiError> {
    let name = super::objects::name_of(object);
    if name.is_empty() {
        return Err(ApiError::invalid(
            "metadata.name: Required value: name is required",
        ));
    }
    let namespace = super::objects::namespace_of(object);
    if def.namespaced && namespace.is_none() {
        return Err(ApiError::invalid(
            "metadata.namespace: Required value: namespace is required",
        ));
    }
    Ok(ObjectKey::new(def, namespace, name))
}

fn without_metadata_and_status(object: &Value) -> Value {
    let mut copy = object.clone();
    if let Some(map) = copy.as_object_mut() {
        map.remove("metadata");
        map.remove("status");
    }
    copy
}

#[cfg(test)]
mod tests {
    use super::super::objects::deployment;
    use super::super::resources::Gvr;
    use super::super::resources::Registry;
    use super::*;

    fn deployments() -> ResourceDef {
        Registry::preregistered()
            .get(&Gvr::DEPLOYMENTS)
            .cloned()
            .expect("deployments are preregistered")
    }

    #[test]
    fn generation_counts_spec_changes_only() {
        let def = deployments();
        let mut store = Store::new(DEFAULT_HISTORY_LIMIT);
        let created = store
            .create(&def, deployment("ns", "d", 1))
            .expect("create");
        assert_eq!(created["metadata"]["generation"], 1);

        let mut status_only = created.clone();
        status_only["status"] = serde_json::json!({"replicas": 1});
        let updated = store.update(&def, status_only).expect("status update");
        assert_eq!(updated["metadata"]["generation"], 1);

        let mut spec = updated.clone();
        spec["spec"]["replicas"] = 4.into();
        let updated = store.update(&def, spec).expect("spec update");
        assert_eq!(updated["metadata"]["generation"], 2);

        let rv = store.resource_version();
        let unchanged = store.update(&def, updated.clone()).expect("no-op update");
        assert_eq!(
            store.resource_version(),
            rv,
            "a no-op update writes nothing"
        );
        assert_eq!(unchanged, updated);
    }

    #[test]
    fn compaction_expires_old_versions() {
        let def = deployments();
        let mut store = Store::new(2);
        let start = store.resource_version();
        for i in 0..3 {
            store
                .create(&def, deployment("ns", &format!("d{i}"), 1))
                .expect("create");
        }
        assert!(store.events_since(start).is_none());
        let recent = store.resource_version() - 1;
        assert_eq!(store.events_since(recent).map(|e| e.len()), Some(1));
    }
}
