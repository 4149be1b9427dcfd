//! The target's pods and what their workers report: which pods are busy, idle or unknown,
//! and the `pod-deletion-cost` each should carry so that a ReplicaSet removes idle pods
//! first. The classification is pure; the pod cache comes from a watch (`watch`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Pod, PodStatus};
use kube::api::Api;
use kube::core::{Selector, SelectorExt};
use kube::runtime::reflector::{Store, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};

use crate::queue::ConsumerReport;
use crate::scaler::WorkerActivity;
use crate::sync::lock;
use crate::workers::WorkerSeen;

/// The annotation the ReplicaSet controller ranks victims by (lower goes first).
pub const DELETION_COST_ANNOTATION: &str = "controller.kubernetes.io/pod-deletion-cost";
/// Cost given to a pod whose worker runs tasks: removed last.
pub const BUSY_COST: i64 = 1000;
/// Cost given to a pod whose workers are idle: removed first.
pub const IDLE_COST: i64 = -1000;
/// A worker that reported a task within this many of its heartbeat intervals still counts
/// as busy.
const JUST_BUSY_BEATS: u32 = 3;

/// One pod of a target, as far as the decision needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodView {
    pub name: String,
    /// The pod IP, where known (a broker connection's peer).
    pub ip: Option<String>,
    /// A StatefulSet pod's ordinal (`<name>-<ordinal>`).
    pub ordinal: Option<u32>,
    /// The `pod-deletion-cost` annotation as set now.
    pub deletion_cost: Option<String>,
}

/// What a pod's workers are doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodWork {
    Busy {
        tasks: u32,
    },
    Idle,
    /// No worker reports for this pod.
    Unknown,
}

/// A pod with what its workers do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassifiedPod {
    pub pod: PodView,
    pub work: PodWork,
}

impl ClassifiedPod {
    /// The deletion cost this pod should carry, `None` to leave it as it is (unknown pods:
    /// nothing is known that would rank them).
    pub fn wanted_cost(&self) -> Option<i64> {
        match self.work {
            PodWork::Busy { .. } => Some(BUSY_COST),
            PodWork::Idle => Some(IDLE_COST),
            PodWork::Unknown => None,
        }
    }

    /// The cost to write, when the pod does not carry it yet.
    pub fn cost_change(&self) -> Option<i64> {
        let wanted = self.wanted_cost()?;
        let now = self
            .pod
            .deletion_cost
            .as_deref()
            .and_then(|v| v.trim().parse::<i64>().ok());
        (now != Some(wanted)).then_some(wanted)
    }
}

/// The host part of a Celery node name (`name@host`; a name without `@` is all host).
fn host_of(hostname: &str) -> &str {
    hostname.split_once('@').map_or(hostname, |(_, host)| host)
}

/// Whether a worker with this node name runs in `pod`: its host is the pod name (Celery's
/// default `celery@%h`) or ends with `.<pod>` (Tutor's `edx.lms.core.default.%h`).
pub fn runs_in(hostname: &str, pod: &str) -> bool {
    let host = host_of(hostname);
    host == pod
        || host
            .strip_suffix(pod)
            .is_some_and(|prefix| prefix.ends_with('.'))
}

/// Whether a consumer report is about `pod` (by name or by IP).
fn reports_on(report: &ConsumerReport, pod: &PodView) -> bool {
    report.pod.as_deref() == Some(pod.name.as_str()) || (report.ip.is_some() && report.ip == pod.ip)
}

/// Classifies the target's pods by the workers' reports: Celery's (`workers`) and the
/// queue's per-consumer ones (`consumers`). A pod is known when either speaks of it and busy
/// when either says so. `statefulset`: victims are the highest ordinals, so `keep` is the
/// highest busy ordinal + 1 rather than the busy count.
pub fn classify(
    pods: &[PodView],
    workers: &[WorkerSeen],
    consumers: &[ConsumerReport],
    now: Timestamp,
    idle_window: Duration,
    statefulset: bool,
) -> (WorkerActivity, Vec<ClassifiedPod>) {
    let mut activity = WorkerActivity::default();
    let mut classified = Vec::with_capacity(pods.len());
    let window = jiff::SignedDuration::try_from(idle_window).unwrap_or(jiff::SignedDuration::MAX);
    let mut highest_busy: Option<u32> = None;
    for pod in pods {
        let mut known = false;
        let mut tasks: u32 = 0;
        let mut just_busy = false;
        for worker in workers.iter().filter(|w| runs_in(&w.hostname, &pod.name)) {
            known = true;
            tasks = tasks.saturating_add(worker.active);
            // A heartbeat sent between two tasks says 0, and with work queued the worker
            // takes the next one milliseconds later (a closed-loop benchmark lost a task to
            // that): a worker busy within its last few heartbeats still counts as busy.
            let recent = jiff::SignedDuration::try_from(worker.freq * JUST_BUSY_BEATS)
                .unwrap_or(jiff::SignedDuration::MAX);
            if worker
                .last_busy
                .is_some_and(|at| now.duration_since(at) < recent)
            {
                just_busy = true;
            }
            if worker.active > 0
                || worker
                    .last_busy
                    .is_some_and(|at| now.duration_since(at) < window)
            {
                activity.recently_busy = true;
            }
        }
        let mut consumer_busy = false;
        for report in consumers.iter().filter(|r| reports_on(r, pod)) {
            known = true;
            consumer_busy |= report.busy;
        }
        if consumer_busy {
            activity.recently_busy = true;
        }
        let work = match (known, tasks, consumer_busy || just_busy) {
            (false, _, _) => PodWork::Unknown,
            (true, 0, false) => PodWork::Idle,
            // A consumer holding messages, or a worker between two tasks: busy, with no
            // running task to add to `active_tasks` (the broker counts held messages).
            (true, 0, true) => PodWork::Busy { tasks: 0 },
            (true, tasks, _) => PodWork::Busy { tasks },
        };
        match work {
            PodWork::Busy { tasks } => {
                activity.busy += 1;
                activity.active_tasks += u64::from(tasks);
                if let Some(ordinal) = pod.ordinal {
                    highest_busy = Some(highest_busy.map_or(ordinal, |h| h.max(ordinal)));
                }
            }
            PodWork::Idle => activity.idle += 1,
            PodWork::Unknown => activity.unknown += 1,
        }
        classified.push(ClassifiedPod {
            pod: pod.clone(),
            work,
        });
    }
    activity.keep = if statefulset {
        highest_busy.map_or(activity.busy, |h| h.saturating_add(1).max(activity.busy))
    } else {
        activity.busy
    };
    (activity, classified)
}

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

/// The Pod watch, cached with only what the classification reads (name, labels, the
/// deletion cost, terminating or not, the pod IP): a cluster's pods would otherwise dominate memory.
pub fn watch(
    api: Api<Pod>,
    writer: Writer<Pod>,
    state: Arc<PodCacheState>,
) -> impl Stream<Item = Result<watcher::Event<Pod>, watcher::Error>> + Send + 'static {
    watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(|p: &mut Pod| {
            p.managed_fields_mut().clear();
            p.annotations_mut()
                .retain(|k, _| k == DELETION_COST_ANNOTATION);
            p.meta_mut().owner_references = None;
            p.spec = None;
            // The pod IP maps a broker connection's peer to its pod.
            p.status = p.status.take().map(|s| PodStatus {
                pod_ip: s.pod_ip,
                ..PodStatus::default()
            });
        })
        .reflect(writer)
        .inspect(move |event| state.observe(event))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str) -> PodView {
        PodView {
            name: name.to_string(),
            ip: None,
            ordinal: None,
            deletion_cost: None,
        }
    }

    fn worker(hostname: &str, active: u32, last_busy: Option<Timestamp>) -> WorkerSeen {
        WorkerSeen {
            hostname: hostname.to_string(),
            active,
            last_busy,
            freq: Duration::from_secs(2),
        }
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).expect("timestamp")
    }

    #[test]
    fn worker_names_map_to_pods() {
        assert!(runs_in("celery@worker-7d9-abcde", "worker-7d9-abcde"));
        assert!(runs_in(
            "celery@edx.lms.core.default.lms-worker-5f-x2k9q",
            "lms-worker-5f-x2k9q"
        ));
        assert!(runs_in("lms-worker-5f-x2k9q", "lms-worker-5f-x2k9q"));
        // A longer pod name that merely ends the same way is another pod.
        assert!(!runs_in("celery@big-worker-1", "worker-1"));
        assert!(!runs_in("celery@worker-1", "worker-10"));
        assert!(!runs_in("celery@worker-10", "worker-1"));
        assert!(!runs_in("celery@", "worker-1"));
    }

    #[test]
    fn busy_idle_and_unknown_pods() {
        let pods = [pod("w-a"), pod("w-b"), pod("w-c"), pod("w-d")];
        let workers = [
            worker("celery@w-a", 2, Some(at(100))),
            worker("celery@w-b", 0, None),
            // Two worker processes in one pod: busy if either is.
            worker("celery@w-c", 0, None),
            worker("other@w-c", 1, Some(at(100))),
            // A worker of a pod that is gone (or of another target): ignored.
            worker("celery@w-zzz", 5, Some(at(100))),
        ];
        let (activity, classified) = classify(
            &pods,
            &workers,
            &[],
            at(100),
            Duration::from_secs(60),
            false,
        );
        let works: Vec<PodWork> = classified.iter().map(|c| c.work).collect();
        assert_eq!(
            works,
            [
                PodWork::Busy { tasks: 2 },
                PodWork::Idle,
                PodWork::Busy { tasks: 1 },
                PodWork::Unknown
            ]
        );
        assert_eq!(
            activity,
            WorkerActivity {
                busy: 2,
                idle: 1,
                unknown: 1,
                active_tasks: 3,
                recently_busy: true,
                keep: 2,
            }
        );
    }

    #[test]
    fn a_worker_between_two_tasks_stays_busy_for_three_heartbeats() {
        let pods = [pod("w-a")];
        let window = Duration::from_secs(60);
        // Its heartbeat at 100 s said 0 tasks; its last task was reported at 96 s.
        let workers = [worker("celery@w-a", 0, Some(at(96)))];
        let (activity, classified) = classify(&pods, &workers, &[], at(100), window, false);
        assert_eq!(classified[0].work, PodWork::Busy { tasks: 0 });
        assert_eq!(
            (activity.busy, activity.keep, activity.active_tasks),
            (1, 1, 0)
        );
        let (activity, classified) = classify(&pods, &workers, &[], at(102), window, false);
        assert_eq!(
            classified[0].work,
            PodWork::Idle,
            "3 x 2 s after its last task"
        );
        assert_eq!(activity.keep, 0);
    }

    #[test]
    fn recently_busy_lasts_the_idle_window() {
        let pods = [pod("w-a")];
        let window = Duration::from_secs(60);
        let workers = [worker("celery@w-a", 0, Some(at(100)))];
        assert!(
            classify(&pods, &workers, &[], at(159), window, false)
                .0
                .recently_busy
        );
        assert!(
            !classify(&pods, &workers, &[], at(160), window, false)
                .0
                .recently_busy
        );
        let never = [worker("celery@w-a", 0, None)];
        assert!(
            !classify(&pods, &never, &[], at(100), window, false)
                .0
                .recently_busy
        );
    }

    #[test]
    fn a_statefulset_keeps_up_to_its_highest_busy_ordinal() {
        let pods: Vec<PodView> = (0..5)
            .map(|i| PodView {
                ordinal: Some(i),
                ..pod(&format!("s-{i}"))
            })
            .collect();
        let workers = [worker("celery@s-1", 1, None), worker("celery@s-3", 0, None)];
        let (activity, _) = classify(&pods, &workers, &[], at(0), Duration::from_secs(60), true);
        assert_eq!((activity.busy, activity.keep), (1, 2));
        let (activity, _) = classify(&pods, &workers, &[], at(0), Duration::from_secs(60), false);
        assert_eq!(activity.keep, 1);
    }

    #[test]
    fn costs_are_written_only_where_they_differ() {
        let classified = |cost: Option<&str>, work| ClassifiedPod {
            pod: PodView {
                deletion_cost: cost.map(str::to_string),
                ..pod("w")
            },
            work,
        };
        assert_eq!(
            classified(None, PodWork::Busy { tasks: 1 }).cost_change(),
            Some(BUSY_COST)
        );
        assert_eq!(
            classified(Some("1000"), PodWork::Busy { tasks: 1 }).cost_change(),
            None
        );
        assert_eq!(
            classified(Some(" 1000 "), PodWork::Busy { tasks: 3 }).cost_change(),
            None
        );
        assert_eq!(
            classified(Some("1000"), PodWork::Idle).cost_change(),
            Some(IDLE_COST)
        );
        assert_eq!(
            classified(Some("junk"), PodWork::Idle).cost_change(),
            Some(IDLE_COST)
        );
        assert_eq!(classified(Some("5"), PodWork::Unknown).cost_change(), None);
        assert_eq!(classified(None, PodWork::Unknown).cost_change(), None);
    }

    #[test]
    fn consumer_reports_by_pod_name_or_ip() {
        let with_ip = |name: &str, ip: &str| PodView {
            ip: Some(ip.to_string()),
            ..pod(name)
        };
        let pods = [
            with_ip("w-a", "10.0.0.1"),
            with_ip("w-b", "10.0.0.2"),
            with_ip("w-c", "10.0.0.3"),
            with_ip("w-d", "10.0.0.4"),
        ];
        let report = |pod: Option<&str>, ip: Option<&str>, busy| ConsumerReport {
            pod: pod.map(str::to_string),
            ip: ip.map(str::to_string),
            busy,
        };
        let consumers = [
            report(None, Some("10.0.0.1"), true),
            report(Some("w-b"), None, false),
            // Two channels of one pod: busy if either holds messages.
            report(None, Some("10.0.0.3"), false),
            report(None, Some("10.0.0.3"), true),
            // Another workload's consumer.
            report(None, Some("10.9.9.9"), true),
        ];
        // Celery says w-b runs a task although its consumer holds nothing (early ack).
        let workers = [worker("celery@w-b", 1, None)];
        let (activity, classified) = classify(
            &pods,
            &workers,
            &consumers,
            at(0),
            Duration::from_secs(60),
            false,
        );
        let works: Vec<PodWork> = classified.iter().map(|c| c.work).collect();
        assert_eq!(
            works,
            [
                PodWork::Busy { tasks: 0 },
                PodWork::Busy { tasks: 1 },
                PodWork::Busy { tasks: 0 },
                PodWork::Unknown
            ]
        );
        assert_eq!(
            (
                activity.busy,
                activity.idle,
                activity.unknown,
                activity.active_tasks
            ),
            (3, 0, 1, 1)
        );
        let (activity, _) = classify(
            &pods,
            &[],
            &[report(Some("w-d"), None, false)],
            at(0),
            Duration::from_secs(60),
            false,
        );
        assert_eq!((activity.busy, activity.idle, activity.unknown), (0, 1, 3));
        assert!(!activity.recently_busy);
    }

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
