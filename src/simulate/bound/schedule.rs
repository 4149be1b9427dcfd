//! An achievable offline schedule: what a policy that knows the whole trace could do with
//! simple rules. Its cost is an upper bound on the optimum, beside the lower bound.
//!
//! Tasks in arrival order each take the slot that frees last while still in time (best fit:
//! the least idle time left behind), starting when both it and the slot are there; with no
//! slot in time, a new pod is created exactly S before the task arrives (or at 0, ready at
//! S). A pod idle for longer than S between two tasks is removed and created again S before
//! the next one (a new pod costs S, keeping it costs the gap). maxReplicas is not applied.

use super::super::arrivals::Task;
use super::{BoundParams, Window};

/// The schedule's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    /// Sum over pod lives of (exit - creation).
    pub worker_seconds: f64,
    /// Pod lives (creations, plus the initial pods used).
    pub pods: usize,
    /// Per task, start - arrival, in trace order.
    pub waits: Vec<f64>,
}

struct PodPlan {
    initial: bool,
    busy: Vec<(f64, f64)>,
}

struct Slot {
    pod: usize,
    free_at: f64,
}

pub(crate) fn greedy(tasks: &[Task], windows: &[Window], params: &BoundParams) -> Schedule {
    let c = params.concurrency as usize;
    let mut pods: Vec<PodPlan> = Vec::new();
    let mut slots: Vec<Slot> = Vec::new();
    let add_pod = |pods: &mut Vec<PodPlan>, slots: &mut Vec<Slot>, ready: f64, initial: bool| {
        pods.push(PodPlan {
            initial,
            busy: Vec::new(),
        });
        for _ in 0..c {
            slots.push(Slot {
                pod: pods.len() - 1,
                free_at: ready,
            });
        }
    };
    for _ in 0..params.initial {
        add_pod(&mut pods, &mut slots, 0.0, true);
    }
    let mut waits = Vec::with_capacity(tasks.len());
    for (task, window) in tasks.iter().zip(windows) {
        let fit = slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.free_at <= window.deadline)
            .max_by(|(i, a), (j, b)| a.free_at.total_cmp(&b.free_at).then(j.cmp(i)))
            .map(|(i, _)| i);
        let slot = match fit {
            Some(slot) => slot,
            None => {
                add_pod(
                    &mut pods,
                    &mut slots,
                    task.arrival.max(params.startup),
                    false,
                );
                slots.len() - c
            }
        };
        let start = task.arrival.max(slots[slot].free_at);
        slots[slot].free_at = start + task.duration;
        pods[slots[slot].pod]
            .busy
            .push((start, start + task.duration));
        waits.push(start - task.arrival);
    }
    let mut worker_seconds = 0.0;
    let mut lives = 0;
    for pod in &mut pods {
        pod.busy.sort_by(|a, b| a.0.total_cmp(&b.0));
        let Some(&(first, _)) = pod.busy.first() else {
            // An initial pod never used is removed at 0 and costs nothing.
            continue;
        };
        // A new pod is created S before its first task; an initial pod is there from 0 and
        // idle until its first task, which is a gap like any other.
        let mut covered = if pod.initial { 0.0 } else { first };
        if !pod.initial {
            worker_seconds += params.startup;
            lives += 1;
        } else if first <= params.startup {
            lives += 1;
        }
        for &(start, end) in &pod.busy {
            if start > covered {
                let gap = start - covered;
                if gap > params.startup {
                    lives += 1;
                }
                worker_seconds += gap.min(params.startup);
                covered = start;
            }
            if end > covered {
                worker_seconds += end - covered;
                covered = end;
            }
        }
    }
    Schedule {
        worker_seconds,
        pods: lives,
        waits,
    }
}
