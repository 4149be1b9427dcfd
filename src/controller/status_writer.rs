//! WPA status writes, off the reconcile path: a reconcile hands over the status it wants and
//! moves on. Only a WPA's latest status is kept, so while writes wait for the API budget a WPA
//! whose status changes again still costs one write. Status writes are the least important
//! requests (see `ratelimit`), so they never delay a scale write.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use std::sync::{Arc, Mutex, PoisonError};

use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use prometheus::IntGauge;
use serde_json::json;
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use super::api_errors::{FailureLog, Seen, reason};
use super::key::WpaKey;
use super::shutdown::Shutdown;
use crate::crd::{WorkerPodAutoScaler, WorkerPodAutoScalerStatus};

/// Status writes in flight at once. More only queue inside the API pacing.
const WRITERS: usize = 4;

/// A status sent this recently is not sent again: the watch cache the plans compare with
/// may simply not show it yet. Past this, a repeat is written (someone else may have
/// changed the stored status meanwhile).
const RESEND_AFTER: Duration = Duration::from_secs(30);

#[derive(Default)]
struct Pending {
    statuses: HashMap<WpaKey, WorkerPodAutoScalerStatus>,
    /// Keys in the order their first pending status arrived.
    order: VecDeque<WpaKey>,
    /// What was last sent per WPA, its fingerprint and when; dropped after
    /// [`RESEND_AFTER`], by which time the watch cache shows it.
    sent: HashMap<WpaKey, Sent>,
    /// When `sent` was last cleared of old entries.
    pruned: Option<Instant>,
}

struct Sent {
    status: WorkerPodAutoScalerStatus,
    fingerprint: u64,
    at: Instant,
}

/// What a status says, without the condition transition times: two plans made from a cache
/// that lags our own write may stamp the same transition at different moments.
fn fingerprint(status: &WorkerPodAutoScalerStatus) -> u64 {
    let mut status = status.clone();
    for condition in &mut status.conditions {
        condition.last_transition_time = Time(jiff::Timestamp::UNIX_EPOCH);
    }
    let mut hasher = DefaultHasher::new();
    serde_json::to_string(&status)
        .unwrap_or_default()
        .hash(&mut hasher);
    hasher.finish()
}

impl Pending {
    /// Queues `status`, replacing the WPA's unwritten one; ignored when the same was just
    /// sent (and then an older unwritten one is dropped: the latest state is what was sent).
    fn submit(&mut self, key: &WpaKey, status: WorkerPodAutoScalerStatus, now: Instant) {
        let just_sent = self.sent.get(key).is_some_and(|sent| {
            sent.fingerprint == fingerprint(&status) && now.duration_since(sent.at) < RESEND_AFTER
        });
        if just_sent {
            self.forget_pending(key);
        } else if self.statuses.insert(key.clone(), status).is_none() {
            self.order.push_back(key.clone());
        }
    }

    /// The oldest WPA's latest status, recorded as sent.
    fn next(&mut self, now: Instant) -> Option<(WpaKey, WorkerPodAutoScalerStatus)> {
        let key = self.order.pop_front()?;
        let status = self.statuses.remove(&key)?;
        if self
            .pruned
            .is_none_or(|at| now.duration_since(at) >= RESEND_AFTER)
        {
            self.prune(now);
        }
        self.sent.insert(
            key.clone(),
            Sent {
                fingerprint: fingerprint(&status),
                status: status.clone(),
                at: now,
            },
        );
        Some((key, status))
    }

    /// The newest status decided for the WPA that the watch cache may not show yet:
    /// the unwritten one, else one sent less than [`RESEND_AFTER`] ago.
    fn latest(&self, key: &WpaKey, now: Instant) -> Option<WorkerPodAutoScalerStatus> {
        self.statuses.get(key).cloned().or_else(|| {
            self.sent
                .get(key)
                .filter(|sent| now.duration_since(sent.at) < RESEND_AFTER)
                .map(|sent| sent.status.clone())
        })
    }

    /// A write that failed: the same status may be submitted again at once.
    fn failed(&mut self, key: &WpaKey) {
        self.sent.remove(key);
    }

    fn forget_pending(&mut self, key: &WpaKey) {
        if self.statuses.remove(key).is_some() {
            self.order.retain(|k| k != key);
        }
    }

    fn forget(&mut self, key: &WpaKey) {
        self.forget_pending(key);
        self.sent.remove(key);
    }

    /// Drops the sent statuses older than [`RESEND_AFTER`].
    fn prune(&mut self, now: Instant) {
        self.sent
            .retain(|_, sent| now.duration_since(sent.at) < RESEND_AFTER);
        self.pruned = Some(now);
    }

    /// At rest (nothing to write): drops the sent statuses the watch cache shows by now and
    /// gives back the room the start-up's thousands of writes left in the maps. Without
    /// this a controller that wrote every WPA's status once kept a copy of each for good.
    fn settle(&mut self, now: Instant) {
        self.prune(now);
        self.sent.shrink_to_fit();
        if self.statuses.is_empty() {
            self.statuses.shrink_to_fit();
            self.order.shrink_to_fit();
        }
    }
}

pub struct StatusWriter {
    client: Client,
    /// `wpa_status_writes_pending`.
    backlog_gauge: IntGauge,
    shutdown: Shutdown,
    pending: Mutex<Pending>,
    wake: Notify,
    /// Each WPA's last failed write, so that one failing the same way is logged once.
    failures: FailureLog,
}

/// The step of [`StatusWriter::failures`].
const WRITE: &str = "status write";

impl StatusWriter {
    pub fn new(client: Client, backlog_gauge: IntGauge, shutdown: Shutdown) -> Arc<Self> {
        Arc::new(Self {
            client,
            backlog_gauge,
            shutdown,
            pending: Mutex::new(Pending::default()),
            wake: Notify::new(),
            failures: FailureLog::default(),
        })
    }

    /// Runs `f` on the pending writes and updates the backlog gauge.
    fn with_pending<T>(&self, f: impl FnOnce(&mut Pending) -> T) -> T {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let result = f(&mut pending);
        self.backlog_gauge
            .set(i64::try_from(pending.statuses.len()).unwrap_or(i64::MAX));
        result
    }

    /// Queues `status` for the WPA (see [`Pending::submit`]).
    pub fn submit(&self, key: &WpaKey, status: WorkerPodAutoScalerStatus) {
        self.with_pending(|p| p.submit(key, status, Instant::now()));
        self.wake.notify_one();
    }

    /// The newest status decided for the WPA that the watch cache may not show yet (see
    /// [`Pending::latest`]); a plan builds on it rather than on the cached one.
    pub fn latest(&self, key: &WpaKey) -> Option<WorkerPodAutoScalerStatus> {
        self.with_pending(|p| p.latest(key, Instant::now()))
    }

    /// Drops what is known of a WPA that was deleted.
    pub fn forget(&self, key: &WpaKey) {
        self.with_pending(|p| p.forget(key));
        self.failures.forget(&key.to_string());
    }

    /// Writes queued statuses until the task is aborted.
    pub async fn run(self: Arc<Self>) {
        let writers = (0..WRITERS).map(|_| {
            let this = self.clone();
            async move {
                loop {
                    match this.with_pending(|p| p.next(Instant::now())) {
                        Some((key, status)) => {
                            if !this.write(&key, status).await {
                                this.with_pending(|p| p.failed(&key));
                            }
                        }
                        None => {
                            // Woken by a new status, or after a quiet while to settle.
                            let quiet =
                                tokio::time::timeout(RESEND_AFTER, this.wake.notified()).await;
                            if quiet.is_err() {
                                this.with_pending(|p| p.settle(Instant::now()));
                            }
                        }
                    }
                }
            }
        });
        futures::future::join_all(writers).await;
    }

    /// Sends one status; `false` when it did not land.
    async fn write(&self, key: &WpaKey, status: WorkerPodAutoScalerStatus) -> bool {
        let api: Api<WorkerPodAutoScaler> = Api::namespaced(self.client.clone(), key.namespace());
        let result = api
            .patch_status(
                key.name(),
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": merge_patch_body(&status) })),
            )
            .await;
        match result {
            Ok(_) => {
                if let Some(reason) = self.failures.succeeded(&key.to_string(), WRITE) {
                    info!(wpa = %key, failed_with = %reason, "WPA status written again");
                }
                true
            }
            // Deleted meanwhile: nothing to report on.
            Err(kube::Error::Api(e)) if e.code == 404 => {
                debug!(wpa = %key, "WPA gone before its status was written");
                true
            }
            Err(e) if self.shutdown.requested() => {
                debug!(wpa = %key, error = %e, "status not written: shutting down");
                false
            }
            // The next reconcile sees the stored status differ and submits it again.
            Err(e) => {
                let reason = reason(&e);
                match self.failures.failed(&key.to_string(), WRITE, &reason) {
                    Seen::New => warn!(wpa = %key, %reason, "cannot write the WPA status"),
                    Seen::Again => debug!(wpa = %key, %reason, "cannot write the WPA status"),
                }
                false
            }
        }
    }
}

/// Status fields that may be absent. A JSON merge patch leaves a field it does not
/// mention as it is, so an absent one is sent as `null` to remove what an earlier status
/// stored (per-queue figures after a switch back to one queue, say).
const OPTIONAL_FIELDS: [&str; 10] = [
    "LastScaleTime",
    "inFlightMessages",
    "observedGeneration",
    "lastScaleUpTime",
    "lastScaleDownTime",
    "lastDecisionReason",
    "conditions",
    "queues",
    "workers",
    "wait",
];
/// Optional fields of the status's objects: a merge patch merges objects field by field, so
/// these too must be sent as `null` to be removed.
const OPTIONAL_NESTED_FIELDS: [(&str, &str); 9] = [
    ("workers", "message"),
    ("wait", "predictedWaitSeconds"),
    ("wait", "arrivalsPerSecond"),
    ("wait", "throughputPerWorker"),
    ("wait", "taskSeconds"),
    ("wait", "slotsPerWorker"),
    ("wait", "startupSeconds"),
    ("wait", "neededReplicas"),
    ("wait", "message"),
];

/// The status as a merge patch body: what it says, and `null` for what it leaves out.
fn merge_patch_body(status: &WorkerPodAutoScalerStatus) -> serde_json::Value {
    let mut body = serde_json::to_value(status).unwrap_or_else(|_| json!({}));
    if let Some(fields) = body.as_object_mut() {
        for field in OPTIONAL_FIELDS {
            fields.entry(field).or_insert(serde_json::Value::Null);
        }
        for (object, field) in OPTIONAL_NESTED_FIELDS {
            if let Some(inner) = fields.get_mut(object).and_then(|v| v.as_object_mut()) {
                inner.entry(field).or_insert(serde_json::Value::Null);
            }
        }
    }
    body
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

    use super::*;

    fn status(desired: i32, transition: i64) -> WorkerPodAutoScalerStatus {
        WorkerPodAutoScalerStatus {
            desired_replicas: desired,
            conditions: vec![Condition {
                type_: "Ready".to_string(),
                status: "True".to_string(),
                reason: "Reconciled".to_string(),
                message: String::new(),
                observed_generation: Some(1),
                last_transition_time: Time(jiff::Timestamp::from_second(transition).expect("time")),
            }],
            ..WorkerPodAutoScalerStatus::default()
        }
    }

    #[test]
    fn only_the_latest_status_of_a_wpa_is_written() {
        let now = Instant::now();
        let (a, b) = (WpaKey::new("ns", "a"), WpaKey::new("ns", "b"));
        let mut pending = Pending::default();
        pending.submit(&a, status(1, 0), now);
        pending.submit(&b, status(5, 0), now);
        pending.submit(&a, status(2, 0), now);
        assert_eq!(
            pending.next(now).map(|(k, s)| (k, s.desired_replicas)),
            Some((a, 2))
        );
        assert_eq!(
            pending.next(now).map(|(k, s)| (k, s.desired_replicas)),
            Some((b, 5))
        );
        assert_eq!(pending.next(now), None);
    }

    #[test]
    fn a_status_just_sent_is_not_sent_again() {
        let now = Instant::now();
        let a = WpaKey::new("ns", "a");
        let mut pending = Pending::default();
        pending.submit(&a, status(1, 0), now);
        assert!(pending.next(now).is_some());
        // The cache does not show it yet: the plan asks again, with another transition time.
        pending.submit(&a, status(1, 10), now + Duration::from_secs(1));
        assert_eq!(pending.next(now), None);
        // Something else, then back to what was sent: the latest state was sent already.
        pending.submit(&a, status(3, 0), now + Duration::from_secs(2));
        pending.submit(&a, status(1, 0), now + Duration::from_secs(3));
        assert_eq!(pending.next(now), None);
        // Long after, a repeat is written (the stored status may have been changed by others).
        pending.submit(
            &a,
            status(1, 0),
            now + RESEND_AFTER + Duration::from_secs(1),
        );
        assert!(pending.next(now).is_some());
    }

    #[test]
    fn at_rest_the_sent_statuses_are_dropped_and_the_room_given_back() {
        let now = Instant::now();
        let mut pending = Pending::default();
        let keys: Vec<WpaKey> = (0..1000)
            .map(|i| WpaKey::new("ns", format!("w{i}")))
            .collect();
        for key in &keys {
            pending.submit(key, status(1, 0), now);
        }
        while pending.next(now).is_some() {}
        let room = pending.sent.capacity();
        assert!(room >= 1000);
        // Still within the resend window: kept (the cache may not show them yet).
        pending.settle(now + Duration::from_secs(1));
        assert_eq!(pending.sent.len(), 1000);
        assert_eq!(
            pending
                .latest(&keys[0], now + Duration::from_secs(1))
                .map(|s| s.desired_replicas),
            Some(1)
        );
        pending.settle(now + RESEND_AFTER);
        assert!(pending.sent.is_empty());
        assert!(pending.sent.capacity() < room && pending.statuses.capacity() < 1000);
        // Writing again works as before.
        pending.submit(&keys[0], status(2, 0), now + RESEND_AFTER);
        assert_eq!(
            pending
                .next(now + RESEND_AFTER)
                .map(|(k, s)| (k, s.desired_replicas)),
            Some((keys[0].clone(), 2))
        );
    }

    #[test]
    fn a_failed_write_can_be_retried_at_once() {
        let now = Instant::now();
        let a = WpaKey::new("ns", "a");
        let mut pending = Pending::default();
        pending.submit(&a, status(1, 0), now);
        assert!(pending.next(now).is_some());
        pending.failed(&a);
        pending.submit(&a, status(1, 0), now);
        assert!(pending.next(now).is_some());
        pending.forget(&a);
        assert!(pending.sent.is_empty() && pending.statuses.is_empty());
    }

    #[test]
    fn the_latest_decided_status_is_the_unwritten_one_then_the_one_just_sent() {
        let now = Instant::now();
        let a = WpaKey::new("ns", "a");
        let mut pending = Pending::default();
        assert_eq!(pending.latest(&a, now), None);
        pending.submit(&a, status(3, 1), now);
        assert_eq!(pending.latest(&a, now), Some(status(3, 1)));
        let _ = pending.next(now);
        assert_eq!(
            pending.latest(&a, now),
            Some(status(3, 1)),
            "sent, cache may lag"
        );
        pending.submit(&a, status(4, 1), now);
        assert_eq!(pending.latest(&a, now), Some(status(4, 1)));
        let _ = pending.next(now);
        // Long after the write the cache shows it: the cache is the base again.
        assert_eq!(pending.latest(&a, now + RESEND_AFTER), None);
        // Old entries are dropped when the next status goes out.
        let b = WpaKey::new("ns", "b");
        pending.submit(&b, status(1, 1), now + RESEND_AFTER);
        let _ = pending.next(now + RESEND_AFTER);
        assert!(!pending.sent.contains_key(&a) && pending.sent.contains_key(&b));
    }

    #[test]
    fn absent_fields_are_removed_by_the_merge_patch() {
        let body = merge_patch_body(&WorkerPodAutoScalerStatus::default());
        for field in OPTIONAL_FIELDS {
            assert_eq!(body[field], serde_json::Value::Null, "{field}");
        }
        assert_eq!(body["DesiredReplicas"], 0);
        // Every field a full status can leave out is in the list.
        let full = WorkerPodAutoScalerStatus {
            last_scale_time: Some(Time(jiff::Timestamp::UNIX_EPOCH)),
            in_flight_messages: Some(1),
            observed_generation: Some(1),
            last_scale_up_time: Some(Time(jiff::Timestamp::UNIX_EPOCH)),
            last_scale_down_time: Some(Time(jiff::Timestamp::UNIX_EPOCH)),
            last_decision_reason: Some("ScaleUp".into()),
            queues: vec![crate::crd::QueueStatus::default()],
            workers: Some(crate::crd::WorkersStatus::default()),
            wait: Some(crate::crd::WaitStatus::default()),
            ..status(1, 1)
        };
        let full = serde_json::to_value(&full).expect("serializes");
        let empty = serde_json::to_value(WorkerPodAutoScalerStatus::default()).expect("serializes");
        let optional: Vec<&String> = full
            .as_object()
            .expect("object")
            .keys()
            .filter(|k| empty.get(k.as_str()).is_none())
            .collect();
        assert_eq!(optional.len(), OPTIONAL_FIELDS.len(), "{optional:?}");
        assert!(
            optional
                .iter()
                .all(|k| OPTIONAL_FIELDS.contains(&k.as_str()))
        );
        // Inside an object, a field left out is sent as null too.
        let without_message = merge_patch_body(&WorkerPodAutoScalerStatus {
            workers: Some(crate::crd::WorkersStatus::default()),
            ..status(1, 1)
        });
        assert_eq!(
            without_message["workers"]["message"],
            serde_json::Value::Null
        );
        let learning = merge_patch_body(&WorkerPodAutoScalerStatus {
            wait: Some(crate::crd::WaitStatus::default()),
            ..status(1, 1)
        });
        for (object, field) in OPTIONAL_NESTED_FIELDS.iter().filter(|(o, _)| *o == "wait") {
            assert_eq!(learning[object][field], serde_json::Value::Null, "{field}");
        }
        assert!(without_message["workers"].get("message").is_some());
        let with_message = merge_patch_body(&WorkerPodAutoScalerStatus {
            workers: Some(crate::crd::WorkersStatus {
                draining: 0,
                message: Some("starting".into()),
                ..Default::default()
            }),
            ..status(1, 1)
        });
        assert_eq!(with_message["workers"]["message"], "starting");
    }
}
