//! `maxwait:<seconds>`: the controller's sizing on wait time, exactly as a WPA with
//! `maxWaitSeconds` runs it: the same learner ([`WaitLearner`]) fed from the heartbeats and
//! polls the view holds, the same rule ([`size`], [`decide_with_wait`]) after every poll,
//! practo's decision (with the WPA's `targetMessagesPerWorker`) until the model is learned.
//! `maxwait-backlog:<seconds>` is the same with the rule's stream term off
//! ([`WaitTuning::stream`]).

use std::time::Duration;

use crate::scaler::wait::learn::{Observation, WaitLearner, WorkerSample};
use crate::scaler::wait::{WaitState, WaitTuning, decide_with_wait, size};
use crate::scaler::{History, Policy, ScalerSettings};

use super::context::{PolicyContext, PolicyError, instant};
use super::practo::{Practo, worker_activity};
use super::view::{ClusterView, SimPolicy};

pub struct MaxWait {
    name: String,
    policy: Policy,
    settings: ScalerSettings,
    history: History,
    learner: WaitLearner,
    max_wait: Duration,
    idle_window: f64,
    period: f64,
    last_scale_up: Option<f64>,
    tuning: WaitTuning,
}

impl MaxWait {
    pub fn new(seconds: i32, ctx: &PolicyContext<'_>) -> Result<Self, PolicyError> {
        let name = format!("maxwait:{seconds}");
        let mut spec = ctx.wpa.spec.clone();
        spec.max_wait_seconds = Some(seconds);
        let policy =
            Policy::from_spec(&spec, &ctx.settings).map_err(|source| PolicyError::Spec {
                name: name.clone(),
                source,
            })?;
        let max_wait = policy.max_wait.unwrap_or(Duration::from_secs(30));
        Ok(MaxWait {
            name,
            policy,
            settings: ctx.settings.clone(),
            history: History::default(),
            learner: WaitLearner::default(),
            max_wait,
            idle_window: ctx.idle_window,
            // The controller looks again every 2 s while a WPA with maxWaitSeconds has work
            // or workers, and after each poll.
            period: ctx.poll.min(2.0),
            last_scale_up: None,
            tuning: WaitTuning::default(),
        })
    }

    /// `maxwait-backlog:<seconds>`: the rule without its stream term.
    pub fn backlog_only(seconds: i32, ctx: &PolicyContext<'_>) -> Result<Self, PolicyError> {
        let mut policy = Self::new(seconds, ctx)?;
        policy.name = format!("maxwait-backlog:{seconds}");
        policy.tuning.stream = false;
        Ok(policy)
    }
}

impl SimPolicy for MaxWait {
    fn name(&self) -> &str {
        &self.name
    }

    fn period(&self) -> f64 {
        self.period
    }

    fn decide(&mut self, view: &ClusterView<'_>) -> i32 {
        let now = instant(view.now);
        let live: Vec<_> = view.pods.iter().filter(|p| !p.terminating).collect();
        let names: Vec<String> = live
            .iter()
            .map(|p| format!("celery@pod-{}", p.id))
            .collect();
        let samples: Vec<WorkerSample> = live
            .iter()
            .zip(&names)
            .filter_map(|(pod, name)| {
                let beat = pod.worker?;
                Some(WorkerSample {
                    hostname: name,
                    active: beat.active,
                    processed: beat.processed,
                    busy_seconds: beat.busy_seconds,
                    first_seen: instant(beat.first_at),
                })
            })
            .collect();
        if view.queue.polled_at.is_some() {
            self.learner.observe(&Observation {
                now,
                visible: view.queue.visible,
                in_flight: view.queue.in_flight,
                workers: &samples,
                last_scale_up: self.last_scale_up.map(instant),
            });
        }
        let learned = self.learner.learned(now);
        let activity = worker_activity(view, self.idle_window);
        let running: u64 = samples.iter().map(|s| u64::from(s.active)).sum();
        let state = WaitState::from_reports(
            view.queue.visible,
            view.queue.in_flight,
            running,
            Some(&activity),
            learned.startup_seconds,
        );
        let sizing = learned
            .model
            .as_ref()
            .map(|m| size(m, &state, self.max_wait, &self.tuning));
        let decision = decide_with_wait(
            &self.policy,
            &Practo::snapshot(view, self.idle_window),
            Some(&activity),
            sizing.as_ref(),
            view.replicas,
            now,
            &self.history,
            &self.settings,
        );
        self.history.record(&decision, view.replicas, now);
        if decision.desired > view.replicas {
            self.last_scale_up = Some(view.now);
        }
        decision.desired
    }
}
