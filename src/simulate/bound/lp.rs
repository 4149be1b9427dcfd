//! The LP relaxation of the fewest worker-seconds, on a 1 s grid, solved with `microlp`.
//!
//! Cells j = [j, j + 1) seconds. Variables: P_j >= 0 productive pods (fractional), u_j >= 0
//! pods started, x_ij in [0, 1] the seconds of task i's work done in cell j. Minimise
//! sum P_j + S * sum u_j subject to
//! - u_j >= P_j - P_(j-1) (a pod becomes productive only after paying S),
//! - sum_j x_ij = p_i over the cells of i's window [floor(a_i), ceil(a_i + W + p_i)),
//! - sum_i x_ij <= c * P_j (slots),
//! - P_j <= initial pods in cells that end before S (nothing else can be ready then), and
//!   P_j <= maxReplicas when the bound respects it,
//! - sum u_j >= k - (pods carried in), k the whole number of pods the piece's densest
//!   interval needs at once (as in LB0). Without it fractional pods pay fractional
//!   start-ups: one 5 s task in a 35 s window would cost 5 + S/7.
//!
//! Windows are rounded outward and S enters only as a cost, so the grid loses nothing a
//! real schedule could need: averaging a real schedule's pods over each cell gives a
//! feasible point that costs no more (see docs/simulate.md).
//!
//! The trace splits where one window ends at least S seconds before the next begins: a
//! pod kept across such a gap costs at least as much as a new one after it, so some optimum
//! has no pod there and the pieces are solved apart (the LP grows with cells times tasks).

use microlp::{ComparisonOp, OptimizationDirection, Problem, SolutionStatus, Variable};

use super::{BoundError, BoundParams, Window, most_pods};

pub(crate) struct Found {
    pub cost: f64,
    pub segments: usize,
    pub cells: usize,
}

#[derive(Debug)]
pub(crate) enum LpError {
    Infeasible,
    Solver {
        segment: usize,
        cells: usize,
        tasks: usize,
        detail: String,
    },
}

impl LpError {
    pub fn into_bound_error(self) -> BoundError {
        match self {
            // The deadlines were moved so that a pod can always be ready in time: without
            // a pod cap the LP is always feasible, so this means the solver gave up.
            LpError::Infeasible => BoundError::Solver {
                segment: 0,
                cells: 0,
                tasks: 0,
                detail: "reported infeasible without a pod cap".to_string(),
            },
            LpError::Solver {
                segment,
                cells,
                tasks,
                detail,
            } => BoundError::Solver {
                segment,
                cells,
                tasks,
                detail,
            },
        }
    }
}

/// One independent piece: cells [start, end) and the tasks whose windows lie there.
struct Segment {
    start: i64,
    end: i64,
    /// Productive pods just before `start`.
    before: f64,
    tasks: Vec<(i64, i64, f64)>,
    windows: Vec<Window>,
}

fn cell_range(w: &Window) -> (i64, i64) {
    // Rounded outward: the release down, the end up.
    (w.release.floor() as i64, w.end().ceil() as i64)
}

fn segments(windows: &[Window], params: &BoundParams) -> Vec<Segment> {
    let mut ranges: Vec<(i64, i64, Window)> = windows
        .iter()
        .map(|w| {
            let (r, e) = cell_range(w);
            (r, e, *w)
        })
        .collect();
    ranges.sort_by_key(|&(r, e, _)| (r, e));
    let mut out: Vec<Segment> = Vec::new();
    for (r, e, w) in ranges {
        let p = w.duration;
        match out.last_mut() {
            Some(seg) if ((r - seg.end) as f64) < params.startup => {
                seg.end = seg.end.max(e);
                seg.tasks.push((r, e, p));
                seg.windows.push(w);
            }
            _ => {
                // The initial pods carry into the first piece only when it begins before a
                // new pod could be ready; otherwise dropping them at 0 is as cheap.
                let carry = out.is_empty() && params.initial > 0 && (r as f64) < params.startup;
                out.push(Segment {
                    start: if carry { 0 } else { r },
                    end: e,
                    before: if carry {
                        f64::from(params.initial)
                    } else {
                        0.0
                    },
                    tasks: vec![(r, e, p)],
                    windows: vec![w],
                });
            }
        }
    }
    out
}

pub(crate) fn solve(
    windows: &[Window],
    params: &BoundParams,
    cap: Option<u32>,
) -> Result<Found, LpError> {
    let pieces = segments(windows, params);
    let mut found = Found {
        cost: 0.0,
        segments: pieces.len(),
        cells: 0,
    };
    for (index, segment) in pieces.iter().enumerate() {
        found.cells += usize::try_from(segment.end - segment.start).unwrap_or(0);
        found.cost += solve_segment(index, segment, params, cap)?;
    }
    Ok(found)
}

fn solve_segment(
    index: usize,
    seg: &Segment,
    params: &BoundParams,
    cap: Option<u32>,
) -> Result<f64, LpError> {
    let cells = usize::try_from(seg.end - seg.start).unwrap_or(0);
    let failed = |detail: String| LpError::Solver {
        segment: index,
        cells,
        tasks: seg.tasks.len(),
        detail,
    };
    let mut problem = Problem::new(OptimizationDirection::Minimize);
    let c = f64::from(params.concurrency);
    let pods: Vec<Variable> = (seg.start..seg.end)
        .map(|j| {
            let mut upper = cap.map_or(f64::INFINITY, f64::from);
            if ((j + 1) as f64) <= params.startup {
                upper = upper.min(f64::from(params.initial));
            }
            problem.add_var(1.0, (0.0, upper))
        })
        .collect();
    let starts: Vec<Variable> = (0..cells)
        .map(|_| problem.add_var(params.startup, (0.0, f64::INFINITY)))
        .collect();
    for j in 0..cells {
        match j.checked_sub(1) {
            Some(prev) => problem.add_constraint(
                [(starts[j], 1.0), (pods[j], -1.0), (pods[prev], 1.0)],
                ComparisonOp::Ge,
                0.0,
            ),
            None => problem.add_constraint(
                [(starts[j], 1.0), (pods[j], -1.0)],
                ComparisonOp::Ge,
                -seg.before,
            ),
        }
    }
    let needed = most_pods(&seg.windows, params.concurrency) - seg.before;
    if needed > 0.0 {
        problem.add_constraint(
            starts.iter().map(|&u| (u, 1.0)).collect::<Vec<_>>(),
            ComparisonOp::Ge,
            needed,
        );
    }
    let mut capacity: Vec<Vec<(Variable, f64)>> = pods.iter().map(|&p| vec![(p, -c)]).collect();
    for &(r, e, p) in &seg.tasks {
        let mut row = Vec::with_capacity(usize::try_from(e - r).unwrap_or(0));
        for j in r..e {
            let x = problem.add_var(0.0, (0.0, 1.0));
            row.push((x, 1.0));
            if let Some(cell) = usize::try_from(j - seg.start)
                .ok()
                .and_then(|k| capacity.get_mut(k))
            {
                cell.push((x, 1.0));
            }
        }
        problem.add_constraint(row, ComparisonOp::Eq, p);
    }
    for row in capacity {
        problem.add_constraint(row, ComparisonOp::Le, 0.0);
    }
    let outcome = problem.solve().map_err(|e| match e {
        microlp::Error::Infeasible => LpError::Infeasible,
        other => failed(other.to_string()),
    })?;
    let solution = outcome
        .into_solution()
        .map_err(|_| failed("interrupted before a solution".to_string()))?;
    if solution.status() != SolutionStatus::Optimal {
        return Err(failed("no proof of optimality".to_string()));
    }
    Ok(solution.objective())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(startup: f64, initial: u32) -> BoundParams {
        BoundParams {
            max_wait: 5.0,
            startup,
            concurrency: 1,
            initial,
            max_pods: None,
        }
    }

    fn window(release: f64, duration: f64) -> Window {
        // (release + 5 is never before S in these tests.)
        Window {
            release,
            deadline: release + 5.0,
            duration,
        }
    }

    #[test]
    fn windows_split_at_gaps_of_at_least_s() {
        // Windows [0, 7), [8, 15) and [40, 47): the 1 s gap joins, the 25 s one splits.
        let w = [window(0.0, 2.0), window(8.0, 2.0), window(40.0, 2.0)];
        let pieces = segments(&w, &params(10.0, 0));
        let spans: Vec<(i64, i64)> = pieces.iter().map(|s| (s.start, s.end)).collect();
        assert_eq!(spans, vec![(0, 15), (40, 47)]);
        // Initial pods carry into a first piece that begins before S.
        let pieces = segments(&w[1..], &params(10.0, 2));
        assert_eq!((pieces[0].start, pieces[0].before), (0, 2.0));
    }

    #[test]
    fn one_task_costs_its_startup_and_duration() {
        let found = solve(&[window(20.0, 3.0)], &params(10.0, 0), None).expect("solves");
        assert!((found.cost - 13.0).abs() < 1e-6, "{}", found.cost);
    }

    #[test]
    fn a_cap_below_the_need_is_infeasible() {
        // Two 6 s tasks arriving together, 5 s to start: two pods at once.
        let w = [window(20.0, 6.0), window(20.0, 6.0)];
        assert!(matches!(
            solve(&w, &params(10.0, 0), Some(1)),
            Err(LpError::Infeasible)
        ));
        // 12 s of work in an 11 s window need two pods at some point: two start-ups. (Fractional
        // pods alone would pay 12/11 of one.)
        let found = solve(&w, &params(10.0, 0), Some(2)).expect("solves");
        assert!((found.cost - 32.0).abs() < 1e-6, "{}", found.cost);
    }
}
