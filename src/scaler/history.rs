//! What the scaler remembers about one WPA between decisions: the time of the last scale
//! (practo's scale-down delay), past recommendations (behavior stabilization windows) and past
//! scale events (behavior rate policies).
//!
//! The caller owns one `History` per WPA and calls [`History::record`] after applying each
//! decision. Only the last scale time survives a restart (status.LastScaleTime); windows and
//! events start empty again, as they do in the Kubernetes HPA controller.

use jiff::{SignedDuration, Timestamp};

use super::Decision;
use super::spec_error::{MAX_PERIOD_SECONDS, MAX_STABILIZATION_WINDOW_SECONDS};

/// One stored recommendation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Recommendation {
    pub at: Timestamp,
    pub replicas: i32,
}

/// One applied scale: `change` workers added (scale-up list) or removed (scale-down list).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ScaleEvent {
    pub at: Timestamp,
    pub change: i64,
}

/// Per-WPA memory of past decisions.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct History {
    last_scale_time: Option<Timestamp>,
    recommendations: Vec<Recommendation>,
    scale_ups: Vec<ScaleEvent>,
    scale_downs: Vec<ScaleEvent>,
}

impl History {
    /// A history restored after a restart from status.LastScaleTime.
    pub fn with_last_scale_time(t: Option<Timestamp>) -> History {
        History {
            last_scale_time: t,
            ..History::default()
        }
    }

    /// When the workers were last scaled (up or down).
    pub fn last_scale_time(&self) -> Option<Timestamp> {
        self.last_scale_time
    }

    /// Remember a decision after it was applied to `current` workers at `now`.
    ///
    /// Stores the recommendation; when `desired != current` also a scale event and the last
    /// scale time. Drops what no window can need any more: recommendations older than the
    /// longest stabilization window (3600 s) and events older than the longest policy period
    /// (1800 s) the schema allows.
    pub fn record(&mut self, decision: &Decision, current: i32, now: Timestamp) {
        // A repeated value only needs its newest time: a window that contains the older
        // sample also contains the newer one, so min/max over any window are unchanged.
        match self.recommendations.last_mut() {
            Some(last) if last.replicas == decision.recommendation && last.at <= now => {
                last.at = now;
            }
            _ => self.recommendations.push(Recommendation {
                at: now,
                replicas: decision.recommendation,
            }),
        }
        let change = i64::from(decision.desired) - i64::from(current);
        if change > 0 {
            self.scale_ups.push(ScaleEvent { at: now, change });
        } else if change < 0 {
            self.scale_downs.push(ScaleEvent {
                at: now,
                change: -change,
            });
        }
        if change != 0 {
            self.last_scale_time = Some(now);
        }
        let keep_recommendations =
            SignedDuration::from_secs(i64::from(MAX_STABILIZATION_WINDOW_SECONDS));
        let keep_events = SignedDuration::from_secs(i64::from(MAX_PERIOD_SECONDS));
        self.recommendations
            .retain(|r| now.duration_since(r.at) < keep_recommendations);
        self.scale_ups
            .retain(|e| now.duration_since(e.at) < keep_events);
        self.scale_downs
            .retain(|e| now.duration_since(e.at) < keep_events);
    }

    pub(crate) fn recommendations(&self) -> &[Recommendation] {
        &self.recommendations
    }

    pub(crate) fn scale_ups(&self) -> &[ScaleEvent] {
        &self.scale_ups
    }

    pub(crate) fn scale_downs(&self) -> &[ScaleEvent] {
        &self.scale_downs
    }
}

/// True when `at` lies strictly inside the last `window` before `now` (the HPA's
/// `timestamp.After(now - window)`); times in the future count as inside.
pub(crate) fn within(now: Timestamp, at: Timestamp, window: SignedDuration) -> bool {
    now.duration_since(at) < window
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scaler::Reason;

    fn t(s: i64) -> Timestamp {
        Timestamp::UNIX_EPOCH + SignedDuration::from_secs(1_700_000_000 + s)
    }

    fn decision(desired: i32, recommendation: i32) -> Decision {
        Decision {
            desired,
            recommendation,
            reason: Reason::NoChange,
            limited: false,
        }
    }

    #[test]
    fn restores_last_scale_time() {
        assert_eq!(History::with_last_scale_time(None).last_scale_time(), None);
        assert_eq!(
            History::with_last_scale_time(Some(t(5))).last_scale_time(),
            Some(t(5))
        );
        assert_eq!(History::default().last_scale_time(), None);
    }

    #[test]
    fn records_events_and_scale_time_only_on_change() {
        let mut h = History::default();
        h.record(&decision(3, 3), 3, t(0));
        assert_eq!(h.last_scale_time(), None);
        assert!(h.scale_ups().is_empty() && h.scale_downs().is_empty());

        h.record(&decision(5, 5), 3, t(10));
        assert_eq!(h.last_scale_time(), Some(t(10)));
        assert_eq!(
            h.scale_ups(),
            &[ScaleEvent {
                at: t(10),
                change: 2
            }]
        );

        h.record(&decision(1, 1), 5, t(20));
        assert_eq!(h.last_scale_time(), Some(t(20)));
        assert_eq!(
            h.scale_downs(),
            &[ScaleEvent {
                at: t(20),
                change: 4
            }]
        );

        // A held scale-down: desired == current, recommendation differs.
        h.record(&decision(1, 0), 1, t(30));
        assert_eq!(h.last_scale_time(), Some(t(20)));
        let recs: Vec<i32> = h.recommendations().iter().map(|r| r.replicas).collect();
        assert_eq!(recs, vec![3, 5, 1, 0]);
    }

    #[test]
    fn repeated_recommendations_keep_only_the_newest_time() {
        let mut h = History::default();
        for s in 0..100 {
            h.record(&decision(4, 4), 4, t(s));
        }
        assert_eq!(
            h.recommendations(),
            &[Recommendation {
                at: t(99),
                replicas: 4
            }]
        );
    }

    #[test]
    fn prunes_what_no_window_needs() {
        let mut h = History::default();
        h.record(&decision(2, 2), 1, t(0));
        h.record(&decision(1, 1), 2, t(1));
        // 1800 s after the events at 0 and 1: the first is dropped, the second kept.
        h.record(&decision(1, 7), 1, t(1800));
        assert!(h.scale_ups().is_empty());
        assert_eq!(h.scale_downs().len(), 1);
        assert_eq!(h.recommendations().len(), 3);
        // 3600 s after the first recommendation it is dropped.
        h.record(&decision(1, 9), 1, t(3600));
        let recs: Vec<i32> = h.recommendations().iter().map(|r| r.replicas).collect();
        assert_eq!(recs, vec![1, 7, 9]);
        assert!(h.scale_downs().is_empty());
    }

    #[test]
    fn window_is_strict_at_its_start() {
        let w = SignedDuration::from_secs(300);
        assert!(within(t(300), t(1), w));
        assert!(!within(t(300), t(0), w));
        assert!(within(t(0), t(50), w), "future samples count");
        assert!(!within(t(0), t(0), SignedDuration::ZERO));
    }
}
