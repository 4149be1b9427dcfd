//! Why a decision came out as it did: a machine-readable CamelCase name (status, events,
//! metrics) and a one-line message for humans.

use std::fmt;

/// The reason of a [`Decision`](super::Decision).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// No workers and a backlog: start ceil(backlog / target) workers (bounded by min/max).
    ScaleUpFromZero,
    /// The backlog needs more workers than run now.
    ScaleUpBacklog,
    /// The backlog needs fewer workers than run now (bounded by maxDisruption).
    ScaleDownBacklog,
    /// The backlog needs within 10% of the current workers: keep them.
    WithinTolerance,
    /// No backlog and every worker idle: scale down to the minimum at once, ignoring
    /// maxDisruption.
    ScaleDownIdle,
    /// No backlog but workers busy: scale down toward the minimum, bounded by maxDisruption.
    ScaleDownToMin,
    /// No backlog but messages keep arriving: keep ceil(secondsToProcessOneJob * sentPerMinute
    /// / 60) workers (or minReplicas if higher). Also when that floor reaches maxReplicas.
    KeepRateFloor,
    /// Fewer workers than minReplicas (or the rate floor): scale up to it.
    BelowMin,
    /// More workers than maxReplicas: scale down to it.
    AboveMax,
    /// minReplicas >= maxReplicas: always maxReplicas.
    MinEqualsMax,
    /// Nothing to do: the recommendation equals the current workers.
    NoChange,
    /// A scale-down held back: the last scale was less than the scale-down delay ago.
    ScaleDownDelayed,
    /// behavior: the scale-up stabilization window holds a lower recent recommendation.
    StabilizedUp,
    /// behavior: the scale-down stabilization window holds a higher recent recommendation.
    StabilizedDown,
    /// behavior: a scaling policy limits how fast workers are added or removed.
    RateLimited,
    /// behavior: selectPolicy Disabled forbids scaling in this direction.
    ScalingDisabled,
    /// behavior: messages are in flight, so at least one worker stays.
    HoldInFlight,
    /// A scale-down stopped at the workers that are running tasks (worker signal).
    HoldBusyWorkers,
    /// maxWaitSeconds: tasks would wait longer than the target with the current workers.
    ScaleUpForWait,
    /// maxWaitSeconds: fewer workers meet the target, and have for the whole hold.
    ScaleDownForWait,
    /// maxWaitSeconds: the current workers meet the target and fewer would not.
    WithinWaitTarget,
    /// maxWaitSeconds: fewer workers would meet the target, but not for the whole hold yet.
    WaitScaleDownHeld,
}

impl Reason {
    /// Every variant, for documentation and exhaustive tests.
    pub const ALL: [Reason; 22] = [
        Reason::ScaleUpFromZero,
        Reason::ScaleUpBacklog,
        Reason::ScaleDownBacklog,
        Reason::WithinTolerance,
        Reason::ScaleDownIdle,
        Reason::ScaleDownToMin,
        Reason::KeepRateFloor,
        Reason::BelowMin,
        Reason::AboveMax,
        Reason::MinEqualsMax,
        Reason::NoChange,
        Reason::ScaleDownDelayed,
        Reason::StabilizedUp,
        Reason::StabilizedDown,
        Reason::RateLimited,
        Reason::ScalingDisabled,
        Reason::HoldInFlight,
        Reason::HoldBusyWorkers,
        Reason::ScaleUpForWait,
        Reason::ScaleDownForWait,
        Reason::WithinWaitTarget,
        Reason::WaitScaleDownHeld,
    ];

    /// The CamelCase name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Reason::ScaleUpFromZero => "ScaleUpFromZero",
            Reason::ScaleUpBacklog => "ScaleUpBacklog",
            Reason::ScaleDownBacklog => "ScaleDownBacklog",
            Reason::WithinTolerance => "WithinTolerance",
            Reason::ScaleDownIdle => "ScaleDownIdle",
            Reason::ScaleDownToMin => "ScaleDownToMin",
            Reason::KeepRateFloor => "KeepRateFloor",
            Reason::BelowMin => "BelowMin",
            Reason::AboveMax => "AboveMax",
            Reason::MinEqualsMax => "MinEqualsMax",
            Reason::NoChange => "NoChange",
            Reason::ScaleDownDelayed => "ScaleDownDelayed",
            Reason::StabilizedUp => "StabilizedUp",
            Reason::StabilizedDown => "StabilizedDown",
            Reason::RateLimited => "RateLimited",
            Reason::ScalingDisabled => "ScalingDisabled",
            Reason::HoldInFlight => "HoldInFlight",
            Reason::HoldBusyWorkers => "HoldBusyWorkers",
            Reason::ScaleUpForWait => "ScaleUpForWait",
            Reason::ScaleDownForWait => "ScaleDownForWait",
            Reason::WithinWaitTarget => "WithinWaitTarget",
            Reason::WaitScaleDownHeld => "WaitScaleDownHeld",
        }
    }

    /// A one-line explanation for humans.
    pub fn message(&self) -> &'static str {
        match self {
            Reason::ScaleUpFromZero => "no workers and messages waiting: starting workers",
            Reason::ScaleUpBacklog => "the backlog needs more workers",
            Reason::ScaleDownBacklog => "the backlog needs fewer workers",
            Reason::WithinTolerance => {
                "the backlog needs within 10% of the current workers: keeping them"
            }
            Reason::ScaleDownIdle => {
                "no backlog and all workers idle: scaling down to the minimum at once"
            }
            Reason::ScaleDownToMin => {
                "no backlog: scaling down toward the minimum, at most maxDisruption at a time"
            }
            Reason::KeepRateFloor => {
                "messages keep arriving: keeping enough workers for the send rate"
            }
            Reason::BelowMin => "fewer workers than the minimum: scaling up to it",
            Reason::AboveMax => "more workers than maxReplicas: scaling down to it",
            Reason::MinEqualsMax => "minReplicas is not below maxReplicas: using maxReplicas",
            Reason::NoChange => "the current number of workers is right",
            Reason::ScaleDownDelayed => {
                "scale-down held: the last scale was within the scale-down delay"
            }
            Reason::StabilizedUp => {
                "scale-up stabilized: using the lowest recommendation in the window"
            }
            Reason::StabilizedDown => {
                "scale-down stabilized: using the highest recommendation in the window"
            }
            Reason::RateLimited => "a scaling policy limits the rate of change",
            Reason::ScalingDisabled => "scaling in this direction is disabled (selectPolicy)",
            Reason::HoldInFlight => "messages are in flight: keeping at least one worker",
            Reason::HoldBusyWorkers => {
                "scale-down held: it would remove workers that are running tasks"
            }
            Reason::ScaleUpForWait => "tasks would wait longer than maxWaitSeconds: adding workers",
            Reason::ScaleDownForWait => {
                "fewer workers keep waits within maxWaitSeconds: removing the surplus"
            }
            Reason::WithinWaitTarget => {
                "the workers keep waits within maxWaitSeconds and fewer would not"
            }
            Reason::WaitScaleDownHeld => {
                "fewer workers would do, but not for as long as a worker takes to start: holding"
            }
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// Fails to compile when a variant is added, as a reminder to add it to `ALL` too.
    fn position(r: Reason) -> usize {
        match r {
            Reason::ScaleUpFromZero => 0,
            Reason::ScaleUpBacklog => 1,
            Reason::ScaleDownBacklog => 2,
            Reason::WithinTolerance => 3,
            Reason::ScaleDownIdle => 4,
            Reason::ScaleDownToMin => 5,
            Reason::KeepRateFloor => 6,
            Reason::BelowMin => 7,
            Reason::AboveMax => 8,
            Reason::MinEqualsMax => 9,
            Reason::NoChange => 10,
            Reason::ScaleDownDelayed => 11,
            Reason::StabilizedUp => 12,
            Reason::StabilizedDown => 13,
            Reason::RateLimited => 14,
            Reason::ScalingDisabled => 15,
            Reason::HoldInFlight => 16,
            Reason::HoldBusyWorkers => 17,
            Reason::ScaleUpForWait => 18,
            Reason::ScaleDownForWait => 19,
            Reason::WithinWaitTarget => 20,
            Reason::WaitScaleDownHeld => 21,
        }
    }

    #[test]
    fn all_lists_every_variant_once() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(position(*r), i, "{r}");
        }
    }

    #[test]
    fn names_are_unique_camel_case_and_match_debug() {
        let mut seen = HashSet::new();
        for r in Reason::ALL {
            let name = r.as_str();
            assert!(seen.insert(name), "duplicate {name}");
            assert_eq!(name, format!("{r:?}"));
            assert_eq!(name, r.to_string());
            assert!(name.starts_with(|c: char| c.is_ascii_uppercase()));
            assert!(name.chars().all(|c| c.is_ascii_alphanumeric()));
            assert!(!r.message().is_empty());
        }
        assert_eq!(seen.len(), Reason::ALL.len());
    }
}
