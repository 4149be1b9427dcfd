//! practo v1.6's desired-workers function (`GetDesiredWorkers` and
//! `convertDesiredReplicasWithRules`) and its scale-down delay (`GetScaleOperation`), rewritten
//! with wide integers so that no input can overflow.
//!
//! Arithmetic notes (each kept equal to practo for every input practo itself can see, i.e.
//! counts that fit an int32):
//! - desired = ceil(backlog / target): practo divides in float64; for backlog < 2^53 the float
//!   quotient never rounds across an integer, so the exact integer ceiling is the same number.
//! - tolerance: practo tests |desired - current| / current <= 0.1 in float64. For current <=
//!   i32::MAX that is exactly 10 * |desired - current| <= current (the gap between a ratio just
//!   above 1/10 and 1/10 is far larger than float64 rounding).
//! - rate floor: kept in float64 exactly as practo computes it (ceil((seconds * rate) / 60)).
//!   Where Go's int32 conversion of a too large float is undefined (in practice a negative
//!   number, which silently disables the floor), we saturate: the floor then reaches max.

use jiff::{SignedDuration, Timestamp};

use super::{Policy, QueueSnapshot, Reason};

/// practo's tolerance: changes of at most 10% of the current workers are ignored.
pub const TOLERANCE_PERCENT: u32 = 10;

/// Which of practo's branches produced the recommendation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Branch {
    /// current == 0.
    FromZero,
    /// backlog > 0, change within the tolerance.
    WithinTolerance,
    /// backlog > 0, change beyond the tolerance.
    Backlog,
    /// backlog == 0, messages arriving, secondsToProcessOneJob set.
    RateFloor,
    /// backlog == 0 and all workers idle: massive scale-down ignoring maxDisruption.
    Idle,
    /// backlog == 0, workers not idle: partial scale-down to min.
    ToMin,
}

/// The practo recommendation and how it came about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Recommendation {
    pub desired: i32,
    pub reason: Reason,
    /// min/max/maxDisruption changed the branch's value.
    pub limited: bool,
    pub branch: Branch,
    /// min' = max(min, rate floor).
    pub floor: i64,
    pub max: i64,
}

/// min' = max(min, ceil(seconds * sentPerMinute / 60)), or min when seconds == 0.
///
/// NaN or negative rates give no floor; an infinite rate saturates (and then max wins).
pub fn rate_floor(min: i32, seconds_to_process_one_job: f64, sent_per_minute: f64) -> i32 {
    let min = min.max(0);
    if seconds_to_process_one_job == 0.0 {
        return min;
    }
    // `as` saturates and maps NaN to 0: no undefined conversion as in Go.
    let by_rate = ((seconds_to_process_one_job * sent_per_minute) / 60.0).ceil() as i32;
    by_rate.max(min)
}

/// practo's `convertDesiredReplicasWithRules`.
fn convert(current: i64, desired: i64, min: i64, max: i64, max_disruptable: i64) -> i64 {
    if min >= max {
        return max;
    }
    let mut desired = desired;
    if current - desired > max_disruptable {
        desired = current - max_disruptable;
    }
    desired.clamp(min, max)
}

/// |desired - current| / current <= 10%, i.e. 100 * |desired - current| <= 10 * current, in a
/// width that cannot overflow.
fn change_too_small(desired: i64, current: i64) -> bool {
    let diff = (i128::from(desired) - i128::from(current)).unsigned_abs();
    diff * 100 <= u128::from(current.unsigned_abs()) * u128::from(TOLERANCE_PERCENT)
}

/// practo's `GetDesiredWorkers`.
pub(crate) fn recommend(policy: &Policy, queue: &QueueSnapshot, current: i32) -> Recommendation {
    // Out-of-range fields only reach here when a Policy is built by hand (from_spec refuses
    // them); treat them as the nearest valid value rather than panic.
    let current = i64::from(current.max(0));
    let max = i64::from(policy.max.max(0));
    let target = u64::try_from(policy.target).unwrap_or(1).max(1);
    let seconds = policy.seconds_to_process_one_job;
    let floor = i64::from(rate_floor(policy.min, seconds, queue.sent_per_minute));
    let max_disruptable = policy
        .max_disruption
        .max_disruptable(i32::try_from(current).unwrap_or(i32::MAX));

    let backlog = queue.visible.saturating_add(queue.in_flight);
    let by_backlog = i64::try_from(backlog.div_ceil(target)).unwrap_or(i64::MAX);

    let (branch, raw, disruptable) = if current == 0 {
        (Branch::FromZero, by_backlog, max_disruptable)
    } else if backlog > 0 {
        if change_too_small(by_backlog, current) {
            (Branch::WithinTolerance, current, max_disruptable)
        } else {
            (Branch::Backlog, by_backlog, max_disruptable)
        }
    } else if queue.sent_per_minute > 0.0 && seconds > 0.0 {
        (Branch::RateFloor, floor, max_disruptable)
    } else if queue.idle {
        // practo passes desired 0 and maxDisruptable = current: the clamp lands on min'.
        (Branch::Idle, 0, current)
    } else {
        (Branch::ToMin, floor, max_disruptable)
    };

    let desired = convert(current, raw, floor, max, disruptable);
    let limited = match branch {
        // Going to min' is the point of the idle branch, not a limit.
        Branch::Idle => false,
        _ => desired != raw,
    };
    let reason = reason_for(&Outcome {
        min_not_below_max: policy.min >= policy.max,
        branch,
        raw,
        // The value before the min/max clamp, to tell a max-bound scale-down from the others.
        pre_clamp: raw.max(current - disruptable),
        desired,
        current,
        floor,
        max,
    });
    Recommendation {
        // convert() returns a value within [0, max] (or max), and max came from an i32.
        desired: i32::try_from(desired).unwrap_or(i32::MAX),
        reason,
        limited,
        branch,
        floor,
        max,
    }
}

/// Everything `reason_for` looks at.
struct Outcome {
    /// The spec's min >= max (as opposed to the rate floor reaching max).
    min_not_below_max: bool,
    branch: Branch,
    /// The branch's value before convertDesiredReplicasWithRules.
    raw: i64,
    pre_clamp: i64,
    desired: i64,
    current: i64,
    floor: i64,
    max: i64,
}

fn reason_for(o: &Outcome) -> Reason {
    let &Outcome {
        min_not_below_max,
        branch,
        raw,
        pre_clamp,
        desired,
        current,
        floor,
        max,
    } = o;
    if floor >= max {
        return if min_not_below_max {
            Reason::MinEqualsMax
        } else {
            Reason::KeepRateFloor
        };
    }
    match branch {
        Branch::FromZero if desired == 0 => Reason::NoChange,
        Branch::FromZero if raw > 0 => Reason::ScaleUpFromZero,
        Branch::FromZero => Reason::BelowMin,
        Branch::RateFloor => Reason::KeepRateFloor,
        _ if desired == current => {
            if branch == Branch::WithinTolerance {
                Reason::WithinTolerance
            } else {
                Reason::NoChange
            }
        }
        _ if desired > current => {
            if branch == Branch::Backlog && raw > current {
                Reason::ScaleUpBacklog
            } else {
                Reason::BelowMin
            }
        }
        _ if pre_clamp > max => Reason::AboveMax,
        Branch::Backlog => Reason::ScaleDownBacklog,
        Branch::Idle => Reason::ScaleDownIdle,
        Branch::ToMin => Reason::ScaleDownToMin,
        // Within tolerance keeps current, so a lower value can only come from max.
        _ => Reason::AboveMax,
    }
}

/// practo's `canScaleDown`: allowed when there was no scale yet, or when
/// `last + delay` is strictly before `now`. So exactly `delay` after the last scale the
/// scale-down is still held (practo uses `nextScaleDownTime.Before(now)`; kept on purpose).
/// A last scale time in the future (clock skew) holds the scale-down too.
pub(crate) fn scale_down_allowed(
    last_scale_time: Option<Timestamp>,
    now: Timestamp,
    delay: std::time::Duration,
) -> bool {
    let Some(last) = last_scale_time else {
        return true;
    };
    match SignedDuration::try_from(delay) {
        Ok(delay) => now.duration_since(last) > delay,
        // A delay longer than any representable time span never passes.
        Err(_) => false,
    }
}
