//! Figures a plan puts into the status, pure: the workers', each queue's, and how long a
//! delayed scale-down still waits. Apart from `plan.rs` to keep it to the decisions.

use std::time::Duration;

use jiff::Timestamp;

use super::observed::WorkersObserved;
use crate::crd::{QueueStatus, WorkersStatus};
use crate::queue::registry::QueueState;
use crate::scaler::{History, ScalerSettings};

/// The status's worker figures.
pub fn workers_status(workers: &WorkersObserved) -> WorkersStatus {
    let count = |n: u32| i32::try_from(n).unwrap_or(i32::MAX);
    let activity = workers.activity.unwrap_or_default();
    WorkersStatus {
        source: workers.source.clone(),
        busy: count(activity.busy),
        idle: count(activity.idle),
        unknown: count(activity.unknown),
        active_tasks: i64::try_from(activity.active_tasks).unwrap_or(i64::MAX),
        draining: 0,
        message: workers.message.clone(),
    }
}

/// One queue's line in the status of a WPA that watches several.
pub fn queue_status(queue: &str, state: &QueueState) -> QueueStatus {
    let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    QueueStatus {
        queue: queue.to_string(),
        messages: clamp(state.backlog()),
        in_flight_messages: state.metrics.as_ref().and_then(|m| m.in_flight).map(clamp),
        idle: state.idle,
        error: state.error.as_ref().map(ToString::to_string),
    }
}

/// Time until a delayed scale-down may happen, so the WPA is looked at again right then
/// instead of at the next resync.
pub fn delay_remaining(history: &History, settings: &ScalerSettings, now: Timestamp) -> Duration {
    let Some(last) = history.last_scale_time() else {
        return Duration::ZERO;
    };
    let elapsed = now.duration_since(last);
    let delay = jiff::SignedDuration::try_from(settings.scale_down_delay)
        .unwrap_or(jiff::SignedDuration::MAX);
    let remaining = delay
        .checked_sub(elapsed)
        .unwrap_or(jiff::SignedDuration::ZERO);
    // practo allows the scale-down only strictly after the delay: look just past it.
    Duration::try_from(remaining).unwrap_or(Duration::ZERO) + Duration::from_millis(200)
}
