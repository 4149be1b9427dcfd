//! Idle inference: are the workers of a queue idle?
//!
//! A provider may know (`QueueMetrics::idle`, e.g. from empty receives). When it does not,
//! workers count as idle only once the queue showed no backlog (`visible == 0` and
//! `in_flight` 0 or unknown) on every observation for the whole idle window: a single
//! empty sample proves little, since with Celery's default early ack a running task is
//! invisible to the broker. Pure: the caller passes the time in.

use std::time::{Duration, Instant};

use super::QueueMetrics;

/// What the observations so far say about idleness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idleness {
    /// Idle (said by the provider, or no backlog for the whole window).
    Idle,
    /// Not idle: there is a backlog, or the provider says the workers are busy.
    Busy,
    /// No backlog, but not yet for the whole window.
    Pending,
}

impl Idleness {
    pub fn is_idle(self) -> bool {
        self == Idleness::Idle
    }

    /// `Some(true/false)` when known, `None` while pending.
    pub fn known(self) -> Option<bool> {
        match self {
            Idleness::Idle => Some(true),
            Idleness::Busy => Some(false),
            Idleness::Pending => None,
        }
    }
}

/// Tracks how long one queue has had no backlog.
#[derive(Debug, Clone)]
pub struct IdleTracker {
    window: Duration,
    empty_since: Option<Instant>,
}

impl IdleTracker {
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            empty_since: None,
        }
    }

    /// Records one successful poll taken at `now` and says whether the workers are idle.
    pub fn observe(&mut self, metrics: &QueueMetrics, now: Instant) -> Idleness {
        match metrics.idle {
            Some(true) => {
                self.empty_since.get_or_insert(now);
                Idleness::Idle
            }
            Some(false) => {
                self.empty_since = None;
                Idleness::Busy
            }
            None => {
                let empty = metrics.visible == 0 && metrics.in_flight.unwrap_or(0) == 0;
                if !empty {
                    self.empty_since = None;
                    return Idleness::Busy;
                }
                let since = *self.empty_since.get_or_insert(now);
                if now.saturating_duration_since(since) >= self.window {
                    Idleness::Idle
                } else {
                    Idleness::Pending
                }
            }
        }
    }

    /// Forgets the empty streak: a failed poll breaks the continuity the window needs.
    pub fn reset(&mut self) {
        self.empty_since = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::queue::test_support::sample as metrics;

    const WINDOW: Duration = Duration::from_secs(60);

    #[test]
    fn empty_for_the_whole_window_is_idle() {
        let t0 = Instant::now();
        let mut t = IdleTracker::new(WINDOW);
        assert_eq!(t.observe(&metrics(0, Some(0), None), t0), Idleness::Pending);
        assert_eq!(
            t.observe(&metrics(0, Some(0), None), t0 + Duration::from_secs(59)),
            Idleness::Pending
        );
        assert_eq!(
            t.observe(&metrics(0, None, None), t0 + WINDOW),
            Idleness::Idle
        );
    }

    #[test]
    fn backlog_restarts_the_window() {
        let t0 = Instant::now();
        let mut t = IdleTracker::new(WINDOW);
        t.observe(&metrics(0, Some(0), None), t0);
        assert_eq!(
            t.observe(&metrics(0, Some(1), None), t0 + Duration::from_secs(30)),
            Idleness::Busy
        );
        assert_eq!(
            t.observe(&metrics(0, Some(0), None), t0 + Duration::from_secs(61)),
            Idleness::Pending
        );
        assert_eq!(
            t.observe(&metrics(0, Some(0), None), t0 + Duration::from_secs(121)),
            Idleness::Idle
        );
        assert_eq!(
            t.observe(&metrics(3, Some(0), None), t0 + Duration::from_secs(122)),
            Idleness::Busy
        );
    }

    #[test]
    fn provider_verdict_wins() {
        let t0 = Instant::now();
        let mut t = IdleTracker::new(WINDOW);
        assert_eq!(
            t.observe(&metrics(0, Some(0), Some(false)), t0),
            Idleness::Busy
        );
        assert_eq!(
            t.observe(&metrics(5, Some(2), Some(true)), t0),
            Idleness::Idle
        );
        // Some(false) breaks a streak even with an empty queue.
        t.observe(&metrics(0, Some(0), None), t0);
        t.observe(
            &metrics(0, Some(0), Some(false)),
            t0 + Duration::from_secs(50),
        );
        assert_eq!(
            t.observe(&metrics(0, Some(0), None), t0 + Duration::from_secs(70)),
            Idleness::Pending
        );
    }

    #[test]
    fn reset_breaks_continuity_and_zero_window_is_immediate() {
        let t0 = Instant::now();
        let mut t = IdleTracker::new(WINDOW);
        t.observe(&metrics(0, Some(0), None), t0);
        t.reset();
        assert_eq!(
            t.observe(&metrics(0, Some(0), None), t0 + Duration::from_secs(90)),
            Idleness::Pending
        );
        let mut zero = IdleTracker::new(Duration::ZERO);
        assert_eq!(zero.observe(&metrics(0, None, None), t0), Idleness::Idle);
        assert_eq!(Idleness::Pending.known(), None);
        assert_eq!(Idleness::Busy.known(), Some(false));
        assert!(Idleness::Idle.is_idle());
    }
}
