//! Properties of the scaling engine over random inputs (fixed seed, so runs are reproducible).
//!
//! - bounds: desired is within [min, max], or == max when min' >= max; the one exception is
//!   practo's scale-down delay, which keeps `current` even above max (practo does the same);
//! - with behavior, never zero while messages are in flight;
//! - every scale-down removes at most maxDisruption workers, except the massive idle
//!   scale-down and a cut down to max (max wins over maxDisruption in practo);
//! - more visible messages never give fewer workers, everything else equal (see the module
//!   doc of `wpa::scaler` for why this holds across the tolerance band);
//! - the integer arithmetic equals practo's float64 arithmetic on practo's int32 domain;
//! - no input panics.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};

use wpa::crd::{PolicyType, ScalingBehavior, ScalingPolicy, ScalingRules, SelectPolicy};
use wpa::scaler::{
    Decision, History, MaxDisruption, Policy, QueueSnapshot, Reason, ScalerSettings, decide,
    rate_floor,
};

fn config(cases: u32) -> Config {
    Config {
        cases,
        rng_seed: RngSeed::Fixed(0x5ca1_ab1e),
        failure_persistence: None,
        ..Config::default()
    }
}

fn t(s: i64) -> Timestamp {
    Timestamp::UNIX_EPOCH + SignedDuration::from_secs(1_700_000_000 + s)
}

fn max_disruption() -> impl Strategy<Value = MaxDisruption> {
    prop_oneof![
        (0u32..=12).prop_map(MaxDisruption::Count),
        (0u32..=100).prop_map(MaxDisruption::Percent),
        Just(MaxDisruption::Count(u32::MAX)),
    ]
}

fn scaling_policy() -> impl Strategy<Value = ScalingPolicy> {
    (
        prop_oneof![Just(PolicyType::Pods), Just(PolicyType::Percent)],
        1i32..=300,
        1i32..=120,
    )
        .prop_map(|(policy_type, value, period_seconds)| ScalingPolicy {
            policy_type,
            value,
            period_seconds,
        })
}

fn rules() -> impl Strategy<Value = ScalingRules> {
    (
        proptest::option::of(0i32..=600),
        proptest::option::of(prop_oneof![
            Just(SelectPolicy::Max),
            Just(SelectPolicy::Min),
            Just(SelectPolicy::Disabled),
        ]),
        proptest::option::of(proptest::collection::vec(scaling_policy(), 0..3)),
    )
        .prop_map(
            |(stabilization_window_seconds, select_policy, policies)| ScalingRules {
                stabilization_window_seconds,
                select_policy,
                policies,
            },
        )
}

fn behavior() -> impl Strategy<Value = Option<ScalingBehavior>> {
    proptest::option::of(
        (proptest::option::of(rules()), proptest::option::of(rules())).prop_map(
            |(scale_up, scale_down)| ScalingBehavior {
                scale_up,
                scale_down,
            },
        ),
    )
}

/// Valid policies (what `Policy::from_spec` lets through).
fn policy() -> impl Strategy<Value = Policy> {
    (
        0i32..=20,
        1i32..=40,
        1i32..=50,
        prop_oneof![Just(0.0), 0.0f64..5.0],
        max_disruption(),
        behavior(),
    )
        .prop_map(|(a, b, target, seconds, md, behavior)| Policy {
            max_wait: None,
            min: a.min(b),
            max: a.max(b),
            target,
            seconds_to_process_one_job: seconds,
            max_disruption: md,
            behavior,
        })
}

fn queue() -> impl Strategy<Value = QueueSnapshot> {
    (
        prop_oneof![Just(0u64), 0u64..2_000, Just(u64::MAX)],
        prop_oneof![Just(0u64), 0u64..50],
        prop_oneof![Just(0.0), 0.0f64..600.0],
        any::<bool>(),
    )
        .prop_map(
            |(visible, in_flight, sent_per_minute, idle)| QueueSnapshot {
                visible,
                in_flight,
                sent_per_minute,
                idle,
            },
        )
}

/// One past step: seconds before the previous one, applied desired, recommendation, current.
type Step = (i64, i32, i32, i32);

fn steps() -> impl Strategy<Value = Vec<Step>> {
    proptest::collection::vec((1i64..120, 0i32..45, 0i32..45, 0i32..45), 0..12)
}

/// Replays past steps ending 1..=120 s before `t(0)`, with a restored last scale time.
fn history(steps: &[Step], restored: Option<i64>) -> History {
    let mut h = History::with_last_scale_time(restored.map(t));
    let total: i64 = steps.iter().map(|s| s.0).sum();
    let mut at = -total - 1;
    for &(dt, desired, recommendation, current) in steps {
        let d = Decision {
            desired,
            recommendation,
            reason: Reason::NoChange,
            limited: false,
        };
        h.record(&d, current, t(at));
        at += dt;
    }
    h
}

fn settings() -> impl Strategy<Value = ScalerSettings> {
    (max_disruption(), prop_oneof![Just(600u64), 0u64..900]).prop_map(|(md, delay)| {
        ScalerSettings {
            default_max_disruption: md,
            scale_down_delay: Duration::from_secs(delay),
        }
    })
}

/// practo's massive scale-down: no backlog, no rate branch, all workers idle.
fn massive_idle(p: &Policy, q: &QueueSnapshot, current: i32) -> bool {
    current > 0
        && q.visible == 0
        && q.in_flight == 0
        && !(q.sent_per_minute > 0.0 && p.seconds_to_process_one_job > 0.0)
        && q.idle
}

proptest! {
    #![proptest_config(config(3000))]

    #[test]
    fn desired_within_bounds(
        p in policy(),
        q in queue(),
        current in 0i32..60,
        steps in steps(),
        restored in proptest::option::of(-900i64..0),
        s in settings(),
    ) {
        let h = history(&steps, restored);
        let d = decide(&p, &q, current, t(0), &h, &s);
        let floor = rate_floor(p.min, p.seconds_to_process_one_job, q.sent_per_minute);
        if d.reason == Reason::ScaleDownDelayed {
            prop_assert!(p.behavior.is_none());
            prop_assert_eq!(d.desired, current);
            prop_assert!(d.recommendation < current);
        } else if floor >= p.max {
            prop_assert_eq!(d.desired, p.max);
        } else {
            prop_assert!(d.desired >= floor && d.desired >= p.min && d.desired <= p.max,
                "{d:?} outside [{floor}, {}]", p.max);
        }
    }

    #[test]
    fn never_zero_with_messages_in_flight_under_behavior(
        p in policy(),
        q in queue(),
        in_flight in prop_oneof![1u64..3, 1u64..100],
        current in prop_oneof![Just(0i32), 0i32..60],
        steps in steps(),
        s in settings(),
    ) {
        let mut p = p;
        p.behavior.get_or_insert_with(ScalingBehavior::default);
        let q = QueueSnapshot { in_flight, ..q };
        let d = decide(&p, &q, current, t(0), &history(&steps, None), &s);
        prop_assert!(d.desired >= 1, "{d:?}");
    }

    #[test]
    fn scale_downs_respect_max_disruption(
        p in policy(),
        q in queue(),
        current in 0i32..60,
        steps in steps(),
        restored in proptest::option::of(-900i64..0),
        s in settings(),
    ) {
        let d = decide(&p, &q, current, t(0), &history(&steps, restored), &s);
        if d.desired < current && !massive_idle(&p, &q, current) && d.desired != p.max {
            let removed = i64::from(current - d.desired);
            let allowed = p.max_disruption.max_disruptable(current);
            prop_assert!(removed <= allowed, "{d:?} removes {removed} > {allowed}");
        }
    }

    #[test]
    fn more_visible_messages_never_give_fewer_workers(
        p in policy(),
        q in queue(),
        extra in prop_oneof![0u64..20, 0u64..5_000],
        current in 0i32..60,
        steps in steps(),
        restored in proptest::option::of(-900i64..0),
        s in settings(),
    ) {
        let h = history(&steps, restored);
        let more = QueueSnapshot { visible: q.visible.saturating_add(extra), ..q };
        let less = decide(&p, &q, current, t(0), &h, &s);
        let more = decide(&p, &more, current, t(0), &h, &s);
        prop_assert!(less.desired <= more.desired, "{less:?} then {more:?}");
        prop_assert!(less.recommendation <= more.recommendation, "{less:?} then {more:?}");
    }

    #[test]
    fn deterministic(
        p in policy(),
        q in queue(),
        current in 0i32..60,
        steps in steps(),
        s in settings(),
    ) {
        let h = history(&steps, None);
        prop_assert_eq!(
            decide(&p, &q, current, t(0), &h, &s),
            decide(&p, &q, current, t(0), &h.clone(), &s)
        );
    }
}

/// practo v1.6's GetDesiredWorkers written the way Go computes it (float64 division, ceil,
/// int32), for inputs where Go's arithmetic is well defined. Same parameters as Go's function.
#[allow(clippy::too_many_arguments)]
fn practo_float_reference(
    messages: i32,
    sent_per_minute: f64,
    seconds: f64,
    target: i32,
    current: i32,
    idle: bool,
    min: i32,
    max: i32,
    md: MaxDisruption,
) -> i32 {
    let mut min = min;
    if seconds != 0.0 {
        let by_rate = ((seconds * sent_per_minute) / 60.0).ceil() as i32;
        if by_rate > min {
            min = by_rate;
        }
    }
    let disruptable = match md {
        MaxDisruption::Count(n) => n as i32,
        MaxDisruption::Percent(p) => (f64::from(p) * f64::from(current) / 100.0).ceil() as i32,
    };
    let convert = |desired: i32, disruptable: i32| -> i32 {
        if min >= max {
            return max;
        }
        let mut desired = desired;
        if current - desired > disruptable {
            desired = current - disruptable;
        }
        desired.clamp(min, max)
    };
    let desired = (f64::from(messages) / f64::from(target)).ceil() as i32;
    if current == 0 {
        return convert(desired, disruptable);
    }
    if messages > 0 {
        let too_small = (f64::from(desired - current)).abs() / f64::from(current) <= 0.1;
        return if too_small {
            convert(current, disruptable)
        } else {
            convert(desired, disruptable)
        };
    } else if sent_per_minute > 0.0 && seconds > 0.0 {
        return convert(min, disruptable);
    }
    if idle {
        return convert(0, current);
    }
    convert(min, disruptable)
}

proptest! {
    #![proptest_config(config(5000))]

    #[test]
    fn equals_practo_float_arithmetic(
        visible in prop_oneof![0i32..3_000, 0i32..i32::MAX / 2],
        in_flight in prop_oneof![Just(0i32), 0i32..1_000],
        sent_per_minute in prop_oneof![Just(0.0), 0.0f64..10_000.0],
        seconds in prop_oneof![Just(0.0), 0.0f64..30.0],
        target in prop_oneof![1i32..100, 1i32..i32::MAX],
        current in prop_oneof![0i32..200, 0i32..1_000_000],
        idle in any::<bool>(),
        a in 0i32..300,
        b in 1i32..300,
        md in max_disruption().prop_filter("int32 count", |m| *m != MaxDisruption::Count(u32::MAX)),
    ) {
        let (min, max) = (a.min(b), a.max(b));
        let p = Policy {
            max_wait: None,
            min,
            max,
            target,
            seconds_to_process_one_job: seconds,
            max_disruption: md,
            behavior: None,
        };
        let q = QueueSnapshot {
            visible: visible as u64,
            in_flight: in_flight as u64,
            sent_per_minute,
            idle,
        };
        // No history: the scale-down delay never holds, so this is GetDesiredWorkers alone.
        let d = decide(&p, &q, current, t(0), &History::default(), &ScalerSettings::default());
        let want = practo_float_reference(
            visible + in_flight, sent_per_minute, seconds, target, current, idle, min, max, md,
        );
        prop_assert_eq!(d.desired, want);
        prop_assert_eq!(d.recommendation, want);
    }
}

proptest! {
    #![proptest_config(config(3000))]

    /// Right at practo's tolerance edge: current = 10k and a backlog needing current +- k
    /// (exactly 10%: kept) or current +- (k + 1) (just beyond: followed).
    #[test]
    fn tolerance_edge_equals_practo_float_arithmetic(
        k in 1i32..2_000,
        beyond in 0i32..=1,
        up in any::<bool>(),
        target in 1i32..50,
        short in 0i32..50,
        md in max_disruption().prop_filter("int32 count", |m| *m != MaxDisruption::Count(u32::MAX)),
    ) {
        let current = 10 * k;
        let step = k + beyond;
        let needed = if up { current + step } else { current - step };
        // ceil(messages / target) == needed: messages in ((needed - 1) * target, needed * target]
        let messages = needed * target - short.min(target - 1);
        let p = Policy {
            max_wait: None,
            min: 0,
            max: i32::MAX,
            target,
            seconds_to_process_one_job: 0.0,
            max_disruption: md,
            behavior: None,
        };
        let q = QueueSnapshot { visible: messages as u64, ..QueueSnapshot::default() };
        let d = decide(&p, &q, current, t(0), &History::default(), &ScalerSettings::default());
        let want = practo_float_reference(
            messages, 0.0, 0.0, target, current, false, 0, i32::MAX, md,
        );
        prop_assert_eq!(d.desired, want);
        if beyond == 0 {
            prop_assert_eq!((d.desired, d.reason), (current, Reason::WithinTolerance));
        }
    }
}

fn any_rules() -> impl Strategy<Value = ScalingRules> {
    (
        proptest::option::of(any::<i32>()),
        proptest::option::of(prop_oneof![
            Just(SelectPolicy::Max),
            Just(SelectPolicy::Min),
            Just(SelectPolicy::Disabled),
        ]),
        proptest::option::of(proptest::collection::vec(
            (
                prop_oneof![Just(PolicyType::Pods), Just(PolicyType::Percent)],
                any::<i32>(),
                any::<i32>(),
            )
                .prop_map(|(policy_type, value, period_seconds)| ScalingPolicy {
                    policy_type,
                    value,
                    period_seconds,
                }),
            0..4,
        )),
    )
        .prop_map(
            |(stabilization_window_seconds, select_policy, policies)| ScalingRules {
                stabilization_window_seconds,
                select_policy,
                policies,
            },
        )
}

proptest! {
    #![proptest_config(config(3000))]

    /// Anything, including what `Policy::from_spec` refuses: no panic.
    #[test]
    fn no_input_panics(
        min in any::<i32>(),
        max in any::<i32>(),
        target in any::<i32>(),
        seconds in any::<f64>(),
        md in prop_oneof![any::<u32>().prop_map(MaxDisruption::Count),
                          any::<u32>().prop_map(MaxDisruption::Percent)],
        up in proptest::option::of(any_rules()),
        down in proptest::option::of(any_rules()),
        with_behavior in any::<bool>(),
        visible in any::<u64>(),
        in_flight in any::<u64>(),
        sent_per_minute in any::<f64>(),
        idle in any::<bool>(),
        current in any::<i32>(),
        history_steps in proptest::collection::vec(
            (any::<i32>(), any::<i32>(), any::<i32>(), -100_000i64..100_000), 0..8),
        restored in proptest::option::of(-1_000_000i64..1_000_000),
        now in -1_000_000i64..1_000_000,
        delay in any::<u64>(),
    ) {
        let p = Policy {
            max_wait: None,
            min,
            max,
            target,
            seconds_to_process_one_job: seconds,
            max_disruption: md,
            behavior: with_behavior.then_some(ScalingBehavior { scale_up: up, scale_down: down }),
        };
        let q = QueueSnapshot { visible, in_flight, sent_per_minute, idle };
        let mut h = History::with_last_scale_time(restored.map(t));
        for (desired, recommendation, cur, at) in history_steps {
            let d = Decision { desired, recommendation, reason: Reason::NoChange, limited: false };
            h.record(&d, cur, t(at));
        }
        let s = ScalerSettings {
            default_max_disruption: MaxDisruption::Percent(100),
            scale_down_delay: Duration::from_secs(delay),
        };
        let d = decide(&p, &q, current, t(now), &h, &s);
        // Still a sane answer: never negative.
        prop_assert!(d.desired >= 0 || d.desired == current, "{d:?}");
        h.record(&d, current, t(now));
    }
}
