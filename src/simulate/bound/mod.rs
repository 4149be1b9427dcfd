//! The offline lower bound of `simulate compare`: the fewest worker-seconds that any policy,
//! even one knowing the whole trace in advance, must spend to start every task within the
//! wait target W, given the pods' start-up delay S. docs/simulate.md gives the argument.
//!
//! Three figures:
//! - `lb0`, a density bound: every productive pod-second gives `c` slot-seconds, so the pods
//!   are productive for at least (sum of durations) / c seconds; and if some interval must
//!   hold more work than `k - 1` pods can do in it, at least `k` pods are productive at once
//!   and each beyond the initial ones paid S to start.
//! - `lp`, the optimum of a linear relaxation on a 1 s grid ([`lp`]): fractional pods per
//!   cell, a start-up cost S per unit increase, each task's work preemptively spread over
//!   its window [a, a + W + p]. Every real schedule maps to a feasible point of the LP with
//!   at most its cost, so the LP optimum is a lower bound.
//! - `schedule`, an achievable offline schedule ([`schedule`]): pods started exactly S
//!   before they are needed, tasks placed best fit. Its cost is an upper bound on the
//!   optimum, so `lower <= optimum <= schedule` shows how much is left to know.
//!
//! A task arriving before S - W gets the deadline S instead of a + W: no pod created at 0
//! is ready sooner, and the initial pods, if any, may be too few; with this every trace has
//! a schedule, and moving a deadline later only lowers the bound, so it stays valid.

mod lp;
mod schedule;

#[cfg(test)]
mod brute_tests;

pub use schedule::Schedule;

use super::arrivals::Task;

/// What the bound depends on besides the tasks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BoundParams {
    /// W: the longest a task may wait before it starts, seconds.
    pub max_wait: f64,
    /// S: seconds from a pod's creation to its first task.
    pub startup: f64,
    /// Task slots per pod.
    pub concurrency: u32,
    /// Pods ready at time 0 (paid from 0, no start-up).
    pub initial: u32,
    /// The most pods at once (maxReplicas), if the bound should respect it.
    pub max_pods: Option<u32>,
}

/// The bound and how it was obtained.
#[derive(Debug, Clone, PartialEq)]
pub struct Bound {
    /// The density bound.
    pub lb0: f64,
    /// The LP relaxation's optimum.
    pub lp: f64,
    /// max(lb0, lp): the lower bound reported.
    pub lower: f64,
    /// Whether `max_pods` was respected (false when no schedule within it exists, or none
    /// was given).
    pub capped: bool,
    /// Independent pieces the trace split into (gaps longer than S between task windows).
    pub segments: usize,
    /// Grid cells (seconds) in the LP.
    pub cells: usize,
    /// Tasks whose deadline moved to S (they arrived before S - W).
    pub late_tasks: usize,
    /// The achievable offline schedule.
    pub schedule: Schedule,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BoundError {
    #[error("bound: {field} must be {expected}, got {value}")]
    Param {
        field: &'static str,
        expected: &'static str,
        value: String,
    },
    #[error(
        "bound: the LP solver failed on segment {segment} ({cells} cells, {tasks} tasks): {detail}"
    )]
    Solver {
        segment: usize,
        cells: usize,
        tasks: usize,
        detail: String,
    },
}

/// One task's window, in seconds: it must run within [release, deadline + duration].
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Window {
    pub release: f64,
    /// Latest start.
    pub deadline: f64,
    pub duration: f64,
}

impl Window {
    pub fn end(&self) -> f64 {
        self.deadline + self.duration
    }
}

impl BoundParams {
    fn check(&self) -> Result<(), BoundError> {
        let bad = |field, expected, value: f64| {
            Err(BoundError::Param {
                field,
                expected,
                value: value.to_string(),
            })
        };
        if !(self.max_wait.is_finite() && self.max_wait >= 0.0) {
            return bad("--max-wait", "seconds >= 0", self.max_wait);
        }
        if !(self.startup.is_finite() && self.startup >= 0.0) {
            return bad("--startup", "seconds >= 0", self.startup);
        }
        if self.concurrency == 0 {
            return bad("--concurrency", ">= 1", 0.0);
        }
        Ok(())
    }

    /// The tasks' windows, deadlines before S moved to S.
    pub(crate) fn windows(&self, tasks: &[Task]) -> (Vec<Window>, usize) {
        let first_ready = self.startup;
        let mut late = 0;
        let windows = tasks
            .iter()
            .map(|t| {
                let deadline = t.arrival + self.max_wait;
                if deadline < first_ready {
                    late += 1;
                }
                Window {
                    release: t.arrival,
                    deadline: deadline.max(first_ready),
                    duration: t.duration,
                }
            })
            .collect();
        (windows, late)
    }
}

/// Computes the bound: LB0, the LP (split at gaps of at least S) and the offline schedule.
pub fn lower_bound(tasks: &[Task], params: &BoundParams) -> Result<Bound, BoundError> {
    params.check()?;
    let (windows, late_tasks) = params.windows(tasks);
    let lb0 = density_bound(&windows, params);
    let (lp, capped, segments, cells) = match params.max_pods {
        Some(max) => match lp::solve(&windows, params, Some(max)) {
            Ok(found) => (found.cost, true, found.segments, found.cells),
            // No schedule within maxReplicas: the bound without it (still a lower bound).
            Err(lp::LpError::Infeasible) => {
                let found = lp::solve(&windows, params, None).map_err(|e| e.into_bound_error())?;
                (found.cost, false, found.segments, found.cells)
            }
            Err(other) => return Err(other.into_bound_error()),
        },
        None => {
            let found = lp::solve(&windows, params, None).map_err(|e| e.into_bound_error())?;
            (found.cost, false, found.segments, found.cells)
        }
    };
    Ok(Bound {
        lb0,
        lp,
        lower: lp.max(lb0),
        capped,
        segments,
        cells,
        late_tasks,
        schedule: schedule::greedy(tasks, &windows, params),
    })
}

/// LB0 = (sum of durations) / c + S * (k - initial)+, k the most pods some interval forces
/// to be productive at once: the work that must fall inside [x, y] (a task's duration less
/// the part of its window outside) over c * (y - x), rounded up. Intervals run from a
/// release to a window end no more than 2 (W + longest task) later; leaving others out
/// only weakens k, never makes it wrong.
pub(crate) fn density_bound(windows: &[Window], params: &BoundParams) -> f64 {
    let c = f64::from(params.concurrency);
    let work: f64 = windows.iter().map(|w| w.duration).sum();
    let extra = (most_pods(windows, params.concurrency) - f64::from(params.initial)).max(0.0);
    work / c + params.startup * extra
}

/// The most pods some interval forces to be productive at once (a whole number): see
/// [`density_bound`].
pub(crate) fn most_pods(windows: &[Window], concurrency: u32) -> f64 {
    let c = f64::from(concurrency);
    let longest = windows
        .iter()
        .map(|w| w.end() - w.release)
        .fold(0.0, f64::max);
    let span = 2.0 * longest;
    let mut by_release: Vec<Window> = windows.to_vec();
    by_release.sort_by(|a, b| a.release.total_cmp(&b.release));
    let mut ends: Vec<f64> = windows.iter().map(Window::end).collect();
    ends.sort_by(f64::total_cmp);
    let mut most = 0.0f64;
    for x in by_release.iter().map(|w| w.release) {
        let from = ends.partition_point(|&e| e <= x);
        // Only windows released after x - longest can still be open at x.
        let first = by_release.partition_point(|w| w.release <= x - longest);
        for &y in ends[from..].iter().take_while(|&&e| e - x <= span) {
            let last = by_release.partition_point(|w| w.release < y);
            let inside: f64 = by_release[first..last.max(first)]
                .iter()
                .filter(|w| w.end() > x)
                .map(|w| {
                    let outside = (x - w.release).max(0.0) + (w.end() - y).max(0.0);
                    (w.duration - outside).max(0.0)
                })
                .sum();
            most = most.max(inside / (c * (y - x)));
        }
    }
    // A need of exactly k pods is met by k: take the ceiling of a value just below it.
    (most - 1e-9).ceil().max(0.0)
}
