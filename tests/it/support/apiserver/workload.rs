//! Optional stand-in for the Deployment/ReplicaSet/StatefulSet controllers (off by default):
//! when a workload's desired replica count changes, its status reports that many replicas
//! as ready and available, immediately or after a delay, so tests can exercise logic that
//! waits for available replicas.

use std::sync::Arc;

use serde_json::Value;

use super::objects::{name_of, namespace_of, set_pointer};
use super::ops::{ObjectRef, Target};
use super::resources::ResourceDef;
use super::shared::Shared;

/// The field manager the simulated controllers write status as.
const MANAGER: &str = "apiserver-double-workloads";

impl Shared {
    /// Called after every write of any object (`new` is `None` after a deletion).
    pub fn after_write(
        self: &Arc<Self>,
        def: &ResourceDef,
        old: Option<&Value>,
        new: Option<&Value>,
    ) {
        self.pods_after_write(def, old, new);
        let Some(delay) = self.settings().workload_delay else {
            return;
        };
        let (Some(paths), Some(new)) = (&def.scale, new) else {
            return;
        };
        if def.gvr.group != "apps" {
            return;
        }
        let desired = new.pointer(&paths.spec_replicas);
        if old.is_some_and(|old| old.pointer(&paths.spec_replicas) == desired) {
            return;
        }
        let namespace = namespace_of(new).map(str::to_string);
        let name = name_of(new).to_string();
        if delay.is_zero() {
            self.sync_workload_status(def, namespace.as_deref(), &name);
        } else if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let shared = Arc::clone(self);
            let def = def.clone();
            runtime.spawn(async move {
                tokio::time::sleep(delay).await;
                shared.sync_workload_status(&def, namespace.as_deref(), &name);
            });
        }
    }

    /// Makes the status report the current desired replicas as ready and available.
    fn sync_workload_status(
        self: &Arc<Self>,
        def: &ResourceDef,
        namespace: Option<&str>,
        name: &str,
    ) {
        let Some(paths) = def.scale.clone() else {
            return;
        };
        // The object may have been deleted meanwhile; then there is nothing to do.
        let _ = self.modify_object(
            ObjectRef::new(def, namespace, name),
            Target::Status,
            MANAGER,
            None,
            |old, _| {
                // Deployments default to one replica when spec.replicas is unset.
                let replicas = old
                    .pointer(&paths.spec_replicas)
                    .and_then(Value::as_i64)
                    .unwrap_or(1);
                let generation = old
                    .pointer("/metadata/generation")
                    .cloned()
                    .unwrap_or(Value::from(1));
                let mut next = old.clone();
                set_pointer(&mut next, &paths.status_replicas, Value::from(replicas));
                for field in ["readyReplicas", "availableReplicas", "updatedReplicas"] {
                    set_pointer(
                        &mut next,
                        &format!("/status/{field}"),
                        Value::from(replicas),
                    );
                }
                set_pointer(&mut next, "/status/observedGeneration", generation);
                Ok(next)
            },
        );
    }
}
