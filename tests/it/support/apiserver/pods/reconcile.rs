//! Creating and terminating Pods so that a workload's live Pods match its desired replicas,
//! as one pass of the ReplicaSet or StatefulSet controller's sync would.

use std::sync::Arc;

use serde_json::Value;

use super::super::ops::ObjectRef;
use super::super::resources::{Gvr, ResourceDef};
use super::super::shared::Shared;
use super::super::store::ObjectKey;
use super::rank::{Rank, delete_first};
use super::template::{self, Owner};
use super::{PodRef, Tracked, WorkloadKind, is_terminating};

/// The field manager the simulated controllers write Pods as.
const MANAGER: &str = "apiserver-double-pods";

/// A simulated Pod of the workload being reconciled, with its stored object.
struct Current {
    tracked: Tracked,
    object: Value,
}

impl Shared {
    /// Brings the Pods of one workload in line with its `spec.replicas` (0 when the workload
    /// is gone). Serialised, so concurrent scale writes cannot both create missing Pods.
    pub(super) fn reconcile_pods(
        self: &Arc<Self>,
        kind: WorkloadKind,
        namespace: &str,
        name: &str,
    ) {
        let _one_at_a_time = self
            .pods
            .reconciling
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let (Some(workload_def), Some(pod_def)) =
            (self.resolve(&kind.gvr()), self.resolve(&Gvr::PODS))
        else {
            return;
        };
        let workload = self
            .get_object(ObjectRef::new(&workload_def, Some(namespace), name))
            .ok();
        let uid = workload
            .as_ref()
            .and_then(|w| w.pointer("/metadata/uid"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let (live, stale): (Vec<Current>, Vec<Current>) = self
            .current_pods(&pod_def, kind, namespace, name)
            .into_iter()
            .filter(|p| !is_terminating(&p.object))
            .partition(|p| workload.is_some() && p.tracked.owner_uid == uid);
        // Pods of a deleted (or deleted and recreated) workload go, as the garbage collector
        // would remove them.
        for pod in &stale {
            self.terminate_pod(&pod_def, &pod.tracked.pod);
        }
        let Some(workload) = workload else {
            return;
        };
        // Deployments and StatefulSets default to one replica when it is unset.
        let desired = workload
            .pointer("/spec/replicas")
            .and_then(Value::as_u64)
            .unwrap_or(1) as usize;
        let owner = Owner {
            kind,
            workload: &workload,
            namespace,
            name,
            uid: &uid,
        };
        match kind {
            WorkloadKind::StatefulSet => self.sync_ordinals(&pod_def, &owner, live, desired),
            WorkloadKind::Deployment | WorkloadKind::ReplicaSet => {
                self.sync_count(&pod_def, &owner, live, desired)
            }
        }
    }

    /// The simulated Pods of a workload (any incarnation), oldest first.
    fn current_pods(
        &self,
        pod_def: &ResourceDef,
        kind: WorkloadKind,
        namespace: &str,
        name: &str,
    ) -> Vec<Current> {
        let mut mine: Vec<Tracked> = self
            .pods
            .tracked()
            .values()
            .filter(|t| {
                t.pod.kind == kind && t.pod.namespace == namespace && t.pod.workload == name
            })
            .cloned()
            .collect();
        mine.sort_by_key(|t| t.seq);
        let store = self.store();
        mine.into_iter()
            .filter_map(|tracked| {
                let key = ObjectKey::new(pod_def, Some(namespace), &tracked.pod.name);
                let object = store.get(&key)?.clone();
                Some(Current { tracked, object })
            })
            .collect()
    }

    /// ReplicaSet behaviour: create the missing number of Pods, or terminate the surplus in
    /// the real controller's deletion order.
    fn sync_count(
        self: &Arc<Self>,
        pod_def: &ResourceDef,
        owner: &Owner<'_>,
        mut live: Vec<Current>,
        desired: usize,
    ) {
        if live.len() < desired {
            for _ in live.len()..desired {
                let prefix = match owner.kind {
                    WorkloadKind::Deployment => {
                        template::replicaset_name(owner.name, &template::template_hash(owner.uid))
                    }
                    _ => owner.name.to_string(),
                };
                // Retry on the (unlikely) clash of a random suffix with an existing Pod.
                while !self.create_pod(
                    pod_def,
                    owner,
                    &format!("{prefix}-{}", template::random_suffix()),
                ) {}
            }
            return;
        }
        // `live` is in creation order and the sort is stable; the rank decides anyway.
        live.sort_by(|a, b| {
            delete_first(
                &Rank::of(&a.object, a.tracked.seq),
                &Rank::of(&b.object, b.tracked.seq),
            )
        });
        for pod in live.iter().take(live.len() - desired) {
            self.terminate_pod(pod_def, &pod.tracked.pod);
        }
    }

    /// StatefulSet behaviour: Pods `<name>-0 ..= <name>-(desired-1)`; higher ordinals are
    /// terminated, highest first, whatever their deletion cost.
    fn sync_ordinals(
        self: &Arc<Self>,
        pod_def: &ResourceDef,
        owner: &Owner<'_>,
        live: Vec<Current>,
        desired: usize,
    ) {
        let ordinal = |pod: &Current| {
            pod.tracked
                .pod
                .name
                .rsplit('-')
                .next()
                .and_then(|o| o.parse::<usize>().ok())
        };
        let mut surplus: Vec<(usize, &Current)> = live
            .iter()
            .filter_map(|p| ordinal(p).map(|o| (o, p)))
            .filter(|(o, _)| *o >= desired)
            .collect();
        surplus.sort_by_key(|(ordinal, _)| std::cmp::Reverse(*ordinal));
        for (_, pod) in surplus {
            self.terminate_pod(pod_def, &pod.tracked.pod);
        }
        for ordinal in 0..desired {
            let pod_name = format!("{}-{ordinal}", owner.name);
            // A Pod still terminating keeps its name: the ordinal is created again when it is
            // gone (the delayed deletion reconciles once more).
            let exists = self
                .store()
                .get(&ObjectKey::new(pod_def, Some(owner.namespace), &pod_name))
                .is_some();
            if !exists {
                self.create_pod(pod_def, owner, &pod_name);
            }
        }
    }

    /// Creates one Pod; false when the name is taken.
    fn create_pod(
        self: &Arc<Self>,
        pod_def: &ResourceDef,
        owner: &Owner<'_>,
        pod_name: &str,
    ) -> bool {
        let pod = PodRef {
            namespace: owner.namespace.to_string(),
            name: pod_name.to_string(),
            kind: owner.kind,
            workload: owner.name.to_string(),
        };
        let key = (pod.namespace.clone(), pod.name.clone());
        if self.pods.tracked().contains_key(&key) {
            return false;
        }
        // Tracked before the write, so that the write's after-hook reports it as Created.
        self.pods.tracked().insert(
            key.clone(),
            Tracked {
                pod,
                owner_uid: owner.uid.to_string(),
                seq: self.pods.next_seq(),
            },
        );
        let ip = self.pods.next_ip(self.settings().pod_ips);
        let object = template::pod(owner, pod_name, &ip);
        match self.insert_object(pod_def, object, MANAGER, None) {
            Ok(_) => true,
            Err(error) => {
                self.pods.tracked().remove(&key);
                if error.code != 409 {
                    tracing::warn!(%error, pod_name, "simulated Pod not created");
                    // Not a name clash: retrying would not help.
                    return true;
                }
                false
            }
        }
    }

    /// Marks a Pod terminating, then deletes it after the configured grace.
    fn terminate_pod(self: &Arc<Self>, pod_def: &ResourceDef, pod: &PodRef) {
        let grace = self.settings().pod_termination_grace;
        let key = ObjectKey::new(pod_def, Some(&pod.namespace), &pod.name);
        let marked = self
            .store()
            .mark_terminating(pod_def, &key, grace.as_secs());
        let Ok((old, new)) = marked else {
            return; // already gone
        };
        self.after_write(pod_def, Some(&old), Some(&new));
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) if !grace.is_zero() => {
                let shared = Arc::clone(self);
                let pod_def = pod_def.clone();
                let pod = pod.clone();
                runtime.spawn(async move {
                    tokio::time::sleep(grace).await;
                    shared.remove_pod(&pod_def, &pod.namespace, &pod.name);
                    // A StatefulSet may be waiting for this ordinal's name to be free.
                    shared.reconcile_pods(pod.kind, &pod.namespace, &pod.workload);
                });
            }
            _ => self.remove_pod(pod_def, &pod.namespace, &pod.name),
        }
    }

    fn remove_pod(self: &Arc<Self>, pod_def: &ResourceDef, namespace: &str, name: &str) {
        // Already gone (deleted by a test) is fine.
        let _ = self.delete_object(ObjectRef::new(pod_def, Some(namespace), name), &Value::Null);
    }
}
