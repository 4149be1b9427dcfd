//! The part of a plan that sizing on wait time adds (`spec.maxWaitSeconds`): the
//! `WaitTarget` condition, `status.wait`, the gauges, and an Event when the condition turns
//! to a state the owner should act on (`maxReplicas` too low, tasks stuck in busy workers'
//! prefetch buffers). Pure.

use kube::runtime::events::EventType;

use super::metrics::WaitGauges;
use super::observed::WaitObserved;
use super::planned_event::PlannedEvent;
use super::status::{ConditionState, Status};
use crate::crd::WaitStatus;
use crate::scaler::Policy;
use crate::scaler::wait::{WaitModel, held_wait, predicted_wait};

/// The condition type.
pub const WAIT_TARGET: &str = "WaitTarget";

/// Its reasons.
pub mod reasons {
    /// Unknown: the model is being learned; targetMessagesPerWorker decides meanwhile.
    pub const LEARNING: &str = "Learning";
    /// True: the desired workers keep the predicted wait within the target.
    pub const WITHIN_TARGET: &str = "PredictedWithinTarget";
    /// False: the predicted wait is over the target while the workers are being added.
    pub const CATCHING_UP: &str = "CatchingUp";
    /// False: meeting the target needs more workers than maxReplicas.
    pub const MAX_REPLICAS_TOO_LOW: &str = "MaxReplicasTooLow";
    /// False: tasks held in busy workers' prefetch buffers will wait past the target.
    pub const PREFETCHED_TASKS_WAITING: &str = "PrefetchedTasksWaiting";
    /// False: a new worker takes longer to start than the target allows.
    pub const STARTUP_LONGER_THAN_TARGET: &str = "StartupLongerThanTarget";
}
use reasons::*;

/// `status.wait.mode` values.
const MODE_MAX_WAIT: &str = "MaxWait";
const MODE_LEARNING: &str = "Learning";
/// Where the figures come from.
const SOURCE: &str = "CeleryEvents";

/// What the wait sizing adds to a plan.
#[derive(Debug, Clone, PartialEq)]
pub struct WaitPlan {
    pub condition: ConditionState,
    pub status: WaitStatus,
    pub gauges: Option<WaitGauges>,
    /// An Event to send, when the condition turned to a state worth one.
    pub event: Option<PlannedEvent>,
}

/// Plans the wait parts for `desired` workers; `previous_reason` is the condition's reason
/// in the status the plan builds on (an Event goes out only when it changes).
pub fn plan_wait(
    wait: &WaitObserved,
    policy: &Policy,
    desired: i32,
    previous_reason: Option<&str>,
) -> WaitPlan {
    let target = wait.max_wait.as_secs_f64();
    let Some(model) = wait
        .learned
        .model
        .as_ref()
        .filter(|_| wait.sizing.is_some())
    else {
        let message = format!(
            "learning ({}); deciding with targetMessagesPerWorker {} meanwhile",
            wait.learned.missing.join("; "),
            policy.target
        );
        return WaitPlan {
            condition: ConditionState::new(WAIT_TARGET, Status::Unknown, LEARNING, message.clone()),
            status: WaitStatus {
                mode: MODE_LEARNING.to_string(),
                source: SOURCE.to_string(),
                held_tasks: count(wait.state.held),
                message: Some(message),
                ..WaitStatus::default()
            },
            gauges: None,
            event: None,
        };
    };
    let pods = u64::try_from(desired).unwrap_or(0);
    let queue_wait = predicted_wait(model, &wait.state, pods);
    let held = held_wait(model, wait.state.held, wait.busy_pods);
    let predicted = queue_wait.map(|w| w.max(held));
    let needed = wait.sizing.map_or(0, |s| s.up);
    let (status, reason, message) = condition(wait, model, policy, predicted, held, target, needed);
    let event = (previous_reason != Some(reason))
        .then(|| match reason {
            MAX_REPLICAS_TOO_LOW | PREFETCHED_TASKS_WAITING | STARTUP_LONGER_THAN_TARGET => Some(
                PlannedEvent::new(EventType::Warning, reason, message.clone()),
            ),
            _ => None,
        })
        .flatten();
    WaitPlan {
        condition: ConditionState::new(WAIT_TARGET, status, reason, message),
        status: WaitStatus {
            mode: MODE_MAX_WAIT.to_string(),
            predicted_wait_seconds: predicted.map(|w| w.ceil() as i64),
            arrivals_per_second: Some(two_digits(model.arrivals_short)),
            throughput_per_worker: Some(two_digits(model.per_pod_throughput())),
            task_seconds: Some(two_digits(model.task_seconds)),
            slots_per_worker: i32::try_from(model.slots).ok(),
            startup_seconds: Some(model.startup_seconds.round() as i64),
            source: if wait.learned.startup_measured {
                SOURCE.to_string()
            } else {
                format!("{SOURCE} (start-up: Default)")
            },
            held_tasks: count(wait.state.held),
            needed_replicas: i32::try_from(needed).ok(),
            message: None,
        },
        gauges: Some(WaitGauges {
            predicted_wait_seconds: predicted.unwrap_or(-1.0),
            target_wait_seconds: target,
            arrivals_per_second: model.arrivals_short,
            throughput_per_worker: model.per_pod_throughput(),
            needed_replicas: needed as f64,
            held_tasks: wait.state.held as f64,
        }),
        event,
    }
}

/// The condition's status, reason and message, the owner's problems first.
fn condition(
    wait: &WaitObserved,
    model: &WaitModel,
    policy: &Policy,
    predicted: Option<f64>,
    held: f64,
    target: f64,
    needed: u64,
) -> (Status, &'static str, String) {
    let shown =
        |w: Option<f64>| w.map_or("growing without bound".to_string(), |w| format!("{w:.0} s"));
    let queue_dominated = predicted.is_some_and(|p| p > held);
    if wait.state.held > 0 && held > target && !queue_dominated {
        return (
            Status::False,
            PREFETCHED_TASKS_WAITING,
            format!(
                "{} tasks are prefetched by {} busy workers and will wait about {held:.0} s \
                 (maxWaitSeconds {target:.0}): adding workers cannot start them. Celery's \
                 default early ack lets busy workers reserve more tasks: run the workers with \
                 --prefetch-multiplier=1, or task_acks_late=True with prefetch 1",
                wait.state.held, wait.busy_pods
            ),
        );
    }
    if needed > u64::try_from(policy.max).unwrap_or(0) {
        return (
            Status::False,
            MAX_REPLICAS_TOO_LOW,
            format!(
                "maxWaitSeconds {target:.0} needs {needed} workers now ({:.2} tasks/s \
                 arriving, {:.2} tasks/s per worker, {} waiting, start-up {:.0} s); \
                 maxReplicas is {}, predicted wait {}. A maxReplicas of {needed} would meet it",
                model.arrivals_short,
                model.per_pod_throughput(),
                wait.state.waiting,
                model.startup_seconds,
                policy.max,
                shown(predicted)
            ),
        );
    }
    if wait.sizing.is_some_and(|s| s.startup_exceeds_target) {
        return (
            Status::False,
            STARTUP_LONGER_THAN_TARGET,
            format!(
                "workers take {:.0} s to start; maxWaitSeconds {target:.0} leaves no time for \
                 tasks queued while there are too few workers (a burst, or from zero): raise \
                 maxWaitSeconds or minReplicas",
                model.startup_seconds
            ),
        );
    }
    match predicted {
        Some(p) if p <= target => (
            Status::True,
            WITHIN_TARGET,
            format!("predicted wait {p:.0} s, maxWaitSeconds {target:.0}"),
        ),
        other => (
            Status::False,
            CATCHING_UP,
            format!(
                "predicted wait {} over maxWaitSeconds {target:.0} while workers are added",
                shown(other)
            ),
        ),
    }
}

fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// `x` rounded to two significant digits (status figures that do not churn).
pub fn two_digits(x: f64) -> f64 {
    if !x.is_finite() || x == 0.0 {
        return 0.0;
    }
    let scale = 10f64.powi(1 - x.abs().log10().floor() as i32);
    (x * scale).round() / scale
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_are_rounded_to_two_digits() {
        assert_eq!(two_digits(0.0), 0.0);
        assert_eq!(two_digits(5.4321), 5.4);
        assert_eq!(two_digits(0.04567), 0.046);
        assert_eq!(two_digits(1234.0), 1200.0);
        assert_eq!(two_digits(f64::NAN), 0.0);
    }
}
