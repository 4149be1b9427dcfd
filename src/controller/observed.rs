//! What a reconcile observed: the data the pure plan decides on, apart from the code that
//! gathers it (`observe.rs`), so that the plan depends on data only.

use std::time::Duration;

use jiff::Timestamp;

use super::drain::{Drain, DrainChannel};
use super::pods::ClassifiedPod;
use super::problem::Problem;
use super::target::{TargetRef, TargetState};
use crate::crd::WorkerPodAutoScalerStatus;
use crate::queue::registry::QueueState;
use crate::scaler::wait::learn::Learned;
use crate::scaler::wait::{Sizing, WaitState};
use crate::scaler::{History, Policy, WorkerActivity};
use crate::workers::WorkerSeen;

/// What one reconcile saw.
#[derive(Debug, Clone)]
pub struct Observed {
    pub now: Timestamp,
    pub history: History,
    /// The last status this controller decided for the WPA, while the watch cache may not
    /// show it yet (waiting to be written, or written moments ago). `None`: the cache's.
    pub own_status: Option<WorkerPodAutoScalerStatus>,
    /// The WPA's world, or the problem that keeps it from being scaled.
    pub world: Result<World, Problem>,
}

/// A valid WPA's spec, target and queue as read now.
#[derive(Debug, Clone)]
pub struct World {
    pub policy: Policy,
    pub target: TargetRef,
    /// The queue URI with any password replaced, for messages (several, comma-separated).
    pub queue_redacted: String,
    /// The target's replicas, with our own last write in place of a cache that lags it.
    pub target_state: TargetState,
    /// `None` before the registry has anything for this WPA. With several queues, their
    /// combined state.
    pub queue: Option<QueueState>,
    /// With several queues: each one's redacted URI and state, in spec order (empty with
    /// one queue).
    pub per_queue: Vec<(String, QueueState)>,
    /// What the workers report, where the WPA's brokers carry worker events.
    pub workers: Option<WorkersObserved>,
    /// Sizing on wait time: only for WPAs with `maxWaitSeconds`.
    pub wait: Option<WaitObserved>,
    /// The drain before a scale-in: only where it is on and the workers can be drained.
    pub drain: Option<DrainObserved>,
}

/// A WPA's drain as remembered, and what its victims answered.
#[derive(Debug, Clone, PartialEq)]
pub struct DrainObserved {
    pub channel: DrainChannel,
    /// The drain this controller runs, if any.
    pub live: Option<Drain>,
    /// Drained pods a finished drain is removing: not orphans to resume.
    pub removing: Vec<String>,
    /// Victims of the live drain whose workers all answered that they hold nothing and
    /// consume none of the WPA's queues.
    pub drained: Vec<String>,
}

/// What was learned for sizing on wait time, and where the work stands.
#[derive(Debug, Clone, PartialEq)]
pub struct WaitObserved {
    pub max_wait: Duration,
    pub learned: Learned,
    pub state: WaitState,
    /// The two counts, once the model is learned (else the decision is practo's).
    pub sizing: Option<Sizing>,
    /// Pods whose workers run tasks (hold the prefetched ones).
    pub busy_pods: u32,
}

/// The target's pods by what their workers report.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkersObserved {
    /// `None` when the pods cannot be read: the decision is then practo's.
    pub activity: Option<WorkerActivity>,
    pub pods: Vec<ClassifiedPod>,
    /// Why the reports cannot be used as they are (the decision then holds every pod, or
    /// falls back to queue figures); `None` when they can.
    pub message: Option<String>,
    /// Look again soon: the reports are not usable yet, or busy workers hold replicas. Their
    /// tasks ending changes nothing the queue poller would wake the WPA for.
    pub recheck: bool,
    /// The reports are not in yet (the listener or the pod cache just started): like a
    /// queue's first poll, nothing worth writing into the status.
    pub warming_up: bool,
    /// Where the reports come from: `CeleryEvents`, `Consumers` or both, comma-separated.
    pub source: String,
    /// The Celery workers that run in the target's pods, as they last reported.
    pub target_workers: Vec<WorkerSeen>,
}

/// `status.workers.source` values.
pub const CELERY_EVENTS: &str = "CeleryEvents";
pub const CONSUMERS: &str = "Consumers";
pub const CELERY_EVENTS_AND_CONSUMERS: &str = "CeleryEvents,Consumers";
