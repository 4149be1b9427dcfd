//! What the workers themselves report (Celery heartbeats): which pods of the target are
//! running tasks. It keeps a scale-down from removing busy workers and shows the tasks a
//! broker cannot see (Celery acknowledges a task when it starts, by default).
//!
//! Without a worker signal the decision is exactly [`decide`](super::decide)'s (practo's).

use jiff::Timestamp;

use super::{Decision, History, Policy, QueueSnapshot, Reason, ScalerSettings, decide};

/// The target's pods as the worker signal sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WorkerActivity {
    /// Pods with a worker running at least one task.
    pub busy: u32,
    /// Pods whose workers report no task.
    pub idle: u32,
    /// Pods no worker reports for (starting, heartbeats off, another program): never
    /// counted as idle, never protected.
    pub unknown: u32,
    /// Tasks executing now, summed over the target's workers.
    pub active_tasks: u64,
    /// A worker of the target ran a task within the idle window (or runs one now).
    pub recently_busy: bool,
    /// The fewest replicas that remove no busy pod: the busy pods where the victims follow
    /// the pod-deletion-cost (ReplicaSets), the highest busy ordinal + 1 for StatefulSets
    /// (which always remove the highest ordinals).
    pub keep: u32,
}

/// [`decide`] with what the workers report:
/// - in flight is at least the tasks executing now: with early ack the broker does not see
///   them, with late ack they are already in its unacknowledged count, so the larger of the
///   two counts, never their sum;
/// - the workers are idle only when the queue says so and no worker of the target ran a
///   task within the idle window;
/// - a scale-down stops at [`WorkerActivity::keep`] (`HoldBusyWorkers`); scale-ups and
///   decisions above it are unchanged.
pub fn decide_with_workers(
    policy: &Policy,
    queue: &QueueSnapshot,
    workers: Option<&WorkerActivity>,
    current: i32,
    now: Timestamp,
    history: &History,
    settings: &ScalerSettings,
) -> Decision {
    let Some(workers) = workers else {
        return decide(policy, queue, current, now, history, settings);
    };
    let seen = QueueSnapshot {
        in_flight: queue.in_flight.max(workers.active_tasks),
        idle: queue.idle && workers.busy == 0 && !workers.recently_busy,
        ..*queue
    };
    hold_busy(
        decide(policy, &seen, current, now, history, settings),
        workers,
        current,
    )
}

/// Raises a scale-down that would go below `keep` to `keep` (never above the current count:
/// busy workers hold replicas, they do not add them).
pub(super) fn hold_busy(decision: Decision, workers: &WorkerActivity, current: i32) -> Decision {
    let keep = i32::try_from(workers.keep).unwrap_or(i32::MAX).min(current);
    if decision.desired >= current || decision.desired >= keep {
        return decision;
    }
    Decision {
        desired: keep,
        recommendation: decision.recommendation,
        reason: Reason::HoldBusyWorkers,
        limited: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::WorkerPodAutoScalerSpec;
    use std::time::Duration;

    fn policy(min: i32, max: i32, target: i32) -> Policy {
        let spec: WorkerPodAutoScalerSpec = serde_json::from_value(serde_json::json!({
            "minReplicas": min, "maxReplicas": max, "targetMessagesPerWorker": target,
            "queueURI": "redis://127.0.0.1:6379/0/q", "deploymentName": "w"
        }))
        .expect("spec");
        Policy::from_spec(&spec, &settings()).expect("policy")
    }

    fn settings() -> ScalerSettings {
        ScalerSettings {
            scale_down_delay: Duration::ZERO,
            ..ScalerSettings::default()
        }
    }

    fn queue(visible: u64, in_flight: u64, idle: bool) -> QueueSnapshot {
        QueueSnapshot {
            visible,
            in_flight,
            sent_per_minute: 0.0,
            idle,
        }
    }

    fn workers(busy: u32, idle: u32, active: u64, recently_busy: bool) -> WorkerActivity {
        WorkerActivity {
            busy,
            idle,
            unknown: 0,
            active_tasks: active,
            recently_busy,
            keep: busy,
        }
    }

    fn run(q: QueueSnapshot, w: Option<WorkerActivity>, current: i32) -> Decision {
        decide_with_workers(
            &policy(0, 10, 5),
            &q,
            w.as_ref(),
            current,
            Timestamp::UNIX_EPOCH,
            &History::default(),
            &settings(),
        )
    }

    #[test]
    fn without_a_signal_the_decision_is_practos() {
        for (q, current) in [
            (queue(0, 0, true), 4),
            (queue(0, 0, false), 4),
            (queue(12, 3, false), 1),
            (queue(3, 0, false), 0),
        ] {
            let plain = decide(
                &policy(0, 10, 5),
                &q,
                current,
                Timestamp::UNIX_EPOCH,
                &History::default(),
                &settings(),
            );
            assert_eq!(run(q, None, current), plain, "{q:?} at {current}");
        }
    }

    #[test]
    fn two_busy_of_four_with_an_empty_queue_keep_two() {
        // Early ack: the broker sees nothing, and its idle evidence says idle.
        let d = run(queue(0, 0, true), Some(workers(2, 2, 2, true)), 4);
        assert_eq!(d.desired, 2);
        assert_eq!(d.reason, Reason::HoldBusyWorkers);
        assert!(d.limited);
    }

    #[test]
    fn running_tasks_count_as_in_flight_once() {
        // Late ack: the broker's 6 unacknowledged include the 6 running tasks: 2 workers, not 3.
        let d = run(queue(0, 6, false), Some(workers(2, 0, 6, true)), 0);
        assert_eq!(d.desired, 2);
        // Early ack: the broker sees none of the 6; they still need 2 workers.
        let d = run(queue(0, 0, false), Some(workers(2, 0, 6, true)), 0);
        assert_eq!(d.desired, 2);
    }

    #[test]
    fn idle_only_when_no_worker_ran_a_task_within_the_window() {
        // All idle now, but one ran a task within the idle window: no massive scale-down.
        let d = run(queue(0, 0, true), Some(workers(0, 4, 0, true)), 4);
        assert_ne!(d.reason, Reason::ScaleDownIdle);
        let quiet = run(queue(0, 0, true), Some(workers(0, 4, 0, false)), 4);
        assert_eq!((quiet.desired, quiet.reason), (0, Reason::ScaleDownIdle));
    }

    #[test]
    fn the_queue_must_agree_that_workers_are_idle() {
        let d = run(queue(0, 0, false), Some(workers(0, 4, 0, false)), 4);
        assert_ne!(d.reason, Reason::ScaleDownIdle);
    }

    #[test]
    fn unknown_pods_are_not_protected() {
        let w = WorkerActivity {
            unknown: 3,
            ..workers(1, 0, 1, true)
        };
        // The running task alone needs one worker; the three unknown pods may go.
        let d = run(queue(0, 0, true), Some(w), 4);
        assert_eq!(d.desired, 1);
    }

    #[test]
    fn scale_ups_and_holds_above_keep_are_unchanged() {
        let up = run(queue(20, 0, false), Some(workers(1, 0, 1, true)), 1);
        assert_eq!((up.desired, up.reason), (5, Reason::ScaleUpBacklog));
        // 10 visible + 1 running need 3 of 4; one pod busy: the backlog rules.
        let down = run(queue(10, 0, false), Some(workers(1, 3, 1, true)), 4);
        assert_eq!((down.desired, down.reason), (3, Reason::ScaleDownBacklog));
    }

    #[test]
    fn keep_never_raises_above_the_current_count() {
        // More busy workers reported than replicas (a terminating pod's worker, say).
        let w = WorkerActivity {
            keep: 6,
            ..workers(6, 0, 6, true)
        };
        let d = run(queue(0, 0, true), Some(w), 2);
        assert_eq!(d.desired, 2);
    }

    #[test]
    fn statefulset_keep_is_the_highest_busy_ordinal() {
        // Ordinal 3 of 0..=4 busy, the rest idle: only ordinal 4 may go.
        let w = WorkerActivity {
            keep: 4,
            ..workers(1, 4, 1, true)
        };
        let d = run(queue(0, 0, true), Some(w), 5);
        assert_eq!((d.desired, d.reason), (4, Reason::HoldBusyWorkers));
    }

    #[test]
    fn min_replicas_above_keep_wins() {
        let d = decide_with_workers(
            &policy(3, 10, 5),
            &queue(0, 0, true),
            Some(&workers(1, 4, 1, true)),
            5,
            Timestamp::UNIX_EPOCH,
            &History::default(),
            &settings(),
        );
        assert_eq!(d.desired, 3);
    }
}
