//! What every reconcile shares: clients, the queue registry, settings, metrics and the
//! per-WPA memory; and forgetting WPAs that are gone.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;

use kube::Client;
use kube::runtime::events::Recorder;
use kube::runtime::reflector::Store;
use tracing::info;

use super::api_errors::FailureLog;
use super::key::WpaKey;
use super::memory::Memories;
use super::metrics::{Metrics, WpaLabels};
use super::plan::PlanSettings;
use super::pods::PodCacheState;
use super::shutdown::Shutdown;
use super::status_writer::StatusWriter;
use super::target::Targets;
use crate::crd::WorkerPodAutoScaler;
use crate::queue::ProviderKind;
use crate::queue::registry::Registry;
use crate::workers::WorkerSignals;

pub struct Context {
    pub client: Client,
    pub registry: Registry,
    pub targets: Targets,
    /// Scaler settings, `--dry-run` and the resync period.
    pub plan: PlanSettings,
    /// Provider kinds `--queue-services` enables.
    pub enabled: Vec<ProviderKind>,
    pub metrics: Metrics,
    pub recorder: Recorder,
    pub memories: Memories,
    pub status_writer: Arc<StatusWriter>,
    pub shutdown: Shutdown,
    /// The brokers' worker-event listeners.
    pub workers: WorkerSignals,
    /// The pods (pruned to what worker-aware scale-in reads).
    pub pods: Store<Pod>,
    /// Whether the pod cache can be trusted yet.
    pub pod_cache: Arc<PodCacheState>,
    /// `--idle-window`: a worker that ran a task this recently is not idle.
    pub idle_window: Duration,
    /// Each WPA's last reconcile failure, so that one failing the same way on every retry
    /// is logged once.
    pub failures: FailureLog,
}

/// Metric labels of one WPA, owning its queue label.
pub struct OwnedLabels<'a> {
    key: &'a WpaKey,
    queue: String,
}

impl OwnedLabels<'_> {
    pub fn as_labels(&self) -> WpaLabels<'_> {
        WpaLabels {
            name: self.key.name(),
            namespace: self.key.namespace(),
            queue_name: &self.queue,
        }
    }
}

impl Context {
    pub fn labels<'a>(&self, key: &'a WpaKey) -> OwnedLabels<'a> {
        OwnedLabels {
            key,
            queue: self.memories.queue_label(key),
        }
    }

    pub fn update_worker_listener_gauge(&self) {
        self.metrics
            .worker_listeners
            .set(i64::try_from(self.workers.listeners()).unwrap_or(i64::MAX));
    }

    pub fn update_poll_loop_gauge(&self) {
        self.metrics
            .poll_loops
            .set(i64::try_from(self.registry.active_loops()).unwrap_or(i64::MAX));
    }

    /// Stops polling for a WPA that is gone and drops its metrics; its target is left as is.
    pub fn forget(&self, key: &WpaKey) {
        self.registry.unsubscribe(key.id());
        self.workers.detach(key.id());
        self.update_worker_listener_gauge();
        self.status_writer.forget(key);
        self.failures.forget(&key.to_string());
        self.update_poll_loop_gauge();
        if let Some(queue_label) = self.memories.remove(key) {
            self.metrics.forget(&WpaLabels {
                name: key.name(),
                namespace: key.namespace(),
                queue_name: &queue_label,
            });
            info!(wpa = %key, "WPA removed; stopped watching its queue");
        }
    }

    /// Forgets every WPA that is no longer in the watch cache (deletes missed while the
    /// watch was down leave no Delete event).
    pub fn sweep(&self, store: &Store<WorkerPodAutoScaler>) {
        let live: HashSet<WpaKey> = store.state().iter().map(|w| WpaKey::of(w)).collect();
        for key in self
            .memories
            .keys()
            .into_iter()
            .filter(|k| !live.contains(k))
        {
            self.forget(&key);
        }
    }
}
