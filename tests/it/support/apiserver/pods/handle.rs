//! The test-facing side of the Pod simulation: switching it on, following its events,
//! listing a workload's Pods and changing them as a kubelet or a controller would.

use std::time::Duration;

use serde_json::Value;
use tokio::sync::broadcast;

use super::super::objects::{now_timestamp, set_pointer};
use super::super::ops::{ObjectRef, Target};
use super::super::resources::Gvr;
use super::super::shared::PodIps;
use super::super::status::ApiError;
use super::super::{ApiServerDouble, TEST_MANAGER};
use super::rank::{DELETION_COST, is_ready};
use super::template::pod_ip;
use super::{PodEvent, PodSummary, WorkloadKind, is_terminating};

impl ApiServerDouble {
    /// `true`: Deployments, ReplicaSets and StatefulSets get Pods that follow their desired
    /// replicas (see `pods/mod.rs`). Applies to replica changes from now on; existing
    /// workloads get their Pods at their next change.
    pub fn simulate_pods(&self, enabled: bool) {
        self.shared.update_settings(|s| s.simulate_pods = enabled);
    }

    /// The IPs Pods created from now on get (default [`PodIps::Cluster`]).
    pub fn set_pod_ips(&self, ips: PodIps) {
        self.shared.update_settings(|s| s.pod_ips = ips);
    }

    /// How long a removed Pod stays terminating before the object is deleted (default zero).
    pub fn set_pod_termination_grace(&self, grace: Duration) {
        self.shared
            .update_settings(|s| s.pod_termination_grace = grace);
    }

    /// Every [`PodEvent`] from now on. Subscribe before the writes you want to see.
    pub fn pod_events(&self) -> broadcast::Receiver<PodEvent> {
        self.shared.pods.subscribe()
    }

    /// The simulated Pods of a workload (`Gvr::DEPLOYMENTS`, `REPLICASETS` or
    /// `STATEFULSETS`), terminating ones included, oldest first. Read once the requests being
    /// answered are done: a test that saw a scale write's replicas in the store also sees
    /// the pods follow it.
    pub fn pods_of(&self, gvr: &Gvr, namespace: &str, workload: &str) -> Vec<PodSummary> {
        let Some(kind) = WorkloadKind::of(gvr) else {
            return Vec::new();
        };
        let _settled = self.shared.recorder.settled();
        let mut tracked: Vec<_> = self
            .shared
            .pods
            .tracked()
            .values()
            .filter(|t| {
                t.pod.kind == kind && t.pod.namespace == namespace && t.pod.workload == workload
            })
            .map(|t| (t.seq, t.pod.name.clone()))
            .collect();
        tracked.sort();
        tracked
            .into_iter()
            .filter_map(|(_, name)| self.get(&Gvr::PODS, Some(namespace), &name))
            .map(|pod| summary(&pod))
            .collect()
    }

    /// Names of the workload's Pods that are not terminating, oldest first.
    pub fn live_pod_names(&self, gvr: &Gvr, namespace: &str, workload: &str) -> Vec<String> {
        self.pods_of(gvr, namespace, workload)
            .into_iter()
            .filter(|p| !p.terminating)
            .map(|p| p.name)
            .collect()
    }

    /// Sets (`Some`) or removes (`None`) one annotation of a Pod.
    pub fn set_pod_annotation(
        &self,
        namespace: &str,
        pod: &str,
        key: &str,
        value: Option<&str>,
    ) -> Result<Value, ApiError> {
        self.modify(&Gvr::PODS, Some(namespace), pod, |p| {
            let annotations = &mut p["metadata"]["annotations"];
            if !annotations.is_object() {
                *annotations = Value::Object(Default::default());
            }
            if let Some(map) = annotations.as_object_mut() {
                match value {
                    Some(value) => {
                        map.insert(key.to_string(), Value::from(value));
                    }
                    None => {
                        map.remove(key);
                    }
                }
            }
        })
    }

    /// Sets `controller.kubernetes.io/pod-deletion-cost` as the controller under test would.
    pub fn set_pod_deletion_cost(
        &self,
        namespace: &str,
        pod: &str,
        cost: i32,
    ) -> Result<Value, ApiError> {
        self.set_pod_annotation(namespace, pod, DELETION_COST, Some(&cost.to_string()))
    }

    /// Flips a Pod's Ready condition (as a failing readiness probe would), through the
    /// `/status` subresource like a kubelet.
    pub fn set_pod_ready(
        &self,
        namespace: &str,
        pod: &str,
        ready: bool,
    ) -> Result<Value, ApiError> {
        let def = self.def(&Gvr::PODS)?;
        self.shared.modify_object(
            ObjectRef::new(&def, Some(namespace), pod),
            Target::Status,
            TEST_MANAGER,
            None,
            |old, _| {
                let mut next = old.clone();
                let status = if ready { "True" } else { "False" };
                let mut conditions: Vec<Value> = next
                    .pointer("/status/conditions")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                conditions.retain(|c| c["type"] != "Ready");
                conditions.push(serde_json::json!({
                    "type": "Ready",
                    "status": status,
                    "lastTransitionTime": now_timestamp(),
                }));
                set_pointer(&mut next, "/status/conditions", Value::from(conditions));
                Ok(next)
            },
        )
    }
}

fn summary(pod: &Value) -> PodSummary {
    PodSummary {
        name: pod
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        ip: pod_ip(pod).to_string(),
        deletion_cost: pod
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(DELETION_COST))
            .and_then(Value::as_str)
            .map(str::to_string),
        ready: is_ready(pod),
        terminating: is_terminating(pod),
    }
}
