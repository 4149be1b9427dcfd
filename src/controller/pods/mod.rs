//! The target's pods and what their workers report: which pods are busy, idle or unknown,
//! and the `pod-deletion-cost` each should carry so that a ReplicaSet removes idle pods
//! first. The classification is pure; the pod cache comes from a watch (`watch`).

mod classify;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Pod, PodSpec, PodStatus};
use kube::api::Api;
use kube::core::{Selector, SelectorExt};
use kube::runtime::reflector::{Store, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};

use super::watch_log::WatchLog;
use crate::sync::lock;

#[cfg(test)]
pub use classify::{BUSY_COST, IDLE_COST};
pub use classify::{
    ClassifiedPod, DELETION_COST_ANNOTATION, DRAINING_ANNOTATION, PodView, PodWork, classify,
    runs_in,
};

/// A pod selector from a `Scale`'s `status.selector` (`a=b,c=d`). Only equality terms are
/// understood; anything else gives `None` (the pods are then not matched, so unknown).
pub fn selector_from_string(text: &str) -> Option<Selector> {
    let mut labels = BTreeMap::new();
    for term in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let (key, value) = term
            .split_once("==")
            .or_else(|| term.split_once('='))
            .filter(|(k, _)| !k.ends_with('!'))?;
        labels.insert(key.trim().to_string(), value.trim().to_string());
    }
    (!labels.is_empty()).then(|| labels.into_iter().collect())
}

/// The running (not terminating) pods in `namespace` that `selector` selects, oldest name
/// order, with the StatefulSet ordinal when `ordinals_of` names the set.
pub fn target_pods(
    store: &Store<Pod>,
    namespace: &str,
    selector: &Selector,
    ordinals_of: Option<&str>,
) -> Vec<PodView> {
    if selector.selects_all() {
        // An empty selector would take every pod of the namespace: never ours to rank.
        return Vec::new();
    }
    let mut pods: Vec<PodView> = store
        .state()
        .iter()
        .filter(|p| p.namespace().as_deref() == Some(namespace))
        .filter(|p| p.meta().deletion_timestamp.is_none())
        .filter(|p| selector.matches(p.labels()))
        .map(|p| {
            let name = p.name_any();
            let ordinal = ordinals_of.and_then(|set| {
                name.strip_prefix(set)
                    .and_then(|rest| rest.strip_prefix('-'))
                    .and_then(|n| n.parse().ok())
            });
            PodView {
                ordinal,
                deletion_cost: p.annotations().get(DELETION_COST_ANNOTATION).cloned(),
                draining: p.annotations().get(DRAINING_ANNOTATION).cloned(),
                grace_seconds: p
                    .spec
                    .as_ref()
                    .and_then(|s| s.termination_grace_period_seconds),
                ip: p.status.as_ref().and_then(|s| s.pod_ip.clone()),
                name,
            }
        })
        .collect();
    pods.sort_by(|a, b| a.name.cmp(&b.name));
    pods
}

/// Where the pod cache stands: before its first complete listing a pod missing from it
/// says nothing; a listing refused (RBAC without pods) means worker-aware scale-in is off.
#[derive(Debug, Default)]
pub struct PodCacheState {
    synced: AtomicBool,
    error: Mutex<Option<String>>,
}

/// What the pod cache can tell now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodCache {
    /// The first listing has not finished.
    Waiting,
    Synced,
    /// The pods cannot be listed (the error, e.g. 403 Forbidden).
    Failing(String),
}

impl PodCacheState {
    /// Takes in one event of the pod watch.
    pub fn observe(&self, event: &Result<watcher::Event<Pod>, watcher::Error>) {
        match event {
            Ok(watcher::Event::InitDone) => {
                self.synced.store(true, Ordering::SeqCst);
                *lock(&self.error) = None;
            }
            Ok(_) => {}
            Err(e) => {
                // Once synced, a failing watch keeps the last listing (it resumes by itself).
                if !self.synced.load(Ordering::SeqCst) {
                    *lock(&self.error) = Some(e.to_string());
                }
            }
        }
    }

    pub fn state(&self) -> PodCache {
        if self.synced.load(Ordering::SeqCst) {
            return PodCache::Synced;
        }
        match lock(&self.error).clone() {
            Some(error) => PodCache::Failing(error),
            None => PodCache::Waiting,
        }
    }
}

/// The Pod watch, cached with only what the classification and the drain read (name,
/// labels, the deletion cost and draining annotations, terminating or not, the pod IP,
/// the termination grace period): a cluster's pods would otherwise dominate memory.
pub fn watch(
    api: Api<Pod>,
    writer: Writer<Pod>,
    state: Arc<PodCacheState>,
) -> impl Stream<Item = Result<watcher::Event<Pod>, watcher::Error>> + Send + 'static {
    let log = WatchLog::new("pods");
    watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(|p: &mut Pod| {
            p.managed_fields_mut().clear();
            p.annotations_mut()
                .retain(|k, _| k == DELETION_COST_ANNOTATION || k == DRAINING_ANNOTATION);
            p.meta_mut().owner_references = None;
            // The grace period bounds a drain by default (the time the pod would get anyway).
            p.spec = p.spec.take().map(|s| PodSpec {
                termination_grace_period_seconds: s.termination_grace_period_seconds,
                ..PodSpec::default()
            });
            // The pod IP maps a broker connection's peer to its pod.
            p.status = p.status.take().map(|s| PodStatus {
                pod_ip: s.pod_ip,
                ..PodStatus::default()
            });
        })
        .reflect(writer)
        .inspect(move |event| {
            log.observe(event);
            state.observe(event);
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_status_selectors() {
        let s = selector_from_string("app=worker, tier==celery").expect("selector");
        let labels: BTreeMap<String, String> = [("app", "worker"), ("tier", "celery"), ("x", "y")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert!(s.matches(&labels));
        assert!(selector_from_string("app!=worker").is_none());
        assert!(selector_from_string("app in (a,b)").is_none());
        assert!(selector_from_string("").is_none());
    }
}
