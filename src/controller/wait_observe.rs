//! What a WPA with `maxWaitSeconds` observes for its wait sizing: its workers' heartbeats
//! and its queue fed to its learner (in its memory), and where the work and the pods stand.

use std::time::Duration;

use jiff::Timestamp;

use super::context::Context;
use super::key::WpaKey;
use super::observed::{WaitObserved, WorkersObserved};
use crate::queue::registry::QueueState;
use crate::scaler::wait::learn::{Learned, Observation, WorkerSample};
use crate::scaler::wait::{WaitState, WaitTuning, size};

pub fn observe_wait(
    ctx: &Context,
    key: &WpaKey,
    max_wait: Duration,
    queue: Option<&QueueState>,
    workers: Option<&WorkersObserved>,
    last_scale_up: Option<Timestamp>,
    now: Timestamp,
) -> WaitObserved {
    // Stale figures teach nothing (a failing queue keeps its last sample).
    let metrics = queue.filter(|q| !q.stale).and_then(|q| q.metrics.as_ref());
    let visible = metrics.map_or(0, |m| m.visible);
    let in_flight = metrics.and_then(|m| m.in_flight).unwrap_or(0);
    let seen = workers.map_or(&[][..], |w| w.target_workers.as_slice());
    let samples: Vec<WorkerSample> = seen
        .iter()
        .map(|w| WorkerSample {
            hostname: &w.hostname,
            active: w.active,
            processed: w.processed,
            busy_seconds: w.busy_seconds,
            first_seen: w.first_seen,
        })
        .collect();
    let learned = match metrics {
        Some(_) => ctx.memories.learn_wait(
            key,
            &Observation {
                now,
                visible,
                in_flight,
                workers: &samples,
                last_scale_up,
            },
        ),
        None => None,
    }
    .unwrap_or_else(|| Learned {
        model: None,
        missing: vec!["queue figures: none usable yet".to_string()],
        startup_seconds: crate::scaler::wait::learn::DEFAULT_STARTUP_SECONDS,
        startup_measured: false,
    });
    let activity = workers.and_then(|w| w.activity);
    let running: u64 = seen.iter().map(|w| u64::from(w.active)).sum();
    let state = WaitState::from_reports(
        visible,
        in_flight,
        running,
        activity.as_ref(),
        learned.startup_seconds,
    );
    let sizing = learned
        .model
        .as_ref()
        .map(|model| size(model, &state, max_wait, &WaitTuning::default()));
    WaitObserved {
        max_wait,
        learned,
        state,
        sizing,
        busy_pods: activity.map_or(0, |a| a.busy),
    }
}
