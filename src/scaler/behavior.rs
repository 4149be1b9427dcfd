//! HPA v2 `behavior` on top of practo's recommendation, with the semantics of the Kubernetes
//! HPA controller (`stabilizeRecommendationWithBehaviors`, `convertDesiredReplicasWithBehaviorRate`,
//! `calculateScaleUpLimitWithScalingRules`, `calculateScaleDownLimitWithBehaviors`):
//!
//! 1. Stabilization: up = min of the recommendations newer than the scale-up window (and the
//!    new one), down = max of those newer than the scale-down window (and the new one); the
//!    result is the current count brought into [up, down].
//! 2. Rate: each policy allows, relative to the replicas at the start of its period (current
//!    minus what was added plus what was removed within the period), `+value` pods or
//!    `ceil(start * (1 + value/100))` up, `start - value` or `trunc(start * (1 - value/100))`
//!    down. selectPolicy Max picks the largest change, Min the smallest, Disabled none. A limit
//!    beyond the current count in the wrong direction is taken as the current count.
//! 3. Clamp to [min', max] (max when min' >= max), min' being practo's rate floor.
//! 4. Never zero while messages are in flight.
//!
//! The float formulas of step 2 are kept as the HPA writes them, so a WPA behaves like an HPA
//! with the same `behavior` to the replica.

use jiff::{SignedDuration, Timestamp};

use crate::crd::{PolicyType, ScalingBehavior, ScalingRules, SelectPolicy};

use super::history::{History, ScaleEvent, within};
use super::practo;
use super::{Decision, QueueSnapshot, Reason};

/// Default scale-down stabilization window (the HPA controller's
/// `--horizontal-pod-autoscaler-downscale-stabilization`).
pub const DEFAULT_SCALE_DOWN_STABILIZATION_SECONDS: i64 = 300;

/// The HPA's default scale-up policies: +4 pods or +100% per 15 s, whichever is more.
const DEFAULT_SCALE_UP_POLICIES: [(PolicyType, i64, i64); 2] =
    [(PolicyType::Pods, 4, 15), (PolicyType::Percent, 100, 15)];
/// The HPA's default scale-down policy: -100% per 15 s.
const DEFAULT_SCALE_DOWN_POLICIES: [(PolicyType, i64, i64); 1] = [(PolicyType::Percent, 100, 15)];

/// One direction's rules with the defaults filled in.
#[derive(Debug, Clone, PartialEq)]
struct Rules {
    window: SignedDuration,
    select: SelectPolicy,
    policies: Vec<(PolicyType, i64, SignedDuration)>,
}

fn resolve(
    rules: Option<&ScalingRules>,
    default_window: i64,
    default_policies: &[(PolicyType, i64, i64)],
) -> Rules {
    let window = rules
        .and_then(|r| r.stabilization_window_seconds)
        .map_or(default_window, i64::from)
        .max(0);
    let select = rules
        .and_then(|r| r.select_policy)
        .unwrap_or(SelectPolicy::Max);
    let given: Vec<(PolicyType, i64, i64)> = rules
        .and_then(|r| r.policies.as_ref())
        .map(|ps| {
            ps.iter()
                .map(|p| {
                    (
                        p.policy_type,
                        i64::from(p.value),
                        i64::from(p.period_seconds),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    // A direction given without policies gets its defaults.
    let chosen = if given.is_empty() {
        default_policies.to_vec()
    } else {
        given
    };
    Rules {
        window: SignedDuration::from_secs(window),
        select,
        policies: chosen
            .into_iter()
            .map(|(t, v, p)| (t, v, SignedDuration::from_secs(p)))
            .collect(),
    }
}

/// Sum of the changes within the last `period` (the HPA's `getReplicasChangePerPeriod`).
fn changed_within(events: &[ScaleEvent], now: Timestamp, period: SignedDuration) -> i64 {
    events
        .iter()
        .filter(|e| within(now, e.at, period))
        .fold(0i64, |sum, e| sum.saturating_add(e.change))
}

fn period_start(current: i64, history: &History, now: Timestamp, period: SignedDuration) -> i64 {
    let added = changed_within(history.scale_ups(), now, period);
    let removed = changed_within(history.scale_downs(), now, period);
    current.saturating_sub(added).saturating_add(removed)
}

/// Highest count the scale-up policies allow now.
fn scale_up_limit(current: i64, history: &History, now: Timestamp, rules: &Rules) -> i64 {
    let proposals = rules.policies.iter().map(|&(kind, value, period)| {
        let start = period_start(current, history, now, period);
        match kind {
            PolicyType::Pods => start.saturating_add(value),
            // Rounded up so that a small percentage still adds a pod (as the HPA does).
            PolicyType::Percent => (start as f64 * (1.0 + value as f64 / 100.0)).ceil() as i64,
        }
    });
    let limit = match rules.select {
        SelectPolicy::Min => proposals.min(),
        _ => proposals.max(),
    };
    // No policy at all cannot happen (defaults fill in); it would allow no change.
    limit.unwrap_or(current).max(current)
}

/// Lowest count the scale-down policies allow now.
fn scale_down_limit(current: i64, history: &History, now: Timestamp, rules: &Rules) -> i64 {
    let proposals = rules.policies.iter().map(|&(kind, value, period)| {
        let start = period_start(current, history, now, period);
        match kind {
            PolicyType::Pods => start.saturating_sub(value),
            // Truncated toward zero, as Go's int32(float64) conversion does.
            PolicyType::Percent => (start as f64 * (1.0 - value as f64 / 100.0)) as i64,
        }
    });
    let limit = match rules.select {
        SelectPolicy::Min => proposals.max(),
        _ => proposals.min(),
    };
    limit.unwrap_or(current).min(current)
}

/// Tracks the value through the stages and which stage changed it last.
struct Stages {
    value: i64,
    reason: Option<Reason>,
    limited: bool,
}

impl Stages {
    fn apply(&mut self, next: i64, reason: Reason, limits: bool) {
        if next != self.value {
            self.value = next;
            self.reason = Some(reason);
            self.limited |= limits;
        }
    }
}

/// The decision for a WPA with `behavior`.
pub(crate) fn decide(
    behavior: &ScalingBehavior,
    base: &practo::Recommendation,
    queue: &QueueSnapshot,
    current: i32,
    now: Timestamp,
    history: &History,
) -> Decision {
    let current = i64::from(current.max(0));
    let recommendation = i64::from(base.desired);
    let up = resolve(behavior.scale_up.as_ref(), 0, &DEFAULT_SCALE_UP_POLICIES);
    let down = resolve(
        behavior.scale_down.as_ref(),
        DEFAULT_SCALE_DOWN_STABILIZATION_SECONDS,
        &DEFAULT_SCALE_DOWN_POLICIES,
    );

    let mut stages = Stages {
        value: recommendation,
        reason: None,
        limited: base.limited,
    };

    // 1. Stabilization.
    let mut lowest = recommendation;
    let mut highest = recommendation;
    for past in history.recommendations() {
        let replicas = i64::from(past.replicas);
        if within(now, past.at, up.window) {
            lowest = lowest.min(replicas);
        }
        if within(now, past.at, down.window) {
            highest = highest.max(replicas);
        }
    }
    let stabilized = current.max(lowest).min(highest);
    let stabilize_reason = if recommendation > current {
        Reason::StabilizedUp
    } else {
        Reason::StabilizedDown
    };
    stages.apply(stabilized, stabilize_reason, false);

    // 2. Rate policies.
    if stages.value > current {
        if up.select == SelectPolicy::Disabled {
            stages.apply(current, Reason::ScalingDisabled, true);
        } else {
            let limit = scale_up_limit(current, history, now, &up);
            stages.apply(stages.value.min(limit), Reason::RateLimited, true);
        }
    } else if stages.value < current {
        if down.select == SelectPolicy::Disabled {
            stages.apply(current, Reason::ScalingDisabled, true);
        } else {
            let limit = scale_down_limit(current, history, now, &down);
            stages.apply(stages.value.max(limit), Reason::RateLimited, true);
        }
    }

    // 3. min'/max.
    let clamped = if base.floor >= base.max {
        base.max
    } else {
        stages.value.clamp(base.floor, base.max)
    };
    let clamp_reason = if base.floor >= base.max {
        base.reason
    } else if clamped > stages.value {
        Reason::BelowMin
    } else {
        Reason::AboveMax
    };
    stages.apply(clamped, clamp_reason, true);

    // 4. A message in flight means a worker is (or was just) on it: never go to zero.
    if queue.in_flight > 0 && stages.value < 1 && base.max >= 1 {
        stages.apply(1, Reason::HoldInFlight, true);
    }

    // The last stage that moved the value explains it; if none did, practo's reason does.
    let reason = stages.reason.unwrap_or(base.reason);
    Decision {
        desired: i32::try_from(stages.value).unwrap_or(i32::MAX),
        recommendation: base.desired,
        reason,
        limited: stages.limited,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::ScalingPolicy;

    #[test]
    fn defaults_match_the_hpa() {
        let up = resolve(None, 0, &DEFAULT_SCALE_UP_POLICIES);
        assert_eq!(up.window, SignedDuration::ZERO);
        assert_eq!(up.select, SelectPolicy::Max);
        assert_eq!(
            up.policies,
            vec![
                (PolicyType::Pods, 4, SignedDuration::from_secs(15)),
                (PolicyType::Percent, 100, SignedDuration::from_secs(15)),
            ]
        );
        let down = resolve(
            None,
            DEFAULT_SCALE_DOWN_STABILIZATION_SECONDS,
            &DEFAULT_SCALE_DOWN_POLICIES,
        );
        assert_eq!(down.window, SignedDuration::from_secs(300));
        assert_eq!(
            down.policies,
            vec![(PolicyType::Percent, 100, SignedDuration::from_secs(15))]
        );
    }

    #[test]
    fn partial_rules_keep_the_other_defaults() {
        let given = ScalingRules {
            stabilization_window_seconds: Some(60),
            select_policy: None,
            policies: Some(vec![]),
        };
        let r = resolve(Some(&given), 300, &DEFAULT_SCALE_DOWN_POLICIES);
        assert_eq!(r.window, SignedDuration::from_secs(60));
        assert_eq!(r.select, SelectPolicy::Max);
        assert_eq!(r.policies.len(), 1);

        let given = ScalingRules {
            stabilization_window_seconds: None,
            select_policy: Some(SelectPolicy::Min),
            policies: Some(vec![ScalingPolicy {
                policy_type: PolicyType::Pods,
                value: 2,
                period_seconds: 60,
            }]),
        };
        let r = resolve(Some(&given), 300, &DEFAULT_SCALE_DOWN_POLICIES);
        assert_eq!(r.window, SignedDuration::from_secs(300));
        assert_eq!(r.select, SelectPolicy::Min);
        assert_eq!(
            r.policies,
            vec![(PolicyType::Pods, 2, SignedDuration::from_secs(60))]
        );
    }
}
