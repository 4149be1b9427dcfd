//! Which of the target's pods are busy, idle or unknown, from what their workers report
//! (Celery heartbeats, the queue's per-consumer reports), and the `pod-deletion-cost` each
//! should carry so that a ReplicaSet removes idle pods first. Pure.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use crate::queue::ConsumerReport;
use crate::scaler::WorkerActivity;
use crate::workers::WorkerSeen;

/// The annotation the ReplicaSet controller ranks victims by (lower goes first).
pub const DELETION_COST_ANNOTATION: &str = "controller.kubernetes.io/pod-deletion-cost";
/// Set on a pod whose workers are being drained before a scale-in: the drain's deadline
/// (RFC 3339). Kept here, beside the cost, because the pod cache keeps both; the drain
/// (`controller/drain.rs`) is what sets and reads it.
pub const DRAINING_ANNOTATION: &str = "k8s.practo.dev/draining";
/// Cost given to a pod whose worker runs tasks: removed last.
pub const BUSY_COST: i64 = 1000;
/// Cost given to a pod whose workers are idle: removed first.
pub const IDLE_COST: i64 = -1000;
/// A worker that reported a task within this many of its heartbeat intervals still counts
/// as busy.
const JUST_BUSY_BEATS: u32 = 3;

/// One pod of a target, as far as the decision needs it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodView {
    pub name: String,
    /// The pod IP, where known (a broker connection's peer).
    pub ip: Option<String>,
    /// A StatefulSet pod's ordinal (`<name>-<ordinal>`).
    pub ordinal: Option<u32>,
    /// The `pod-deletion-cost` annotation as set now.
    pub deletion_cost: Option<String>,
    /// The [`DRAINING_ANNOTATION`] as set now: a drain started on this pod.
    pub draining: Option<String>,
    /// `spec.terminationGracePeriodSeconds`, where set (Kubernetes' default is 30 s).
    pub grace_seconds: Option<i64>,
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

/// What a pod's Celery workers report.
#[derive(Debug, Default)]
struct Heard {
    /// A worker of the pod reports.
    known: bool,
    /// Tasks its workers run now.
    tasks: u32,
    /// A worker reported a task within its last few heartbeats.
    just_busy: bool,
    /// A worker ran a task within the idle window (or runs one now).
    recently_busy: bool,
}

impl Heard {
    fn busy(&self) -> bool {
        self.tasks > 0 || self.just_busy
    }
}

fn heard(pod: &PodView, workers: &[WorkerSeen], now: Timestamp, window: SignedDuration) -> Heard {
    let mut heard = Heard::default();
    for worker in workers.iter().filter(|w| runs_in(&w.hostname, &pod.name)) {
        heard.known = true;
        heard.tasks = heard.tasks.saturating_add(worker.active);
        // A heartbeat sent between two tasks says 0, and with work queued the worker takes
        // the next one milliseconds later (a closed-loop benchmark lost a task to that): a
        // worker busy within its last few heartbeats still counts as busy.
        let recent =
            SignedDuration::try_from(worker.freq * JUST_BUSY_BEATS).unwrap_or(SignedDuration::MAX);
        let busy_within = |span| {
            worker
                .last_busy
                .is_some_and(|at| now.duration_since(at) < span)
        };
        heard.just_busy |= busy_within(recent);
        heard.recently_busy |= worker.active > 0 || busy_within(window);
    }
    heard
}

/// The IPs that several of the target's pods share (host networking, or connections that
/// reach the broker through a NAT or proxy), each with whether its consumers' reports must
/// mark every pod there busy.
///
/// A report by such an IP cannot say which pod holds the messages. Its busy consumers are
/// counted against the pods there that the heartbeats already count busy; only when there
/// are more busy consumers than such pods are all the pods at that IP marked busy (the
/// holder is among them, unknown which). So no busy consumer is ever counted idle, and one
/// busy consumer does not hold every pod of a node.
fn shared_ips<'a>(
    pods: &'a [PodView],
    heard: &[Heard],
    consumers: &[ConsumerReport],
) -> HashMap<&'a str, bool> {
    // Per IP: pods, pods the heartbeats count busy.
    let mut by_ip: HashMap<&str, (usize, usize)> = HashMap::new();
    for (pod, heard) in pods.iter().zip(heard) {
        if let Some(ip) = pod.ip.as_deref() {
            let entry = by_ip.entry(ip).or_default();
            entry.0 += 1;
            entry.1 += usize::from(heard.busy());
        }
    }
    by_ip.retain(|_, (pods, _)| *pods > 1);
    // Busy holders per shared IP: one per channel (a Celery worker consumes all its queues
    // on one channel, listed once per queue), one per report without a channel.
    let mut holders: HashMap<&str, HashSet<Option<&str>>> = HashMap::new();
    let mut unnamed: HashMap<&str, usize> = HashMap::new();
    for report in consumers.iter().filter(|r| r.busy) {
        let Some(ip) = report.ip.as_deref().filter(|ip| by_ip.contains_key(ip)) else {
            continue;
        };
        match report.channel.as_deref() {
            Some(channel) => {
                holders.entry(ip).or_default().insert(Some(channel));
            }
            None => *unnamed.entry(ip).or_default() += 1,
        }
    }
    by_ip
        .into_iter()
        .map(|(ip, (_, heard_busy))| {
            let busy_holders =
                holders.get(ip).map_or(0, HashSet::len) + unnamed.get(ip).copied().unwrap_or(0);
            (ip, busy_holders > heard_busy)
        })
        .collect()
}

/// What the consumer reports say of `pod`: `(known, busy)`. A report names the pod, or its
/// IP when no other pod of the target has that IP (see [`shared_ips`] for the others).
fn consumer_view(
    pod: &PodView,
    consumers: &[ConsumerReport],
    shared: &HashMap<&str, bool>,
) -> (bool, bool) {
    let shared_ip = pod.ip.as_deref().and_then(|ip| shared.get(ip).copied());
    let (mut known, mut busy) = match shared_ip {
        Some(true) => (true, true),
        _ => (false, false),
    };
    for report in consumers {
        let by_name = report.pod.as_deref() == Some(pod.name.as_str());
        let by_ip = shared_ip.is_none() && report.ip.is_some() && report.ip == pod.ip;
        if by_name || by_ip {
            known = true;
            busy |= report.busy;
        }
    }
    (known, busy)
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
    let window = SignedDuration::try_from(idle_window).unwrap_or(SignedDuration::MAX);
    let heard: Vec<Heard> = pods
        .iter()
        .map(|pod| heard(pod, workers, now, window))
        .collect();
    let shared = shared_ips(pods, &heard, consumers);
    let mut highest_busy: Option<u32> = None;
    for (pod, heard) in pods.iter().zip(&heard) {
        let (consumer_known, consumer_busy) = consumer_view(pod, consumers, &shared);
        activity.recently_busy |= heard.recently_busy || consumer_busy;
        let known = heard.known || consumer_known;
        let work = match (known, heard.tasks, consumer_busy || heard.just_busy) {
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

#[cfg(test)]
#[path = "classify_tests.rs"]
mod tests;
