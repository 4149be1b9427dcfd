//! The scaling decision: pure and deterministic.
//!
//! [`decide`] turns one queue reading, the current worker count, the time and the WPA's
//! [`History`] into a [`Decision`]. It does no I/O and reads no clock (time is an argument), so
//! the controller and the simulator get identical answers for identical inputs.
//!
//! # Without `behavior`: practo v1.6, exactly
//! 1. min' = max(min, ceil(secondsToProcessOneJob * sentPerMinute / 60)) when
//!    secondsToProcessOneJob != 0.
//! 2. maxDisruptable = the count, or ceil(percent * current / 100).
//! 3. desired = ceil(backlog / targetMessagesPerWorker), backlog = visible + in flight.
//! 4. current == 0: desired. backlog > 0: current if |desired - current| <= 10% of current,
//!    else desired. No backlog with a send rate and secondsToProcessOneJob: min'. No backlog
//!    and all workers idle: 0 with no disruption limit (massive scale-down). Otherwise: min'.
//! 5. Bounds: min' >= max gives max; a scale-down removes at most maxDisruptable; then clamp
//!    to [min', max].
//! 6. A scale-down is held (desired = current, `ScaleDownDelayed`) while the last scale is at
//!    most the scale-down delay ago (exactly the delay ago still holds, as in practo). No last
//!    scale time: allowed. Scale-ups are never delayed.
//!
//! Deliberate departures, all outside what practo can compute: counts are u64/i64 and
//! saturate into i32 (practo's int32 arithmetic wraps or is undefined there); a rate floor too
//! large for an int32 saturates to max instead of silently turning off; a maxDisruption count
//! beyond u32 saturates instead of wrapping.
//!
//! Monotonicity: with everything else fixed (policy, current, in-flight count, rate, idle flag,
//! time, history), more visible messages never give fewer workers, with or without behavior.
//! This holds across practo's tolerance band too: the band maps every need within 10% of the
//! current count to the current count itself, which lies between the values just below and
//! just above the band. What the band breaks is proportionality (at current = 10, needs of 9,
//! 10 and 11 workers all keep 10; a need of 12 jumps to 12) and continuity in `current`.
//! With behavior the in-flight count must stay fixed: the in-flight hold depends on it.
//!
//! # With `behavior`: Kubernetes HPA v2 semantics
//! The recommendation is practo's value from steps 1-5; the scale-down delay does not apply
//! (stabilization windows replace it). Then, as the HPA controller does: stabilization over
//! stored recommendations (scale-up takes the lowest within its window, scale-down the
//! highest within its window), rate policies against the replicas at the start of each period
//! (Pods/Percent, selectPolicy Max/Min/Disabled), then clamp to [min', max]. Defaults are the
//! HPA's: scale-up window 0 s with +4 pods or +100% per 15 s (Max); scale-down window 300 s
//! with -100% per 15 s; a direction given without policies gets its default policies.
//! maxDisruption still bounds every scale-down: it is part of the recommendation, and
//! stabilization and rate limits only ever keep more workers than the recommendation. The
//! idle massive scale-down stays exempt, as without behavior. Finally, with behavior the
//! count never drops to zero while messages are in flight (`HoldInFlight`): scale-up
//! stabilization or a disabled scale-up could otherwise keep a worker-less queue waiting.
//!
//! The delay compares against whatever last scale time the caller restores; status.LastScaleTime
//! has one-second precision, which practo (reading it back from its status) has as well.
//!
//! After a restart only status.LastScaleTime is restored; stabilization windows and rate
//! periods start empty, as with the HPA controller.
//!
//! `limited` is true when min/max, maxDisruption, a rate policy, selectPolicy Disabled, the
//! in-flight hold or the scale-down delay changed the value (stabilization alone does not set
//! it; the HPA reports that under AbleToScale, not ScalingLimited).

mod behavior;
mod disruption;
mod history;
mod policy;
mod practo;
mod reason;
mod spec_error;
pub mod wait;
mod workers;

#[cfg(test)]
mod behavior_tests;
#[cfg(test)]
mod practo_tests;

use jiff::Timestamp;

pub use behavior::DEFAULT_SCALE_DOWN_STABILIZATION_SECONDS;
pub use disruption::MaxDisruption;
pub use history::History;
pub use policy::{Policy, ScalerSettings};
pub use practo::{TOLERANCE_PERCENT, rate_floor};
pub use reason::Reason;
pub use spec_error::{MAX_PERIOD_SECONDS, MAX_STABILIZATION_WINDOW_SECONDS, SpecError};
pub use workers::{WorkerActivity, decide_with_workers};

/// One reading of the queue.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct QueueSnapshot {
    /// Messages waiting.
    pub visible: u64,
    /// Messages handed to workers and not yet acknowledged.
    pub in_flight: u64,
    /// Messages sent to the queue per minute (0 when unknown).
    pub sent_per_minute: f64,
    /// All workers idle (no messages received recently).
    pub idle: bool,
}

/// What to do with the workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// The worker count to apply now.
    pub desired: i32,
    /// The count the queue calls for before the scale-down delay or behavior (what
    /// stabilization windows remember).
    pub recommendation: i32,
    pub reason: Reason,
    /// A min/max/policy/disruption/delay bound changed the result.
    pub limited: bool,
}

/// Decide the worker count for one WPA.
pub fn decide(
    policy: &Policy,
    queue: &QueueSnapshot,
    current: i32,
    now: Timestamp,
    history: &History,
    settings: &ScalerSettings,
) -> Decision {
    let base = practo::recommend(policy, queue, current);
    if let Some(behavior) = &policy.behavior {
        return behavior::decide(behavior, &base, queue, current, now, history);
    }
    if base.desired < current
        && !practo::scale_down_allowed(history.last_scale_time(), now, settings.scale_down_delay)
    {
        return Decision {
            desired: current,
            recommendation: base.desired,
            reason: Reason::ScaleDownDelayed,
            limited: true,
        };
    }
    Decision {
        desired: base.desired,
        recommendation: base.desired,
        reason: base.reason,
        limited: base.limited,
    }
}
