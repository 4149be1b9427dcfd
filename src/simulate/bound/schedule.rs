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
    /// Each pod life, (creation, exit), sorted by creation; an initial pod's starts at 0.
    pub lives: Vec<(f64, f64)>,
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
    let mut lives: Vec<(f64, f64)> = Vec::new();
    for pod in &mut pods {
        pod.busy.sort_by(|a, b| a.0.total_cmp(&b.0));
        let Some(&(first, _)) = pod.busy.first() else {
            // An initial pod never used is removed at 0 and costs nothing.
            continue;
        };
        // A new pod is created S before its first task; an initial pod is there from 0 and
        // idle until its first task, which is a gap like any other.
        let (mut born, mut covered) = if pod.initial {
            (0.0, 0.0)
        } else {
            (first - params.startup, first)
        };
        for &(start, end) in &pod.busy {
            if start - covered > params.startup {
                // Cheaper to remove the pod and create a new one S before the next task.
                if covered > born {
                    lives.push((born, covered));
                }
                born = start - params.startup;
            }
            covered = covered.max(end);
        }
        lives.push((born, covered));
    }
    lives.sort_by(|a, b| a.0.total_cmp(&b.0));
    let worker_seconds = lives.iter().map(|(born, gone)| gone - born).sum();
    Schedule {
        worker_seconds,
        lives,
        waits,
    }
}

impl Schedule {
    /// The pods alive over time, as `(time, count)` at 0 and at every change.
    pub fn replicas(&self) -> Vec<(f64, i32)> {
        let mut changes: Vec<(f64, i32)> = self
            .lives
            .iter()
            .flat_map(|&(born, gone)| [(born, 1), (gone, -1)])
            .collect();
        // At one instant exits before creations: a pod replaced at once is not counted twice.
        changes.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let mut steps = vec![(0.0, 0)];
        let mut alive = 0;
        for (at, change) in changes {
            alive += change;
            match steps.last_mut() {
                Some(last) if last.0 == at => last.1 = alive,
                _ => steps.push((at, alive)),
            }
        }
        steps
    }
}
