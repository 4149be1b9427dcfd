//! Drain before removal, decided (pure): before a scale-in removes k pods, their Celery
//! workers are told to stop taking work and the scale waits until they hold nothing.
//!
//! One WPA's drain goes through these steps, each decided here from what a reconcile
//! observed (the I/O, remote control and pod annotations, is the caller's):
//! - no drain, a scale-in wanted: pick the victims (idle pods whose workers report, by
//!   name order: the pods the deletion costs would remove first) and [`Step::Start`]:
//!   annotate them with [`DRAINING_ANNOTATION`] (the deadline), cancel their consumers,
//!   hold the scale. Pods that cannot be drained (no worker reports, a StatefulSet whose
//!   victims are its highest ordinals) are removed as without drain.
//! - draining, every victim drained: [`Step::Finish`], scale with the victims' deletion
//!   cost below every other pod's ([`DRAINED_COST`]).
//! - draining, the deadline passed: finish with the victims that are drained; the others
//!   are kept and consume again, and the next reconcile decides anew.
//! - draining, the decision reversed (no scale-in wanted any more, the replicas changed
//!   under us, a victim vanished): [`Step::Cancel`], every victim consumes again.
//!
//! A controller that restarts mid-drain has forgotten its drain but finds the annotated
//! pods: [`orphans`] names them, and they are resumed (their workers consume again) and
//! unannotated before anything else; the scale-in is then decided again from scratch.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use super::pods::{ClassifiedPod, PodWork, runs_in};
use crate::workers::WorkerSeen;
use crate::workers::drain::DrainVia;

/// Where a WPA's workers are drained: the broker's remote control (or Sidekiq's signals)
/// and the queue names to cancel. Only WPAs whose queues are all Celery queues on one
/// broker (one Redis database or one RabbitMQ vhost), or all Sidekiq queues on one Redis
/// database, have one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrainChannel {
    pub source: DrainVia,
    pub queues: Vec<String>,
}

impl DrainChannel {
    pub fn style(&self) -> DrainStyle {
        DrainStyle {
            irreversible: !self.source.reversible(),
            by_pod: self.source.names_pods(),
        }
    }
}

/// How the drains of a channel go. The default is Celery's: called off by `add_consumer`,
/// workers named by their node names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DrainStyle {
    /// A worker told to stop cannot take work again (Sidekiq's quiet): a started drain is
    /// never called off, and its victims are removed even if the decision reverses or
    /// they are still busy at the bound.
    pub irreversible: bool,
    /// Commands name the pods (Sidekiq finds its processes by hostname), not the workers.
    pub by_pod: bool,
}

/// What the controller must remember of a WPA's drain after a plan.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Remember {
    #[default]
    Keep,
    Start(Drain),
    /// The drain is over; these drained pods are being removed by the scale to `to` (not
    /// orphans to resume, once that scale is made).
    Finish {
        to: i32,
        removing: Vec<String>,
    },
    Clear,
}
/// The deletion cost of a drained victim: below the idle pods' (`IDLE_COST`), so that the
/// ReplicaSet removes the drained pods and no other.
pub const DRAINED_COST: i64 = -2000;

/// `--drain-before-scale-in` and `--drain-timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainSettings {
    pub enabled: bool,
    /// How long a drain may take; `None`: the pods' termination grace period.
    pub timeout: Option<Duration>,
}

/// The grace period Kubernetes gives a pod that sets none.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(30);

impl DrainSettings {
    /// The bound of a drain of `pods`: the flag, else the longest grace period among them
    /// (what the pods would get at their removal anyway).
    pub fn bound(&self, pods: &[ClassifiedPod]) -> Duration {
        self.timeout.unwrap_or_else(|| {
            pods.iter()
                .map(|p| {
                    p.pod
                        .grace_seconds
                        .and_then(|s| u64::try_from(s).ok())
                        .map_or(DEFAULT_GRACE, Duration::from_secs)
                })
                .max()
                .unwrap_or(DEFAULT_GRACE)
        })
    }
}

/// A pod being drained and its workers' node names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Victim {
    pub pod: String,
    pub nodes: Vec<String>,
}

/// A drain in progress.
#[derive(Debug, Clone, PartialEq)]
pub struct Drain {
    pub victims: Vec<Victim>,
    /// The replicas when it started: the scale-in is from there.
    pub from: i32,
    /// Pods of the scale-in that could not be drained (removed as without drain).
    pub undrainable: i32,
    pub deadline: Timestamp,
}

/// What a reconcile observed that the drain depends on.
#[derive(Debug, Clone, Copy)]
pub struct DrainInput<'a> {
    /// The drain this controller runs for the WPA, if any.
    pub drain: Option<&'a Drain>,
    /// The target's replicas now.
    pub current: i32,
    /// The replicas the decision wants and may apply now (not paused, not a dry run).
    pub desired: i32,
    pub pods: &'a [ClassifiedPod],
    /// The Celery workers of the target's pods.
    pub workers: &'a [WorkerSeen],
    /// Victims whose workers all answered that they consume none of the WPA's queues and
    /// hold no task.
    pub drained: &'a [String],
    pub now: Timestamp,
    /// How long a drain may take: the pods' termination grace period by default.
    pub bound: Duration,
    pub style: DrainStyle,
}

/// What to do about draining now.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Nothing to drain: the plan goes as without drain.
    Pass,
    /// Start draining: annotate and cancel the victims; hold the scale.
    Start(Drain),
    /// Still draining: hold the scale.
    Wait,
    /// Scale to `to` (when below the current replicas) with the `drained` and `forced`
    /// victims removed first; `kept` victims consume again. `forced`: victims of an
    /// irreversible drain still busy at the bound, removed all the same.
    Finish {
        to: i32,
        drained: Vec<Victim>,
        kept: Vec<Victim>,
        forced: Vec<Victim>,
    },
    /// The scale-in is off: every victim consumes again.
    Cancel(Vec<Victim>),
}

/// The drain step for what was observed.
pub fn step(input: &DrainInput<'_>) -> Step {
    let scale_in = input.desired < input.current;
    match input.drain {
        None if scale_in => start(input),
        None => Step::Pass,
        Some(drain) if input.style.irreversible => finish_committed(input, drain),
        Some(drain) => {
            let present = |v: &Victim| input.pods.iter().any(|p| p.pod.name == v.pod);
            if !scale_in || input.current != drain.from || !drain.victims.iter().all(present) {
                return Step::Cancel(drain.victims.clone());
            }
            let (drained, kept): (Vec<Victim>, Vec<Victim>) = drain
                .victims
                .iter()
                .cloned()
                .partition(|v| input.drained.contains(&v.pod));
            if !kept.is_empty() && input.now < drain.deadline {
                return Step::Wait;
            }
            // Never below what the decision wants now (it may want fewer pods gone).
            let removed = i32::try_from(drained.len()).unwrap_or(i32::MAX);
            let to = (drain.from - removed - drain.undrainable).max(input.desired);
            Step::Finish {
                to,
                drained,
                kept,
                forced: Vec::new(),
            }
        }
    }
}

/// An irreversible drain: its victims cannot take work again, so it is never called off.
/// It waits until every victim still there is drained, or the bound; then they are all
/// removed (those still busy too: a quiet pod would idle for good, and Sidekiq's own
/// shutdown puts back the jobs it could not finish). If the scale-in still stands the
/// scale goes on to what the decision wants; if it reversed, only the victims go, and
/// the next reconcile scales up afresh.
fn finish_committed(input: &DrainInput<'_>, drain: &Drain) -> Step {
    let present: Vec<Victim> = drain
        .victims
        .iter()
        .filter(|v| input.pods.iter().any(|p| p.pod.name == v.pod))
        .cloned()
        .collect();
    let (drained, busy): (Vec<Victim>, Vec<Victim>) = present
        .into_iter()
        .partition(|v| input.drained.contains(&v.pod));
    if !busy.is_empty() && input.now < drain.deadline {
        return Step::Wait;
    }
    let removed = i32::try_from(drained.len() + busy.len()).unwrap_or(i32::MAX);
    let base = (input.current - removed).max(0);
    let to = if input.desired < input.current && input.current == drain.from {
        // The scale-in stands: the pods it could not drain go too, not below the decision
        // (nor above `base`: every victim goes).
        (base - drain.undrainable).max(input.desired.min(base))
    } else {
        base
    };
    Step::Finish {
        to,
        drained,
        kept: Vec::new(),
        forced: busy,
    }
}

fn start(input: &DrainInput<'_>) -> Step {
    // A StatefulSet removes its highest ordinals whatever the costs: no victim to choose.
    if input.pods.iter().any(|p| p.pod.ordinal.is_some()) {
        return Step::Pass;
    }
    let count = usize::try_from(input.current - input.desired).unwrap_or(0);
    let victims: Vec<Victim> = input
        .pods
        .iter()
        .filter(|p| p.work == PodWork::Idle)
        .filter_map(|p| {
            // Idle is only ever said of a pod whose workers report: by pod, that report
            // is the pod's process.
            let nodes: Vec<String> = if input.style.by_pod {
                vec![p.pod.name.clone()]
            } else {
                input
                    .workers
                    .iter()
                    .filter(|w| runs_in(&w.hostname, &p.pod.name))
                    .map(|w| w.hostname.clone())
                    .collect()
            };
            (!nodes.is_empty()).then(|| Victim {
                pod: p.pod.name.clone(),
                nodes,
            })
        })
        .take(count)
        .collect();
    if victims.is_empty() {
        return Step::Pass;
    }
    let bound = SignedDuration::try_from(input.bound).unwrap_or(SignedDuration::MAX);
    Step::Start(Drain {
        undrainable: i32::try_from(count - victims.len()).unwrap_or(0),
        victims,
        from: input.current,
        deadline: input.now.saturating_add(bound).unwrap_or(Timestamp::MAX),
    })
}

/// The pods that carry [`DRAINING_ANNOTATION`] (`annotated`) but are no victim of the
/// live drain: left by a controller that stopped mid-drain. Their workers must consume
/// again.
pub fn orphans<'a>(annotated: &'a [String], drain: Option<&Drain>) -> Vec<&'a str> {
    annotated
        .iter()
        .filter(|pod| drain.is_none_or(|d| d.victims.iter().all(|v| &v.pod != *pod)))
        .map(String::as_str)
        .collect()
}

#[cfg(test)]
#[path = "drain_tests.rs"]
mod tests;
