//! The bounds against the true optimum of tiny instances, found by trying every integer
//! start time and every way of sharing the tasks among pods (one slot per pod).
//!
//! The brute force's best is an achievable cost, so it can be no lower than a valid lower
//! bound; the offline schedule's starts are integers too, so the brute force, which tries
//! them all, can be no higher than it: LB0 <= LP <= brute force <= schedule.

use super::*;
use crate::simulate::generate::SplitMix64;

/// Cost of one pod running tasks over the given intervals (non-overlapping, sorted), as
/// the schedule counts it: S to start (none for an initial pod, which instead idles from 0),
/// then every stretch of work, with idle gaps costing at most S (a longer gap is cheaper as
/// a removal and a new pod).
fn pod_cost(intervals: &[(i64, i64)], startup: i64, initial: bool) -> Option<i64> {
    let &(first, _) = intervals.first()?;
    if !initial && first < startup {
        return None; // created before time 0
    }
    let mut cost = if initial { first.min(startup) } else { startup };
    let mut covered = first;
    for &(start, end) in intervals {
        if start < covered {
            return None; // overlapping on one slot
        }
        cost += (start - covered).min(startup) + (end - start);
        covered = end;
    }
    Some(cost)
}

/// Every assignment of n tasks to pods as restricted growth strings (pod 0 is the initial
/// pod when there is one).
fn assignments(n: usize) -> Vec<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = vec![vec![]];
    for _ in 0..n {
        let mut next = Vec::new();
        for a in &out {
            let used: usize = a.iter().max().map_or(0, |&m| m + 1);
            for label in 0..=used {
                let mut b = a.clone();
                b.push(label);
                next.push(b);
            }
        }
        out = next;
    }
    out
}

fn brute(tasks: &[(i64, i64)], wait: i64, startup: i64, initial: bool) -> i64 {
    // The bound's deadlines: a + W, or S for a task arriving before S - W.
    let ranges: Vec<(i64, i64)> = tasks
        .iter()
        .map(|&(a, _)| (a, (a + wait).max(startup)))
        .collect();
    let mut best = i64::MAX;
    let mut starts: Vec<i64> = ranges.iter().map(|r| r.0).collect();
    let labels = assignments(tasks.len());
    loop {
        for assignment in &labels {
            let pods: usize = assignment.iter().max().map_or(0, |&m| m + 1);
            let mut total = 0;
            let mut ok = true;
            for pod in 0..pods {
                let mut intervals: Vec<(i64, i64)> = (0..tasks.len())
                    .filter(|&i| assignment[i] == pod)
                    .map(|i| (starts[i], starts[i] + tasks[i].1))
                    .collect();
                intervals.sort();
                match pod_cost(&intervals, startup, initial && pod == 0) {
                    Some(cost) => total += cost,
                    None => {
                        ok = false;
                        break;
                    }
                }
            }
            if ok {
                best = best.min(total);
            }
        }
        // Next combination of start times (odometer).
        let mut i = 0;
        loop {
            if i == starts.len() {
                return best;
            }
            if starts[i] < ranges[i].1 {
                starts[i] += 1;
                break;
            }
            starts[i] = ranges[i].0;
            i += 1;
        }
    }
}

#[test]
fn lower_bounds_never_exceed_the_optimum_and_the_schedule_never_beats_it() {
    let mut rng = SplitMix64::new(21);
    let mut draw = |n: u64| i64::try_from(rng.next_u64() % n).expect("small");
    for case in 0..150 {
        let n = 1 + draw(4) as usize;
        let wait = draw(4);
        let startup = draw(6);
        let initial = draw(3) == 0;
        let mut arrivals: Vec<i64> = (0..n).map(|_| draw(12)).collect();
        arrivals.sort();
        let tasks: Vec<(i64, i64)> = arrivals.iter().map(|&a| (a, 1 + draw(4))).collect();
        let trace: Vec<Task> = tasks
            .iter()
            .map(|&(a, p)| Task {
                arrival: a as f64,
                duration: p as f64,
            })
            .collect();
        let params = BoundParams {
            max_wait: wait as f64,
            startup: startup as f64,
            concurrency: 1,
            initial: u32::from(initial),
            max_pods: None,
        };
        let bound = lower_bound(&trace, &params).expect("bound");
        let optimum = brute(&tasks, wait, startup, initial) as f64;
        let context = format!(
            "case {case}: {tasks:?} W={wait} S={startup} initial={initial}: {bound:?}, optimum {optimum}"
        );
        assert!(
            bound.lb0 <= optimum + 1e-6,
            "LB0 above the optimum: {context}"
        );
        assert!(
            bound.lp <= optimum + 1e-6,
            "LP above the optimum: {context}"
        );
        assert!(
            bound.lb0 <= bound.lp + 1e-6 || bound.lower == bound.lb0,
            "{context}"
        );
        assert!(
            optimum <= bound.schedule.worker_seconds + 1e-6,
            "schedule below the optimum: {context}"
        );
    }
}

#[test]
fn a_lone_task_costs_startup_plus_duration_in_every_figure() {
    let params = BoundParams {
        max_wait: 30.0,
        startup: 10.0,
        concurrency: 1,
        initial: 0,
        max_pods: None,
    };
    let bound = lower_bound(
        &[Task {
            arrival: 100.0,
            duration: 5.0,
        }],
        &params,
    )
    .expect("bound");
    assert!((bound.lp - 15.0).abs() < 1e-6, "{bound:?}");
    assert!((bound.lb0 - 15.0).abs() < 1e-6, "{bound:?}");
    assert!(
        (bound.schedule.worker_seconds - 15.0).abs() < 1e-6,
        "{bound:?}"
    );
    assert_eq!(bound.schedule.waits, vec![0.0]);
    assert_eq!(bound.schedule.lives, vec![(90.0, 105.0)]);
    assert_eq!(
        bound.schedule.replicas(),
        vec![(0.0, 0), (90.0, 1), (105.0, 0)]
    );
}

#[test]
fn the_schedule_keeps_a_pod_over_short_gaps_and_replaces_it_over_long_ones() {
    // S = 10, W = 0: a 4 s gap is bridged (one life), a 20 s gap costs a new pod instead.
    let params = BoundParams {
        max_wait: 0.0,
        startup: 10.0,
        concurrency: 1,
        initial: 0,
        max_pods: None,
    };
    let tasks = [
        Task {
            arrival: 20.0,
            duration: 5.0,
        },
        Task {
            arrival: 29.0,
            duration: 5.0,
        },
        Task {
            arrival: 54.0,
            duration: 5.0,
        },
    ];
    let bound = lower_bound(&tasks, &params).expect("bound");
    assert_eq!(bound.schedule.lives, vec![(10.0, 34.0), (44.0, 59.0)]);
    assert!((bound.schedule.worker_seconds - 39.0).abs() < 1e-9);
    assert_eq!(
        bound.schedule.replicas(),
        vec![(0.0, 0), (10.0, 1), (34.0, 0), (44.0, 1), (59.0, 0)]
    );
}

#[test]
fn a_task_no_pod_can_reach_in_time_waits_for_the_first_one() {
    // Arrives at 0, W = 2, S = 10: no pod is ready before 10.
    let params = BoundParams {
        max_wait: 2.0,
        startup: 10.0,
        concurrency: 1,
        initial: 0,
        max_pods: None,
    };
    let bound = lower_bound(
        &[Task {
            arrival: 0.0,
            duration: 3.0,
        }],
        &params,
    )
    .expect("bound");
    assert_eq!(bound.late_tasks, 1);
    assert_eq!(bound.schedule.waits, vec![10.0]);
    assert!((bound.lower - 13.0).abs() < 1e-6, "{bound:?}");
}

#[test]
fn the_pod_cap_is_dropped_when_nothing_meets_it() {
    let params = BoundParams {
        max_wait: 0.0,
        startup: 1.0,
        concurrency: 1,
        initial: 0,
        max_pods: Some(1),
    };
    let together = [
        Task {
            arrival: 5.0,
            duration: 4.0,
        },
        Task {
            arrival: 5.0,
            duration: 4.0,
        },
    ];
    let bound = lower_bound(&together, &params).expect("bound");
    assert!(!bound.capped);
    let params = BoundParams {
        max_pods: Some(2),
        ..params
    };
    assert!(lower_bound(&together, &params).expect("bound").capped);
}
