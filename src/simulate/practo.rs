//! `practo:<target>`: practo's rule exactly as this project's controller runs it.

use crate::scaler::{self, History, Policy, QueueSnapshot, ScalerSettings, WorkerActivity};

use super::context::{PolicyContext, PolicyError, instant};
use super::view::{ClusterView, SimPolicy};

/// practo's rule as this project's controller runs it: [`scaler::decide_with_workers`] on
/// the WPA's spec with `targetMessagesPerWorker` replaced, after every queue poll, with the
/// workers' heartbeats as the busy signal when the workers send them.
pub struct Practo {
    name: String,
    policy: Policy,
    settings: ScalerSettings,
    history: History,
    idle_window: f64,
    heartbeats: bool,
    period: f64,
}

impl Practo {
    pub fn new(target: i32, ctx: &PolicyContext<'_>) -> Result<Self, PolicyError> {
        let name = format!("practo:{target}");
        let mut spec = ctx.wpa.spec.clone();
        spec.target_messages_per_worker = target;
        let policy =
            Policy::from_spec(&spec, &ctx.settings).map_err(|source| PolicyError::Spec {
                name: name.clone(),
                source,
            })?;
        Ok(Practo {
            name,
            policy,
            settings: ctx.settings.clone(),
            history: History::default(),
            idle_window: ctx.idle_window,
            heartbeats: ctx.heartbeats,
            period: ctx.poll,
        })
    }

    /// The queue reading the controller would pass: the poll's figures, no send rate (Redis
    /// has none), and idle once the backlog has been empty for the whole idle window.
    pub fn snapshot(view: &ClusterView<'_>, idle_window: f64) -> QueueSnapshot {
        QueueSnapshot {
            visible: view.queue.visible,
            in_flight: view.queue.in_flight,
            sent_per_minute: 0.0,
            idle: view
                .queue
                .empty_since
                .is_some_and(|since| view.now - since >= idle_window),
        }
    }
}

/// A heartbeat this many intervals old still marks its worker busy (the controller's
/// `JUST_BUSY_BEATS`: a beat sent between two tasks says 0).
const JUST_BUSY_BEATS: f64 = 3.0;
/// Celery's heartbeat interval, seconds.
const HEARTBEAT_SECONDS: f64 = 2.0;

/// The workers as the controller classifies the target's pods: a pod is busy when its worker
/// runs a task or ran one within its last three heartbeats, idle when it reports none,
/// unknown without a heartbeat yet (starting pods). Terminating pods are no longer targets.
pub fn worker_activity(view: &ClusterView<'_>, idle_window: f64) -> WorkerActivity {
    let mut activity = WorkerActivity::default();
    for pod in view.pods.iter().filter(|p| !p.terminating) {
        let Some(beat) = pod.worker else {
            activity.unknown += 1;
            continue;
        };
        let busy_within = |span: f64| beat.last_busy.is_some_and(|at| view.now - at < span);
        activity.recently_busy |= beat.active > 0 || busy_within(idle_window);
        if beat.active > 0 || busy_within(JUST_BUSY_BEATS * HEARTBEAT_SECONDS) {
            activity.busy += 1;
            activity.active_tasks += u64::from(beat.active);
        } else {
            activity.idle += 1;
        }
    }
    activity.keep = activity.busy;
    activity
}

impl SimPolicy for Practo {
    fn name(&self) -> &str {
        &self.name
    }

    fn period(&self) -> f64 {
        self.period
    }

    fn decide(&mut self, view: &ClusterView<'_>) -> i32 {
        let at = instant(view.now);
        let queue = Practo::snapshot(view, self.idle_window);
        let workers = self
            .heartbeats
            .then(|| worker_activity(view, self.idle_window));
        let decision = scaler::decide_with_workers(
            &self.policy,
            &queue,
            workers.as_ref(),
            view.replicas,
            at,
            &self.history,
            &self.settings,
        );
        self.history.record(&decision, view.replicas, at);
        decision.desired
    }
}
