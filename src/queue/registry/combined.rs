//! Several queues read as one: the view of a subscriber whose workers consume all of them
//! (a Celery worker started with `--queues=a,b,c`).
//!
//! Counts add up: the backlog of the workers is the sum of the queues' backlogs. The
//! workers are idle only when every queue says so. Nothing is known until every queue has
//! been read once, and one failing queue makes the whole view failing and stale, so the
//! controller holds the replicas exactly as it does for one failing queue.

use super::QueueState;
use crate::queue::QueueMetrics;

/// Combines the states of one subscriber's queues. One state comes back unchanged; none
/// gives the state of a queue not polled yet.
pub fn combine<'a>(states: impl IntoIterator<Item = &'a QueueState>) -> QueueState {
    let states: Vec<&QueueState> = states.into_iter().collect();
    if let [one] = states.as_slice() {
        return (*one).clone();
    }
    if states.is_empty() {
        return QueueState::default();
    }
    let metrics: Option<Vec<&QueueMetrics>> = states.iter().map(|s| s.metrics.as_ref()).collect();
    QueueState {
        metrics: metrics.map(|all| combine_metrics(&all)),
        idle: states.iter().all(|s| s.idle),
        stale: states.iter().any(|s| s.stale),
        // The first failing queue's error names that queue.
        error: states.iter().find_map(|s| s.error.clone()),
        last_success: states
            .iter()
            .map(|s| s.last_success)
            .collect::<Option<Vec<_>>>()
            .and_then(|times| times.into_iter().min()),
        consecutive_failures: states
            .iter()
            .map(|s| s.consecutive_failures)
            .max()
            .unwrap_or(0),
    }
}

/// Adds up the counts of several queues' samples. A count that no queue can tell stays
/// `None`; where only some queues can tell, the known ones are added (the others count as
/// zero, as they would for a single queue that cannot tell).
pub fn combine_metrics(all: &[&QueueMetrics]) -> QueueMetrics {
    let sum = |pick: fn(&QueueMetrics) -> Option<u64>| {
        all.iter()
            .filter_map(|m| pick(m))
            .reduce(u64::saturating_add)
    };
    // The same workers consume every queue: the most consumers seen on one queue is the
    // best count of them (a sum would count each worker once per queue).
    let consumers = all.iter().filter_map(|m| m.consumers).max();
    let idle = if all.iter().any(|m| m.idle == Some(false)) {
        Some(false)
    } else if all.iter().all(|m| m.idle == Some(true)) {
        Some(true)
    } else {
        None
    };
    let partial: Vec<&str> = all.iter().filter_map(|m| m.partial.as_deref()).collect();
    QueueMetrics {
        missing: all.iter().flat_map(|m| m.missing.iter().cloned()).collect(),
        visible: all.iter().map(|m| m.visible).fold(0, u64::saturating_add),
        in_flight: sum(|m| m.in_flight),
        delayed: sum(|m| m.delayed),
        sent_per_minute: sum(|m| m.sent_per_minute),
        consumers,
        idle,
        partial: (!partial.is_empty()).then(|| partial.join("; ")),
        // The oldest sample: the view is as old as its oldest part.
        sampled_at: all
            .iter()
            .map(|m| m.sampled_at)
            .min()
            .unwrap_or(jiff::Timestamp::UNIX_EPOCH),
        // The same consumers may be listed by each queue; the reader maps them to pods.
        workers: all
            .iter()
            .filter_map(|m| m.workers.clone())
            .reduce(|mut all, more| {
                all.extend(more);
                all
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::QueueError;

    fn at(seconds: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(seconds).unwrap()
    }

    use crate::queue::test_support::sample as metrics;

    fn polled(visible: u64, in_flight: Option<u64>, idle: bool) -> QueueState {
        QueueState {
            metrics: Some(metrics(visible, in_flight, Some(idle))),
            idle,
            last_success: Some(at(100)),
            ..QueueState::default()
        }
    }

    #[test]
    fn one_queue_is_passed_through_and_none_is_not_polled() {
        let one = polled(3, Some(1), false);
        assert_eq!(combine([&one]), one);
        assert_eq!(combine([]), QueueState::default());
    }

    #[test]
    fn backlogs_add_up_and_idle_needs_every_queue() {
        let (a, b, c) = (
            polled(3, Some(1), false),
            polled(0, None, true),
            polled(7, Some(2), false),
        );
        let view = combine([&a, &b, &c]);
        let m = view.metrics.as_ref().unwrap();
        assert_eq!((m.visible, m.in_flight), (10, Some(3)));
        assert_eq!(m.idle, Some(false));
        assert!(!view.idle && !view.stale && view.error.is_none());

        let quiet = combine([&polled(0, Some(0), true), &polled(0, None, true)]);
        assert!(quiet.idle);
        assert_eq!(quiet.metrics.unwrap().idle, Some(true));
        // A queue without idle evidence leaves the evidence unknown.
        let mut unknown = polled(0, None, true);
        unknown.metrics.as_mut().unwrap().idle = None;
        let view = combine([&polled(0, Some(0), true), &unknown]);
        assert_eq!(view.metrics.unwrap().idle, None);
        assert!(view.idle, "the registry's verdicts both say idle");
    }

    #[test]
    fn counts_no_queue_can_tell_stay_unknown_and_consumers_are_not_summed() {
        let mut a = metrics(1, None, None);
        a.sampled_at = at(100);
        a.consumers = Some(4);
        a.sent_per_minute = Some(30);
        a.partial = Some("management API down".into());
        let mut b = metrics(2, None, None);
        b.consumers = Some(3);
        b.sampled_at = at(90);
        let m = combine_metrics(&[&a, &b]);
        assert_eq!((m.in_flight, m.delayed), (None, None));
        assert_eq!(m.sent_per_minute, Some(30));
        assert_eq!(m.consumers, Some(4));
        assert_eq!(m.partial.as_deref(), Some("management API down"));
        assert_eq!(m.sampled_at, at(90), "as old as the oldest sample");
    }

    #[test]
    fn one_failing_queue_makes_the_view_failing_and_keeps_the_known_backlog() {
        let ok = polled(5, Some(0), false);
        let failing = QueueState {
            metrics: Some(metrics(2, Some(0), Some(false))),
            stale: true,
            error: Some(QueueError::Unavailable {
                queue: "redis://r/0/high".into(),
                detail: "connection refused".into(),
            }),
            last_success: Some(at(50)),
            consecutive_failures: 3,
            ..QueueState::default()
        };
        let view = combine([&ok, &failing]);
        assert!(view.stale && !view.idle);
        assert_eq!(view.error, failing.error);
        assert_eq!(view.consecutive_failures, 3);
        assert_eq!(view.last_success, Some(at(50)));
        assert_eq!(view.metrics.unwrap().visible, 7);
    }

    #[test]
    fn nothing_is_known_until_every_queue_was_read() {
        let ok = polled(5, Some(0), true);
        let pending = QueueState::default();
        let view = combine([&ok, &pending]);
        assert_eq!(view.metrics, None);
        assert!(!view.idle && view.error.is_none());
        assert_eq!(view.last_success, None);
        // A queue that failed before its first answer: failing, nothing known.
        let never = QueueState {
            stale: true,
            error: Some(QueueError::NotFound { queue: "q".into() }),
            consecutive_failures: 1,
            ..QueueState::default()
        };
        let view = combine([&ok, &never]);
        assert!(view.metrics.is_none() && view.stale && view.error.is_some());
    }
}
