//! WPA status writes, off the reconcile path: a reconcile hands over the status it wants and
//! moves on. Only a WPA's latest status is kept, so while writes wait for the API budget a WPA
//! whose status changes again still costs one write. Status writes are the least important
//! requests (see `ratelimit`), so they never delay a scale write.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use prometheus::IntGauge;
use serde_json::json;
use tokio::sync::Notify;
use tracing::{debug, warn};

use super::key::WpaKey;
use crate::crd::{WorkerPodAutoScaler, WorkerPodAutoScalerStatus};

/// Status writes in flight at once. More only queue inside the API pacing.
const WRITERS: usize = 4;

#[derive(Default)]
struct Pending {
    statuses: HashMap<WpaKey, WorkerPodAutoScalerStatus>,
    /// Keys in the order their first pending status arrived.
    order: VecDeque<WpaKey>,
}

pub struct StatusWriter {
    client: Client,
    /// `wpa_status_writes_pending`.
    backlog_gauge: IntGauge,
    pending: Mutex<Pending>,
    wake: Notify,
}

impl StatusWriter {
    pub fn new(client: Client, backlog_gauge: IntGauge) -> Arc<Self> {
        Arc::new(Self {
            client,
            backlog_gauge,
            pending: Mutex::new(Pending::default()),
            wake: Notify::new(),
        })
    }

    fn pending(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `status` for the WPA, replacing any status of it not written yet.
    pub fn submit(&self, key: &WpaKey, status: WorkerPodAutoScalerStatus) {
        let mut pending = self.pending();
        if pending.statuses.insert(key.clone(), status).is_none() {
            pending.order.push_back(key.clone());
        }
        self.backlog_gauge.set(gauge_value(pending.statuses.len()));
        drop(pending);
        self.wake.notify_one();
    }

    /// Drops a WPA's unwritten status (it was deleted).
    pub fn forget(&self, key: &WpaKey) {
        let mut pending = self.pending();
        if pending.statuses.remove(key).is_some() {
            pending.order.retain(|k| k != key);
        }
    }

    fn next(&self) -> Option<(WpaKey, WorkerPodAutoScalerStatus)> {
        let mut pending = self.pending();
        let key = pending.order.pop_front()?;
        let status = pending.statuses.remove(&key)?;
        self.backlog_gauge.set(gauge_value(pending.statuses.len()));
        Some((key, status))
    }

    /// Writes queued statuses until the task is aborted.
    pub async fn run(self: Arc<Self>) {
        let writers = (0..WRITERS).map(|_| {
            let this = self.clone();
            async move {
                loop {
                    match this.next() {
                        Some((key, status)) => this.write(&key, status).await,
                        None => this.wake.notified().await,
                    }
                }
            }
        });
        futures::future::join_all(writers).await;
    }

    async fn write(&self, key: &WpaKey, status: WorkerPodAutoScalerStatus) {
        let api: Api<WorkerPodAutoScaler> = Api::namespaced(self.client.clone(), key.namespace());
        let result = api
            .patch_status(
                key.name(),
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": status })),
            )
            .await;
        match result {
            Ok(_) => {}
            // Deleted meanwhile: nothing to report on.
            Err(kube::Error::Api(e)) if e.code == 404 => {
                debug!(wpa = %key, "WPA gone before its status was written");
            }
            // The next reconcile sees the stored status differ and submits it again.
            Err(e) => warn!(wpa = %key, error = %e, "cannot write the WPA status"),
        }
    }
}

fn gauge_value(count: usize) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}
