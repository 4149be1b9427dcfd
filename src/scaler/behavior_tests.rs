//! Tests of the `behavior` path. Expected values are worked out by hand from the Kubernetes
//! HPA controller's stabilization and rate-limit functions; the arithmetic is in the comments.

use jiff::{SignedDuration, Timestamp};

use super::*;
use crate::crd::{PolicyType, ScalingBehavior, ScalingPolicy, ScalingRules, SelectPolicy};

fn t(s: i64) -> Timestamp {
    Timestamp::UNIX_EPOCH + SignedDuration::from_secs(1_700_000_000 + s)
}

fn policy(min: i32, max: i32, behavior: ScalingBehavior) -> Policy {
    Policy {
        max_wait: None,
        min,
        max,
        target: 10,
        seconds_to_process_one_job: 0.0,
        max_disruption: MaxDisruption::Percent(100),
        behavior: Some(behavior),
    }
}

fn rules(
    window: Option<i32>,
    select: Option<SelectPolicy>,
    policies: &[(PolicyType, i32, i32)],
) -> ScalingRules {
    ScalingRules {
        stabilization_window_seconds: window,
        select_policy: select,
        policies: Some(
            policies
                .iter()
                .map(|&(policy_type, value, period_seconds)| ScalingPolicy {
                    policy_type,
                    value,
                    period_seconds,
                })
                .collect(),
        ),
    }
}

fn up(r: ScalingRules) -> ScalingBehavior {
    ScalingBehavior {
        scale_up: Some(r),
        scale_down: None,
    }
}

fn down(r: ScalingRules) -> ScalingBehavior {
    ScalingBehavior {
        scale_up: None,
        scale_down: Some(r),
    }
}

/// A queue whose practo recommendation at current > 0 is `workers` (target 10, outside the
/// tolerance), or an empty one for 0.
fn needs(workers: u64) -> QueueSnapshot {
    QueueSnapshot {
        visible: workers * 10,
        in_flight: 0,
        sent_per_minute: 0.0,
        idle: false,
    }
}

fn run(p: &Policy, q: QueueSnapshot, current: i32, now: Timestamp, h: &History) -> Decision {
    decide(p, &q, current, now, h, &ScalerSettings::default())
}

/// A history holding the given (time, recommendation) samples and no scale events.
fn recommendations(samples: &[(i64, i32)]) -> History {
    let mut h = History::default();
    for &(at, r) in samples {
        let d = Decision {
            desired: 0,
            recommendation: r,
            reason: Reason::NoChange,
            limited: false,
        };
        h.record(&d, 0, t(at));
    }
    h
}

/// A history holding one applied scale from `from` to `to` at `at`.
fn scaled(at: i64, from: i32, to: i32) -> History {
    let mut h = History::default();
    let d = Decision {
        desired: to,
        recommendation: to,
        reason: Reason::NoChange,
        limited: false,
    };
    h.record(&d, from, t(at));
    h
}

#[test]
fn default_scale_up_is_max_of_4_pods_and_100_percent_per_15s() {
    let p = policy(0, 100, ScalingBehavior::default());
    // rec 50 at current 10: Pods 10 + 4 = 14, Percent ceil(10 * 2) = 20, Max -> 20
    let d = run(&p, needs(50), 10, t(0), &History::default());
    assert_eq!(
        d,
        Decision {
            desired: 20,
            recommendation: 50,
            reason: Reason::RateLimited,
            limited: true
        }
    );
    // at current 2: Pods 6, Percent 4 -> 6
    let d = run(&p, needs(50), 2, t(0), &History::default());
    assert_eq!(d.desired, 6);
}

#[test]
fn scale_up_counts_from_the_start_of_the_period() {
    let p = policy(0, 100, ScalingBehavior::default());
    // 10 -> 20 at t=-10. At t=4 the event is 14 s old (< 15): start = 20 - 10 = 10,
    // Pods 14, Percent 20 -> limit 20 = current: no further scale-up yet
    let h = scaled(-10, 10, 20);
    let d = run(&p, needs(50), 20, t(4), &h);
    assert_eq!((d.desired, d.reason), (20, Reason::RateLimited));
    // At t=5 the event is exactly 15 s old: outside (strictly after now - period):
    // start = 20, Pods 24, Percent 40 -> 40
    let d = run(&p, needs(50), 20, t(5), &h);
    assert_eq!((d.desired, d.reason), (40, Reason::RateLimited));
}

#[test]
fn scale_up_after_a_scale_down_in_the_period_counts_the_removed_pods() {
    let p = policy(0, 100, ScalingBehavior::default());
    // 10 -> 6 at t=-5: start = 6 - 0 + 4 = 10; Pods 14, Percent 20 -> 20
    let d = run(&p, needs(30), 6, t(0), &scaled(-5, 10, 6));
    assert_eq!((d.desired, d.reason), (20, Reason::RateLimited));
}

#[test]
fn percent_up_keeps_the_hpa_float_rounding() {
    // Percent 10 only: ceil(50 * (1 + 10/100)) = ceil(55.00000000000001) = 56 in float64
    let p = policy(
        0,
        100,
        up(rules(None, None, &[(PolicyType::Percent, 10, 15)])),
    );
    let d = run(&p, needs(100), 50, t(0), &History::default());
    assert_eq!(d.desired, 56);
    // 10 * (1 + 10/100) is exactly 11.0 in float64 -> 11
    let d = run(&p, needs(100), 10, t(0), &History::default());
    assert_eq!(d.desired, 11);
}

#[test]
fn select_min_and_max() {
    let both = [(PolicyType::Pods, 4, 60), (PolicyType::Percent, 100, 60)];
    // current 10, rec 50: Pods 14, Percent 20; Min -> 14, Max -> 20
    let p = policy(0, 100, up(rules(None, Some(SelectPolicy::Min), &both)));
    assert_eq!(
        run(&p, needs(50), 10, t(0), &History::default()).desired,
        14
    );
    let p = policy(0, 100, up(rules(None, Some(SelectPolicy::Max), &both)));
    assert_eq!(
        run(&p, needs(50), 10, t(0), &History::default()).desired,
        20
    );

    // scale-down, window 0, current 10, rec 1: Pods 10 - 2 = 8, Percent trunc(10 * 0.5) = 5;
    // Min (smallest change) -> 8, Max (largest change) -> 5
    let d2 = [(PolicyType::Pods, 2, 60), (PolicyType::Percent, 50, 60)];
    let p = policy(0, 100, down(rules(Some(0), Some(SelectPolicy::Min), &d2)));
    assert_eq!(run(&p, needs(1), 10, t(0), &History::default()).desired, 8);
    let p = policy(0, 100, down(rules(Some(0), None, &d2)));
    assert_eq!(run(&p, needs(1), 10, t(0), &History::default()).desired, 5);
}

#[test]
fn percent_down_truncates() {
    // trunc(10 * (1 - 0.3)) = trunc(7.0) = 7
    let p = policy(
        0,
        100,
        down(rules(Some(0), None, &[(PolicyType::Percent, 30, 15)])),
    );
    assert_eq!(run(&p, needs(1), 10, t(0), &History::default()).desired, 7);
    // trunc(3 * 0.9) = trunc(2.7) = 2
    let p = policy(
        0,
        100,
        down(rules(Some(0), None, &[(PolicyType::Percent, 10, 15)])),
    );
    let q = QueueSnapshot {
        idle: true,
        ..QueueSnapshot::default()
    };
    assert_eq!(run(&p, q, 3, t(0), &History::default()).desired, 2);
}

#[test]
fn scale_down_pods_per_period() {
    let p = policy(
        0,
        100,
        down(rules(Some(0), None, &[(PolicyType::Pods, 2, 60)])),
    );
    // rec 1 at 10: 10 - 2 = 8
    let d = run(&p, needs(1), 10, t(0), &History::default());
    assert_eq!(
        (d.desired, d.reason, d.limited),
        (8, Reason::RateLimited, true)
    );
    // after 10 -> 8 at t=0, at t=30: start = 8 + 2 = 10 -> limit 8 = current
    let h = scaled(0, 10, 8);
    let d = run(&p, needs(1), 8, t(30), &h);
    assert_eq!((d.desired, d.reason), (8, Reason::RateLimited));
    // at t=60 the event is 60 s old: start 8 -> 6
    assert_eq!(run(&p, needs(1), 8, t(60), &h).desired, 6);
}

#[test]
fn disabled_directions() {
    let off = rules(None, Some(SelectPolicy::Disabled), &[]);
    let p = policy(0, 100, up(off.clone()));
    // rec 20 at 5: scale-up disabled -> 5
    let d = run(&p, needs(20), 5, t(0), &History::default());
    assert_eq!(
        (d.desired, d.reason, d.limited),
        (5, Reason::ScalingDisabled, true)
    );
    let p = policy(
        0,
        100,
        ScalingBehavior {
            scale_up: None,
            scale_down: Some(ScalingRules {
                stabilization_window_seconds: Some(0),
                ..off
            }),
        },
    );
    // rec 2 at 10: scale-down disabled -> 10
    let d = run(&p, needs(2), 10, t(0), &History::default());
    assert_eq!((d.desired, d.reason), (10, Reason::ScalingDisabled));
    // scale-up still works: 10 -> rec 12 (+20%: outside tolerance), Pods 14 / Percent 20
    assert_eq!(
        run(&p, needs(12), 10, t(0), &History::default()).desired,
        12
    );
}

#[test]
fn default_scale_down_window_is_300s() {
    let p = policy(0, 100, ScalingBehavior::default());
    let h = recommendations(&[(-100, 10)]);
    // rec 0 (no backlog, not idle, min 0) at current 10; highest within 300 s = 10 -> keep 10
    let d = run(&p, needs(0), 10, t(0), &h);
    assert_eq!(
        d,
        Decision {
            desired: 10,
            recommendation: 0,
            reason: Reason::StabilizedDown,
            limited: false
        }
    );
    // at t=199 the sample is 299 s old: still inside
    assert_eq!(run(&p, needs(0), 10, t(199), &h).desired, 10);
    // at t=200 it is 300 s old: outside; Percent 100 -> trunc(10 * 0) = 0 -> 0
    let d = run(&p, needs(0), 10, t(200), &h);
    assert_eq!((d.desired, d.reason), (0, Reason::ScaleDownToMin));
}

#[test]
fn stabilization_uses_both_windows() {
    let w = Some(60);
    let b = ScalingBehavior {
        scale_up: Some(rules(w, None, &[])),
        scale_down: Some(rules(w, None, &[])),
    };
    let p = policy(0, 100, b);
    let h = recommendations(&[(-50, 8), (-20, 3)]);
    // rec 4 at 5: lowest = min(4, 8, 3) = 3, highest = max(4, 8, 3) = 8; 5 in [3, 8] -> 5
    let d = run(&p, needs(4), 5, t(0), &h);
    assert_eq!((d.desired, d.reason), (5, Reason::StabilizedDown));
    // rec 12 at 5: lowest 3, highest 12 -> 5
    let d = run(&p, needs(12), 5, t(0), &h);
    assert_eq!((d.desired, d.reason), (5, Reason::StabilizedUp));
    // rec 12 at 2: lowest 3 > 2 -> 3 (Pods 6 / Percent 4 allow it)
    let d = run(&p, needs(12), 2, t(0), &h);
    assert_eq!((d.desired, d.reason), (3, Reason::StabilizedUp));
    // once both samples left the window (t=10: 60 s after -50; 30 s after -20 still in)
    // rec 12 at 5: lowest = min(12, 3) = 3 -> 5
    assert_eq!(run(&p, needs(12), 5, t(10), &h).desired, 5);
    // t=40: both outside -> up to 12 (Pods 9, Percent 10 -> 10)
    assert_eq!(run(&p, needs(12), 5, t(40), &h).desired, 10);
}

#[test]
fn never_zero_while_in_flight() {
    let p = policy(0, 100, up(rules(Some(60), None, &[])));
    let h = recommendations(&[(-10, 0)]);
    // current 0, one message in flight: practo rec ceil(1 / 10) = 1; up window holds 0 ->
    // stabilized 0 -> hold one worker
    let q = QueueSnapshot {
        in_flight: 1,
        ..QueueSnapshot::default()
    };
    let d = run(&p, q, 0, t(0), &h);
    assert_eq!(
        d,
        Decision {
            desired: 1,
            recommendation: 1,
            reason: Reason::HoldInFlight,
            limited: true
        }
    );
    // a visible message only: the HPA's stabilization keeps 0 for now
    let q = QueueSnapshot {
        visible: 1,
        ..QueueSnapshot::default()
    };
    let d = run(&p, q, 0, t(0), &h);
    assert_eq!((d.desired, d.reason), (0, Reason::StabilizedUp));
    // scale-up disabled at zero with a message in flight: still one worker
    let p = policy(0, 100, up(rules(None, Some(SelectPolicy::Disabled), &[])));
    let q = QueueSnapshot {
        in_flight: 5,
        ..QueueSnapshot::default()
    };
    assert_eq!(run(&p, q, 0, t(0), &History::default()).desired, 1);
}

#[test]
fn min_and_max_win_over_rates() {
    let p = policy(10, 20, ScalingBehavior::default());
    // current 1 < min 10: rec 10 (practo clamp); rate allows max(1 + 4, 2) = 5; clamp -> 10
    let d = run(&p, needs(0), 1, t(0), &History::default());
    assert_eq!(
        (d.desired, d.reason, d.limited),
        (10, Reason::BelowMin, true)
    );
    // current 30 > max 20, backlog needing 25 (5/30 > 10%): practo clamps 25 -> 20; no
    // history -> highest 20; Percent 100 allows 0 -> 20
    let d = run(&p, needs(25), 30, t(0), &History::default());
    assert_eq!((d.desired, d.reason), (20, Reason::AboveMax));
    // no backlog at 30: practo goes to min 10 (30 - 10 = 20 <= 100% of 30) -> 10
    let d = run(&p, needs(0), 30, t(0), &History::default());
    assert_eq!((d.desired, d.reason), (10, Reason::ScaleDownToMin));
    // the same with a sample of 40 in the window: stabilized 30, clamp to max -> 20
    let d = run(&p, needs(0), 30, t(0), &recommendations(&[(-10, 40)]));
    assert_eq!((d.desired, d.reason), (20, Reason::AboveMax));
    // min == max -> max
    let p = policy(4, 4, ScalingBehavior::default());
    let d = run(&p, needs(50), 9, t(0), &History::default());
    assert_eq!((d.desired, d.reason), (4, Reason::MinEqualsMax));
}

#[test]
fn max_disruption_bounds_scale_down_but_not_idle() {
    let b = down(rules(Some(0), None, &[]));
    let mut p = policy(0, 100, b);
    p.max_disruption = MaxDisruption::Count(2);
    // rec: no backlog, not idle -> 10 - 2 = 8; Percent 100 allows 0 -> 8
    let d = run(&p, needs(0), 10, t(0), &History::default());
    assert_eq!(
        (d.desired, d.reason, d.limited),
        (8, Reason::ScaleDownToMin, true)
    );
    // idle: massive scale-down to min 0 ignores maxDisruption
    let q = QueueSnapshot {
        idle: true,
        ..QueueSnapshot::default()
    };
    let d = run(&p, q, 10, t(0), &History::default());
    assert_eq!((d.desired, d.reason), (0, Reason::ScaleDownIdle));
}

#[test]
fn no_scale_down_delay_under_behavior() {
    let p = policy(0, 100, down(rules(Some(0), None, &[])));
    // last scale 1 s ago; rec 3 at 10, window 0, Percent 100 -> 3
    let h = History::with_last_scale_time(Some(t(-1)));
    let d = run(&p, needs(3), 10, t(0), &h);
    assert_eq!((d.desired, d.reason), (3, Reason::ScaleDownBacklog));
}

#[test]
fn recorded_run_releases_after_the_window() {
    // Default behavior; backlog drains at t=0 from 10 workers.
    let p = policy(0, 100, ScalingBehavior::default());
    let mut h = History::default();
    let mut current = 10;
    // t=-20: busy, rec 10
    let d = run(&p, needs(10), current, t(-20), &h);
    assert_eq!(d.desired, 10);
    h.record(&d, current, t(-20));
    // every 20 s from t=0 the queue is empty: rec 0, held at 10 by the sample from t=-20
    // until it is 300 s old (t=280), then 100%/15 s allows 0
    for s in (0..=280).step_by(20) {
        let d = run(&p, needs(0), current, t(s), &h);
        let want = if s < 280 { 10 } else { 0 };
        assert_eq!(d.desired, want, "t={s}");
        h.record(&d, current, t(s));
        current = d.desired;
    }
    assert_eq!(h.last_scale_time(), Some(t(280)));
}

#[test]
fn each_policy_counts_its_own_period() {
    let mixed = [(PolicyType::Pods, 4, 60), (PolicyType::Percent, 100, 15)];
    // 5 -> 10 at t=-30. Pods/60 s sees it: start 10 - 5 = 5 -> 9. Percent/15 s does not:
    // start 10 -> ceil(10 * 2) = 20.
    let h = scaled(-30, 5, 10);
    // Max -> 20
    let p = policy(0, 100, up(rules(None, None, &mixed)));
    let d = run(&p, needs(50), 10, t(0), &h);
    assert_eq!((d.desired, d.reason), (20, Reason::RateLimited));
    // Min -> 9, below current 10: taken as 10, no scale-up yet
    let p = policy(0, 100, up(rules(None, Some(SelectPolicy::Min), &mixed)));
    let d = run(&p, needs(50), 10, t(0), &h);
    assert_eq!(
        (d.desired, d.reason, d.limited),
        (10, Reason::RateLimited, true)
    );
}
