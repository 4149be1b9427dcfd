//! Optional stand-in for the Pods that the ReplicaSet and StatefulSet controllers would
//! create (off by default; `ApiServerDouble::simulate_pods(true)`).
//!
//! When a Deployment, ReplicaSet or StatefulSet is created, deleted, or its `spec.replicas`
//! changes (directly or through `/scale`), the double creates or deletes Pod objects so that
//! the number of live Pods follows the desired replicas, in the same call as the write that
//! changed it (the workload status delay of `simulate_workloads` does not apply to Pods).
//!
//! - `template.rs`: the Pod objects (names, labels, ownerReferences, a Running and Ready
//!   status with a unique IP).
//! - `rank.rs`: which Pods a ReplicaSet removes first on a scale-down.
//! - `reconcile.rs`: creating and terminating Pods to match the replicas.
//! - `handle.rs`: the test-facing methods on `ApiServerDouble`.
//!
//! # Choices and simplifications
//!
//! - Deployments get no ReplicaSet object. Their Pods are named
//!   `<deployment>-<hash>-<5 random>` with a `pod-template-hash` label, where the hash is
//!   derived from the Deployment's uid (stable for the Deployment's life, not from the
//!   template: rollouts are not simulated), and their controller ownerReference names a
//!   ReplicaSet `<deployment>-<hash>` with a uid derived the same way, as a real Pod's does.
//! - StatefulSets behave like `podManagementPolicy: Parallel`: all missing ordinals are
//!   created and all surplus ones deleted at once (highest ordinal first), and an ordinal
//!   whose Pod is still terminating is created again once that Pod is gone.
//! - A removed Pod first becomes terminating (`deletionTimestamp`), then is deleted after
//!   `set_pod_termination_grace` (default zero: in the same call). The grace is the API
//!   side only; a pod runner applies its own kill grace to the processes.
//! - A simulated Pod deleted by someone else (an HTTP DELETE) is removed at once, not
//!   gracefully, and replaced, as the ReplicaSet controller would.
//! - Deleting a workload terminates its Pods (the double has no garbage collector).
//! - Pods only change phase, readiness or annotations when a test writes them.

mod handle;
mod rank;
mod reconcile;
mod template;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;
use tokio::sync::broadcast;

use super::objects::{name_of, namespace_of};
use super::resources::{Gvr, ResourceDef};
use super::shared::{PodIps, Shared};

pub use rank::DELETION_COST;

/// The kinds of workload that own simulated Pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WorkloadKind {
    Deployment,
    ReplicaSet,
    StatefulSet,
}

impl WorkloadKind {
    pub fn of(gvr: &Gvr) -> Option<Self> {
        match (gvr.group.as_ref(), gvr.resource.as_ref()) {
            ("apps", "deployments") => Some(WorkloadKind::Deployment),
            ("apps", "replicasets") => Some(WorkloadKind::ReplicaSet),
            ("apps", "statefulsets") => Some(WorkloadKind::StatefulSet),
            _ => None,
        }
    }

    pub fn gvr(self) -> Gvr {
        match self {
            WorkloadKind::Deployment => Gvr::DEPLOYMENTS,
            WorkloadKind::ReplicaSet => Gvr::REPLICASETS,
            WorkloadKind::StatefulSet => Gvr::STATEFULSETS,
        }
    }
}

/// One simulated Pod as named in [`PodEvent`]s.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    pub kind: WorkloadKind,
    /// The name of the owning Deployment, ReplicaSet or StatefulSet.
    pub workload: String,
}

/// What happened to a simulated Pod, in the order the store applied it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodEvent {
    /// The Pod was created, Running and Ready with `ip`.
    Created { pod: PodRef, ip: String },
    /// The Pod got its deletionTimestamp: the kubelet would now send SIGTERM.
    Terminating { pod: PodRef },
    /// The Pod object is gone.
    Deleted { pod: PodRef },
}

impl PodEvent {
    pub fn pod(&self) -> &PodRef {
        match self {
            PodEvent::Created { pod, .. }
            | PodEvent::Terminating { pod }
            | PodEvent::Deleted { pod } => pod,
        }
    }
}

/// A simulated Pod as a test sees it (see `ApiServerDouble::pods_of`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodSummary {
    pub name: String,
    pub ip: String,
    /// The raw `controller.kubernetes.io/pod-deletion-cost` annotation, if any.
    pub deletion_cost: Option<String>,
    pub ready: bool,
    /// Has a deletionTimestamp.
    pub terminating: bool,
}

impl PodSummary {
    /// The deletion cost as the ReplicaSet controller ranks it (absent or invalid: 0).
    pub fn cost(&self) -> i32 {
        rank::parse_cost(self.deletion_cost.as_deref())
    }
}

/// What the double remembers about a Pod it created.
#[derive(Debug, Clone)]
struct Tracked {
    pod: PodRef,
    /// The uid of the workload incarnation that created the Pod.
    owner_uid: String,
    /// Creation order: breaks ties of the second-precision creationTimestamp.
    seq: u64,
}

/// Bookkeeping of simulated Pods, kept in `Shared`.
pub struct PodSim {
    tracked: Mutex<HashMap<(String, String), Tracked>>,
    events: broadcast::Sender<PodEvent>,
    next_seq: AtomicU64,
    next_ip: AtomicU64,
    /// Held while one workload's Pods are being reconciled, so that two concurrent scale
    /// writes cannot both create the missing Pods.
    reconciling: Mutex<()>,
}

impl Default for PodSim {
    fn default() -> Self {
        PodSim {
            tracked: Mutex::new(HashMap::new()),
            // Generous, so that a test consuming events slowly does not lag behind.
            events: broadcast::channel(4096).0,
            next_seq: AtomicU64::new(1),
            next_ip: AtomicU64::new(1),
            reconciling: Mutex::new(()),
        }
    }
}

impl PodSim {
    fn tracked(&self) -> MutexGuard<'_, HashMap<(String, String), Tracked>> {
        self.tracked.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn next_seq(&self) -> u64 {
        self.next_seq.fetch_add(1, Ordering::SeqCst)
    }

    /// The next Pod's IP: from a per-server counter (`10.a.b.c`, or `127.a.b.c` with
    /// `a` >= 1 on loopback), or the one shared address.
    fn next_ip(&self, ips: PodIps) -> String {
        let n = self.next_ip.fetch_add(1, Ordering::SeqCst);
        let (first, a) = match ips {
            PodIps::Cluster => (10, (n >> 16) & 0xff),
            PodIps::Loopback => (127, 1 + ((n >> 16) & 0x7f)),
            PodIps::Shared => return "127.0.0.1".to_string(),
        };
        format!("{first}.{a}.{}.{}", (n >> 8) & 0xff, n & 0xff)
    }

    pub fn subscribe(&self) -> broadcast::Receiver<PodEvent> {
        self.events.subscribe()
    }

    fn emit(&self, event: PodEvent) {
        // No receivers just means no test is listening.
        let _ = self.events.send(event);
    }
}

fn is_terminating(pod: &Value) -> bool {
    pod.pointer("/metadata/deletionTimestamp").is_some()
}

impl Shared {
    /// Called after every write: follows workload replica changes with Pods and turns
    /// writes of simulated Pods into [`PodEvent`]s.
    pub fn pods_after_write(
        self: &Arc<Self>,
        def: &ResourceDef,
        old: Option<&Value>,
        new: Option<&Value>,
    ) {
        if def.gvr == Gvr::PODS {
            self.pod_written(old, new);
            return;
        }
        let Some(kind) = WorkloadKind::of(&def.gvr) else {
            return;
        };
        if !self.settings().simulate_pods {
            return;
        }
        let Some(object) = new.or(old) else {
            return;
        };
        let replicas = |o: &Value| o.pointer("/spec/replicas").cloned();
        let uid = |o: &Value| o.pointer("/metadata/uid").cloned();
        if let (Some(old), Some(new)) = (old, new)
            && replicas(old) == replicas(new)
            && uid(old) == uid(new)
        {
            return;
        }
        let namespace = namespace_of(object).unwrap_or_default().to_string();
        let name = name_of(object).to_string();
        self.reconcile_pods(kind, &namespace, &name);
    }

    fn pod_written(self: &Arc<Self>, old: Option<&Value>, new: Option<&Value>) {
        let Some(object) = new.or(old) else {
            return;
        };
        let key = (
            namespace_of(object).unwrap_or_default().to_string(),
            name_of(object).to_string(),
        );
        let event = {
            let mut tracked = self.pods.tracked();
            let Some(entry) = tracked.get(&key) else {
                return;
            };
            let pod = entry.pod.clone();
            match (old, new) {
                (None, Some(new)) => PodEvent::Created {
                    pod,
                    ip: template::pod_ip(new).to_string(),
                },
                (Some(old), Some(new)) if !is_terminating(old) && is_terminating(new) => {
                    PodEvent::Terminating { pod }
                }
                (_, None) => {
                    tracked.remove(&key);
                    PodEvent::Deleted { pod }
                }
                _ => return,
            }
        };
        let abrupt =
            matches!(event, PodEvent::Deleted { .. }) && old.is_some_and(|o| !is_terminating(o));
        let pod = event.pod().clone();
        self.pods.emit(event);
        // A Pod removed without terminating first was deleted by someone else: replace
        // it. (Pods this module removes are terminating first, and never replaced here,
        // which also keeps this from re-entering a reconcile in progress.)
        if abrupt && self.settings().simulate_pods {
            self.reconcile_pods(pod.kind, &pod.namespace, &pod.workload);
        }
    }
}
