//! Sizing the pool on wait time (`spec.maxWaitSeconds`): the fewest pods with which a newly
//! queued task starts within the target, from what was learned about the work (arrival
//! rate, task time, slots per pod, pod start-up). Pure: time and every input are arguments.
//!
//! The rule (docs/wait-time.md derives it):
//! - backlog: the `B` tasks waiting now must all start within the horizon. With `n` pods the
//!   pool can start, by time `h`, its idle slots at once, then `μ = slots / task_seconds`
//!   tasks per pod-second; pods still starting and pods added now only after their start-up
//!   (`S`). New arrivals queue behind the backlog, so it has to be gone within the target,
//!   not drained on top of the arrivals.
//! - stream: for the arrivals themselves, Erlang C (M/M/N with `N = pods x slots`): the
//!   fewest pods with which a new task waits longer than the target with probability at
//!   most [`STREAM_TAIL`], on the 30 s arrival rate. (A fluid "capacity >= arrivals" count
//!   lets waits grow without bound as the pool fills up.)
//! - two counts: `up` (the larger of the two above; scale up to it at once) and `keep`
//!   (scale down only to it): `up`, but never below the slots the running tasks use, nor
//!   below one pod while there is work. A dead band (a tighter `keep`) was tried and held
//!   pods after every burst for little gain; what stops a steady stream from flapping is the
//!   hold: a scale-down goes to the highest `keep` of the last `hold` (the start-up time, at
//!   least 10 s), since a pod that is surplus for less than its own start-up is cheaper kept
//!   than restarted.
//! - sparse work: when arrivals are so rare that a pod started per task costs less than one
//!   kept waiting (`arrivals x (start-up + task + hold) < 1`) and the start-up fits in the
//!   target, no pod is kept for the stream: each task starts its pod.
//!
//! Without a learned model (or without `maxWaitSeconds`) the decision is practo's
//! ([`decide_with_workers`]).

pub mod erlang;
pub mod learn;
#[cfg(test)]
mod tests;

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use super::history::within;
use super::workers::hold_busy;
use super::{
    Decision, History, Policy, QueueSnapshot, Reason, ScalerSettings, WorkerActivity,
    decide_with_workers,
};

/// What was learned about the work and the workers of one WPA.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WaitModel {
    /// Tasks arriving per second over the last 30 s.
    pub arrivals_short: f64,
    /// Tasks arriving per second over the last 2 minutes.
    pub arrivals_long: f64,
    /// Mean seconds a task runs.
    pub task_seconds: f64,
    /// Tasks one pod runs at once (Celery's concurrency).
    pub slots: u32,
    /// Seconds from a scale-up to the new pod's worker taking tasks.
    pub startup_seconds: f64,
}

impl WaitModel {
    /// Tasks one pod finishes per second when busy.
    pub fn per_pod_throughput(&self) -> f64 {
        f64::from(self.slots.max(1)) / self.task_seconds
    }

    /// Every figure is usable (finite, positive where it divides).
    pub fn is_usable(&self) -> bool {
        self.task_seconds.is_finite()
            && self.task_seconds > 0.0
            && self.startup_seconds.is_finite()
            && self.startup_seconds >= 0.0
            && self.arrivals_short.is_finite()
            && self.arrivals_short >= 0.0
            && self.arrivals_long.is_finite()
            && self.arrivals_long >= 0.0
            && self.slots >= 1
    }
}

/// Where the work and the pods stand now.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WaitState {
    /// Tasks waiting that any worker can take (the queue's visible messages).
    pub waiting: u64,
    /// Tasks held by busy workers and not started (prefetched): no new pod can take them.
    pub held: u64,
    /// Tasks running now.
    pub running: u64,
    /// Pods whose workers take tasks.
    pub ready_pods: u32,
    /// Pods still starting: seconds until each takes tasks.
    pub starting: Vec<f64>,
}

impl WaitState {
    /// Where things stand, from a poll (`visible`, `in_flight`), the tasks the workers report
    /// running, and the target's pods as classified by their workers' reports. Pods no
    /// worker reports for yet are taken as half-way through their start-up.
    pub fn from_reports(
        visible: u64,
        in_flight: u64,
        running: u64,
        activity: Option<&WorkerActivity>,
        startup_seconds: f64,
    ) -> Self {
        WaitState {
            waiting: visible,
            held: in_flight.saturating_sub(running),
            running,
            ready_pods: activity.map_or(0, |a| a.busy + a.idle),
            starting: vec![startup_seconds / 2.0; activity.map_or(0, |a| a.unknown) as usize],
        }
    }
}

/// The knobs of the rule (fixed in production; tests and tuning runs may vary them).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WaitTuning {
    /// Seconds between a task arriving and a scale-up taking effect besides the start-up
    /// (the poll interval, the decision, the scale write).
    pub reaction_seconds: f64,
    /// Tail probability of a longer wait the stream's count accepts.
    pub stream_tail: f64,
    /// Shortest hold before a scale-down.
    pub min_hold: Duration,
    /// Size for the stream of arrivals too (Erlang C). Off: the backlog alone sizes the
    /// pool (the simulator's `maxwait-backlog`, a candidate rule measured in
    /// docs/simulate.md; production keeps it on).
    pub stream: bool,
}

/// The tail the stream is sized for: the Erlang C probability that a new task waits longer
/// than the target. M/M/N assumes exponential task times and looks at one moment, so its tail
/// is heavier than that of real task mixes over a whole trace: sized at 20 %, the simulated
/// p95 wait stays under the target on the shipped traces (docs/simulate.md), and the former
/// tuning (5 % to scale up, a tighter count at 1 % to scale down to) cost 20-47 % more
/// worker-seconds for waits far below it.
pub const STREAM_TAIL: f64 = 0.2;

impl Default for WaitTuning {
    fn default() -> Self {
        WaitTuning {
            reaction_seconds: 2.0,
            stream_tail: STREAM_TAIL,
            min_hold: Duration::from_secs(10),
            stream: true,
        }
    }
}

/// Which term set a count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding {
    /// Nothing to do and nothing arriving.
    Zero,
    /// The tasks waiting now.
    Backlog,
    /// The stream of arrivals.
    Stream,
    /// The tasks running now need their slots.
    Running,
}

/// The two counts of the rule and what they rest on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sizing {
    /// Scale up to this at once when below it.
    pub up: u64,
    /// Scale down only to this (the highest of the last `hold`).
    pub keep: u64,
    pub binding: Binding,
    /// How long a lower `keep` must last before a scale-down.
    pub hold: Duration,
    /// The target leaves less time than a pod's start-up: a burst from zero will wait
    /// longer than the target, whatever the count.
    pub startup_exceeds_target: bool,
}

/// The two counts for `max_wait` (see the module documentation).
pub fn size(
    model: &WaitModel,
    state: &WaitState,
    max_wait: Duration,
    tuning: &WaitTuning,
) -> Sizing {
    let target =
        (max_wait.as_secs_f64() - tuning.reaction_seconds).max(max_wait.as_secs_f64() / 2.0);
    let hold = tuning
        .min_hold
        .max(Duration::try_from_secs_f64(model.startup_seconds).unwrap_or(Duration::MAX));
    if !model.is_usable() {
        // Unusable figures: hold what there is rather than guess.
        let current = u64::from(state.ready_pods) + state.starting.len() as u64;
        return Sizing {
            up: current,
            keep: current,
            binding: Binding::Backlog,
            hold,
            startup_exceeds_target: false,
        };
    }
    let slots = u64::from(model.slots.max(1));
    let running_floor = state.running.div_ceil(slots);
    let sparse = is_sparse(model, target, hold);
    let stream = if sparse || !tuning.stream {
        0
    } else {
        erlang::pods_for_stream(
            model.arrivals_short,
            model.task_seconds,
            model.slots,
            target,
            tuning.stream_tail,
        )
    };
    let backlog = pods_for_backlog(model, state, target);
    // Work in flight keeps at least one pod, whatever the figures.
    let any_work = u64::from(
        state
            .waiting
            .saturating_add(state.held)
            .saturating_add(state.running)
            > 0,
    );
    let up = backlog.max(stream);
    let keep = up.max(running_floor).max(any_work);
    let binding = if keep == 0 {
        Binding::Zero
    } else if keep == running_floor && running_floor > up {
        Binding::Running
    } else if stream >= backlog {
        Binding::Stream
    } else {
        Binding::Backlog
    };
    Sizing {
        up,
        keep,
        binding,
        hold,
        startup_exceeds_target: model.startup_seconds > target,
    }
}

/// Arrivals so rare that starting a pod per task (start-up, task, hold) costs less than
/// keeping one, and the start-up fits in the target.
fn is_sparse(model: &WaitModel, target: f64, hold: Duration) -> bool {
    let per_task = model.startup_seconds + model.task_seconds + hold.as_secs_f64();
    model.startup_seconds <= target
        && model.arrivals_short.max(model.arrivals_long) * per_task < 1.0
}

/// Tasks `pods` pods can start within `horizon` seconds: the pods that take tasks now
/// first, then those starting (soonest first), then new ones (ready after the start-up;
/// when the start-up exceeds the horizon a new pod is credited half the horizon, so the
/// count stays finite and grows smoothly with the start-up).
pub fn startable(model: &WaitModel, state: &WaitState, pods: u64, horizon: f64) -> f64 {
    let slots = f64::from(model.slots.max(1));
    let rate = model.per_pod_throughput();
    let ready = pods.min(u64::from(state.ready_pods));
    let mut left = pods - ready;
    let idle_slots = (ready as f64 * slots - state.running as f64).max(0.0);
    let mut capacity = idle_slots + ready as f64 * rate * horizon;
    let mut starting = state.starting.clone();
    starting.sort_by(f64::total_cmp);
    for remaining in starting {
        if left == 0 {
            break;
        }
        left -= 1;
        if horizon >= remaining {
            capacity += slots + rate * (horizon - remaining);
        }
    }
    let after_startup = (horizon - model.startup_seconds).max(horizon / 2.0);
    capacity + left as f64 * (slots + rate * after_startup)
}

/// The fewest pods with which the tasks waiting now all start within `horizon`.
fn pods_for_backlog(model: &WaitModel, state: &WaitState, horizon: f64) -> u64 {
    if state.waiting == 0 {
        return 0;
    }
    let needed = state.waiting as f64;
    let slots = f64::from(model.slots.max(1));
    let per_new_pod =
        slots + model.per_pod_throughput() * (horizon - model.startup_seconds).max(horizon / 2.0);
    let existing = u64::from(state.ready_pods) + state.starting.len() as u64;
    // More than enough: every existing pod plus new ones for the whole backlog.
    let mut high = existing
        .saturating_add((needed / per_new_pod).ceil() as u64)
        .saturating_add(1);
    let mut low = 0u64;
    if startable(model, state, high, horizon) < needed {
        return high;
    }
    // The smallest count that can start the backlog in time (`startable` grows with pods).
    while low < high {
        let mid = low + (high - low) / 2;
        if startable(model, state, mid, horizon) >= needed {
            high = mid;
        } else {
            low = mid + 1;
        }
    }
    low
}

/// The wait a task queued now would see with `pods` pods: the later of the backlog's last
/// task and the wait the stream exceeds with probability [`STREAM_TAIL`]; `None` when the pods cannot keep up with the
/// arrivals (waits grow).
pub fn predicted_wait(model: &WaitModel, state: &WaitState, pods: u64) -> Option<f64> {
    if !model.is_usable() {
        return None;
    }
    let slots = pods.saturating_mul(u64::from(model.slots.max(1)));
    let offered = model.arrivals_short * model.task_seconds;
    if offered > 0.0 && slots as f64 <= offered {
        return None;
    }
    let backlog = if state.waiting == 0 || pods == 0 {
        if state.waiting > 0 {
            return None;
        }
        0.0
    } else {
        // Bisection on the horizon: `startable` grows with it.
        let needed = state.waiting as f64;
        let (mut low, mut high) = (0.0, 1.0);
        while startable(model, state, pods, high) < needed && high < 1e7 {
            high *= 2.0;
        }
        for _ in 0..50 {
            let mid = (low + high) / 2.0;
            if startable(model, state, pods, mid) >= needed {
                high = mid;
            } else {
                low = mid;
            }
        }
        high
    };
    let stream = if offered > 0.0 {
        let c = erlang::erlang_c(slots, offered);
        if c <= STREAM_TAIL {
            0.0
        } else {
            model.task_seconds * (c / STREAM_TAIL).ln() / (slots as f64 - offered)
        }
    } else {
        0.0
    };
    Some(backlog.max(stream))
}

/// How long tasks held by busy workers (prefetched) wait: they queue behind the running
/// tasks of their worker, about `held / (busy pods x slots) + 1/2` task times.
pub fn held_wait(model: &WaitModel, held: u64, busy_pods: u32) -> f64 {
    if held == 0 || !model.is_usable() {
        return 0.0;
    }
    let holders = f64::from(busy_pods.max(1)) * f64::from(model.slots.max(1));
    (held as f64 / holders + 0.5) * model.task_seconds
}

/// The decision for a WPA with `maxWaitSeconds`, or practo's ([`decide_with_workers`])
/// without a sizing (not learned yet, or no `maxWaitSeconds`). Bounds, in order: min/max,
/// maxDisruption on a scale-down, never below the busy pods ([`WorkerActivity::keep`]). The
/// scale-down delay flag does not apply (the hold replaces it); the recommendation stored
/// in the history is what the hold looks back on.
#[allow(clippy::too_many_arguments)]
pub fn decide_with_wait(
    policy: &Policy,
    queue: &QueueSnapshot,
    workers: Option<&WorkerActivity>,
    sizing: Option<&Sizing>,
    current: i32,
    now: Timestamp,
    history: &History,
    settings: &ScalerSettings,
) -> Decision {
    let Some(sizing) = sizing else {
        return decide_with_workers(policy, queue, workers, current, now, history, settings);
    };
    let to_i32 = |n: u64| i32::try_from(n).unwrap_or(i32::MAX);
    let (min, max) = (policy.min.max(0), policy.max.max(policy.min.max(0)));
    let clamp = |n: i32| n.clamp(min, max);
    let up = clamp(to_i32(sizing.up));
    let keep = clamp(to_i32(sizing.keep));
    let decision = if current > max {
        Decision {
            desired: max,
            recommendation: keep,
            reason: Reason::AboveMax,
            limited: true,
        }
    } else if up > current {
        Decision {
            desired: up,
            recommendation: up,
            reason: if current < min {
                Reason::BelowMin
            } else {
                Reason::ScaleUpForWait
            },
            limited: to_i32(sizing.up) > max,
        }
    } else if keep < current {
        // The highest count recommended within the hold, this one included.
        let window = SignedDuration::try_from(sizing.hold).unwrap_or(SignedDuration::MAX);
        let held = history
            .recommendations()
            .iter()
            .filter(|r| within(now, r.at, window))
            .map(|r| r.replicas)
            .fold(keep, i32::max)
            .min(current);
        if held >= current {
            Decision {
                desired: current,
                recommendation: keep,
                reason: Reason::WaitScaleDownHeld,
                limited: true,
            }
        } else {
            let disruptable = policy.max_disruption.max_disruptable(current);
            let floor = i32::try_from(i64::from(current) - disruptable).unwrap_or(0);
            let desired = held.max(floor).max(min);
            Decision {
                desired,
                recommendation: keep,
                reason: Reason::ScaleDownForWait,
                limited: desired != held,
            }
        }
    } else {
        Decision {
            desired: current,
            // The count in use is needed: a later scale-down holds from here.
            recommendation: current,
            reason: Reason::WithinWaitTarget,
            limited: false,
        }
    };
    match workers {
        Some(workers) => hold_busy(decision, workers, current),
        None => decision,
    }
}
